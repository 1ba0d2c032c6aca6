/* Loading a guest and preparing its vCPUs: Linux through the 64-bit boot
 * protocol (vmlinux ELF or bzImage) or the PVH entry, and test payloads in
 * 64-bit ring 3. */
#ifndef CAPSULE_VMM_X86_BOOT_H
#define CAPSULE_VMM_X86_BOOT_H

#include <stdint.h>

#include "common/error.h"
#include "vmm/memory.h"
#include "vmm/vm.h"

enum boot_mode { BOOT_LINUX64, BOOT_PVH, BOOT_RING3 };

struct boot_info {
        enum boot_mode mode;
        uint64_t entry;    /* guest-physical (or, for ring 3, virtual = physical) entry point */
        uint64_t arg;      /* RSI = zero page (LINUX64), EBX = start_info (PVH) */
        uint64_t stack_top; /* ring 3: top of the per-vCPU stacks area */
};

/* Load cfg->kernel (and initrd, cmdline) and write every table the guest reads:
 * zero page or PVH start_info with the e820 map, MP table, ACPI tables. device_cmdline
 * (NULL: none) is what the devices add to the command line (virtio_mmio.device=...). */
int x86_load_linux(struct guest_mem *mem, const struct vm_config *cfg, const char *device_cmdline,
                   struct boot_info *boot, cap_error_t *err);
/* Load a static ELF test payload and build user page tables and a ring-3 GDT. */
int x86_load_payload(struct guest_mem *mem, const struct vm_config *cfg, struct boot_info *boot, cap_error_t *err);
/* Set CPUID, MSRs, LAPIC (LINT0 ExtINT, LINT1 NMI), FPU, special and general registers of one vCPU.
 * Ring-3 payloads get RDI = vCPU index, RSI = vCPU count and their own stack. */
int x86_setup_vcpu(int kvm_fd, int vcpu_fd, int index, int ncpus, const struct boot_info *boot, cap_error_t *err);

#endif
