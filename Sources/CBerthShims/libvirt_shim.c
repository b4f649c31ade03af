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

/* The wrappers below differ only in the call they make, so they share the begin/capture steps. */
#define BERTH_VIRT_INT(call)         \
    do {                             \
        berth_virt_begin(err);       \
        int rc = (call);             \
        if (rc < 0) {                \
            berth_virt_capture(err); \
        }                            \
        return rc;                   \
    } while (0)

#define BERTH_VIRT_PTR(type, call)   \
    do {                             \
        berth_virt_begin(err);       \
        type result = (call);        \
        if (result == NULL) {        \
            berth_virt_capture(err); \
        }                            \
        return result;               \
    } while (0)

virDomainPtr berth_virDomainDefineXML(virConnectPtr conn, const char *xml, berth_virt_error *err) {
    BERTH_VIRT_PTR(virDomainPtr, virDomainDefineXML(conn, xml));
}

virDomainPtr berth_virDomainLookupByUUIDString(virConnectPtr conn, const char *uuid, berth_virt_error *err) {
    BERTH_VIRT_PTR(virDomainPtr, virDomainLookupByUUIDString(conn, uuid));
}

virDomainPtr berth_virDomainLookupByName(virConnectPtr conn, const char *name, berth_virt_error *err) {
    BERTH_VIRT_PTR(virDomainPtr, virDomainLookupByName(conn, name));
}

int berth_virConnectListAllDomains(virConnectPtr conn, virDomainPtr **domains, unsigned int flags,
                                   berth_virt_error *err) {
    BERTH_VIRT_INT(virConnectListAllDomains(conn, domains, flags));
}

int berth_virDomainFree(virDomainPtr domain, berth_virt_error *err) {
    BERTH_VIRT_INT(virDomainFree(domain));
}

int berth_virDomainCreate(virDomainPtr domain, berth_virt_error *err) {
    BERTH_VIRT_INT(virDomainCreate(domain));
}

int berth_virDomainDestroy(virDomainPtr domain, berth_virt_error *err) {
    BERTH_VIRT_INT(virDomainDestroy(domain));
}

int berth_virDomainUndefine(virDomainPtr domain, berth_virt_error *err) {
    BERTH_VIRT_INT(virDomainUndefine(domain));
}

int berth_virDomainUndefineFlags(virDomainPtr domain, unsigned int flags, berth_virt_error *err) {
    BERTH_VIRT_INT(virDomainUndefineFlags(domain, flags));
}

int berth_virDomainGetState(virDomainPtr domain, int *state, int *reason, berth_virt_error *err) {
    BERTH_VIRT_INT(virDomainGetState(domain, state, reason, 0));
}

int berth_virDomainGetInfo(virDomainPtr domain, virDomainInfoPtr info, berth_virt_error *err) {
    BERTH_VIRT_INT(virDomainGetInfo(domain, info));
}

int berth_virDomainIsActive(virDomainPtr domain, berth_virt_error *err) {
    BERTH_VIRT_INT(virDomainIsActive(domain));
}

int berth_virDomainIsPersistent(virDomainPtr domain, berth_virt_error *err) {
    BERTH_VIRT_INT(virDomainIsPersistent(domain));
}

char *berth_virDomainGetXMLDesc(virDomainPtr domain, unsigned int flags, berth_virt_error *err) {
    BERTH_VIRT_PTR(char *, virDomainGetXMLDesc(domain, flags));
}

int berth_virDomainGetUUIDString(virDomainPtr domain, char *buf, berth_virt_error *err) {
    BERTH_VIRT_INT(virDomainGetUUIDString(domain, buf));
}

const char *berth_virDomainGetName(virDomainPtr domain, berth_virt_error *err) {
    BERTH_VIRT_PTR(const char *, virDomainGetName(domain));
}

int berth_virDomainSetMetadata(virDomainPtr domain, int type, const char *metadata, const char *key,
                               const char *uri, unsigned int flags, berth_virt_error *err) {
    BERTH_VIRT_INT(virDomainSetMetadata(domain, type, metadata, key, uri, flags));
}

char *berth_virDomainGetMetadata(virDomainPtr domain, int type, const char *uri, unsigned int flags,
                                 berth_virt_error *err) {
    BERTH_VIRT_PTR(char *, virDomainGetMetadata(domain, type, uri, flags));
}

virStoragePoolPtr berth_virStoragePoolLookupByName(virConnectPtr conn, const char *name, berth_virt_error *err) {
    BERTH_VIRT_PTR(virStoragePoolPtr, virStoragePoolLookupByName(conn, name));
}

virStoragePoolPtr berth_virStoragePoolDefineXML(virConnectPtr conn, const char *xml, berth_virt_error *err) {
    BERTH_VIRT_PTR(virStoragePoolPtr, virStoragePoolDefineXML(conn, xml, 0));
}

