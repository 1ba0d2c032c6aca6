/* x86_load_linux: pick the boot path from the kernel file's content, place the
 * kernel, initrd and command line, and write every table the guest reads. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "vmm/cmdline.h"
#include "vmm/x86/acpi.h"
#include "vmm/x86/boot.h"
#include "vmm/x86/bootparams.h"
#include "vmm/x86/bzimage.h"
#include "vmm/x86/decompress.h"
#include "vmm/x86/e820.h"
#include "vmm/x86/elf.h"
#include "vmm/x86/layout.h"
#include "vmm/x86/mptable.h"
#include "vmm/x86/pagetables.h"

/* Largest vmlinux capsule decompresses on the host (distribution kernels are ~60 MiB). */
#define HOST_DECOMPRESS_MAX (512ULL << 20)
#define MIB (1ULL << 20)
#define PAGE_SIZE_4K 0x1000ULL

/* The kernel file, mapped for its headers and open for its segments' copy. */
struct file_map {
        uint8_t *data;
        size_t size;
        int fd;
};

static void file_map_release(struct file_map *m)
{
        if (m->data != NULL && m->data != MAP_FAILED)
                munmap(m->data, m->size);
        if (m->fd >= 0)
                close(m->fd);
}

static int file_map_open(const char *path, struct file_map *m, cap_error_t *err)
{
        cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;

        if (fd < 0 || fstat(fd, &st) < 0)
                return cap_fail(err, errno, "%s", path);
        if (!S_ISREG(st.st_mode))
                return cap_fail(err, 0, "%s: not a regular file", path);
        if (st.st_size == 0)
                return cap_fail(err, 0, "%s: empty file", path);
        m->size = (size_t)st.st_size;
        m->data = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m->data == MAP_FAILED) {
                m->data = NULL;
                return cap_fail(err, errno, "%s: mmap", path);
        }
        m->fd = steal_fd(&fd);
        return 0;
}

/* Where the kernel went and how it is entered. */
struct kernel_placement {
        enum boot_mode mode;
        uint64_t entry;
        uint64_t end;                    /* first byte above the kernel's memory */
        const struct setup_header *hdr;  /* NULL for a bare vmlinux */
        size_t hdr_len;
};

static uint64_t mib_up(uint64_t bytes)
{
        return (bytes + MIB - 1) / MIB;
}

static int check_fits(uint64_t end, const struct guest_mem *mem, const struct vm_config *cfg, cap_error_t *err)
{
        if (end > guest_mem_low_end(mem))
                return cap_fail(err, 0, "kernel needs %llu MiB, --memory is %llu MiB",
                                (unsigned long long)mib_up(end),
                                (unsigned long long)(cfg->memory / MIB));
        return 0;
}

/* fd is the file data maps, or -1 for an image in memory. */
static int place_elf(struct guest_mem *mem, const struct vm_config *cfg, const uint8_t *data, size_t size, int fd,
                     struct kernel_placement *kp, cap_error_t *err)
{
        struct elf_image img;

        if (elf_parse(data, size, &img, err) < 0)
                return -1;
        if (img.start < LAYOUT_HIMEM)
                return cap_fail(err, 0, "ELF kernel loads at 0x%llx, below 1 MiB where the boot tables are",
                                (unsigned long long)img.start);
        if (check_fits(img.end, mem, cfg, err) < 0 || elf_load(mem, data, size, fd, err) < 0)
                return -1;
        kp->mode = img.pvh_entry ? BOOT_PVH : BOOT_LINUX64;
        kp->entry = img.pvh_entry ? img.pvh_entry : img.entry64;
        kp->end = img.end;
        return 0;
}

/* --bzimage-decompress host: decompress the payload here and boot the vmlinux inside,
 * sparing the guest its decompressor. Any failure leaves the bzImage to boot the usual
 * way. */
static bool place_bzimage_decompressed(struct guest_mem *mem, const struct vm_config *cfg, const struct bzimage *bz,
                                       struct kernel_placement *kp)
{
        cleanup_error cap_error_t err = NULL;
        cleanup_free uint8_t *elf = NULL;
        size_t elf_size;
        enum compression c;

