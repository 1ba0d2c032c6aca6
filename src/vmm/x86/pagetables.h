/* Identity page tables and the boot GDT that Linux's 64-bit and PVH entries expect. */
#ifndef CAPSULE_VMM_X86_PAGETABLES_H
#define CAPSULE_VMM_X86_PAGETABLES_H

#include "common/error.h"
#include "vmm/memory.h"

/* Selectors of the boot GDT at LAYOUT_GDT (4 entries, 32 bytes, up to LAYOUT_IDT). */
#define BOOT_GDT_CODE32 0x08 /* PVH entry: flat 32-bit code */
#define BOOT_GDT_CODE64 0x10 /* 64-bit boot protocol: __BOOT_CS */
#define BOOT_GDT_DATA 0x18   /* flat data for both: __BOOT_DS */
#define BOOT_GDT_ENTRIES 4

/* PML4 at LAYOUT_PML4, one PDPT after it, then four page directories of 2 MiB
 * pages: the first 4 GiB identity-mapped. */
#define BOOT_PAGE_TABLES_SIZE (6 * 4096)

int x86_write_identity_paging(struct guest_mem *mem, cap_error_t *err);
int x86_write_boot_gdt(struct guest_mem *mem, cap_error_t *err);

#endif
