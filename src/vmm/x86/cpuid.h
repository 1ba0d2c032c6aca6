/* The CPUID table each vCPU sees: KVM's supported table with capsule's
 * topology (N cores in one socket), the KVM hypervisor leaves, and without
 * features the VMM does not emulate sensibly. */
#ifndef CAPSULE_VMM_X86_CPUID_H
#define CAPSULE_VMM_X86_CPUID_H

#include <linux/kvm.h>
#include <stdint.h>

#include "common/error.h"

/* KVM_GET_SUPPORTED_CPUID (the table grows until it fits); free() it. */
struct kvm_cpuid2 *cpuid_supported(int kvm_fd, cap_error_t *err);
/* A new table (free() it) for vCPU index of ncpus. */
struct kvm_cpuid2 *cpuid_for_vcpu(const struct kvm_cpuid2 *supported, int index, int ncpus);
/* The entry for function/index (index is ignored for leaves without subleaves), or NULL. */
struct kvm_cpuid_entry2 *cpuid_find(struct kvm_cpuid2 *cpuid, uint32_t function, uint32_t index);

#endif
