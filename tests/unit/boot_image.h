/* Kernels synthesized for the x86 boot tests (test_vmm_boot*.c), so that a test says exactly
 * which header field drives which result: an ELF vmlinux (with or without the PVH note) and
 * a bzImage around an optional payload, written to temporary files; and what the tests read
 * back from guest memory. */
#ifndef CAPSULE_TESTS_UNIT_BOOT_IMAGE_H
#define CAPSULE_TESTS_UNIT_BOOT_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "vmm/memory.h"
#include "vmm/vm.h"
#include "vmm/x86/boot.h"

#define MIB (1ULL << 20)
#define GIB (1ULL << 30)
#define ELF_DATA_OFFSET 0x200
#define KERNEL_PADDR 0x1000000ULL
#define KERNEL_VADDR 0xffffffff81000000ULL

#define BZ_SETUP_SECTS 4
#define BZ_PM_OFFSET ((BZ_SETUP_SECTS + 1) * 512)
#define BZ_PAYLOAD_OFFSET 0x1000

void unlink_tmp(char **path);
#define cleanup_tmp __attribute__((cleanup(unlink_tmp)))
#define cleanup_mem __attribute__((cleanup(guest_mem_destroy)))

/* data in a fresh temporary file; its path, or NULL. */
char *write_tmp(const void *data, size_t len);
bool mem_new(struct guest_mem *gm, uint64_t size);
/* A VM of memory bytes booting kernel with "console=ttyS0 panic=-1". */
struct vm_config boot_config(char *kernel, uint64_t memory);
/* x86_load_linux() of kernel (and initrd, unless NULL) into fresh guest memory gm of memory
 * bytes, the bzImage payload decompressed as how says; false (saying why) if that failed. */
bool kernel_loaded(struct guest_mem *gm, char *kernel, char *initrd, uint64_t memory, enum vm_bzimage_decompress how,
                   struct boot_info *boot);
/* Whether err says needle (and if not, what it said). */
bool err_has(const cap_error_t err, const char *needle);

struct elf_opts {
        uint64_t vaddr, paddr, entry;
        uint32_t filesz, memsz;
        bool pvh;
        uint32_t pvh_entry;
};

/* A 64-bit entry at KERNEL_VADDR + 0x100; the PVH one at KERNEL_PADDR + 0x1234. */
extern const struct elf_opts vmlinux_opts, pvh_opts;

/* Byte i of every loaded segment and of the bzImage's protected-mode part. */
uint8_t pattern(size_t i);
/* One PT_LOAD (pattern bytes, then bss) and, for PVH, a PT_NOTE with the Xen entry note. */
uint8_t *build_elf(const struct elf_opts *o, size_t *size);
/* build_elf(o) written to a temporary file; NULL on failure. */
char *write_elf(const struct elf_opts *o);

struct bz_opts {
        uint16_t version;
        uint16_t xloadflags;
        uint32_t initrd_addr_max;
        const uint8_t *payload;
        size_t payload_len;
};

/* Boot protocol 2.15, 64-bit entry, initrd anywhere below 2 GiB, no payload. */
extern const struct bz_opts bz_default;

/* Setup sectors with a header, then a protected-mode part: 4 KiB of pattern bytes and the payload. */
uint8_t *build_bzimage(const struct bz_opts *o, size_t *size);
/* build_bzimage(o) written to a temporary file; NULL on failure. */
char *write_bzimage(const struct bz_opts *o);

const struct boot_params *zero_page(const struct guest_mem *gm);
/* Whether guest memory at gpa holds pattern(0 .. len-1); holds only zeroes. */
bool guest_has_pattern(const struct guest_mem *gm, uint64_t gpa, size_t len);
bool guest_is_zero(const struct guest_mem *gm, uint64_t gpa, size_t len);

#endif
