/* ACPI tables at LAYOUT_ACPI: RSDP (ACPI 2.0+), XSDT, FADT with FACS and DSDT,
 * MADT and MCFG. The machine uses legacy fixed hardware (PM1a event/control
 * blocks and a reset register in I/O space), not the hardware-reduced model. */
#ifndef CAPSULE_VMM_X86_ACPI_H
#define CAPSULE_VMM_X86_ACPI_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "vmm/memory.h"

#define ACPI_AREA_SIZE 0x20000 /* LAYOUT_ACPI up to 1 MiB */

struct acpi_header {
        char signature[4];
        uint32_t length;
        uint8_t revision;
        uint8_t checksum;
        char oem_id[6];
        char oem_table_id[8];
        uint32_t oem_revision;
        char creator_id[4];
        uint32_t creator_revision;
} __attribute__((packed));

struct acpi_rsdp {
        char signature[8]; /* "RSD PTR " */
        uint8_t checksum;  /* first 20 bytes */
        char oem_id[6];
        uint8_t revision;  /* 2: ACPI 2.0+ */
        uint32_t rsdt_address;
        uint32_t length;
        uint64_t xsdt_address;
        uint8_t extended_checksum; /* all 36 bytes */
        uint8_t reserved[3];
} __attribute__((packed));

/* Build every table for ncpus vCPUs and copy them to guest memory; *rsdp gets the
 * RSDP's guest-physical address (the zero page's acpi_rsdp_addr, PVH rsdp_paddr). */
/* The byte that makes a firmware table sum to zero (ACPI and MP tables). */
uint8_t table_checksum(const void *p, size_t n);

int acpi_write(struct guest_mem *mem, int ncpus, uint64_t *rsdp, cap_error_t *err);

#endif
