/* x86 Linux loading: ELF (PVH and 64-bit entries), bzImage, host decompression of
 * the bzImage payload, zero page, PVH start_info, e820, initrd, command line, MP
 * table, page tables and GDT. Kernels are synthesized here, so the tests say
 * exactly which header field drives which result. */
#include <asm/bootparam.h>
#include <elf.h>
#include <lz4.h>
#include <lzma.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "check.h"
#include "common/error.h"
#include "common/util.h"
#include "vmm/memory.h"
#include "vmm/vm.h"
#include "vmm/x86/boot.h"
#include "vmm/x86/bootparams.h"
#include "vmm/x86/bzimage.h"
#include "vmm/x86/decompress.h"
#include "vmm/x86/e820.h"
#include "vmm/x86/elf.h"
#include "vmm/x86/layout.h"
#include "vmm/x86/mptable.h"
#include "vmm/x86/pagetables.h"

#define MIB (1ULL << 20)
#define GIB (1ULL << 30)
#define ELF_DATA_OFFSET 0x200
#define KERNEL_PADDR 0x1000000ULL
#define KERNEL_VADDR 0xffffffff81000000ULL

/* ---- fixtures ---- */

static void unlink_tmp(char **path)
{
        if (*path) {
                unlink(*path);
                free(*path);
        }
}
#define cleanup_tmp __attribute__((cleanup(unlink_tmp)))

static char *write_tmp(const void *data, size_t len)
{
        char *path = xstrdup("/tmp/capsule-test-boot-XXXXXX");
        int fd = mkstemp(path);

        if (fd < 0) {
                free(path);
                return NULL;
        }
        if (write_all(fd, data, len) < 0) {
                close(fd);
                unlink(path);
                free(path);
                return NULL;
        }
        close(fd);
        return path;
}

static bool mem_new(struct guest_mem *gm, uint64_t size)
{
        cleanup_error cap_error_t err = NULL;

        return guest_mem_init(gm, size, false, &err) == 0;
}
#define cleanup_mem __attribute__((cleanup(guest_mem_destroy)))

static struct vm_config config(char *kernel, uint64_t memory)
{
        return (struct vm_config){ .kernel = kernel, .cmdline = "console=ttyS0 panic=-1", .cpus = 2, .memory = memory };
}

static bool err_has(const cap_error_t err, const char *needle)
{
        if (err == NULL || err->msg == NULL || strstr(err->msg, needle) == NULL) {
                fprintf(stderr, "error %s does not contain \"%s\"\n", err && err->msg ? err->msg : "(none)", needle);
                return false;
        }
        return true;
}

struct elf_opts {
        uint64_t vaddr, paddr, entry;
        uint32_t filesz, memsz;
        bool pvh;
        uint32_t pvh_entry;
};

static uint8_t pattern(size_t i)
{
        return (uint8_t)(i * 7 + 1);
}

/* One PT_LOAD (pattern bytes, then bss) and, for PVH, a PT_NOTE with the Xen entry note. */
static uint8_t *build_elf(const struct elf_opts *o, size_t *size)
{
        uint8_t *buf = xmalloc0(ELF_DATA_OFFSET + o->filesz);
        Elf64_Ehdr *eh = (Elf64_Ehdr *)buf;
        Elf64_Phdr *ph = (Elf64_Phdr *)(buf + sizeof(*eh));

        memcpy(eh->e_ident, ELFMAG, SELFMAG);
        eh->e_ident[EI_CLASS] = ELFCLASS64;
        eh->e_ident[EI_DATA] = ELFDATA2LSB;
        eh->e_ident[EI_VERSION] = EV_CURRENT;
        eh->e_type = ET_EXEC;
        eh->e_machine = EM_X86_64;
        eh->e_version = EV_CURRENT;
        eh->e_entry = o->entry;
        eh->e_phoff = sizeof(*eh);
        eh->e_ehsize = sizeof(*eh);
        eh->e_phentsize = sizeof(*ph);
        eh->e_phnum = o->pvh ? 2 : 1;
        ph[0] = (Elf64_Phdr){ .p_type = PT_LOAD, .p_flags = PF_R | PF_X, .p_offset = ELF_DATA_OFFSET,
                              .p_vaddr = o->vaddr, .p_paddr = o->paddr, .p_filesz = o->filesz,
                              .p_memsz = o->memsz, .p_align = 0x200000 };
        if (o->pvh) {
                Elf64_Nhdr nh = { .n_namesz = 4, .n_descsz = 4, .n_type = XEN_ELFNOTE_PHYS32_ENTRY };

                ph[1] = (Elf64_Phdr){ .p_type = PT_NOTE, .p_offset = 0x100, .p_filesz = 20, .p_align = 4 };
                memcpy(buf + 0x100, &nh, sizeof(nh));
                memcpy(buf + 0x10c, "Xen", 4);
                memcpy(buf + 0x110, &o->pvh_entry, 4);
        }
        for (size_t i = 0; i < o->filesz; i++)
                buf[ELF_DATA_OFFSET + i] = pattern(i);
        *size = ELF_DATA_OFFSET + o->filesz;
        return buf;
}

static const struct elf_opts vmlinux_opts = {
        .vaddr = KERNEL_VADDR, .paddr = KERNEL_PADDR, .entry = KERNEL_VADDR + 0x100,
        .filesz = 0x3000, .memsz = 0x5000,
};
static const struct elf_opts pvh_opts = {
        .vaddr = KERNEL_VADDR, .paddr = KERNEL_PADDR, .entry = KERNEL_PADDR,
        .filesz = 0x3000, .memsz = 0x5000, .pvh = true, .pvh_entry = KERNEL_PADDR + 0x1234,
};

#define BZ_SETUP_SECTS 4
#define BZ_PM_OFFSET ((BZ_SETUP_SECTS + 1) * 512)
#define BZ_PAYLOAD_OFFSET 0x1000

struct bz_opts {
        uint16_t version;
        uint16_t xloadflags;
        uint32_t initrd_addr_max;
        const uint8_t *payload;
        size_t payload_len;
};

/* Setup sectors with a header, then a protected-mode part: 4 KiB of pattern bytes
 * and the payload. */
