/* What the kernel reads at entry: the zero page (struct boot_params) for the
 * 64-bit boot protocol, or the PVH hvm_start_info. */
#ifndef CAPSULE_VMM_X86_BOOTPARAMS_H
#define CAPSULE_VMM_X86_BOOTPARAMS_H

#include <asm/bootparam.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "vmm/memory.h"
#include "vmm/x86/e820.h"

/* Xen's public start_info.h (PVH boot ABI), version 1 with the memory map. */
#define HVM_START_MAGIC 0x336ec578
#define HVM_START_VERSION 1

struct hvm_start_info {
        uint32_t magic;
        uint32_t version;
        uint32_t flags;
        uint32_t nr_modules;
        uint64_t modlist_paddr;
        uint64_t cmdline_paddr;
        uint64_t rsdp_paddr;
        uint64_t memmap_paddr; /* version 1 */
        uint32_t memmap_entries;
        uint32_t reserved;
} __attribute__((packed));

struct hvm_modlist_entry {
        uint64_t paddr;
        uint64_t size;
        uint64_t cmdline_paddr;
        uint64_t reserved;
} __attribute__((packed));

struct hvm_memmap_table_entry {
        uint64_t addr;
        uint64_t size;
        uint32_t type; /* E820 types */
        uint32_t reserved;
} __attribute__((packed));

/* Where the modules list and memory map go, right after start_info. */
#define PVH_MODLIST_OFFSET 0x40
#define PVH_MEMMAP_OFFSET 0x80

/* The kernel's COMMAND_LINE_SIZE on x86, for images without a setup header. */
#define VMLINUX_CMDLINE_SIZE 2048

struct boot_args {
        uint64_t cmdline_addr;
        uint64_t initrd_addr, initrd_size; /* size 0: no initrd */
        uint64_t rsdp_addr;
        const struct e820_map *e820;
};

/* Write the zero page at LAYOUT_ZERO_PAGE. hdr/hdr_len: the bzImage's setup header, or
 * NULL to synthesize one for a vmlinux. */
int bootparams_write(struct guest_mem *mem, const struct setup_header *hdr, size_t hdr_len,
                     const struct boot_args *args, cap_error_t *err);
/* Write hvm_start_info at LAYOUT_PVH_START_INFO (with its module list and memory map). */
int pvh_start_info_write(struct guest_mem *mem, const struct boot_args *args, cap_error_t *err);

#endif
