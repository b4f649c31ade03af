#include "berth_libvirt_shim.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* libvirt's default handler prints every error to stderr; Berth reports them itself. */
static void berth_virt_ignore_error(void *user_data, virErrorPtr error) {
    (void)user_data;
    (void)error;
}

static pthread_once_t berth_virt_once = PTHREAD_ONCE_INIT;

static void berth_virt_init(void) {
    /* virInitialize must run before libvirt is used from more than one thread. */
    virInitialize();
    virSetErrorFunc(NULL, berth_virt_ignore_error);
}

static void berth_virt_begin(berth_virt_error *err) {
    pthread_once(&berth_virt_once, berth_virt_init);
    virResetLastError();
    memset(err, 0, sizeof *err);
}

static void berth_virt_capture(berth_virt_error *err) {
    virErrorPtr last = virGetLastError();
    if (last == NULL) {
        strncpy(err->message, "libvirt reported a failure without an error message", sizeof err->message - 1);
        return;
    }
    err->code = last->code;
    err->domain = last->domain;
    if (last->message != NULL) {
        strncpy(err->message, last->message, sizeof err->message - 1);
    }
    virResetLastError();
}

virConnectPtr berth_virConnectOpen(const char *uri, berth_virt_error *err) {
    berth_virt_begin(err);
    virConnectPtr conn = virConnectOpen(uri);
    if (conn == NULL) {
        berth_virt_capture(err);
    }
    return conn;
}

int berth_virConnectClose(virConnectPtr conn, berth_virt_error *err) {
    berth_virt_begin(err);
    int rc = virConnectClose(conn);
    if (rc < 0) {
        berth_virt_capture(err);
    }
    return rc;
}

int berth_virConnectIsAlive(virConnectPtr conn, berth_virt_error *err) {
    berth_virt_begin(err);
    int rc = virConnectIsAlive(conn);
    if (rc < 0) {
        berth_virt_capture(err);
    }
    return rc;
}

char *berth_virConnectGetCapabilities(virConnectPtr conn, berth_virt_error *err) {
    berth_virt_begin(err);
    char *xml = virConnectGetCapabilities(conn);
    if (xml == NULL) {
        berth_virt_capture(err);
    }
    return xml;
}

char *berth_virConnectGetHostname(virConnectPtr conn, berth_virt_error *err) {
    berth_virt_begin(err);
    char *name = virConnectGetHostname(conn);
    if (name == NULL) {
        berth_virt_capture(err);
    }
    return name;
}

int berth_virConnectGetLibVersion(virConnectPtr conn, unsigned long *version, berth_virt_error *err) {
    berth_virt_begin(err);
    int rc = virConnectGetLibVersion(conn, version);
    if (rc < 0) {
        berth_virt_capture(err);
    }
    return rc;
}

int berth_virConnectGetVersion(virConnectPtr conn, unsigned long *version, berth_virt_error *err) {
    berth_virt_begin(err);
    int rc = virConnectGetVersion(conn, version);
    if (rc < 0) {
        berth_virt_capture(err);
    }
    return rc;
}

int berth_virNodeGetInfo(virConnectPtr conn, virNodeInfoPtr info, berth_virt_error *err) {
    berth_virt_begin(err);
    int rc = virNodeGetInfo(conn, info);
    if (rc < 0) {
        berth_virt_capture(err);
    }
    return rc;
}

int berth_virNodeGetFreeMemory(virConnectPtr conn, unsigned long long *bytes, berth_virt_error *err) {
    berth_virt_begin(err);
    unsigned long long free_bytes = virNodeGetFreeMemory(conn);
    if (free_bytes == 0 && virGetLastError() != NULL) {
        berth_virt_capture(err);
        return -1;
    }
    *bytes = free_bytes;
    return 0;
}

int berth_virConnectActiveVcpus(virConnectPtr conn, unsigned long long *vcpus, berth_virt_error *err) {
    berth_virt_begin(err);
    virDomainPtr *domains = NULL;
    int count = virConnectListAllDomains(conn, &domains, VIR_CONNECT_LIST_DOMAINS_ACTIVE);
    if (count < 0) {
        berth_virt_capture(err);
        return -1;
    }
    unsigned long long total = 0;
    for (int i = 0; i < count; i++) {
        virDomainInfo info;
        /* A domain that stops between listing and asking no longer uses vCPUs: skip it, keep going. */
        if (virDomainGetInfo(domains[i], &info) == 0) {
            total += info.nrVirtCpu;
        } else {
            virResetLastError();
        }
        virDomainFree(domains[i]);
    }
    free(domains);
    *vcpus = total;
    return 0;
}
