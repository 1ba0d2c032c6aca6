/* Intel MultiProcessor Specification 1.4 tables at LAYOUT_EBDA: the fallback
 * description of CPUs and interrupts for a guest booted without ACPI. */
#ifndef CAPSULE_VMM_X86_MPTABLE_H
#define CAPSULE_VMM_X86_MPTABLE_H

#include "common/error.h"
#include "vmm/memory.h"

/* The most vCPUs the tables can describe: APIC ids 0..ncpus-1, the IOAPIC takes id ncpus. */
#define X86_MAX_CPUS 254

/* Floating pointer, then the configuration table: one processor entry per vCPU,
 * the ISA bus, the IOAPIC, ISA IRQs 0-15 on IOAPIC pins 0-15 (identity, as KVM's
 * default GSI routing) and LINT0 ExtINT / LINT1 NMI on every local APIC. */
int mptable_write(struct guest_mem *mem, int ncpus, cap_error_t *err);

/* Bytes the tables take for ncpus (they must fit in [LAYOUT_EBDA, LAYOUT_ACPI)). */
size_t mptable_size(int ncpus);

#endif
