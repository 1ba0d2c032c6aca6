/* Writes and reads guest-physical addresses that are not RAM: above the end of
 * RAM (run with --memory below 512M), in the PCI hole and above 4 GiB. The VMM
 * must survive, ignore the writes and read all ones. Exits 0, or 1 + the index
 * of the first address that did not read as all ones. */
#include "payload.h"

static const uint64_t addrs[] = {
        0x30000000ULL,  /* 768 MiB: past the end of RAM */
        0xd0000000ULL,  /* PCI hole, MMIO window */
        0xfd000000ULL,  /* PCI hole, below the IOAPIC */
        0x100000000ULL, /* 4 GiB: no high RAM in a small VM */
};

int payload_main(uint64_t index, uint64_t ncpus)
{
        (void)index;
        (void)ncpus;
        for (unsigned i = 0; i < sizeof(addrs) / sizeof(addrs[0]); i++) {
                volatile uint32_t *p32 = (volatile uint32_t *)addrs[i];
                volatile uint64_t *p64 = (volatile uint64_t *)(addrs[i] + 8);
                volatile uint8_t *p8 = (volatile uint8_t *)(addrs[i] + 3);
                *p32 = 0xdeadbeef;
                *p64 = 0x0123456789abcdefULL;
                *p8 = 0x5a;
                if (*p32 != 0xffffffffu || *p64 != ~0ULL || *p8 != 0xff)
                        return (int)(1 + i);
        }
        puts_serial("mmio ok\n");
        return 0;
}
