/* ELF64 kernel images (vmlinux): validation, the PVH entry note and loading
 * PT_LOAD segments at their physical addresses. The file is untrusted input:
 * every offset and size is checked before use. */
#ifndef CAPSULE_VMM_X86_ELF_H
#define CAPSULE_VMM_X86_ELF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "vmm/memory.h"

#define XEN_ELFNOTE_PHYS32_ENTRY 18

struct elf_image {
        uint64_t entry64;   /* physical address of e_entry (startup_64 for a vmlinux) */
        uint64_t pvh_entry; /* from the Xen PHYS32_ENTRY note, 0 if there is none */
        uint64_t start;     /* lowest physical address of a PT_LOAD segment */
        uint64_t end;       /* end of the highest one (p_paddr + p_memsz) */
};

bool elf_is_elf(const uint8_t *data, size_t size);
/* Check the headers, segment bounds and notes; describe the image. */
int elf_parse(const uint8_t *data, size_t size, struct elf_image *img, cap_error_t *err);
/* Copy the PT_LOAD segments into guest memory (their bss is left as fresh RAM has it, zero);
 * data must have passed elf_parse(). fd >= 0 is the file data maps: the segments are then
 * copied from it, without touching the mapping's pages. */
int elf_load(struct guest_mem *mem, const uint8_t *data, size_t size, int fd, cap_error_t *err);

#endif
