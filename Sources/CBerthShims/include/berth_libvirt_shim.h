#ifndef BERTH_LIBVIRT_SHIM_H
#define BERTH_LIBVIRT_SHIM_H

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

/* libvirt keeps the last error in thread-local state. Swift tasks can hop threads between two calls, so every
 * wrapper copies the error out in the same call, on the same thread, before returning. */
typedef struct {
    int code;   /* virErrorNumber; 0 when libvirt failed without saying why */
    int domain; /* virErrorDomain */
    char message[1024];
} berth_virt_error;

/* Each wrapper returns what the libvirt call returns; on failure (NULL or -1) *err is filled. */
virConnectPtr berth_virConnectOpen(const char *uri, berth_virt_error *err);
int berth_virConnectClose(virConnectPtr conn, berth_virt_error *err);
int berth_virConnectIsAlive(virConnectPtr conn, berth_virt_error *err);
char *berth_virConnectGetCapabilities(virConnectPtr conn, berth_virt_error *err);
char *berth_virConnectGetHostname(virConnectPtr conn, berth_virt_error *err);
int berth_virConnectGetLibVersion(virConnectPtr conn, unsigned long *version, berth_virt_error *err);
int berth_virConnectGetVersion(virConnectPtr conn, unsigned long *version, berth_virt_error *err);
int berth_virNodeGetInfo(virConnectPtr conn, virNodeInfoPtr info, berth_virt_error *err);

/* virNodeGetFreeMemory returns 0 for both "no memory free" and "failed"; this returns -1 on failure. */
int berth_virNodeGetFreeMemory(virConnectPtr conn, unsigned long long *bytes, berth_virt_error *err);

/* Sum of vCPUs of running domains. Done in C because listing hands back an array of domain references that
 * must each be freed; keeping that loop here means Swift never holds a half-freed list. */
int berth_virConnectActiveVcpus(virConnectPtr conn, unsigned long long *vcpus, berth_virt_error *err);

/* Domains. Every virDomainPtr returned is the caller's reference; release it with berth_virDomainFree. */
virDomainPtr berth_virDomainDefineXML(virConnectPtr conn, const char *xml, berth_virt_error *err);
virDomainPtr berth_virDomainLookupByUUIDString(virConnectPtr conn, const char *uuid, berth_virt_error *err);
virDomainPtr berth_virDomainLookupByName(virConnectPtr conn, const char *name, berth_virt_error *err);
/* On success *domains is a malloc'ed array of the returned count; each element and the array are the caller's. */
int berth_virConnectListAllDomains(virConnectPtr conn, virDomainPtr **domains, unsigned int flags,
                                   berth_virt_error *err);
int berth_virDomainFree(virDomainPtr domain, berth_virt_error *err);
int berth_virDomainCreate(virDomainPtr domain, berth_virt_error *err);
int berth_virDomainDestroy(virDomainPtr domain, berth_virt_error *err);
int berth_virDomainUndefine(virDomainPtr domain, berth_virt_error *err);
int berth_virDomainUndefineFlags(virDomainPtr domain, unsigned int flags, berth_virt_error *err);
int berth_virDomainGetState(virDomainPtr domain, int *state, int *reason, berth_virt_error *err);
int berth_virDomainGetInfo(virDomainPtr domain, virDomainInfoPtr info, berth_virt_error *err);
int berth_virDomainIsActive(virDomainPtr domain, berth_virt_error *err);
int berth_virDomainIsPersistent(virDomainPtr domain, berth_virt_error *err);
char *berth_virDomainGetXMLDesc(virDomainPtr domain, unsigned int flags, berth_virt_error *err);
/* Fills buf (at least VIR_UUID_STRING_BUFLEN bytes). */
int berth_virDomainGetUUIDString(virDomainPtr domain, char *buf, berth_virt_error *err);
/* The name belongs to the domain object: copy it, do not free it. */
const char *berth_virDomainGetName(virDomainPtr domain, berth_virt_error *err);
int berth_virDomainSetMetadata(virDomainPtr domain, int type, const char *metadata, const char *key,
                               const char *uri, unsigned int flags, berth_virt_error *err);
char *berth_virDomainGetMetadata(virDomainPtr domain, int type, const char *uri, unsigned int flags,
                                 berth_virt_error *err);

/* Storage pools and volumes; each returned pointer is the caller's reference, released by the matching Free. */
virStoragePoolPtr berth_virStoragePoolLookupByName(virConnectPtr conn, const char *name, berth_virt_error *err);
virStoragePoolPtr berth_virStoragePoolDefineXML(virConnectPtr conn, const char *xml, berth_virt_error *err);
int berth_virStoragePoolFree(virStoragePoolPtr pool, berth_virt_error *err);
int berth_virStoragePoolUndefine(virStoragePoolPtr pool, berth_virt_error *err);
int berth_virStoragePoolBuild(virStoragePoolPtr pool, unsigned int flags, berth_virt_error *err);
int berth_virStoragePoolCreate(virStoragePoolPtr pool, berth_virt_error *err);
int berth_virStoragePoolSetAutostart(virStoragePoolPtr pool, int autostart, berth_virt_error *err);
int berth_virStoragePoolIsActive(virStoragePoolPtr pool, berth_virt_error *err);
int berth_virStoragePoolRefresh(virStoragePoolPtr pool, berth_virt_error *err);
char *berth_virStoragePoolGetXMLDesc(virStoragePoolPtr pool, berth_virt_error *err);
const char *berth_virStoragePoolGetName(virStoragePoolPtr pool, berth_virt_error *err);
virStorageVolPtr berth_virStorageVolCreateXML(virStoragePoolPtr pool, const char *xml, unsigned int flags,
                                              berth_virt_error *err);
virStorageVolPtr berth_virStorageVolLookupByName(virStoragePoolPtr pool, const char *name, berth_virt_error *err);
int berth_virStorageVolFree(virStorageVolPtr volume, berth_virt_error *err);
char *berth_virStorageVolGetPath(virStorageVolPtr volume, berth_virt_error *err);
const char *berth_virStorageVolGetName(virStorageVolPtr volume, berth_virt_error *err);
int berth_virStorageVolDelete(virStorageVolPtr volume, berth_virt_error *err);

/* ---- Domain stats for the metrics poller (DomainStats.swift) ---------------------------------------------- */

/* virConnectGetAllDomainStats. On success *records is a NULL-terminated array of the returned count; release it
 * with berth_virDomainStatsRecordListFree (which also drops each record's domain reference). */
int berth_virConnectGetAllDomainStats(virConnectPtr conn, unsigned int stats, unsigned int flags,
                                      virDomainStatsRecordPtr **records, berth_virt_error *err);
void berth_virDomainStatsRecordListFree(virDomainStatsRecordPtr *records);

/* A typed parameter's value as a double, so Swift need not read libvirt's union: 1 for the numeric types (int,
 * uint, llong, ullong, double, boolean), 0 for strings and types newer than this code (skipped). */
int berth_virTypedParameterNumber(const virTypedParameter *param, double *value);

/* The domain-stats field names libvirt writes (block.0.rd.bytes, ...) fit VIR_TYPED_PARAM_FIELD_LENGTH; this copies
 * the possibly unterminated field into buf (at least VIR_TYPED_PARAM_FIELD_LENGTH + 1 bytes) with a terminator. */
void berth_virTypedParameterField(const virTypedParameter *param, char *buf);

#endif
