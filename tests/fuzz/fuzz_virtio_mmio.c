/* What a guest can do to a virtio-mmio device: arbitrary accesses to its register
 * window and config space, arbitrary ring contents in guest memory, kicks, and a small
 * echo device serving its queues through the core (pop, push, signal). No KVM: the
 * ioeventfd/irqfd hooks are fakes. Every input starts from a fresh machine.
 *
 * The input is a sequence of records, each starting with an op byte; op & 7 picks:
 *   0, 1: a register access: bit 3 "write", bits 4-5 the size (1, 2, 4, 8), then an le16
 *         offset from the window's base (past 0x1000 is outside it), then a write's data;
 *   2:    guest memory: an le16 offset in the first 64 KiB, a length byte (<= 64), data;
 *   3:    the device serves queue (op >> 3) & 1, as the event loop would after a kick;
 *   4:    QueueNotify with the next byte (a kick that no ioeventfd matched);
 *   5:    the device fails (bit 3) or changes its config;
 *   6:    the Linux driver's steps: le32 feature bits, a queue size byte, queue 0's rings at
 *         0x1000/0x2000/0x3000, DRIVER_OK;
 *   7:    interrupt status read and acknowledged.
 * After every record the status must be one the state machine allows. */
#define VIRTIO_MMIO_NO_LEGACY
#include <linux/virtio_mmio.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "vmm/device.h"
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
static struct virtio_dev dev;
static uint8_t dev_config[24];
static struct virtq_chain chain;
static bool active;

static int fake_irqfd(void *vm, int fd, uint32_t gsi, bool assign, cap_error_t *err)
{
        (void)vm;
        (void)assign;
        (void)err;
        if (fd < 0 || gsi >= 24)
                abort();
        return 0;
}

static int fake_ioeventfd_match(void *vm, int fd, uint64_t addr, uint32_t len, bool pio_space, uint64_t data,
                                bool assign, cap_error_t *err)
{
        (void)vm;
        (void)assign;
        (void)err;
        if (fd < 0 || pio_space || len != 4 || addr != BASE + VIRTIO_MMIO_QUEUE_NOTIFY || data >= dev.n_queues)
                abort();
        return 0;
}

static int echo_activate(struct virtio_dev *d, cap_error_t *err)
{
        (void)d;
        (void)err;
        active = true;
        return 0;
}

/* Reads what the driver gave and writes a pattern over what it lets the device write. */
static void echo_notify(struct virtio_dev *d, unsigned int q)
{
        static uint8_t buf[512];
        int n = 0;
        if (!active)
                abort(); /* notify before DRIVER_OK or after a reset */
        while (n++ < 64 && virtio_queue_pop(d, q, &chain) == 1) {
                if (chain.n_out + chain.n_in > d->queues[q].size)
                        abort();
                size_t got = virtq_chain_read(&chain, 0, buf, sizeof(buf));
                memset(buf, (int)got, sizeof(buf));
                size_t put = virtq_chain_write(&chain, 1, buf, sizeof(buf));
                virtio_queue_push(d, q, chain.head, (uint32_t)put);
        }
        virtio_queue_signal(d, q);
}

static void echo_reset(struct virtio_dev *d)
{
        (void)d;
        active = false;
}

static void echo_config_write(struct virtio_dev *d, uint32_t offset, const uint8_t *data, uint32_t len)
{
        if (offset > d->config_len || len > d->config_len - offset)
                abort();
        memcpy((uint8_t *)d->config + offset, data, len);
}

static const struct virtio_dev_ops echo_ops = {
        .activate = echo_activate,
        .notify = echo_notify,
        .reset = echo_reset,
        .config_write = echo_config_write,
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
        cap_error_t err = NULL;
        (void)argc;
        (void)argv;
        if (log_init("/dev/null", NULL, false) < 0)
                abort();
        if (machine_base_init(&machine, GUEST_RAM, &err) < 0)
                fuzz_die("machine", &err);
        machine.cfg = (struct vm_config){ .console = VM_CONSOLE_FILE, .console_path = "/dev/null",
                                          .virtio_transport = VM_VIRTIO_MMIO };
        machine.ctx.irqfd = fake_irqfd;
        machine.ctx.ioeventfd_match = fake_ioeventfd_match;
        return 0;
}

