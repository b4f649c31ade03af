#include "berth_libvirt_lifecycle_shim.h"

#include <string.h>

/* A domain handle exists, so berth_virt_begin's one-time virInitialize has already run. */
static int berth_lifecycle_result(int rc, berth_virt_error *err) {
    if (rc < 0) {
        virErrorPtr last = virGetLastError();
        if (last != NULL) {
            err->code = last->code;
            err->domain = last->domain;
            if (last->message != NULL) strncpy(err->message, last->message, sizeof err->message - 1);
            virResetLastError();
        } else {
            strncpy(err->message, "libvirt reported a failure without an error message", sizeof err->message - 1);
        }
    }
    return rc;
}

int berth_virDomainSuspend(virDomainPtr domain, berth_virt_error *err) {
    memset(err, 0, sizeof *err);
    virResetLastError();
    return berth_lifecycle_result(virDomainSuspend(domain), err);
}

int berth_virDomainResume(virDomainPtr domain, berth_virt_error *err) {
    memset(err, 0, sizeof *err);
    virResetLastError();
    return berth_lifecycle_result(virDomainResume(domain), err);
}
