/* The machine a ring-3 test payload starts in, shared by the payload loader
 * (which writes the GDT and page tables) and the vCPU setup (which loads them). */
#ifndef CAPSULE_VMM_X86_RING3_H
#define CAPSULE_VMM_X86_RING3_H

#include "vmm/x86/layout.h"

/* GDT at LAYOUT_GDT: null, null, 64-bit user code, user data; the same slots
 * as Linux's boot CS 0x10 / DS 0x18, with DPL 3 and RPL 3. */
#define RING3_GDT_ENTRIES 4
#define RING3_CS (0x10 | 3)
#define RING3_DS (0x18 | 3)
#define RING3_GDT_CODE 0x00affb000000ffffULL /* P, DPL 3, code exec/read accessed, L, G */
#define RING3_GDT_DATA 0x00cff3000000ffffULL /* P, DPL 3, data read/write accessed, D/B, G */

/* Page tables at LAYOUT_PML4: one PDPT, then one page directory (2 MiB pages) per GiB. */
#define RING3_PDPT (LAYOUT_PML4 + 0x1000)
#define RING3_PD (LAYOUT_PML4 + 0x2000)
#define RING3_MAX_GIB (((LAYOUT_EBDA & ~0xfffULL) - RING3_PD) / 0x1000)

#define RING3_STACK_SIZE 0x10000ULL /* per vCPU, below boot_info.stack_top */
#define RING3_RFLAGS 0x3002ULL      /* IOPL 3 (port I/O allowed), interrupts off */

#endif
