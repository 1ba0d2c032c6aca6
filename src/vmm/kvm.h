/* /dev/kvm: opening it with clear errors, the capabilities capsule needs, and
 * which flavour of KVM this host has (hardware VMX/SVM or PVM). */
#ifndef CAPSULE_VMM_KVM_H
#define CAPSULE_VMM_KVM_H

#include <stdbool.h>

#include "common/error.h"

enum kvm_flavour {
        KVM_FLAVOUR_HW,  /* kvm_intel or kvm_amd: guest ring 0 runs in hardware */
        KVM_FLAVOUR_PVM, /* kvm_pvm: only guest ring 3 runs natively, ring 0 is emulated */
};

/* The one-line refusal for booting a stock kernel on PVM. */
#define KVM_PVM_KERNEL_REFUSAL                                                                          \
        "this host's /dev/kvm is PVM (kvm_pvm): it emulates guest ring-0 code, so a stock Linux kernel " \
        "cannot boot here; run it inside the testbed (tests/testbed/run) or on a host with kvm_intel/kvm_amd"

/* Open /dev/kvm (or path), check API version 12 and the required capabilities. Returns the fd. */
int kvm_open(const char *path, cap_error_t *err);
/* Flavour from the loaded modules under sys_module (normally /sys/module). */
enum kvm_flavour kvm_flavour_at(const char *sys_module);
enum kvm_flavour kvm_flavour(void);
/* KVM_CHECK_EXTENSION on the system fd; 0 when absent. */
int kvm_cap(int kvm_fd, long cap);

#endif
