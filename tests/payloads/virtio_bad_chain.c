/* A hostile driver against virtio-rng over the MMIO transport (run with
 * --virtio-transport mmio --rng): a descriptor pointing outside guest RAM, then a
 * descriptor loop. Each time the device must answer with DEVICE_NEEDS_RESET (0x40) in
 * its status and a config interrupt (InterruptStatus bit 1), never with a used entry;
 * after a reset it must work again. Exits 0 when it does; otherwise the failed step:
 * 2 no device, 10 + setup step, 3 no NEEDS_RESET, 4 no config interrupt, 5 a used
 * entry for the bad chain, 6 the good request after the resets got no bytes. */
#include "virtio_mmio.h"

#define VIRTIO_ID_RNG 4
#define BYTES 32
#define NOT_RAM 0xd0000000ULL /* the PCI hole */

static struct vqueue q;
static uint8_t buf[BYTES];

static int expect_failure(uint64_t base, const char *what)
{
        if (!virtio_mmio_wait_needs_reset(base)) {
                puts_serial("virtio-bad-chain: no DEVICE_NEEDS_RESET after ");
                puts_serial(what);
                puts_serial("\n");
                return 3;
        }
        uint32_t isr = mmio_read(base, VIRTIO_MMIO_INTERRUPT_STATUS);
        mmio_write(base, VIRTIO_MMIO_INTERRUPT_ACK, isr);
        if (!(isr & 2))
                return 4;
        if (((volatile struct vqueue *)&q)->used.idx != 0)
                return 5;
        puts_serial("virtio-bad-chain: DEVICE_NEEDS_RESET after ");
        puts_serial(what);
        puts_serial("\n");
        return 0;
}

int payload_main(uint64_t index, uint64_t ncpus)
{
        (void)index;
        (void)ncpus;
        uint64_t base = virtio_mmio_find(VIRTIO_ID_RNG);
        if (!base)
                return 2;
        int step = virtio_mmio_setup(base, &q);
        if (step)
                return 10 + step;
        q.desc[0] = (struct vdesc){ .addr = NOT_RAM, .len = BYTES, .flags = DESC_F_WRITE };
        virtio_mmio_kick(base, &q, 0);
        int r = expect_failure(base, "a buffer outside RAM");
        if (r)
                return r;

        if ((step = virtio_mmio_setup(base, &q)))
                return 20 + step;
        q.desc[0] = (struct vdesc){ .addr = (uint64_t)buf, .len = BYTES, .flags = DESC_F_WRITE | DESC_F_NEXT, .next = 1 };
        q.desc[1] = (struct vdesc){ .addr = (uint64_t)buf, .len = BYTES, .flags = DESC_F_WRITE | DESC_F_NEXT, .next = 0 };
        virtio_mmio_kick(base, &q, 0);
        if ((r = expect_failure(base, "a descriptor loop")))
                return r;

        if ((step = virtio_mmio_setup(base, &q)))
                return 30 + step;
        q.desc[0] = (struct vdesc){ .addr = (uint64_t)buf, .len = BYTES, .flags = DESC_F_WRITE };
        virtio_mmio_kick(base, &q, 0);
        uint32_t id, len;
        if (!virtio_mmio_wait_used(&q, &id, &len) || id != 0 || len != BYTES)
                return 6;
        unsigned nonzero = 0;
        for (unsigned i = 0; i < BYTES; i++)
                nonzero += buf[i] != 0;
        if (!nonzero)
                return 6;
        puts_serial("virtio-bad-chain: the device works again after a reset\n");
        return 0;
}
