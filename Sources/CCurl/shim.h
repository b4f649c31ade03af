#include <curl/curl.h>

/* curl_easy_setopt and curl_easy_getinfo are variadic, which Swift cannot call: one typed wrapper per kind of
 * argument Berth passes. */
typedef size_t (*berth_curl_callback)(char *buffer, size_t size, size_t count, void *context);

static inline CURLcode berth_curl_set_long(CURL *handle, CURLoption option, long value) {
    return curl_easy_setopt(handle, option, value);
}
static inline CURLcode berth_curl_set_offset(CURL *handle, CURLoption option, curl_off_t value) {
    return curl_easy_setopt(handle, option, value);
}
static inline CURLcode berth_curl_set_pointer(CURL *handle, CURLoption option, const void *value) {
    return curl_easy_setopt(handle, option, value);
}
static inline CURLcode berth_curl_set_callback(CURL *handle, CURLoption option, berth_curl_callback value) {
    return curl_easy_setopt(handle, option, value);
}
/* libcurl copies string options (and COPYPOSTFIELDS): the argument need only live for the call. */
static inline CURLcode berth_curl_set_string(CURL *handle, CURLoption option, const char *value) {
    return curl_easy_setopt(handle, option, value);
}