static uint8_t *build_bzimage(const struct bz_opts *o, size_t *size)
{
        size_t pm_size = BZ_PAYLOAD_OFFSET + o->payload_len + 0x100;
        uint8_t *buf = xmalloc0(BZ_PM_OFFSET + pm_size);
        struct setup_header h = {
                .setup_sects = BZ_SETUP_SECTS,
                .boot_flag = 0xaa55,
                .header = SETUP_HDRS_MAGIC,
                .version = o->version,
                .loadflags = LOADED_HIGH,
                .initrd_addr_max = o->initrd_addr_max,
                .kernel_alignment = 0x200000,
                .relocatable_kernel = 1,
                .xloadflags = o->xloadflags,
                .cmdline_size = 2047,
                .payload_offset = o->payload_len ? BZ_PAYLOAD_OFFSET : 0,
                .payload_length = (uint32_t)o->payload_len,
                .pref_address = KERNEL_PADDR,
                .init_size = 0x800000,
        };

        memcpy(buf + SETUP_HEADER_OFFSET, &h, sizeof(h));
        /* The jump over the header also gives its length. */
        buf[0x200] = 0xeb;
        buf[0x201] = (uint8_t)(SETUP_HEADER_OFFSET + sizeof(h) - 0x202);
        for (size_t i = 0; i < BZ_PAYLOAD_OFFSET; i++)
                buf[BZ_PM_OFFSET + i] = pattern(i);
        if (o->payload_len)
                memcpy(buf + BZ_PM_OFFSET + BZ_PAYLOAD_OFFSET, o->payload, o->payload_len);
        *size = BZ_PM_OFFSET + pm_size;
        return buf;
}

static const struct bz_opts bz_default = { .version = 0x020f, .xloadflags = XLF_KERNEL_64, .initrd_addr_max = 0x7fffffff };

/* build_elf(o) written to a temporary file; NULL on failure. */
static char *write_elf(const struct elf_opts *o)
{
        size_t size;
        cleanup_free uint8_t *elf = build_elf(o, &size);

        return write_tmp(elf, size);
}

/* build_bzimage(o) written to a temporary file; NULL on failure. */
static char *write_bzimage(const struct bz_opts *o)
{
        size_t size;
        cleanup_free uint8_t *bz = build_bzimage(o, &size);

        return write_tmp(bz, size);
}

static const struct boot_params *zero_page(const struct guest_mem *gm)
{
        return guest_mem_ptr(gm, LAYOUT_ZERO_PAGE, sizeof(struct boot_params));
}

static bool guest_has_pattern(const struct guest_mem *gm, uint64_t gpa, size_t len)
{
        const uint8_t *p = guest_mem_ptr(gm, gpa, len);

        if (p == NULL)
                return false;
        for (size_t i = 0; i < len; i++)
                if (p[i] != pattern(i))
                        return false;
        return true;
}

static bool guest_is_zero(const struct guest_mem *gm, uint64_t gpa, size_t len)
{
        const uint8_t *p = guest_mem_ptr(gm, gpa, len);

        if (p == NULL)
                return false;
        for (size_t i = 0; i < len; i++)
                if (p[i])
                        return false;
        return true;
}

/* ---- ELF ---- */

TEST(elf_with_pvh_note_boots_pvh)
{
        cleanup_mem struct guest_mem gm = { .memfd = -1 };
        cleanup_error cap_error_t err = NULL;
        cleanup_tmp char *path = NULL;
        struct boot_info boot = { 0 };
        const struct hvm_start_info *si;
        const struct hvm_memmap_table_entry *map;

        path = write_elf(&pvh_opts);
        CHECK(path != NULL);
        CHECK(mem_new(&gm, 512 * MIB));
        struct vm_config cfg = config(path, 512 * MIB);
        CHECK(x86_load_linux(&gm, &cfg, NULL, &boot, &err) == 0);
        CHECK(boot.mode == BOOT_PVH);
        CHECK(boot.entry == KERNEL_PADDR + 0x1234);
        CHECK(boot.arg == LAYOUT_PVH_START_INFO);
        CHECK(guest_has_pattern(&gm, KERNEL_PADDR, 0x3000));
        CHECK(guest_is_zero(&gm, KERNEL_PADDR + 0x3000, 0x2000));

        si = guest_mem_ptr(&gm, LAYOUT_PVH_START_INFO, sizeof(*si));
        CHECK(si != NULL);
        CHECK(si->magic == 0x336ec578);
        CHECK(si->version == 1);
        CHECK(si->cmdline_paddr == LAYOUT_CMDLINE);
        CHECK_STR((const char *)guest_mem_ptr(&gm, LAYOUT_CMDLINE, 1), "console=ttyS0 panic=-1");
        CHECK(si->rsdp_paddr == LAYOUT_ACPI);
        CHECK(si->nr_modules == 0);
        CHECK(si->memmap_entries == 4);
        map = guest_mem_ptr(&gm, si->memmap_paddr, si->memmap_entries * sizeof(*map));
        CHECK(map != NULL);
        CHECK(map[0].addr == 0 && map[0].size == LAYOUT_EBDA && map[0].type == E820_TYPE_RAM);
        CHECK(map[2].addr == LAYOUT_HIMEM && map[2].addr + map[2].size == 512 * MIB && map[2].type == E820_TYPE_RAM);
}

TEST(elf_without_note_uses_physical_64bit_entry)
{
        cleanup_mem struct guest_mem gm = { .memfd = -1 };
        cleanup_error cap_error_t err = NULL;
        cleanup_tmp char *path = NULL;
        struct boot_info boot = { 0 };
        const struct boot_params *bp;

        path = write_elf(&vmlinux_opts);
        CHECK(path != NULL);
        CHECK(mem_new(&gm, 512 * MIB));
        struct vm_config cfg = config(path, 512 * MIB);
        CHECK(x86_load_linux(&gm, &cfg, NULL, &boot, &err) == 0);
        CHECK(boot.mode == BOOT_LINUX64);
        /* e_entry is virtual: translated through the segment that contains it. */
        CHECK(boot.entry == KERNEL_PADDR + 0x100);
        CHECK(boot.arg == LAYOUT_ZERO_PAGE);
        CHECK(guest_has_pattern(&gm, KERNEL_PADDR, 0x3000));

        bp = zero_page(&gm);
        CHECK(bp->hdr.boot_flag == 0xaa55);
        CHECK(bp->hdr.header == SETUP_HDRS_MAGIC);
        CHECK(bp->hdr.version == 0x020f);
        CHECK(bp->hdr.type_of_loader == 0xff);
        CHECK((bp->hdr.loadflags & (LOADED_HIGH | CAN_USE_HEAP)) == (LOADED_HIGH | CAN_USE_HEAP));
        CHECK(bp->hdr.heap_end_ptr != 0);
        CHECK(bp->hdr.cmd_line_ptr == LAYOUT_CMDLINE);
        CHECK(bp->hdr.ramdisk_image == 0 && bp->hdr.ramdisk_size == 0);
        CHECK(bp->acpi_rsdp_addr == LAYOUT_ACPI);
        CHECK(bp->e820_entries == 4);
}