int berth_virStoragePoolFree(virStoragePoolPtr pool, berth_virt_error *err) {
    BERTH_VIRT_INT(virStoragePoolFree(pool));
}

int berth_virStoragePoolUndefine(virStoragePoolPtr pool, berth_virt_error *err) {
    BERTH_VIRT_INT(virStoragePoolUndefine(pool));
}

int berth_virStoragePoolBuild(virStoragePoolPtr pool, unsigned int flags, berth_virt_error *err) {
    BERTH_VIRT_INT(virStoragePoolBuild(pool, flags));
}

int berth_virStoragePoolCreate(virStoragePoolPtr pool, berth_virt_error *err) {
    BERTH_VIRT_INT(virStoragePoolCreate(pool, 0));
}

int berth_virStoragePoolSetAutostart(virStoragePoolPtr pool, int autostart, berth_virt_error *err) {
    BERTH_VIRT_INT(virStoragePoolSetAutostart(pool, autostart));
}

int berth_virStoragePoolIsActive(virStoragePoolPtr pool, berth_virt_error *err) {
    BERTH_VIRT_INT(virStoragePoolIsActive(pool));
}

int berth_virStoragePoolRefresh(virStoragePoolPtr pool, berth_virt_error *err) {
    BERTH_VIRT_INT(virStoragePoolRefresh(pool, 0));
}

char *berth_virStoragePoolGetXMLDesc(virStoragePoolPtr pool, berth_virt_error *err) {
    BERTH_VIRT_PTR(char *, virStoragePoolGetXMLDesc(pool, 0));
}

const char *berth_virStoragePoolGetName(virStoragePoolPtr pool, berth_virt_error *err) {
    BERTH_VIRT_PTR(const char *, virStoragePoolGetName(pool));
}

virStorageVolPtr berth_virStorageVolCreateXML(virStoragePoolPtr pool, const char *xml, unsigned int flags,
                                              berth_virt_error *err) {
    BERTH_VIRT_PTR(virStorageVolPtr, virStorageVolCreateXML(pool, xml, flags));
}

virStorageVolPtr berth_virStorageVolLookupByName(virStoragePoolPtr pool, const char *name, berth_virt_error *err) {
    BERTH_VIRT_PTR(virStorageVolPtr, virStorageVolLookupByName(pool, name));
}

int berth_virStorageVolFree(virStorageVolPtr volume, berth_virt_error *err) {
    BERTH_VIRT_INT(virStorageVolFree(volume));
}

char *berth_virStorageVolGetPath(virStorageVolPtr volume, berth_virt_error *err) {
    BERTH_VIRT_PTR(char *, virStorageVolGetPath(volume));
}

const char *berth_virStorageVolGetName(virStorageVolPtr volume, berth_virt_error *err) {
    BERTH_VIRT_PTR(const char *, virStorageVolGetName(volume));
}

int berth_virStorageVolDelete(virStorageVolPtr volume, berth_virt_error *err) {
    BERTH_VIRT_INT(virStorageVolDelete(volume, 0));
}

/* ---- Domain stats for the metrics poller (DomainStats.swift) ---------------------------------------------- */

int berth_virConnectGetAllDomainStats(virConnectPtr conn, unsigned int stats, unsigned int flags,
                                      virDomainStatsRecordPtr **records, berth_virt_error *err) {
    BERTH_VIRT_INT(virConnectGetAllDomainStats(conn, stats, records, flags));
}

void berth_virDomainStatsRecordListFree(virDomainStatsRecordPtr *records) {
    virDomainStatsRecordListFree(records);
}

int berth_virTypedParameterNumber(const virTypedParameter *param, double *value) {
    switch (param->type) {
    case VIR_TYPED_PARAM_INT:
        *value = (double)param->value.i;
        return 1;
    case VIR_TYPED_PARAM_UINT:
        *value = (double)param->value.ui;
        return 1;
    case VIR_TYPED_PARAM_LLONG:
        *value = (double)param->value.l;
        return 1;
    case VIR_TYPED_PARAM_ULLONG:
        *value = (double)param->value.ul;
        return 1;
    case VIR_TYPED_PARAM_DOUBLE:
        *value = param->value.d;
        return 1;
    case VIR_TYPED_PARAM_BOOLEAN:
        *value = param->value.b ? 1.0 : 0.0;
        return 1;
    default:
        return 0;
    }
}

void berth_virTypedParameterField(const virTypedParameter *param, char *buf) {
    memcpy(buf, param->field, VIR_TYPED_PARAM_FIELD_LENGTH);
    buf[VIR_TYPED_PARAM_FIELD_LENGTH] = '\0';
}
