/* Kernel images are untrusted files: the vmlinux ELF parser, the bzImage setup
 * header, the host-side decompressors and x86_load_linux() itself, loading into
 * a small guest memory. The first input byte picks the path:
 *   bit 0 clear: the in-memory functions the loader uses (elf_*, bzimage_*,
 *                decompress() with a small output limit, bootparams_write());
 *   bit 0 set:   x86_load_linux() on the rest, as a memfd file (bit 1: with an
 *                initrd, bit 2: with a command line). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

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
#include "fuzz_input.h"

#define GUEST_RAM (32ULL << 20)
#define DECOMPRESS_MAX (16ULL << 20)

int LLVMFuzzerInitialize(int *argc, char ***argv);

static struct guest_mem mem;
static int kernel_fd = -1, initrd_fd = -1;
static char kernel_path[64], initrd_path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
        cap_error_t err = NULL;
        static const char initrd[4096] = "070701";

        (void)argc;
        (void)argv;
        if (guest_mem_init(&mem, GUEST_RAM, false, &err) < 0)
                fuzz_die("guest memory", &err);
        kernel_fd = memfd_create("fuzz-kernel", MFD_CLOEXEC);
        initrd_fd = memfd_create("fuzz-initrd", MFD_CLOEXEC);
        if (kernel_fd < 0 || initrd_fd < 0 || write_all(initrd_fd, initrd, sizeof(initrd)) < 0)
                fuzz_die("memfd", NULL);
        snprintf(kernel_path, sizeof(kernel_path), "/proc/self/fd/%d", kernel_fd);
        snprintf(initrd_path, sizeof(initrd_path), "/proc/self/fd/%d", initrd_fd);
        return 0;
}

/* An ELF the parser accepted must describe itself consistently. */
static void elf_check(const uint8_t *data, size_t size)
{
        cap_error_t err = NULL;
        struct elf_image img;

        if (elf_parse(data, size, &img, &err) < 0) {
                if (err == NULL)
                        abort();
                cap_error_free(&err);
                return;
        }
        if (img.start >= img.end || (img.pvh_entry && (img.pvh_entry < img.start || img.pvh_entry >= img.end)))
                abort();
        elf_load(&mem, data, size, -1, &err);
        cap_error_free(&err);
}

static void decompress_check(const uint8_t *data, size_t size, size_t hint)
{
        cap_error_t err = NULL;
        uint8_t *out = NULL;
        size_t out_len = 0;

        if (decompress(data, size, hint, DECOMPRESS_MAX, &out, &out_len, &err) < 0) {
                if (err == NULL || out != NULL)
                        abort();
                cap_error_free(&err);
                return;
        }
        if (out_len > DECOMPRESS_MAX)
                abort();
        if (elf_is_elf(out, out_len))
                elf_check(out, out_len);
        free(out);
}

static void bzimage_check(const uint8_t *data, size_t size)
{
        cap_error_t err = NULL;
        struct bzimage bz;
        struct e820_map e820;
        struct boot_args args = { .cmdline_addr = LAYOUT_CMDLINE, .e820 = &e820 };
        uint64_t load, end;

        if (bzimage_parse(data, size, &bz, &err) < 0) {
                if (err == NULL)
                        abort();
                cap_error_free(&err);
                return;
        }
        if (bz.hdr_len > sizeof(bz.hdr) || bz.kernel < data || bz.kernel_size > size - (size_t)(bz.kernel - data))
                abort();
        if (bz.payload != NULL &&
            (bz.payload < bz.kernel || bz.payload_size > bz.kernel_size - (size_t)(bz.payload - bz.kernel)))
                abort();
        if (bz.payload != NULL && compression_detect(bz.payload, bz.payload_size) != COMPRESSION_UNKNOWN)
                decompress_check(bz.payload, bz.payload_size, bzimage_payload_size_hint(&bz));
        bzimage_place(&bz, &load, &end);
        /* Not over the boot tables, not wrapped around; the end saturates instead. */
        if (load < LAYOUT_HIMEM || end < load || (end - load < bz.kernel_size && end != UINT64_MAX))
                abort();
        if (bzimage_load(&mem, &bz, load, -1, &err) < 0)
                cap_error_free(&err);
        e820_build(&mem, &e820);
        if (bootparams_write(&mem, &bz.hdr, bz.hdr_len, &args, &err) < 0)
                abort(); /* the zero page always fits */
}

static void load_linux(const uint8_t *data, size_t size, uint8_t mode)
{
        struct vm_config cfg = {
                .kernel = kernel_path,
                .initrd = (mode & 2) ? initrd_path : NULL,
                .cmdline = (mode & 4) ? "console=ttyS0 reboot=k panic=-1" : NULL,
                .cpus = 2,
                .memory = GUEST_RAM,
        };
        struct boot_info boot;
        cap_error_t err = NULL;

        if (ftruncate(kernel_fd, 0) < 0 || pwrite(kernel_fd, data, size, 0) != (ssize_t)size)
                abort();
        if (x86_load_linux(&mem, &cfg, NULL, &boot, &err) < 0) {
                if (err == NULL)
                        abort();
                cap_error_free(&err);
                return;
        }
        if (boot.mode != BOOT_LINUX64 && boot.mode != BOOT_PVH)
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        uint8_t mode, *image;

        if (size < 1)
                return 0;
        mode = data[0];
        if (mode & 1) {
                load_linux(data + 1, size - 1, mode);
                return 0;
        }
        /* The loader's images are mmap'd or malloc'd, so aligned: so is the copy, and it
         * ends exactly where the image does, for ASan to see any read past it. */
        image = malloc(size - 1 ? size - 1 : 1);
        if (image == NULL)
                abort();
        memcpy(image, data + 1, size - 1);
        size--;
        if (elf_is_elf(image, size))
                elf_check(image, size);
        else if (bzimage_detect(image, size))
                bzimage_check(image, size);
        else if (compression_detect(image, size) != COMPRESSION_UNKNOWN)
                decompress_check(image, size, 0);
        free(image);
        return 0;
}
