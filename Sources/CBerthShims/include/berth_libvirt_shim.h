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

#endif