        if (bz->payload == NULL)
                return false;
        c = compression_detect(bz->payload, bz->payload_size);
        if (c == COMPRESSION_UNKNOWN) {
                log_debug("bzImage payload compression is not one capsule decompresses: the guest will");
                return false;
        }
        if (decompress(bz->payload, bz->payload_size, bzimage_payload_size_hint(bz), HOST_DECOMPRESS_MAX, &elf,
                       &elf_size, &err) < 0 ||
            !elf_is_elf(elf, elf_size) || place_elf(mem, cfg, elf, elf_size, -1, kp, &err) < 0) {
                log_debug("bzImage %s payload not booted directly (%s): using the bzImage entry",
                          compression_name(c), err ? err->msg : "not an ELF");
                return false;
        }
        log_debug("bzImage %s payload decompressed on the host: %zu bytes, %s entry 0x%llx", compression_name(c),
                  elf_size, kp->mode == BOOT_PVH ? "PVH" : "64-bit", (unsigned long long)kp->entry);
        return true;
}

/* A bzImage boots through the 64-bit boot protocol and decompresses itself unless
 * --bzimage-decompress host asks otherwise. Host decompression is not the default because
 * it only moves the work from after the vCPUs start to before: under KVM the guest's
 * decompressor runs at about the host's speed (xz -d of our kernel's payload takes
 * 0.2-0.5 s natively). Measured in the nested testbed with the xz kernel, 15 boots to
 * power-off each: median 7.98 s with host decompression (which alone took 4.0 s of it)
 * against 7.24 s in the guest. */
static int place_bzimage(struct guest_mem *mem, const struct vm_config *cfg, const uint8_t *data, size_t size,
                         int fd, struct bzimage *bz, struct kernel_placement *kp, cap_error_t *err)
{
        uint64_t load, end;

        if (bzimage_parse(data, size, bz, err) < 0)
                return -1;
        kp->hdr = &bz->hdr;
        kp->hdr_len = bz->hdr_len;
        if (cfg->bzimage_decompress == VM_BZIMAGE_DECOMPRESS_HOST && place_bzimage_decompressed(mem, cfg, bz, kp))
                return 0;
        bzimage_place(bz, &load, &end);
        if (check_fits(end, mem, cfg, err) < 0 || bzimage_load(mem, bz, load, fd, err) < 0)
                return -1;
        kp->mode = BOOT_LINUX64;
        kp->entry = load + 0x200; /* startup_64 of the compressed kernel */
        kp->end = end;
        log_debug("bzImage booted through the 64-bit boot protocol: protected-mode kernel at 0x%llx, "
                  "entry 0x%llx, the guest decompresses its payload",
                  (unsigned long long)load, (unsigned long long)kp->entry);
        return 0;
}

static int write_cmdline(struct guest_mem *mem, const struct vm_config *cfg, const char *device_cmdline,
                         const struct kernel_placement *kp, cap_error_t *err)
{
        uint64_t max = VMLINUX_CMDLINE_SIZE - 1;

        if (kp->hdr != NULL)
                max = kp->hdr->cmdline_size;
        if (max > LAYOUT_CMDLINE_MAX - 1)
                max = LAYOUT_CMDLINE_MAX - 1;
        cleanup_free char *cmdline = cmdline_compose(device_cmdline, cfg->cmdline);
        size_t len = strlen(cmdline);
        if (len > max) {
                size_t own = cfg->cmdline ? strlen(cfg->cmdline) : 0;
                if (own < len)
                        return cap_fail(err, 0,
                                        "--cmdline is %zu bytes and the devices add %zu (%s): the kernel accepts at "
                                        "most %llu",
                                        own, len - own, device_cmdline, (unsigned long long)max);
                return cap_fail(err, 0, "--cmdline is %zu bytes, the kernel accepts at most %llu", len,
                                (unsigned long long)max);
        }
        if (guest_mem_write(mem, LAYOUT_CMDLINE, cmdline, len + 1) < 0)
                return cap_fail(err, 0, "--cmdline does not fit in guest RAM at 0x%llx", LAYOUT_CMDLINE);
        return 0;
}

/* The initrd goes as high as allowed (below initrd_addr_max and the PCI hole), page
 * aligned, above the kernel: the kernel's early allocations grow up from its end. */
