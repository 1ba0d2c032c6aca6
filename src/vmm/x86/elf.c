#include "vmm/x86/elf.h"

#include <elf.h>
#include <string.h>

bool elf_is_elf(const uint8_t *data, size_t size)
{
        return size >= SELFMAG && memcmp(data, ELFMAG, SELFMAG) == 0;
}

/* [off, off+len) lies inside a buffer of size bytes (without overflowing). */
static bool in_file(uint64_t off, uint64_t len, size_t size)
{
        return off <= size && len <= size - off;
}

static const Elf64_Phdr *elf_phdr(const uint8_t *data, int i)
{
        const Elf64_Ehdr *eh = (const Elf64_Ehdr *)data;

        return (const Elf64_Phdr *)(data + eh->e_phoff + (size_t)i * sizeof(Elf64_Phdr));
}

/* Find the Xen PHYS32_ENTRY note in a PT_NOTE segment; notes are 4-byte aligned. */
static int elf_find_pvh_note(const uint8_t *note, uint64_t len, uint64_t *entry, cap_error_t *err)
{
        uint64_t off = 0;

        while (len - off >= sizeof(Elf64_Nhdr)) {
                Elf64_Nhdr nh;
                uint64_t name_off, desc_off, next;

                memcpy(&nh, note + off, sizeof(nh));
                name_off = off + sizeof(nh);
                desc_off = name_off + ((nh.n_namesz + 3ULL) & ~3ULL);
                next = desc_off + ((nh.n_descsz + 3ULL) & ~3ULL);
                if (desc_off > len || nh.n_descsz > len - desc_off)
                        return cap_fail(err, 0, "truncated or corrupt ELF: note extends beyond its segment");
                if (nh.n_type == XEN_ELFNOTE_PHYS32_ENTRY && nh.n_namesz == 4 &&
                    memcmp(note + name_off, "Xen", 4) == 0) {
                        if (nh.n_descsz == 4) {
                                uint32_t v;

                                memcpy(&v, note + desc_off, 4);
                                *entry = v;
                        } else if (nh.n_descsz == 8) {
                                memcpy(entry, note + desc_off, 8);
                        } else {
                                return cap_fail(err, 0, "corrupt ELF: PVH entry note has %u bytes", nh.n_descsz);
                        }
                        return 0;
                }
                off = next > len ? len : next;
        }
        return 0;
}

