/* Test payloads: a static ELF64 run in 64-bit ring 3 with identity-mapped user
 * page tables, so its code runs natively even where guest ring 0 is emulated. */
#include <elf.h>
#include <string.h>

#include "common/util.h"
#include "vmm/x86/boot.h"
#include "vmm/x86/layout.h"
#include "vmm/x86/ring3.h"

#define PAYLOAD_MAX_FILE (64ULL << 20)
#define GIB (1ULL << 30)
#define PTE_P (1ULL << 0)
#define PTE_RW (1ULL << 1)
#define PTE_US (1ULL << 2)
#define PTE_PS (1ULL << 7)

_Static_assert(RING3_GDT_ENTRIES * 8 == LAYOUT_IDT - LAYOUT_GDT, "the ring-3 GDT fills the GDT slot");

static int check_elf(const char *path, const uint8_t *data, size_t size, cap_error_t *err)
{
        const Elf64_Ehdr *eh = (const Elf64_Ehdr *)data;
        if (size < sizeof(*eh) || memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0)
                return cap_fail(err, 0, "payload %s: not an ELF file", path);
        if (eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_ident[EI_DATA] != ELFDATA2LSB || eh->e_machine != EM_X86_64)
                return cap_fail(err, 0, "payload %s: not a 64-bit little-endian x86-64 ELF", path);
        if (eh->e_type != ET_EXEC)
                return cap_fail(err, 0, "payload %s: not a static executable (ELF type %u, want ET_EXEC)", path, eh->e_type);
        if (eh->e_phentsize != sizeof(Elf64_Phdr) || eh->e_phnum == 0 || eh->e_phoff % 8 != 0 || eh->e_phoff > size ||
            (size - eh->e_phoff) / sizeof(Elf64_Phdr) < eh->e_phnum)
                return cap_fail(err, 0, "payload %s: bad program header table", path);
        return 0;
}

static int load_segments(struct guest_mem *mem, const char *path, const uint8_t *data, size_t size, uint64_t *end, cap_error_t *err)
{
        const Elf64_Ehdr *eh = (const Elf64_Ehdr *)data;
        const Elf64_Phdr *ph = (const Elf64_Phdr *)(data + eh->e_phoff);
        bool entry_loaded = false;
        int loads = 0;
        *end = 0;
        for (int i = 0; i < eh->e_phnum; i++) {
                const Elf64_Phdr *p = &ph[i];
                if (p->p_type == PT_INTERP || p->p_type == PT_DYNAMIC)
                        return cap_fail(err, 0, "payload %s: dynamically linked; payloads must be static", path);
                if (p->p_type != PT_LOAD || p->p_memsz == 0)
                        continue;
                if (p->p_filesz > p->p_memsz || p->p_offset > size || p->p_filesz > size - p->p_offset)
                        return cap_fail(err, 0, "payload %s: segment %d lies outside the file", path, i);
                if (p->p_vaddr < LAYOUT_HIMEM)
                        return cap_fail(err, 0, "payload %s: segment %d at %#llx overlaps the loader's low memory (below %#llx)",
                                        path, i, (unsigned long long)p->p_vaddr, LAYOUT_HIMEM);
                uint8_t *dst = guest_mem_ptr(mem, p->p_vaddr, p->p_memsz);
                if (!dst)
                        return cap_fail(err, 0, "payload %s: segment %d [%#llx, +%#llx) is outside guest RAM (%llu MiB)", path, i,
                                        (unsigned long long)p->p_vaddr, (unsigned long long)p->p_memsz,
                                        (unsigned long long)(mem->size >> 20));
                memcpy(dst, data + p->p_offset, p->p_filesz);
                memset(dst + p->p_filesz, 0, p->p_memsz - p->p_filesz);
                if (eh->e_entry >= p->p_vaddr && eh->e_entry - p->p_vaddr < p->p_memsz && (p->p_flags & PF_X))
                        entry_loaded = true;
                if (p->p_vaddr + p->p_memsz > *end)
                        *end = p->p_vaddr + p->p_memsz;
                loads++;
        }
        if (loads == 0)
                return cap_fail(err, 0, "payload %s: no loadable segment", path);
        if (!entry_loaded)
                return cap_fail(err, 0, "payload %s: entry point %#llx is not in an executable segment", path,
                                (unsigned long long)eh->e_entry);
        return 0;
}