TEST(elf_physical_entry_is_kept)
{
        cleanup_free uint8_t *elf = NULL;
        cleanup_error cap_error_t err = NULL;
        struct elf_opts o = vmlinux_opts;
        struct elf_image img;
        size_t size;

        /* A real vmlinux links ENTRY(phys_startup_64): e_entry is already physical. */
        o.entry = KERNEL_PADDR + 0x40;
        elf = build_elf(&o, &size);
        CHECK(elf_parse(elf, size, &img, &err) == 0);
        CHECK(img.entry64 == KERNEL_PADDR + 0x40);
        CHECK(img.pvh_entry == 0);
        CHECK(img.start == KERNEL_PADDR && img.end == KERNEL_PADDR + 0x5000);
}

TEST(elf_corrupt_images_are_rejected)
{
        cleanup_free uint8_t *elf = NULL;
        struct elf_image img;
        size_t size;
        Elf64_Ehdr *eh;
        Elf64_Phdr *ph;

        elf = build_elf(&pvh_opts, &size);
        eh = (Elf64_Ehdr *)elf;
        ph = (Elf64_Phdr *)(elf + eh->e_phoff);
        {
                cleanup_error cap_error_t err = NULL;

                CHECK(elf_parse(elf, size - 1, &img, &err) < 0); /* last segment byte cut off */
                CHECK(err_has(err, "beyond the file"));
        }
        {
                cleanup_error cap_error_t err = NULL;

                CHECK(elf_parse(elf, 40, &img, &err) < 0);
                CHECK(err_has(err, "truncated or corrupt ELF"));
        }
        {
                cleanup_error cap_error_t err = NULL;

                eh->e_phoff = size - 8;
                CHECK(elf_parse(elf, size, &img, &err) < 0);
                CHECK(err_has(err, "program header"));
                eh->e_phoff = sizeof(*eh);
        }
        {
                cleanup_error cap_error_t err = NULL;

                ph[0].p_offset = UINT64_MAX - 4; /* offset + size wraps */
                CHECK(elf_parse(elf, size, &img, &err) < 0);
                CHECK(err_has(err, "beyond the file"));
                ph[0].p_offset = ELF_DATA_OFFSET;
        }
        {
                cleanup_error cap_error_t err = NULL;

                ph[0].p_memsz = ph[0].p_filesz - 1;
                CHECK(elf_parse(elf, size, &img, &err) < 0);
                CHECK(err_has(err, "bad sizes"));
                ph[0].p_memsz = pvh_opts.memsz;
        }
        {
                cleanup_error cap_error_t err = NULL;

                eh->e_entry = 0x42;
                CHECK(elf_parse(elf, size, &img, &err) < 0);
                CHECK(err_has(err, "entry point 0x42"));
                eh->e_entry = pvh_opts.entry;
        }
        {
                cleanup_error cap_error_t err = NULL;
                uint32_t outside = 0x100;

                memcpy(elf + 0x110, &outside, 4);
                CHECK(elf_parse(elf, size, &img, &err) < 0);
                CHECK(err_has(err, "PVH entry"));
                memcpy(elf + 0x110, &pvh_opts.pvh_entry, 4);
        }
        {
                cleanup_error cap_error_t err = NULL;

                ph[1].p_filesz = 14; /* the note's descriptor is cut */
                CHECK(elf_parse(elf, size, &img, &err) < 0);
                CHECK(err_has(err, "note"));
                ph[1].p_filesz = 20;
        }
        {
                cleanup_error cap_error_t err = NULL;

                eh->e_ident[EI_CLASS] = ELFCLASS32;
                CHECK(elf_parse(elf, size, &img, &err) < 0);
                CHECK(err_has(err, "64-bit"));
                eh->e_ident[EI_CLASS] = ELFCLASS64;
        }
        {
                cleanup_error cap_error_t err = NULL;

                CHECK(elf_parse(elf, size, &img, &err) == 0); /* restored: valid again */
                CHECK(img.pvh_entry == pvh_opts.pvh_entry);
        }
}

TEST(kernel_larger_than_memory_is_reported)
{
        cleanup_mem struct guest_mem gm = { .memfd = -1 };
        cleanup_error cap_error_t err = NULL;
        cleanup_tmp char *path = NULL;
        struct boot_info boot = { 0 };
        struct elf_opts o = vmlinux_opts;

        o.memsz = 40 * MIB; /* ends at 56 MiB */
        path = write_elf(&o);
        CHECK(path != NULL);
        CHECK(mem_new(&gm, 32 * MIB));
        struct vm_config cfg = config(path, 32 * MIB);
        CHECK(x86_load_linux(&gm, &cfg, NULL, &boot, &err) < 0);
        CHECK(err_has(err, "kernel needs 56 MiB, --memory is 32 MiB"));
}

TEST(unreadable_or_foreign_kernel_files_are_reported)
{
        cleanup_mem struct guest_mem gm = { .memfd = -1 };
        cleanup_tmp char *path = NULL;
        struct boot_info boot = { 0 };
        static const char text[] = "#!/bin/sh\necho this is not a kernel, but it is long enough to have offset 0x206 "
                                   "..................................................................................."
                                   "..................................................................................."
                                   "..................................................................................."
                                   "...................................................................\n";

        CHECK(mem_new(&gm, 64 * MIB));
        {
                cleanup_error cap_error_t err = NULL;
                struct vm_config cfg = config("/nonexistent/vmlinux", 64 * MIB);

                CHECK(x86_load_linux(&gm, &cfg, NULL, &boot, &err) < 0);
                CHECK(err_has(err, "/nonexistent/vmlinux"));
                CHECK(err_has(err, "No such file"));
        }
        path = write_tmp(text, sizeof(text));
        CHECK(path != NULL);
        {
                cleanup_error cap_error_t err = NULL;
                struct vm_config cfg = config(path, 64 * MIB);

                CHECK(x86_load_linux(&gm, &cfg, NULL, &boot, &err) < 0);
                CHECK(err_has(err, "not a Linux kernel image (no ELF header or HdrS signature)"));
        }
}