int elf_parse(const uint8_t *data, size_t size, struct elf_image *img, cap_error_t *err)
{
        const Elf64_Ehdr *eh = (const Elf64_Ehdr *)data;
        bool have_load = false, entry_found = false;

        memset(img, 0, sizeof(*img));
        if (size < sizeof(Elf64_Ehdr) || !elf_is_elf(data, size))
                return cap_fail(err, 0, "truncated or corrupt ELF: the header is incomplete");
        if (eh->e_ident[EI_CLASS] != ELFCLASS64)
                return cap_fail(err, 0, "ELF is not 64-bit: capsule boots x86-64 kernels");
        if (eh->e_ident[EI_DATA] != ELFDATA2LSB || eh->e_machine != EM_X86_64)
                return cap_fail(err, 0, "ELF machine %u is not x86-64", eh->e_machine);
        if (eh->e_type != ET_EXEC)
                return cap_fail(err, 0, "ELF type %u is not an executable", eh->e_type);
        if (eh->e_phnum == 0 || eh->e_phentsize != sizeof(Elf64_Phdr) ||
            !in_file(eh->e_phoff, (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr), size) || eh->e_phoff % 8)
                return cap_fail(err, 0, "truncated or corrupt ELF: bad program header table");

        img->start = UINT64_MAX;
        for (int i = 0; i < eh->e_phnum; i++) {
                const Elf64_Phdr *ph = elf_phdr(data, i);

                if (ph->p_type != PT_LOAD && ph->p_type != PT_NOTE)
                        continue;
                if (!in_file(ph->p_offset, ph->p_filesz, size))
                        return cap_fail(err, 0,
                                        "truncated or corrupt ELF: segment %d (offset 0x%llx, 0x%llx bytes) "
                                        "extends beyond the file (0x%zx bytes)",
                                        i, (unsigned long long)ph->p_offset, (unsigned long long)ph->p_filesz, size);
                if (ph->p_type == PT_NOTE) {
                        if (elf_find_pvh_note(data + ph->p_offset, ph->p_filesz, &img->pvh_entry, err) < 0)
                                return -1;
                        continue;
                }
                if (ph->p_filesz > ph->p_memsz || ph->p_paddr + ph->p_memsz < ph->p_paddr)
                        return cap_fail(err, 0, "corrupt ELF: segment %d has bad sizes", i);
                if (ph->p_memsz == 0)
                        continue;
                have_load = true;
                if (ph->p_paddr < img->start)
                        img->start = ph->p_paddr;
                if (ph->p_paddr + ph->p_memsz > img->end)
                        img->end = ph->p_paddr + ph->p_memsz;
        }
        if (!have_load)
                return cap_fail(err, 0, "ELF has no loadable segment");

        /* e_entry is physical in a vmlinux (ENTRY(phys_startup_64)) but virtual in other
         * images: prefer a physical match, then translate through the segment's mapping. */
        for (int pass = 0; pass < 2 && !entry_found; pass++) {
                for (int i = 0; i < eh->e_phnum; i++) {
                        const Elf64_Phdr *ph = elf_phdr(data, i);
                        uint64_t base = pass == 0 ? ph->p_paddr : ph->p_vaddr;

                        if (ph->p_type != PT_LOAD || eh->e_entry < base || eh->e_entry - base >= ph->p_memsz)
                                continue;
                        img->entry64 = ph->p_paddr + (eh->e_entry - base);
                        entry_found = true;
                        break;
                }
        }
        if (!entry_found)
                return cap_fail(err, 0, "corrupt ELF: entry point 0x%llx is outside every loadable segment",
                                (unsigned long long)eh->e_entry);
        if (img->pvh_entry && (img->pvh_entry < img->start || img->pvh_entry >= img->end))
                return cap_fail(err, 0, "corrupt ELF: PVH entry 0x%llx is outside the loaded image",
                                (unsigned long long)img->pvh_entry);
        return 0;
}

int elf_load(struct guest_mem *mem, const uint8_t *data, size_t size, int fd, cap_error_t *err)
{
        const Elf64_Ehdr *eh = (const Elf64_Ehdr *)data;

        for (int i = 0; i < eh->e_phnum; i++) {
                const Elf64_Phdr *ph = elf_phdr(data, i);

                if (ph->p_type != PT_LOAD || ph->p_memsz == 0)
                        continue;
                if (!in_file(ph->p_offset, ph->p_filesz, size))
                        return cap_fail(err, 0, "truncated or corrupt ELF: segment %d extends beyond the file", i);
                /* The rest up to p_memsz (the bss) stays as it is: guest RAM comes fresh from
                 * its memfd, all zeroes, and writing them would only fault in pages early. */
                if (guest_mem_ptr(mem, ph->p_paddr, ph->p_memsz) == NULL ||
                    (fd < 0 && guest_mem_fill(mem, ph->p_paddr, data + ph->p_offset, ph->p_filesz) < 0))
                        return cap_fail(err, 0, "ELF segment %d at 0x%llx-0x%llx is outside guest RAM", i,
                                        (unsigned long long)ph->p_paddr,
                                        (unsigned long long)(ph->p_paddr + ph->p_memsz));
                if (fd >= 0 && guest_mem_load_file(mem, ph->p_paddr, fd, ph->p_offset, ph->p_filesz, err) < 0)
                        return cap_error_prefix(err, "ELF segment %d", i);
        }
        return 0;
}
