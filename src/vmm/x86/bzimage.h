/* bzImage kernels: the setup header (x86 boot protocol 2.12+ with a 64-bit
 * entry), the protected-mode part and the compressed payload inside it. */
#ifndef CAPSULE_VMM_X86_BZIMAGE_H
#define CAPSULE_VMM_X86_BZIMAGE_H

#include <asm/bootparam.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "vmm/memory.h"

#define SETUP_HEADER_OFFSET 0x1f1
#define SETUP_HDRS_MAGIC 0x53726448 /* "HdrS" at 0x202 */

struct bzimage {
        struct setup_header hdr; /* zero past the end the image declares */
        size_t hdr_len;          /* bytes of the header the image has, from 0x1f1 */
        const uint8_t *kernel;   /* protected-mode part: loaded, entered at +0x200 */
        size_t kernel_offset;    /* where it starts in the file */
        size_t kernel_size;
        const uint8_t *payload;  /* the compressed vmlinux in it; NULL if not described */
        size_t payload_size;
};

bool bzimage_detect(const uint8_t *data, size_t size);
/* Check the header (version >= 2.06, XLF_KERNEL_64) and locate the parts. */
int bzimage_parse(const uint8_t *data, size_t size, struct bzimage *bz, cap_error_t *err);
/* Load address (pref_address, aligned to kernel_alignment) and the end of the memory
 * the kernel uses while decompressing itself (load + init_size). */
void bzimage_place(const struct bzimage *bz, uint64_t *load, uint64_t *end);
/* Copy the protected-mode part to load: from fd (the file parsed, without touching its mapping)
 * if fd >= 0, else from bz->kernel. */
int bzimage_load(struct guest_mem *mem, const struct bzimage *bz, uint64_t load, int fd, cap_error_t *err);
/* The decompressed size the kernel build appends to the payload (0 if unknown). */
size_t bzimage_payload_size_hint(const struct bzimage *bz);

#endif
