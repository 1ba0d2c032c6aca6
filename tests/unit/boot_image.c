/* Kernels synthesized for the x86 boot tests (boot_image.h). */
#include "boot_image.h"

#include <elf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "vmm/x86/bzimage.h"
#include "vmm/x86/elf.h"
#include "vmm/x86/layout.h"

void unlink_tmp(char **path)
{
        if (*path) {
                unlink(*path);
                free(*path);
        }
}

char *write_tmp(const void *data, size_t len)
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

bool mem_new(struct guest_mem *gm, uint64_t size)
{
        cleanup_error cap_error_t err = NULL;

        return guest_mem_init(gm, size, false, &err) == 0;
}

struct vm_config boot_config(char *kernel, uint64_t memory)
{
        return (struct vm_config){ .kernel = kernel, .cmdline = "console=ttyS0 panic=-1", .cpus = 2, .memory = memory };
}

bool kernel_loaded(struct guest_mem *gm, char *kernel, char *initrd, uint64_t memory, enum vm_bzimage_decompress how,
                   struct boot_info *boot)
{
        cleanup_error cap_error_t err = NULL;
        struct vm_config cfg = boot_config(kernel, memory);

        cfg.initrd = initrd;
        cfg.bzimage_decompress = how;
        if (guest_mem_init(gm, memory, false, &err) < 0 || x86_load_linux(gm, &cfg, NULL, boot, &err) < 0) {
                fprintf(stderr, "kernel_loaded: %s\n", err ? err->msg : "?");
                return false;
        }
        return true;
}

bool err_has(const cap_error_t err, const char *needle)
{
        if (err == NULL || err->msg == NULL || strstr(err->msg, needle) == NULL) {
                fprintf(stderr, "error %s does not contain \"%s\"\n", err && err->msg ? err->msg : "(none)", needle);
                return false;
        }
        return true;
}

uint8_t pattern(size_t i)
{
        return (uint8_t)(i * 7 + 1);
}

uint8_t *build_elf(const struct elf_opts *o, size_t *size)
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

const struct elf_opts vmlinux_opts = {
        .vaddr = KERNEL_VADDR, .paddr = KERNEL_PADDR, .entry = KERNEL_VADDR + 0x100,
        .filesz = 0x3000, .memsz = 0x5000,
};
const struct elf_opts pvh_opts = {
        .vaddr = KERNEL_VADDR, .paddr = KERNEL_PADDR, .entry = KERNEL_PADDR,
        .filesz = 0x3000, .memsz = 0x5000, .pvh = true, .pvh_entry = KERNEL_PADDR + 0x1234,
};

uint8_t *build_bzimage(const struct bz_opts *o, size_t *size)
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

const struct bz_opts bz_default = { .version = 0x020f, .xloadflags = XLF_KERNEL_64, .initrd_addr_max = 0x7fffffff };

char *write_elf(const struct elf_opts *o)
{
        size_t size;
        cleanup_free uint8_t *elf = build_elf(o, &size);

        return write_tmp(elf, size);
}

char *write_bzimage(const struct bz_opts *o)
{
        size_t size;
        cleanup_free uint8_t *bz = build_bzimage(o, &size);

        return write_tmp(bz, size);
}

const struct boot_params *zero_page(const struct guest_mem *gm)
{
        return guest_mem_ptr(gm, LAYOUT_ZERO_PAGE, sizeof(struct boot_params));
}

bool guest_has_pattern(const struct guest_mem *gm, uint64_t gpa, size_t len)
{
        const uint8_t *p = guest_mem_ptr(gm, gpa, len);

        if (p == NULL)
                return false;
        for (size_t i = 0; i < len; i++)
                if (p[i] != pattern(i))
                        return false;
        return true;
}

bool guest_is_zero(const struct guest_mem *gm, uint64_t gpa, size_t len)
{
        const uint8_t *p = guest_mem_ptr(gm, gpa, len);

        if (p == NULL)
                return false;
        for (size_t i = 0; i < len; i++)
                if (p[i])
                        return false;
        return true;
}
