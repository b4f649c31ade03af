#ifndef BERTH_LIBVIRT_LIFECYCLE_SHIM_H
#define BERTH_LIBVIRT_LIFECYCLE_SHIM_H

#include "berth_libvirt_shim.h"

/* Pausing a guest around a disk snapshot, so the copy is what a crash at that instant would leave. Same
 * contract as the other wrappers: libvirt's return value, *err filled on failure in the same call. */
int berth_virDomainSuspend(virDomainPtr domain, berth_virt_error *err);
int berth_virDomainResume(virDomainPtr domain, berth_virt_error *err);

#endif