/* ---- bzImage ---- */

TEST(bzimage_loads_protected_mode_part_and_zero_page)
{
        cleanup_mem struct guest_mem gm = { .memfd = -1 };
        cleanup_error cap_error_t err = NULL;
        cleanup_tmp char *path = NULL;
        cleanup_tmp char *initrd = NULL;
        static uint8_t initrd_data[3 * 4096 + 123];
        struct boot_info boot = { 0 };
        const struct boot_params *bp;

        for (size_t i = 0; i < sizeof(initrd_data); i++)
                initrd_data[i] = pattern(i);
        path = write_bzimage(&bz_default);
        initrd = write_tmp(initrd_data, sizeof(initrd_data));
        CHECK(path != NULL && initrd != NULL);
        CHECK(mem_new(&gm, 512 * MIB));
        struct vm_config cfg = config(path, 512 * MIB);
        cfg.initrd = initrd;
        CHECK(x86_load_linux(&gm, &cfg, NULL, &boot, &err) == 0);
        CHECK(boot.mode == BOOT_LINUX64);
        CHECK(boot.entry == KERNEL_PADDR + 0x200);
        CHECK(boot.arg == LAYOUT_ZERO_PAGE);
        CHECK(guest_has_pattern(&gm, KERNEL_PADDR, BZ_PAYLOAD_OFFSET));

        bp = zero_page(&gm);
        /* Copied from the image */
        CHECK(bp->hdr.setup_sects == BZ_SETUP_SECTS);
        CHECK(bp->hdr.version == 0x020f);
        CHECK(bp->hdr.kernel_alignment == 0x200000);
        CHECK(bp->hdr.pref_address == KERNEL_PADDR);
        /* Filled in by the loader */
        CHECK(bp->hdr.type_of_loader == 0xff);
        CHECK(bp->hdr.cmd_line_ptr == LAYOUT_CMDLINE);
        CHECK(bp->hdr.ramdisk_size == sizeof(initrd_data));
        CHECK(bp->hdr.ramdisk_image == ((512 * MIB - sizeof(initrd_data)) & ~0xfffULL));
        CHECK(guest_has_pattern(&gm, bp->hdr.ramdisk_image, sizeof(initrd_data)));
        CHECK(bp->acpi_rsdp_addr == LAYOUT_ACPI);
        /* Raw offsets the boot protocol fixes */
        {
                const uint8_t *raw = (const uint8_t *)bp;
                uint32_t v;

                CHECK(raw[0x1e8] == 4);
                memcpy(&v, raw + 0x228, 4);
                CHECK(v == LAYOUT_CMDLINE);
                memcpy(&v, raw + 0x218, 4);
                CHECK(v == bp->hdr.ramdisk_image);
                CHECK(raw[0x210] == 0xff);
                CHECK(bp->e820_table[2].addr == LAYOUT_HIMEM && bp->e820_table[2].type == E820_TYPE_RAM);
                CHECK(bp->e820_table[2].addr + bp->e820_table[2].size == 512 * MIB);
                CHECK(bp->e820_table[3].addr == LAYOUT_ECAM && bp->e820_table[3].type == E820_TYPE_RESERVED);
        }
}

TEST(bzimage_header_errors)
{
        cleanup_mem struct guest_mem gm = { .memfd = -1 };
        struct boot_info boot = { 0 };

        CHECK(mem_new(&gm, 64 * MIB));
        {
                cleanup_error cap_error_t err = NULL;
                cleanup_tmp char *path = NULL;
                struct bz_opts o = bz_default;

                o.version = 0x0204;
                path = write_bzimage(&o);
                struct vm_config cfg = config(path, 64 * MIB);
                CHECK(x86_load_linux(&gm, &cfg, NULL, &boot, &err) < 0);
                CHECK(err_has(err, "boot protocol 2.04 is too old"));
        }
        {
                cleanup_error cap_error_t err = NULL;
                cleanup_tmp char *path = NULL;
                struct bz_opts o = bz_default;

                o.xloadflags = 0;
                path = write_bzimage(&o);
                struct vm_config cfg = config(path, 64 * MIB);
                CHECK(x86_load_linux(&gm, &cfg, NULL, &boot, &err) < 0);
                CHECK(err_has(err, "XLF_KERNEL_64"));
        }
        {
                cleanup_error cap_error_t err = NULL;
                cleanup_free uint8_t *bz = NULL;
                cleanup_tmp char *path = NULL;
                size_t size;

                bz = build_bzimage(&bz_default, &size);
                path = write_tmp(bz, BZ_PM_OFFSET - 10); /* cut inside the setup sectors */
                struct vm_config cfg = config(path, 64 * MIB);
                CHECK(x86_load_linux(&gm, &cfg, NULL, &boot, &err) < 0);
                CHECK(err_has(err, "truncated bzImage"));
        }
        {
                cleanup_error cap_error_t err = NULL;
                cleanup_tmp char *path = NULL;

                cleanup_mem struct guest_mem small = { .memfd = -1 };

                path = write_bzimage(&bz_default);
                CHECK(mem_new(&small, 20 * MIB));
                struct vm_config cfg = config(path, 20 * MIB); /* 16 MiB + init_size 8 MiB */
                CHECK(x86_load_linux(&small, &cfg, NULL, &boot, &err) < 0);
                CHECK(err_has(err, "kernel needs 24 MiB"));
        }
}

/* ---- host decompression of the bzImage payload ---- */

static uint8_t *append_size(uint8_t *c, size_t *clen, size_t raw_len)
{
        uint32_t v = (uint32_t)raw_len;

        c = realloc(c, *clen + 4);
        memcpy(c + *clen, &v, 4);
        *clen += 4;
        return c;
}