/* Identity map [0, gib GiB) with 2 MiB user pages: RAM, the PCI hole and one
 * GiB past the end of RAM, so payloads can poke at addresses with no RAM. */
static int build_page_tables(struct guest_mem *mem, cap_error_t *err)
{
        uint64_t ram_end = 0;
        for (int i = 0; i < mem->n_regions; i++)
                if (mem->regions[i].gpa + mem->regions[i].size > ram_end)
                        ram_end = mem->regions[i].gpa + mem->regions[i].size;
        uint64_t gib = (ram_end + GIB - 1) / GIB + 1;
        if (gib < GUEST_PCI_HOLE_END / GIB + 1)
                gib = GUEST_PCI_HOLE_END / GIB + 1;
        if (gib > RING3_MAX_GIB)
                return cap_fail(err, 0, "--memory: payloads support at most %llu GiB of guest memory", RING3_MAX_GIB - 1);

        const uint64_t flags = PTE_P | PTE_RW | PTE_US;
        uint64_t pml4e = RING3_PDPT | flags;
        if (guest_mem_write(mem, LAYOUT_PML4, &pml4e, sizeof(pml4e)) < 0)
                return cap_fail(err, 0, "payload page tables do not fit in guest RAM");
        for (uint64_t g = 0; g < gib; g++) {
                uint64_t pd = RING3_PD + g * 0x1000;
                uint64_t pdpte = pd | flags;
                uint64_t *entries = guest_mem_ptr(mem, pd, 0x1000);
                if (!entries || guest_mem_write(mem, RING3_PDPT + g * 8, &pdpte, sizeof(pdpte)) < 0)
                        return cap_fail(err, 0, "payload page tables do not fit in guest RAM");
                for (uint64_t j = 0; j < 512; j++)
                        entries[j] = (g * GIB + j * (2ULL << 20)) | flags | PTE_PS;
        }
        return 0;
}

int x86_load_payload(struct guest_mem *mem, const struct vm_config *cfg, struct boot_info *boot, cap_error_t *err)
{
        cleanup_free char *data = NULL;
        size_t size = 0;
        if (read_file(cfg->payload, &data, &size, PAYLOAD_MAX_FILE, err) < 0)
                return cap_error_prefix(err, "payload");
        const uint8_t *bytes = (const uint8_t *)data;
        uint64_t end;
        if (check_elf(cfg->payload, bytes, size, err) < 0 || load_segments(mem, cfg->payload, bytes, size, &end, err) < 0)
                return -1;

        uint64_t stacks = (end + RING3_STACK_SIZE - 1) & ~(RING3_STACK_SIZE - 1);
        uint64_t stack_top = stacks + (uint64_t)cfg->cpus * RING3_STACK_SIZE;
        if (stack_top > guest_mem_low_end(mem))
                return cap_fail(err, 0, "payload %s: no room in guest RAM for %d vCPU stacks above %#llx", cfg->payload,
                                cfg->cpus, (unsigned long long)stacks);

        const uint64_t gdt[RING3_GDT_ENTRIES] = { 0, 0, RING3_GDT_CODE, RING3_GDT_DATA };
        if (guest_mem_write(mem, LAYOUT_GDT, gdt, sizeof(gdt)) < 0)
                return cap_fail(err, 0, "payload: the GDT does not fit in guest RAM");
        if (build_page_tables(mem, err) < 0)
                return -1;

        const Elf64_Ehdr *eh = (const Elf64_Ehdr *)bytes;
        *boot = (struct boot_info){ .mode = BOOT_RING3, .entry = eh->e_entry, .arg = 0, .stack_top = stack_top };
        return 0;
}
