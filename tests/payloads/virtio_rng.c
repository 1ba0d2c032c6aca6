/* Drives virtio-rng's request queue end to end over the MMIO transport (run with
 * --virtio-transport mmio --rng): find the device, negotiate VERSION_1, set a queue
 * up in payload memory, offer a 64-byte writable buffer, kick, poll the used ring.
 * Exits 0 when the device returned 64 bytes that are not all zero; otherwise 10 + the
 * failed setup step, or 2 (no device), 3 (no answer), 4 (wrong answer), 5 (zeros). */
#include "virtio_mmio.h"

#define VIRTIO_ID_RNG 4
#define BYTES 64

static struct vqueue q;
static uint8_t buf[BYTES];

int payload_main(uint64_t index, uint64_t ncpus)
{
        (void)index;
        (void)ncpus;
        uint64_t base = virtio_mmio_find(VIRTIO_ID_RNG);
        if (!base) {
                puts_serial("virtio-rng: no device\n");
                return 2;
        }
        puts_serial("virtio-rng: device at 0x");
        put_hex(base, 8);
        puts_serial("\n");
        int step = virtio_mmio_setup(base, &q);
        if (step) {
                puts_serial("virtio-rng: setup failed at step ");
                put_dec((uint64_t)step);
                puts_serial("\n");
                return 10 + step;
        }
        q.desc[0] = (struct vdesc){ .addr = (uint64_t)buf, .len = BYTES, .flags = DESC_F_WRITE };
        virtio_mmio_kick(base, &q, 0);
        uint32_t id, len;
        if (!virtio_mmio_wait_used(&q, &id, &len)) {
                puts_serial("virtio-rng: no answer\n");
                return 3;
        }
        puts_serial("virtio-rng: used id ");
        put_dec(id);
        puts_serial(" len ");
        put_dec(len);
        puts_serial("\n");
        if (id != 0 || len != BYTES)
                return 4;
        unsigned nonzero = 0;
        for (unsigned i = 0; i < BYTES; i++)
                nonzero += buf[i] != 0;
        puts_serial("virtio-rng: ");
        for (unsigned i = 0; i < 16; i++)
                put_hex(buf[i], 2);
        puts_serial("...\n");
        return nonzero ? 0 : 5;
}
