/* What a hostile driver can do to virtio-balloon (balloon.c, balloon_req.c) through every
 * queue: inflate and deflate PFN arrays, stats buffers and free page reports laid out in
 * guest memory however it likes, config writes, resets, interleaved with what the host
 * does (set a target, read the statistics, which hands the stats buffer back). The real
 * device on the MMIO transport over a 2 MiB memfd, so given-back pages are real holes
 * punched in it. No KVM and no event loop thread: a kick is served as the loop would,
 * and serving again takes up work a bounded round left over.
 *
 * The input is a sequence of records, each starting with an op byte; op & 7 picks:
 *   0: guest memory: an le16 offset in the first 64 KiB, a length byte (<= 64), data;
 *   1: the driver's steps: an le32 of feature bits (VERSION_1 added), a queue size byte,
 *      (op >> 3) % 5 queues with queue q's rings at 0x1000 * (3q + 1), DRIVER_OK;
 *   2: the device serves its queues, as after a kick of queue (op >> 3) % 4;
 *   3: a config access: bit 3 write, bits 4-5 the size (1, 2, 4), an offset byte (% 20),
 *      then a write's data;
 *   4: the host sets a target of an le32 number of pages (more than RAM is refused);
 *   5: the host reads the statistics;
 *   6: a device reset (status 0);
 *   7: QueueNotify with the next byte.
 * The invariants: the target and the driver's "actual" never exceed the VM's memory, a
 * refused target changes nothing, and the guest's statistics are either absent or came
 * from a buffer. */
#define VIRTIO_MMIO_NO_LEGACY
#include <linux/virtio_mmio.h>

#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "vmm/device.h"
#include "vmm/virtio/balloon.h"
#include "vmm/virtio/virtio.h"
#include "vmm/vm.h"
#include "vmm/x86/layout.h"
#include "fuzz_input.h"
#include "../unit/machine.h"
#include "../unit/mmio_driver.h"

#define GUEST_RAM (2ULL << 20)
#define BASE LAYOUT_MMIO_START

int LLVMFuzzerInitialize(int *argc, char ***argv);

static struct machine_base machine;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
        cap_error_t err = NULL;
        (void)argc, (void)argv;
        if (log_init("/dev/null", NULL, false) < 0)
                abort();
        if (machine_base_init(&machine, GUEST_RAM, &err) < 0)
                fuzz_die("machine", &err);
        machine.cfg = (struct vm_config){ .console = VM_CONSOLE_FILE, .console_path = "/dev/null",
                                          .virtio_transport = VM_VIRTIO_MMIO, .balloon = true,
                                          .balloon_free_page_reporting = true, .balloon_deflate_on_oom = true };
        return 0;
}

static void reg(uint64_t off, uint8_t *buf, uint32_t len, bool is_write)
{
        bus_dispatch(&machine.mmio, BASE + off, buf, len, is_write);
}

static void wr32(uint64_t off, uint32_t v)
{
        mmio_wr32(&machine.mmio, off, v);
}

static uint32_t rd32(uint64_t off)
{
        return mmio_rd32(&machine.mmio, off);
}

static void guest_write(struct input *in)
{
        uint16_t off;
        uint8_t len, data[64];
        if (!take(in, &off, sizeof(off)) || !take(in, &len, 1))
                return;
        len %= sizeof(data) + 1;
        if (take(in, data, len))
                memcpy(machine.mem.base + off, data, len);
}

static void driver_setup(struct input *in, unsigned int n_queues)
{
        uint32_t features;
        uint8_t size;
        if (!take(in, &features, sizeof(features)) || !take(in, &size, 1))
                return;
        mmio_driver_features(&machine.mmio, features);
        for (unsigned int q = 0; q < n_queues; q++) {
                uint64_t rings = 0x1000 * (3 * q + 1);
                mmio_queue_setup(&machine.mmio, q, size, rings, rings + 0x1000, rings + 0x2000);
        }
        wr32(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK |
                                         VIRTIO_CONFIG_S_DRIVER_OK);
}

/* What the event loop does on a kick of queue q. */
static void serve(struct virtio_dev *dev, unsigned int q)
{
        virtio_dev_lock(dev);
        bool live = (dev->status & VIRTIO_CONFIG_S_DRIVER_OK) &&
                    !(dev->status & (VIRTIO_CONFIG_S_NEEDS_RESET | VIRTIO_CONFIG_S_FAILED));
        if (live && q < dev->n_queues && dev->queues[q].ready)
                dev->ops->notify(dev, q);
        virtio_dev_unlock(dev);
}

static void config_access(struct input *in, uint8_t op)
{
        uint32_t len = 1u << ((op >> 4) & 3);
        uint8_t off, buf[8] = { 0 };
        if (len > 4 || !take(in, &off, 1))
                return;
        if ((op & 8) && !take(in, buf, len))
                return;
        reg(VIRTIO_MMIO_CONFIG + off % 20, buf, len, op & 8);
}

static void check_stats(struct balloon *b)
{
        struct balloon_stats s;
        balloon_get_stats(b, &s);
        uint64_t ram = machine.mem.size;
        if (s.target_bytes > ram || s.actual_bytes > ram || s.target_bytes % 4096 || s.actual_bytes % 4096)
                abort();
        if (!s.have_guest_stats && (s.total_memory != UINT64_MAX || s.free_memory != UINT64_MAX || s.age_ms))
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct input in = { data, size };
        cap_error_t err = NULL;
        if (machine_base_start(&machine, false, &err) < 0)
                fuzz_die("devices", &err);
        struct virtio_dev *dev = machine.ctx.virtio_devs;
        struct balloon *b = machine.ctx.balloon;
        if (!dev || !b)
                abort();
        uint8_t op, byte;
        while (take(&in, &op, 1)) {
                switch (op & 7) {
                case 0:
                        guest_write(&in);
                        break;
                case 1:
                        driver_setup(&in, (op >> 3) % 5);
                        break;
                case 2:
                        serve(dev, (op >> 3) % 4);
                        break;
                case 3:
                        config_access(&in, op);
                        break;
                case 4: {
                        uint32_t pages;
                        if (!take(&in, &pages, sizeof(pages)))
                                break;
                        uint32_t before = rd32(VIRTIO_MMIO_CONFIG);
                        int r = balloon_set_target(b, (uint64_t)pages * 4096, &err);
                        if (r < 0) {
                                cap_error_free(&err);
                                if (rd32(VIRTIO_MMIO_CONFIG) != before)
                                        abort();
                        } else if (rd32(VIRTIO_MMIO_CONFIG) != pages) {
                                abort();
                        }
                        break;
                }
                case 5:
                        check_stats(b);
                        break;
                case 6:
                        wr32(VIRTIO_MMIO_STATUS, 0);
                        break;
                default:
                        if (take(&in, &byte, 1))
                                wr32(VIRTIO_MMIO_QUEUE_NOTIFY, byte);
                        break;
                }
                if (rd32(VIRTIO_MMIO_CONFIG + 4) > machine.mem.size / 4096)
                        abort();
        }
        check_stats(b);
        machine_base_stop(&machine);
        /* Every page back to zero for the next input: a hole over the whole memfd. */
        if (fallocate(machine.mem.memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)machine.mem.size) < 0)
                abort();
        return 0;
}