static void machine_start(void)
{
        cap_error_t err = NULL;
        if (machine_base_start(&machine, false, &err) < 0)
                fuzz_die("devices", &err);
        memset(dev_config, 0x5a, sizeof(dev_config));
        dev = (struct virtio_dev){ .name = "virtio-echo", .device_id = VIRTIO_ID_RNG, .features = 1ULL << 5,
                                   .n_queues = 2, .queue_max = 16, .config = dev_config,
                                   .config_len = sizeof(dev_config), .ops = &echo_ops };
        active = false;
        if (virtio_dev_add(&machine.ctx, &dev, &err) < 0)
                fuzz_die("virtio_dev_add", &err);
}

static void machine_stop(void)
{
        machine_base_stop(&machine);
        memset(machine.mem.base, 0, 0x11000);
}

static void reg_access(uint64_t off, uint8_t *buf, uint32_t len, bool is_write)
{
        bus_dispatch(&machine.mmio, BASE + off, buf, len, is_write);
}

static void reg_write32(uint64_t off, uint32_t v)
{
        mmio_wr32(&machine.mmio, off, v);
}

static uint32_t reg_read32(uint64_t off)
{
        return mmio_rd32(&machine.mmio, off);
}

static void access(struct input *in, uint8_t op)
{
        bool is_write = op & 8;
        uint32_t len = 1u << ((op >> 4) & 3);
        uint16_t off;
        if (!take(in, &off, sizeof(off)))
                return;
        /* An exactly sized heap buffer: a handler touching a byte more is an ASan error. */
        uint8_t *buf = malloc(len);
        if (!buf)
                abort();
        if (is_write && !take(in, buf, len)) {
                free(buf);
                return;
        }
        reg_access(off & 0x1fff, buf, len, is_write);
        free(buf);
}

static void guest_write(struct input *in)
{
        uint16_t off;
        uint8_t len, data[64];
        if (!take(in, &off, sizeof(off)) || !take(in, &len, 1))
                return;
        len %= sizeof(data) + 1;
        if (take(in, data, len))
                memcpy(machine.mem.base + off, data, len); /* off + len stays inside the first 64 KiB + 64 */
}

static void driver_setup(struct input *in)
{
        uint32_t features;
        uint8_t size;
        if (!take(in, &features, sizeof(features)) || !take(in, &size, 1))
                return;
        mmio_driver_features(&machine.mmio, features);
        mmio_queue_setup(&machine.mmio, 0, size, 0x1000, 0x2000, 0x3000);
        reg_write32(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER |
                                                VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
}

static void check_status(void)
{
        uint8_t s = dev.status & 0x0f;
        if (s != 0 && s != 0x1 && s != 0x3 && s != 0xb && s != 0xf)
                abort();
        if (active != ((dev.status & VIRTIO_CONFIG_S_DRIVER_OK) != 0) && !(dev.status & 0xc0))
                abort(); /* activated without DRIVER_OK, or DRIVER_OK without activation */
        for (unsigned int q = 0; q < dev.n_queues; q++)
                if (dev.queues[q].ready && (dev.queues[q].size == 0 || dev.queues[q].size > dev.queue_max))
                        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct input in = { data, size };
        uint8_t op, b;
        machine_start();
        while (take(&in, &op, 1)) {
                switch (op & 7) {
                case 0:
                case 1:
                        access(&in, op);
                        break;
                case 2:
                        guest_write(&in);
                        break;
                case 3:
                        virtio_dev_lock(&dev);
                        if (active && !(dev.status & VIRTIO_CONFIG_S_NEEDS_RESET))
                                echo_notify(&dev, (op >> 3) & 1);
                        virtio_dev_unlock(&dev);
                        break;
                case 4:
                        if (take(&in, &b, 1))
                                reg_write32(VIRTIO_MMIO_QUEUE_NOTIFY, b);
                        break;
                case 5:
                        virtio_dev_lock(&dev);
                        if (op & 8)
                                virtio_dev_fail(&dev, "fuzz");
                        else
                                virtio_config_changed(&dev);
                        virtio_dev_unlock(&dev);
                        break;
                case 6:
                        driver_setup(&in);
                        break;
                default:
                        reg_write32(VIRTIO_MMIO_INTERRUPT_ACK, reg_read32(VIRTIO_MMIO_INTERRUPT_STATUS));
                        break;
                }
                check_status();
        }
        machine_stop();
        return 0;
}