static int load_initrd(struct guest_mem *mem, const struct vm_config *cfg, const struct kernel_placement *kp,
                       uint64_t *addr, uint64_t *size, cap_error_t *err)
{
        cleanup_close int fd = -1;
        uint64_t limit = guest_mem_low_end(mem);
        uint64_t floor = (kp->end + PAGE_SIZE_4K - 1) & ~(PAGE_SIZE_4K - 1);
        struct stat st;

        *addr = *size = 0;
        if (cfg->initrd == NULL)
                return 0;
        fd = open(cfg->initrd, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &st) < 0)
                return cap_fail(err, errno, "--initrd %s", cfg->initrd);
        if (!S_ISREG(st.st_mode))
                return cap_fail(err, 0, "--initrd %s: not a regular file", cfg->initrd);
        if (st.st_size == 0)
                return cap_fail(err, 0, "--initrd %s: empty file", cfg->initrd);
        if (kp->mode == BOOT_LINUX64) {
                uint64_t max = kp->hdr ? kp->hdr->initrd_addr_max : 0x7fffffff;

                if (max + 1 < limit)
                        limit = max + 1;
        }
        if ((uint64_t)st.st_size > limit || ((limit - (uint64_t)st.st_size) & ~(PAGE_SIZE_4K - 1)) < floor)
                return cap_fail(err, 0,
                                "--initrd: %llu MiB does not fit between the kernel end (%llu MiB) and %llu MiB "
                                "with --memory %llu MiB",
                                (unsigned long long)mib_up((uint64_t)st.st_size), (unsigned long long)mib_up(floor),
                                (unsigned long long)(limit / MIB), (unsigned long long)(cfg->memory / MIB));
        *size = (uint64_t)st.st_size;
        *addr = (limit - *size) & ~(PAGE_SIZE_4K - 1);
        if (guest_mem_load_file(mem, *addr, fd, 0, *size, err) < 0)
                return cap_error_prefix(err, "--initrd %s", cfg->initrd);
        return 0;
}

int x86_load_linux(struct guest_mem *mem, const struct vm_config *cfg, const char *device_cmdline,
                   struct boot_info *boot, cap_error_t *err)
{
        __attribute__((cleanup(file_map_release))) struct file_map kernel = { .fd = -1 };
        struct kernel_placement kp = { 0 };
        struct bzimage bz;
        struct e820_map e820;
        struct boot_args args = { .cmdline_addr = LAYOUT_CMDLINE, .e820 = &e820 };

        if (cfg->kernel == NULL)
                return cap_fail(err, 0, "no --kernel given");
        if (file_map_open(cfg->kernel, &kernel, err) < 0)
                return cap_error_prefix(err, "--kernel");
        if (elf_is_elf(kernel.data, kernel.size)) {
                if (place_elf(mem, cfg, kernel.data, kernel.size, kernel.fd, &kp, err) < 0)
                        return cap_error_prefix(err, "--kernel %s", cfg->kernel);
        } else if (bzimage_detect(kernel.data, kernel.size)) {
                if (place_bzimage(mem, cfg, kernel.data, kernel.size, kernel.fd, &bz, &kp, err) < 0)
                        return cap_error_prefix(err, "--kernel %s", cfg->kernel);
        } else {
                return cap_fail(err, 0, "--kernel %s: not a Linux kernel image (no ELF header or HdrS signature)",
                                cfg->kernel);
        }

        if (write_cmdline(mem, cfg, device_cmdline, &kp, err) < 0 ||
            load_initrd(mem, cfg, &kp, &args.initrd_addr, &args.initrd_size, err) < 0)
                return -1;
        e820_build(mem, &e820);
        if (mptable_write(mem, cfg->cpus, err) < 0 || acpi_write(mem, cfg->cpus, &args.rsdp_addr, err) < 0 ||
            x86_write_boot_gdt(mem, err) < 0 || x86_write_identity_paging(mem, err) < 0)
                return -1;
        if (kp.mode == BOOT_PVH) {
                if (pvh_start_info_write(mem, &args, err) < 0)
                        return -1;
                boot->arg = LAYOUT_PVH_START_INFO;
        } else {
                if (bootparams_write(mem, kp.hdr, kp.hdr_len, &args, err) < 0)
                        return -1;
                boot->arg = LAYOUT_ZERO_PAGE;
        }
        boot->mode = kp.mode;
        boot->entry = kp.entry;
        boot->stack_top = 0;
        return 0;
}
