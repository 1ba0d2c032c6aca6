/* PCI configuration mechanism #1 (0xcf8/0xcfc): the host bridge at 00:00.0
 * answers with class 06/00, an empty slot (00:1f.0) reads as all ones.
 * Exit 0 on success, 1 if no host bridge, 2 if the empty slot answered. */
#include "payload.h"

static uint32_t pci_read(unsigned bus, unsigned dev, unsigned fn, unsigned reg)
{
        outl(0xcf8, 0x80000000u | bus << 16 | dev << 11 | fn << 8 | (reg & 0xfc));
        return inl(0xcfc);
}

int payload_main(uint64_t index, uint64_t ncpus)
{
        (void)index;
        (void)ncpus;
        uint32_t id = pci_read(0, 0, 0, 0x00);
        uint32_t class = pci_read(0, 0, 0, 0x08);
        uint32_t empty = pci_read(0, 0x1f, 0, 0x00);
        puts_serial("pci 00:00.0 vendor=");
        put_hex(id & 0xffff, 4);
        puts_serial(" device=");
        put_hex(id >> 16, 4);
        puts_serial(" class=");
        put_hex(class >> 16, 4);
        puts_serial("\npci 00:1f.0 ");
        put_hex(empty, 8);
        puts_serial("\n");
        if ((id & 0xffff) == 0xffff || (class >> 16) != 0x0600)
                return 1;
        if (empty != 0xffffffffu)
                return 2;
        return 0;
}
