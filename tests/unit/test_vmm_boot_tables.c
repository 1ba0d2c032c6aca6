/* What the VMM writes into guest memory before the first instruction: the e820 map, the MP
 * table, the identity page tables and the boot GDT. */
#include <string.h>

#include "boot_image.h"
#include "check.h"
#include "common/util.h"
#include "vmm/x86/e820.h"
#include "vmm/x86/layout.h"
#include "vmm/x86/mptable.h"
#include "vmm/x86/pagetables.h"

/* ---- e820 ---- */

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
