/* x86 Linux loading: ELF (PVH and 64-bit entries), bzImage, zero page, PVH start_info,
 * initrd and command line, from kernels synthesized in boot_image.c. */
#include <elf.h>
#include <string.h>
#include <unistd.h>

#include "boot_image.h"
#include "check.h"
#include "common/util.h"
#include "vmm/x86/boot.h"
#include "vmm/x86/bootparams.h"
#include "vmm/x86/bzimage.h"
#include "vmm/x86/elf.h"
#include "vmm/x86/layout.h"

/* ---- ELF ---- */

TEST(elf_with_pvh_note_boots_pvh)
{
        cleanup_mem struct guest_mem gm = { .memfd = -1 };
        cleanup_tmp char *path = NULL;
        struct boot_info boot = { 0 };
        const struct hvm_start_info *si;
        const struct hvm_memmap_table_entry *map;

        path = write_elf(&pvh_opts);
        CHECK(path != NULL);
        CHECK(kernel_loaded(&gm, path, NULL, 512 * MIB, VM_BZIMAGE_DECOMPRESS_GUEST, &boot));
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
        cleanup_tmp char *path = NULL;
        struct boot_info boot = { 0 };
        const struct boot_params *bp;

        path = write_elf(&vmlinux_opts);
        CHECK(path != NULL);
        CHECK(kernel_loaded(&gm, path, NULL, 512 * MIB, VM_BZIMAGE_DECOMPRESS_GUEST, &boot));
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

/* x86_load_linux() of kernel into gm (memory bytes, no initrd) fails saying needle. */
static bool load_fails(struct guest_mem *gm, char *kernel, uint64_t memory, const char *needle)
{
        cleanup_error cap_error_t err = NULL;
        struct boot_info boot = { 0 };
        struct vm_config cfg = boot_config(kernel, memory);

        return x86_load_linux(gm, &cfg, NULL, &boot, &err) < 0 && err_has(err, needle);
}

/* elf_parse() of size bytes of elf fails saying needle. */
static bool elf_rejected(const uint8_t *elf, size_t size, const char *needle)
{
        cleanup_error cap_error_t err = NULL;
        struct elf_image img;

        return elf_parse(elf, size, &img, &err) < 0 && err_has(err, needle);
}

/* Each corruption is undone before the next. */
TEST(elf_corrupt_images_are_rejected)
{
        cleanup_free uint8_t *elf = NULL;
        cleanup_error cap_error_t err = NULL;
        struct elf_image img;
        size_t size;
        Elf64_Ehdr *eh;
        Elf64_Phdr *ph;
        uint32_t outside = 0x100;

        elf = build_elf(&pvh_opts, &size);
        eh = (Elf64_Ehdr *)elf;
        ph = (Elf64_Phdr *)(elf + eh->e_phoff);
        CHECK(elf_rejected(elf, size - 1, "beyond the file")); /* last segment byte cut off */
        CHECK(elf_rejected(elf, 40, "truncated or corrupt ELF"));
        eh->e_phoff = size - 8;
        CHECK(elf_rejected(elf, size, "program header"));
        eh->e_phoff = sizeof(*eh);
        ph[0].p_offset = UINT64_MAX - 4; /* offset + size wraps */
        CHECK(elf_rejected(elf, size, "beyond the file"));
        ph[0].p_offset = ELF_DATA_OFFSET;
        ph[0].p_memsz = ph[0].p_filesz - 1;
        CHECK(elf_rejected(elf, size, "bad sizes"));
        ph[0].p_memsz = pvh_opts.memsz;
        eh->e_entry = 0x42;
        CHECK(elf_rejected(elf, size, "entry point 0x42"));
        eh->e_entry = pvh_opts.entry;
        memcpy(elf + 0x110, &outside, 4);
        CHECK(elf_rejected(elf, size, "PVH entry"));
        memcpy(elf + 0x110, &pvh_opts.pvh_entry, 4);
        ph[1].p_filesz = 14; /* the note's descriptor is cut */
        CHECK(elf_rejected(elf, size, "note"));
        ph[1].p_filesz = 20;
        eh->e_ident[EI_CLASS] = ELFCLASS32;
        CHECK(elf_rejected(elf, size, "64-bit"));
        eh->e_ident[EI_CLASS] = ELFCLASS64;
        CHECK(elf_parse(elf, size, &img, &err) == 0); /* restored: valid again */
        CHECK(img.pvh_entry == pvh_opts.pvh_entry);
}

TEST(kernel_larger_than_memory_is_reported)
{
        cleanup_mem struct guest_mem gm = { .memfd = -1 };
        cleanup_tmp char *path = NULL;
        struct elf_opts o = vmlinux_opts;

        o.memsz = 40 * MIB; /* ends at 56 MiB */
        path = write_elf(&o);
        CHECK(path != NULL);
        CHECK(mem_new(&gm, 32 * MIB));
        CHECK(load_fails(&gm, path, 32 * MIB, "kernel needs 56 MiB, --memory is 32 MiB"));
}

TEST(unreadable_or_foreign_kernel_files_are_reported)
{
        cleanup_mem struct guest_mem gm = { .memfd = -1 };
        cleanup_tmp char *path = NULL;
        static const char text[] = "#!/bin/sh\necho this is not a kernel, but it is long enough to have offset 0x206 "
                                   "..................................................................................."
                                   "..................................................................................."
                                   "..................................................................................."
                                   "...................................................................\n";

        CHECK(mem_new(&gm, 64 * MIB));
        CHECK(load_fails(&gm, "/nonexistent/vmlinux", 64 * MIB, "/nonexistent/vmlinux"));
        CHECK(load_fails(&gm, "/nonexistent/vmlinux", 64 * MIB, "No such file"));
        path = write_tmp(text, sizeof(text));
        CHECK(path != NULL);
        CHECK(load_fails(&gm, path, 64 * MIB, "not a Linux kernel image (no ELF header or HdrS signature)"));
}

/* ---- bzImage ---- */

TEST(bzimage_loads_protected_mode_part_and_zero_page)
{
        cleanup_mem struct guest_mem gm = { .memfd = -1 };
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
        CHECK(kernel_loaded(&gm, path, initrd, 512 * MIB, VM_BZIMAGE_DECOMPRESS_GUEST, &boot));
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
        cleanup_mem struct guest_mem small = { .memfd = -1 };
        cleanup_tmp char *old = NULL;
        cleanup_tmp char *no64 = NULL;
        cleanup_tmp char *cut = NULL;
        cleanup_tmp char *path = NULL;
        cleanup_free uint8_t *bz = NULL;
        struct bz_opts o = bz_default;
        size_t size;

        CHECK(mem_new(&gm, 64 * MIB));
        o.version = 0x0204;
        old = write_bzimage(&o);
        CHECK(old != NULL);
        CHECK(load_fails(&gm, old, 64 * MIB, "boot protocol 2.04 is too old"));
        o = bz_default;
        o.xloadflags = 0;
        no64 = write_bzimage(&o);
        CHECK(no64 != NULL);
        CHECK(load_fails(&gm, no64, 64 * MIB, "XLF_KERNEL_64"));
        bz = build_bzimage(&bz_default, &size);
        cut = write_tmp(bz, BZ_PM_OFFSET - 10); /* cut inside the setup sectors */
        CHECK(cut != NULL);
        CHECK(load_fails(&gm, cut, 64 * MIB, "truncated bzImage"));
        path = write_bzimage(&bz_default);
        CHECK(path != NULL);
        CHECK(mem_new(&small, 20 * MIB));
        CHECK(load_fails(&small, path, 20 * MIB, "kernel needs 24 MiB")); /* 16 MiB + init_size 8 MiB */
}

/* ---- initrd, command line ---- */

TEST(initrd_respects_initrd_addr_max)
{
        cleanup_mem struct guest_mem gm = { .memfd = -1 };
        cleanup_tmp char *path = NULL;
        cleanup_tmp char *initrd = NULL;
        static uint8_t initrd_data[5000];
        struct bz_opts o = bz_default;
        struct boot_info boot = { 0 };

        o.initrd_addr_max = 0x37ffffff;
        path = write_bzimage(&o);
        initrd = write_tmp(initrd_data, sizeof(initrd_data));
        CHECK(path != NULL && initrd != NULL);
        CHECK(kernel_loaded(&gm, path, initrd, 2 * GIB, VM_BZIMAGE_DECOMPRESS_GUEST, &boot));
        CHECK(zero_page(&gm)->hdr.ramdisk_image == ((0x38000000 - sizeof(initrd_data)) & ~0xfffULL));
        CHECK(zero_page(&gm)->hdr.ramdisk_image % 4096 == 0);
}

TEST(initrd_goes_in_the_pvh_module_list)
{
        cleanup_mem struct guest_mem gm = { .memfd = -1 };
        cleanup_tmp char *path = NULL;
        cleanup_tmp char *initrd = NULL;
        static const char initrd_data[] = "070701 pretend cpio";
        const struct hvm_start_info *si;
        const struct hvm_modlist_entry *mod;
        struct boot_info boot = { 0 };

        path = write_elf(&pvh_opts);
        initrd = write_tmp(initrd_data, sizeof(initrd_data));
        CHECK(path != NULL && initrd != NULL);
        CHECK(kernel_loaded(&gm, path, initrd, 128 * MIB, VM_BZIMAGE_DECOMPRESS_GUEST, &boot));
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
        struct vm_config cfg = boot_config(path, 512 * MIB);
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
        struct vm_config cfg = boot_config(path, 64 * MIB);
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
        struct vm_config cfg = boot_config(path, 64 * MIB);
        CHECK(x86_load_linux(&gm, &cfg, devices, &boot, &err) == 0);
        CHECK_STR((const char *)guest_mem_ptr(&gm, LAYOUT_CMDLINE, 1),
                  "virtio_mmio.device=4K@0xc0000000:5 console=ttyS0 panic=-1");
        memset(longline, 'x', 2047 - strlen(devices)); /* one more with the space between */
        cfg.cmdline = longline;
        CHECK(x86_load_linux(&gm, &cfg, devices, &boot, &err) < 0);
        CHECK(err_has(err, "and the devices add 35 (virtio_mmio.device=4K@0xc0000000:5)"));
        CHECK(err_has(err, "at most 2047"));
}
