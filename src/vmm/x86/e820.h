/* The guest's memory map, shared by the zero page and the PVH start_info. */
#ifndef CAPSULE_VMM_X86_E820_H
#define CAPSULE_VMM_X86_E820_H

#include <stdint.h>

#include "vmm/memory.h"

#define E820_MAP_MAX 8

/* Types as in the BIOS E820 interface (also used by PVH memmap entries). */
#define E820_TYPE_RAM 1
#define E820_TYPE_RESERVED 2

struct e820_range {
        uint64_t addr, size;
        uint32_t type;
};

struct e820_map {
        struct e820_range r[E820_MAP_MAX];
        int n;
};

/* RAM [0, EBDA), reserved EBDA..1 MiB (MP and ACPI tables), RAM [1 MiB, low end),
 * the ECAM window reserved (Linux accepts MMCONFIG only in a reserved range) and
 * RAM above 4 GiB for what did not fit below the PCI hole. */
void e820_build(const struct guest_mem *mem, struct e820_map *map);

#endif