static uint8_t *compress_gzip(const uint8_t *in, size_t len, size_t *out_len)
{
        z_stream zs = { 0 };
        uLong bound;
        uint8_t *out;

        if (deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
                return NULL;
        bound = deflateBound(&zs, len);
        out = xmalloc0(bound);
        zs.next_in = (Bytef *)in;
        zs.avail_in = (uInt)len;
        zs.next_out = out;
        zs.avail_out = (uInt)bound;
        deflate(&zs, Z_FINISH);
        *out_len = zs.total_out;
        deflateEnd(&zs);
        return out;
}

static uint8_t *compress_xz(const uint8_t *in, size_t len, size_t *out_len, bool legacy_lzma)
{
        size_t cap = len + len / 2 + 4096;
        uint8_t *out = xmalloc0(cap);
        lzma_options_lzma opt;
        lzma_stream s = LZMA_STREAM_INIT;

        *out_len = 0;
        if (!legacy_lzma) {
                if (lzma_easy_buffer_encode(6, LZMA_CHECK_CRC32, NULL, in, len, out, out_len, cap) != LZMA_OK) {
                        free(out);
                        return NULL;
                }
                return out;
        }
        lzma_lzma_preset(&opt, 6);
        if (lzma_alone_encoder(&s, &opt) != LZMA_OK) {
                free(out);
                return NULL;
        }
        s.next_in = in;
        s.avail_in = len;
        s.next_out = out;
        s.avail_out = cap;
        while (lzma_code(&s, LZMA_FINISH) == LZMA_OK)
                ;
        *out_len = s.total_out;
        lzma_end(&s);
        return out;
}

static uint8_t *compress_zstd(const uint8_t *in, size_t len, size_t *out_len)
{
        size_t cap = ZSTD_compressBound(len);
        uint8_t *out = xmalloc0(cap);

        *out_len = ZSTD_compress(out, cap, in, len, 19);
        return out;
}

/* The legacy frame `lz4 -l` writes: magic, then <le32 size, block> pairs. */
static uint8_t *compress_lz4_legacy(const uint8_t *in, size_t len, size_t *out_len)
{
        uint8_t *out = xmalloc0(8 + (size_t)LZ4_compressBound((int)len));
        uint32_t magic = 0x184c2102, n;

        memcpy(out, &magic, 4);
        n = (uint32_t)LZ4_compress_default((const char *)in, (char *)out + 8, (int)len, LZ4_compressBound((int)len));
        memcpy(out + 4, &n, 4);
        *out_len = 8 + n;
        return out;
}

static void check_decompressed_boot(const char *name, uint8_t *compressed, size_t clen, size_t raw_len, bool pvh)
{
        cleanup_mem struct guest_mem gm = { .memfd = -1 };
        cleanup_error cap_error_t err = NULL;
        cleanup_free uint8_t *payload = append_size(compressed, &clen, raw_len);
        cleanup_tmp char *path = NULL;
        struct bz_opts o = bz_default;
        struct boot_info boot = { 0 };

        fprintf(stderr, "payload: %s, %zu -> %zu bytes\n", name, raw_len, clen);
        CHECK(compression_detect(payload, clen) != COMPRESSION_UNKNOWN);
        CHECK_STR(compression_name(compression_detect(payload, clen)), name);
        o.payload = payload;
        o.payload_len = clen;
        path = write_bzimage(&o);
        CHECK(path != NULL);
        CHECK(mem_new(&gm, 256 * MIB));
        struct vm_config cfg = config(path, 256 * MIB);
        cfg.bzimage_decompress = VM_BZIMAGE_DECOMPRESS_HOST;
        CHECK(x86_load_linux(&gm, &cfg, NULL, &boot, &err) == 0);
        /* The ELF inside was booted, not the bzImage's decompressor at +0x200. */
        if (pvh) {
                CHECK(boot.mode == BOOT_PVH);
                CHECK(boot.entry == pvh_opts.pvh_entry);
        } else {
                CHECK(boot.mode == BOOT_LINUX64);
                CHECK(boot.entry == KERNEL_PADDR + 0x100);
                /* The zero page still carries the bzImage's own setup header. */
                CHECK(zero_page(&gm)->hdr.setup_sects == BZ_SETUP_SECTS);
                CHECK(zero_page(&gm)->hdr.pref_address == KERNEL_PADDR);
        }
        CHECK(guest_has_pattern(&gm, KERNEL_PADDR, 0x3000));
}

TEST(bzimage_gzip_payload_is_decompressed_on_the_host)
{
        cleanup_free uint8_t *elf = NULL;
        size_t len, clen;
        uint8_t *c;

        elf = build_elf(&vmlinux_opts, &len);
        c = compress_gzip(elf, len, &clen);
        CHECK(c != NULL);
        check_decompressed_boot("gzip", c, clen, len, false);
}

TEST(bzimage_xz_payload_is_decompressed_on_the_host)
{
        cleanup_free uint8_t *elf = NULL;
        size_t len, clen;
        uint8_t *c;

        elf = build_elf(&pvh_opts, &len);
        c = compress_xz(elf, len, &clen, false);
        CHECK(c != NULL);
        check_decompressed_boot("xz", c, clen, len, true);
}

TEST(bzimage_lzma_payload_is_decompressed_on_the_host)
{
        cleanup_free uint8_t *elf = NULL;
        size_t len, clen;
        uint8_t *c;

        elf = build_elf(&vmlinux_opts, &len);
        c = compress_xz(elf, len, &clen, true);
        CHECK(c != NULL);
        check_decompressed_boot("lzma", c, clen, len, false);
}

TEST(bzimage_zstd_payload_is_decompressed_on_the_host)
{
        cleanup_free uint8_t *elf = NULL;
        size_t len, clen;
        uint8_t *c;

        elf = build_elf(&pvh_opts, &len);
        c = compress_zstd(elf, len, &clen);
        CHECK(c != NULL && !ZSTD_isError(clen));
        check_decompressed_boot("zstd", c, clen, len, true);
}

TEST(bzimage_lz4_payload_is_decompressed_on_the_host)
{
        cleanup_free uint8_t *elf = NULL;
        size_t len, clen;
        uint8_t *c;

        elf = build_elf(&vmlinux_opts, &len);
        c = compress_lz4_legacy(elf, len, &clen);
        check_decompressed_boot("lz4", c, clen, len, false);
}

TEST(bzimage_corrupt_payload_falls_back_to_bzimage_entry)
{
        cleanup_mem struct guest_mem gm = { .memfd = -1 };
        cleanup_error cap_error_t err = NULL;
        cleanup_free uint8_t *elf = NULL;
        cleanup_free uint8_t *gz = NULL;
        cleanup_tmp char *path = NULL;
        struct bz_opts o = bz_default;
        struct boot_info boot = { 0 };
        size_t len, clen;

        elf = build_elf(&pvh_opts, &len);
        gz = compress_gzip(elf, len, &clen);
        CHECK(gz != NULL);
        gz[clen / 2] ^= 0xff; /* the gzip CRC or the stream breaks */
        o.payload = gz;
        o.payload_len = clen;
        path = write_bzimage(&o);
        CHECK(path != NULL);
        CHECK(mem_new(&gm, 256 * MIB));
        struct vm_config cfg = config(path, 256 * MIB);
        cfg.bzimage_decompress = VM_BZIMAGE_DECOMPRESS_HOST;
        CHECK(x86_load_linux(&gm, &cfg, NULL, &boot, &err) == 0);
        CHECK(boot.mode == BOOT_LINUX64);
        CHECK(boot.entry == KERNEL_PADDR + 0x200);
        CHECK(guest_has_pattern(&gm, KERNEL_PADDR, BZ_PAYLOAD_OFFSET));
}

TEST(bzimage_payload_is_left_to_the_guest_by_default)
{
        cleanup_mem struct guest_mem gm = { .memfd = -1 };
        cleanup_error cap_error_t err = NULL;
        cleanup_free uint8_t *elf = NULL;
        cleanup_free uint8_t *payload = NULL;
        cleanup_tmp char *path = NULL;
        struct bz_opts o = bz_default;
        struct boot_info boot = { 0 };
        size_t len, clen;
        uint8_t *gz;

        /* A payload capsule could decompress (and boot through PVH) is still the guest's to decompress. */
        elf = build_elf(&pvh_opts, &len);
        gz = compress_gzip(elf, len, &clen);
        CHECK(gz != NULL);
        payload = append_size(gz, &clen, len);
        o.payload = payload;
        o.payload_len = clen;
        path = write_bzimage(&o);
        CHECK(path != NULL);
        CHECK(mem_new(&gm, 256 * MIB));
        struct vm_config cfg = config(path, 256 * MIB);
        CHECK(cfg.bzimage_decompress == VM_BZIMAGE_DECOMPRESS_GUEST);
        CHECK(x86_load_linux(&gm, &cfg, NULL, &boot, &err) == 0);
        CHECK(boot.mode == BOOT_LINUX64);
        CHECK(boot.entry == KERNEL_PADDR + 0x200);
        CHECK(boot.arg == LAYOUT_ZERO_PAGE);
        CHECK(guest_has_pattern(&gm, KERNEL_PADDR, BZ_PAYLOAD_OFFSET));
        CHECK(memcmp(guest_mem_ptr(&gm, KERNEL_PADDR + BZ_PAYLOAD_OFFSET, clen), payload, clen) == 0);
}

TEST(decompress_rejects_truncated_streams)
{
        cleanup_free uint8_t *elf = NULL;
        cleanup_free uint8_t *xz = NULL;
        cleanup_free uint8_t *zs = NULL;
        size_t len, clen, zlen;

        elf = build_elf(&vmlinux_opts, &len);
        xz = compress_xz(elf, len, &clen, false);
        zs = compress_zstd(elf, len, &zlen);
        CHECK(xz != NULL && zs != NULL);
        {
                cleanup_error cap_error_t err = NULL;
                cleanup_free uint8_t *out = NULL;
                size_t out_len;

                CHECK(decompress(xz, clen / 2, 0, 64 * MIB, &out, &out_len, &err) < 0);
                CHECK(err_has(err, "xz"));
        }
        {
                cleanup_error cap_error_t err = NULL;
                cleanup_free uint8_t *out = NULL;
                size_t out_len;

                CHECK(decompress(zs, zlen / 2, 0, 64 * MIB, &out, &out_len, &err) < 0);
                CHECK(err_has(err, "zstd"));
        }
        {
                cleanup_error cap_error_t err = NULL;
                cleanup_free uint8_t *out = NULL;
                size_t out_len;

                /* A limit smaller than the output stops the decompressor. */
                CHECK(decompress(xz, clen, 0, 4096, &out, &out_len, &err) < 0);
                CHECK(err_has(err, "exceeds"));
        }
        {
                cleanup_error cap_error_t err = NULL;
                cleanup_free uint8_t *out = NULL;
                size_t out_len;

                CHECK(decompress(xz, clen, len, 64 * MIB, &out, &out_len, &err) == 0);
                CHECK(out_len == len && memcmp(out, elf, len) == 0);
        }
}

/* ---- e820, initrd, command line ---- */

TEST(e820_for_512m)
{
        cleanup_mem struct guest_mem gm = { .memfd = -1 };
        struct e820_map map;

        CHECK(mem_new(&gm, 512 * MIB));
        e820_build(&gm, &map);
        CHECK(map.n == 4);
        CHECK(map.r[0].addr == 0 && map.r[0].size == 0x9fc00 && map.r[0].type == E820_TYPE_RAM);
        CHECK(map.r[1].addr == 0x9fc00 && map.r[1].addr + map.r[1].size == 0x100000 &&
              map.r[1].type == E820_TYPE_RESERVED);
        CHECK(map.r[2].addr == 0x100000 && map.r[2].addr + map.r[2].size == 512 * MIB &&
              map.r[2].type == E820_TYPE_RAM);
        CHECK(map.r[3].addr == LAYOUT_ECAM && map.r[3].size == LAYOUT_ECAM_SIZE &&
              map.r[3].type == E820_TYPE_RESERVED);
}

TEST(e820_for_5g_skips_the_pci_hole)
{
        cleanup_mem struct guest_mem gm = { .memfd = -1 };
        struct e820_map map;
        uint64_t ram = 0;

        CHECK(mem_new(&gm, 5 * GIB));
        e820_build(&gm, &map);
        CHECK(map.n == 5);
        CHECK(map.r[2].addr == 0x100000 && map.r[2].addr + map.r[2].size == 3 * GIB);
        CHECK(map.r[3].addr == LAYOUT_ECAM && map.r[3].type == E820_TYPE_RESERVED);
        CHECK(map.r[4].addr == 4 * GIB && map.r[4].size == 2 * GIB && map.r[4].type == E820_TYPE_RAM);
        for (int i = 0; i < map.n; i++) {
                if (map.r[i].type == E820_TYPE_RAM)
                        ram += map.r[i].size;
                /* Nothing but the reserved ECAM window lies in the hole. */
                if (map.r[i].addr + map.r[i].size > 3 * GIB && map.r[i].addr < 4 * GIB)
                        CHECK(map.r[i].type == E820_TYPE_RESERVED);
        }
        CHECK(ram == 5 * GIB - (0x100000 - 0x9fc00));
}

TEST(initrd_respects_initrd_addr_max)
{
        cleanup_mem struct guest_mem gm = { .memfd = -1 };
        cleanup_error cap_error_t err = NULL;
        cleanup_tmp char *path = NULL;
        cleanup_tmp char *initrd = NULL;
        static uint8_t initrd_data[5000];
        struct bz_opts o = bz_default;
        struct boot_info boot = { 0 };

        o.initrd_addr_max = 0x37ffffff;
        path = write_bzimage(&o);
        initrd = write_tmp(initrd_data, sizeof(initrd_data));
        CHECK(path != NULL && initrd != NULL);
        CHECK(mem_new(&gm, 2 * GIB));
        struct vm_config cfg = config(path, 2 * GIB);
        cfg.initrd = initrd;
        CHECK(x86_load_linux(&gm, &cfg, NULL, &boot, &err) == 0);
        CHECK(zero_page(&gm)->hdr.ramdisk_image == ((0x38000000 - sizeof(initrd_data)) & ~0xfffULL));
        CHECK(zero_page(&gm)->hdr.ramdisk_image % 4096 == 0);
}

TEST(initrd_goes_in_the_pvh_module_list)
{
        cleanup_mem struct guest_mem gm = { .memfd = -1 };
        cleanup_error cap_error_t err = NULL;
        cleanup_tmp char *path = NULL;
        cleanup_tmp char *initrd = NULL;
        static const char initrd_data[] = "070701 pretend cpio";
        const struct hvm_start_info *si;
        const struct hvm_modlist_entry *mod;
        struct boot_info boot = { 0 };

        path = write_elf(&pvh_opts);
        initrd = write_tmp(initrd_data, sizeof(initrd_data));
        CHECK(path != NULL && initrd != NULL);
        CHECK(mem_new(&gm, 128 * MIB));
        struct vm_config cfg = config(path, 128 * MIB);
        cfg.initrd = initrd;
        CHECK(x86_load_linux(&gm, &cfg, NULL, &boot, &err) == 0);
        si = guest_mem_ptr(&gm, LAYOUT_PVH_START_INFO, sizeof(*si));
        CHECK(si->nr_modules == 1);
        mod = guest_mem_ptr(&gm, si->modlist_paddr, sizeof(*mod));
        CHECK(mod != NULL);
        CHECK(mod->size == sizeof(initrd_data));
        CHECK(mod->paddr == ((128 * MIB - sizeof(initrd_data)) & ~0xfffULL));
        CHECK(memcmp(guest_mem_ptr(&gm, mod->paddr, mod->size), initrd_data, sizeof(initrd_data)) == 0);
}

TEST(initrd_too_big_is_reported)
{
        cleanup_mem struct guest_mem gm = { .memfd = -1 };
        cleanup_error cap_error_t err = NULL;
        cleanup_tmp char *path = NULL;
        cleanup_tmp char *initrd = NULL;
        struct boot_info boot = { 0 };

        path = write_elf(&vmlinux_opts);
        initrd = write_tmp("", 0);
        CHECK(path != NULL && initrd != NULL);
        CHECK(truncate(initrd, 900 * MIB) == 0); /* sparse */
        CHECK(mem_new(&gm, 512 * MIB));
        struct vm_config cfg = config(path, 512 * MIB);
        cfg.initrd = initrd;
        CHECK(x86_load_linux(&gm, &cfg, NULL, &boot, &err) < 0);
        CHECK(err_has(err, "--initrd: 900 MiB does not fit"));
        CHECK(err_has(err, "--memory 512 MiB"));
        {
                cleanup_error cap_error_t err2 = NULL;

                CHECK(truncate(initrd, 0) == 0);
                CHECK(x86_load_linux(&gm, &cfg, NULL, &boot, &err2) < 0);
                CHECK(err_has(err2, "empty file"));
        }
}

TEST(cmdline_longer_than_the_kernel_accepts_is_reported)
{
        cleanup_mem struct guest_mem gm = { .memfd = -1 };
        cleanup_error cap_error_t err = NULL;
        cleanup_free char *longline = xmalloc0(3000);
        cleanup_tmp char *path = NULL;
        struct boot_info boot = { 0 };

        memset(longline, 'x', 2999);
        path = write_elf(&vmlinux_opts);
        CHECK(path != NULL);
        CHECK(mem_new(&gm, 64 * MIB));
        struct vm_config cfg = config(path, 64 * MIB);
        cfg.cmdline = longline;
        CHECK(x86_load_linux(&gm, &cfg, NULL, &boot, &err) < 0);
        CHECK(err_has(err, "--cmdline is 2999 bytes, the kernel accepts at most 2047"));
}

/* The devices' parameters come first and count against the same limit. */
TEST(cmdline_with_device_parameters)
{
        cleanup_mem struct guest_mem gm = { .memfd = -1 };
        cleanup_error cap_error_t err = NULL;
        cleanup_free char *longline = xmalloc0(2048);
        cleanup_tmp char *path = NULL;
        struct boot_info boot = { 0 };
        const char *devices = "virtio_mmio.device=4K@0xc0000000:5";

        path = write_elf(&vmlinux_opts);
        CHECK(path != NULL);
        CHECK(mem_new(&gm, 64 * MIB));
        struct vm_config cfg = config(path, 64 * MIB);
        CHECK(x86_load_linux(&gm, &cfg, devices, &boot, &err) == 0);
        CHECK_STR((const char *)guest_mem_ptr(&gm, LAYOUT_CMDLINE, 1),
                  "virtio_mmio.device=4K@0xc0000000:5 console=ttyS0 panic=-1");
        memset(longline, 'x', 2047 - strlen(devices)); /* one more with the space between */
        cfg.cmdline = longline;
        CHECK(x86_load_linux(&gm, &cfg, devices, &boot, &err) < 0);
        CHECK(err_has(err, "and the devices add 35 (virtio_mmio.device=4K@0xc0000000:5)"));
        CHECK(err_has(err, "at most 2047"));
}

/* ---- MP table, page tables, GDT ---- */

static uint8_t sum_bytes(const uint8_t *p, size_t n)
{
        uint8_t s = 0;

        for (size_t i = 0; i < n; i++)
                s += p[i];
        return s;
}

TEST(mptable_checksums_and_entries)
{
        cleanup_mem struct guest_mem gm = { .memfd = -1 };
        cleanup_error cap_error_t err = NULL;
        const uint8_t *mpf, *cfg, *e;
        uint32_t cfg_addr, lapic;
        uint16_t len, count;
        int cpus = 0, bsp = 0, ioapics = 0, ioints = 0, lints = 0, buses = 0;

        CHECK(mem_new(&gm, 64 * MIB));
        CHECK(mptable_write(&gm, 4, &err) == 0);
        mpf = guest_mem_ptr(&gm, LAYOUT_EBDA, 16);
        CHECK(memcmp(mpf, "_MP_", 4) == 0);
        CHECK(mpf[8] == 1 && mpf[9] == 4);
        CHECK(sum_bytes(mpf, 16) == 0);
        memcpy(&cfg_addr, mpf + 4, 4);
        cfg = guest_mem_ptr(&gm, cfg_addr, 44);
        CHECK(cfg != NULL && memcmp(cfg, "PCMP", 4) == 0);
        memcpy(&len, cfg + 4, 2);
        memcpy(&count, cfg + 34, 2);
        memcpy(&lapic, cfg + 36, 4);
        CHECK(lapic == LAYOUT_LAPIC);
        CHECK(sum_bytes(cfg, len) == 0);
        CHECK(count == 4 + 1 + 1 + 16 + 2);
        e = cfg + 44;
        for (int i = 0; i < count; i++) {
                switch (e[0]) {
                case 0:
                        CHECK(e[1] == cpus);
                        CHECK(e[3] & 1);
                        if (e[3] & 2) {
                                CHECK(e[1] == 0);
                                bsp++;
                        }
                        cpus++;
                        e += 20;
                        break;
                case 1:
                        CHECK(memcmp(e + 2, "ISA   ", 6) == 0);
                        buses++;
                        e += 8;
                        break;
                case 2: {
                        uint32_t addr;

                        memcpy(&addr, e + 4, 4);
                        CHECK(e[1] == 4 && addr == LAYOUT_IOAPIC);
                        ioapics++;
                        e += 8;
                        break;
                }
                case 3:
                        CHECK(e[5] == e[7]); /* ISA IRQ n on pin n */
                        CHECK(e[6] == 4);
                        ioints++;
                        e += 8;
                        break;
                case 4:
                        CHECK(e[1] == (e[7] == 0 ? 3 : 1)); /* LINT0 ExtINT, LINT1 NMI */
                        CHECK(e[6] == 0xff);
                        lints++;
                        e += 8;
                        break;
                default:
                        CHECK(!"unknown MP entry type");
                }
        }
        CHECK(e == cfg + len);
        CHECK(cpus == 4 && bsp == 1 && buses == 1 && ioapics == 1 && ioints == 16 && lints == 2);
        {
                cleanup_error cap_error_t err2 = NULL;

                CHECK(mptable_write(&gm, X86_MAX_CPUS + 1, &err2) < 0);
                CHECK(err_has(err2, "--cpus"));
        }
}

TEST(identity_page_tables_and_boot_gdt)
{
        cleanup_mem struct guest_mem gm = { .memfd = -1 };
        cleanup_error cap_error_t err = NULL;
        const uint64_t *pml4, *gdt;

        CHECK(mem_new(&gm, 64 * MIB));
        CHECK(x86_write_identity_paging(&gm, &err) == 0);
        CHECK(x86_write_boot_gdt(&gm, &err) == 0);
        pml4 = guest_mem_ptr(&gm, LAYOUT_PML4, BOOT_PAGE_TABLES_SIZE);
        CHECK((pml4[0] & ~0xfffULL) == LAYOUT_PML4 + 0x1000 && (pml4[0] & 3) == 3);
        CHECK(pml4[1] == 0);
        /* Walk a few addresses through the tables: each maps to itself. */
        static const uint64_t probes[] = { 0, 0x1000000, 0xbfe00000, 0xfee00000, 0xffe00000 };
        for (size_t i = 0; i < ARRAY_SIZE(probes); i++) {
                uint64_t va = probes[i];
                uint64_t pdpte = pml4[512 + ((va >> 30) & 511)];
                const uint64_t *pd = guest_mem_ptr(&gm, pdpte & ~0xfffULL, 4096);
                uint64_t pde;

                CHECK(pd != NULL && (pdpte & 1));
                pde = pd[(va >> 21) & 511];
                CHECK((pde & 0x81) == 0x81); /* present, 2 MiB page */
                CHECK((pde & ~0x1fffffULL) == va);
        }
        CHECK(pml4[512 + 4] == 0); /* nothing above 4 GiB */

        gdt = guest_mem_ptr(&gm, LAYOUT_GDT, 32);
        CHECK(LAYOUT_GDT + 8 * BOOT_GDT_ENTRIES == LAYOUT_IDT);
        CHECK(gdt[0] == 0);
        CHECK(gdt[BOOT_GDT_CODE32 / 8] == 0x00cf9b000000ffffULL);
        CHECK(gdt[BOOT_GDT_CODE64 / 8] == 0x00af9b000000ffffULL);
        CHECK(gdt[BOOT_GDT_DATA / 8] == 0x00cf93000000ffffULL);
        CHECK(BOOT_GDT_CODE64 == 0x10 && BOOT_GDT_DATA == 0x18);
}
