#include "vmm/x86/pagetables.h"

#include <stdint.h>

#include "vmm/x86/layout.h"

#define PTE_PRESENT 0x1ULL
#define PTE_WRITE 0x2ULL
#define PTE_LARGE 0x80ULL

int x86_write_identity_paging(struct guest_mem *mem, cap_error_t *err)
{
        uint64_t *pml4 = guest_mem_ptr(mem, LAYOUT_PML4, BOOT_PAGE_TABLES_SIZE);
        uint64_t *pdpt, *pd;

        if (pml4 == NULL)
                return cap_fail(err, 0, "page tables at 0x%llx do not fit in guest RAM", LAYOUT_PML4);
        pdpt = pml4 + 512;
        pd = pdpt + 512;
        for (int i = 0; i < 512; i++)
                pml4[i] = 0;
        pml4[0] = (LAYOUT_PML4 + 0x1000) | PTE_PRESENT | PTE_WRITE;
        for (int i = 0; i < 512; i++)
                pdpt[i] = i < 4 ? (LAYOUT_PML4 + 0x2000 + 0x1000ULL * i) | PTE_PRESENT | PTE_WRITE : 0;
        for (uint64_t i = 0; i < 4 * 512; i++)
                pd[i] = (i << 21) | PTE_PRESENT | PTE_WRITE | PTE_LARGE;
        return 0;
}

int x86_write_boot_gdt(struct guest_mem *mem, cap_error_t *err)
{
        const uint64_t gdt[BOOT_GDT_ENTRIES] = {
                0,
                0x00cf9b000000ffffULL, /* 32-bit code, base 0, 4 GiB, DPL 0 */
                0x00af9b000000ffffULL, /* 64-bit code (L=1), DPL 0 */
                0x00cf93000000ffffULL, /* data, base 0, 4 GiB, writable */
        };

        if (guest_mem_write(mem, LAYOUT_GDT, gdt, sizeof(gdt)) < 0)
                return cap_fail(err, 0, "GDT at 0x%llx does not fit in guest RAM", LAYOUT_GDT);
        return 0;
}
