/* The virtio core and the virtio-mmio transport, driven through the MMIO bus as a
 * vCPU would, with a fake device, real guest memory and event loop, and fake KVM
 * hooks that record the ioeventfds, irqfds and command-line parameters. */
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define VIRTIO_MMIO_NO_LEGACY
#include <linux/virtio_mmio.h>

#include "check.h"
#include "machine.h"
#include "common/log.h"
#include "common/util.h"
#include "vmm/device.h"
#include "vmm/virtio/virtio.h"
#include "vmm/vm.h"
#include "vmm/x86/layout.h"

#define BASE LAYOUT_MMIO_START
#define NQ 2
#define QSIZE 8
#define FEATURE_DEVICE (1ULL << 3)
/* Rings of queue 0 in guest RAM. */
#define DESC 0x10000ULL
#define AVAIL 0x11000ULL
#define USED 0x12000ULL
#define BUF 0x20000ULL

struct fake_kvm {
        int irq_fd;
        uint32_t gsi;
        int irqfd_assigns, irqfd_deassigns;
        int kick_fd[NQ];
        uint64_t notify_addr, match[NQ];
        int ioeventfd_assigns, ioeventfd_deassigns;
        char cmdline[256];
};

struct fake_dev {
        struct virtio_dev dev;
        uint8_t config[12];
        int activated, resets, destroyed, config_writes, stops, resets_at_stop;
        uint32_t last_config_offset, last_config_len;
        bool fail_activate;
        int notified[NQ];
        uint32_t popped_len;
};

struct machine {
        struct machine_base b;
        struct fake_kvm kvm;
        struct fake_dev fd;
};

static int fake_irqfd(void *vm, int fd, uint32_t gsi, bool assign, cap_error_t *err)
{
        struct fake_kvm *k = vm;
        (void)err;
        if (assign) {
                k->irq_fd = fd;
                k->gsi = gsi;
                k->irqfd_assigns++;
        } else {
                k->irqfd_deassigns++;
        }
        return 0;
}

static int fake_ioeventfd_match(void *vm, int fd, uint64_t addr, uint32_t len, bool pio, uint64_t data, bool assign,
                                cap_error_t *err)
{
        struct fake_kvm *k = vm;
        if (pio || len != 4 || data >= NQ)
                return cap_fail(err, 0, "unexpected ioeventfd");
        if (assign) {
                k->kick_fd[data] = fd;
                k->match[data] = data;
                k->notify_addr = addr;
                k->ioeventfd_assigns++;
        } else {
                k->ioeventfd_deassigns++;
        }
        return 0;
}

static void fake_cmdline_append(void *vm, const char *text)
{
        struct fake_kvm *k = vm;
        snprintf(k->cmdline + strlen(k->cmdline), sizeof(k->cmdline) - strlen(k->cmdline), "%s%s",
                 k->cmdline[0] ? " " : "", text);
}

static struct fake_dev *fake_of(struct virtio_dev *dev)
{
        return dev->opaque;
}

static int fake_activate(struct virtio_dev *dev, cap_error_t *err)
{
        struct fake_dev *f = fake_of(dev);
        f->activated++;
        if (f->fail_activate)
                return cap_fail(err, 0, "fake: cannot start");
        return 0;
}

/* Echo device: pops every chain of queue q and writes its length into the first writable byte. */
static void fake_notify(struct virtio_dev *dev, unsigned int q)
{
        struct fake_dev *f = fake_of(dev);
        struct virtq_chain *chain = xmalloc0(sizeof(*chain));
        f->notified[q]++;
        while (virtio_queue_pop(dev, q, chain) == 1) {
                uint8_t b = (uint8_t)chain->out_len;
                f->popped_len += chain->out_len;
                virtio_queue_push(dev, q, chain->head, (uint32_t)virtq_chain_write(chain, 0, &b, chain->in_len ? 1 : 0));
        }
        virtio_queue_signal(dev, q);
        free(chain);
}

static void fake_reset(struct virtio_dev *dev)
{
        fake_of(dev)->resets++;
}

/* Every byte of the fake's config is driver-writable. */
static void fake_config_write(struct virtio_dev *dev, uint32_t offset, const uint8_t *data, uint32_t len)
{
        struct fake_dev *f = fake_of(dev);
        memcpy(f->config + offset, data, len);
        f->config_writes++;
        f->last_config_offset = offset;
        f->last_config_len = len;
}

static void fake_destroy(struct virtio_dev *dev)
{
        fake_of(dev)->destroyed++;
}

/* The VM stops: serve queue 0 one last time, as a device with work handed over does. */
static void fake_stop(struct virtio_dev *dev)
{
        struct fake_dev *f = fake_of(dev);
        f->stops++;
        f->resets_at_stop = f->resets;
        fake_notify(dev, 0);
}

static const struct virtio_dev_ops fake_ops = {
        .activate = fake_activate,
        .notify = fake_notify,
        .reset = fake_reset,
        .config_write = fake_config_write,
        .destroy = fake_destroy,
        .stop = fake_stop,
};

static int machine_start(struct machine *m, cap_error_t *err)
{
        memset(m, 0, sizeof(*m));
        if (machine_base_init(&m->b, 16ULL << 20, err) < 0)
                return -1;
        m->b.cfg = (struct vm_config){ .console = VM_CONSOLE_FILE, .console_path = "/dev/null",
                                       .virtio_transport = VM_VIRTIO_MMIO };
        m->b.ctx.irqfd = fake_irqfd;
        m->b.ctx.ioeventfd_match = fake_ioeventfd_match;
        m->b.ctx.cmdline_append = fake_cmdline_append;
        m->b.ctx.vm = &m->kvm;
        if (machine_base_start(&m->b, false, err) < 0)
                return -1;
        struct fake_dev *f = &m->fd;
        for (unsigned int i = 0; i < sizeof(f->config); i++)
                f->config[i] = (uint8_t)(0xa0 + i);
        snprintf(f->dev.name, sizeof(f->dev.name), "virtio-fake0");
        f->dev.device_id = VIRTIO_ID_RNG;
        f->dev.features = FEATURE_DEVICE;
        f->dev.n_queues = NQ;
        f->dev.queue_max = QSIZE;
        f->dev.config = f->config;
        f->dev.config_len = sizeof(f->config);
        f->dev.ops = &fake_ops;
        f->dev.opaque = f;
        return virtio_dev_add(&m->b.ctx, &f->dev, err);
}

static void machine_stop(struct machine *m)
{
        machine_base_destroy(&m->b);
}

#define MACHINE(m) MACHINE_UP(machine, m, machine_start, machine_stop)

static uint64_t rd(struct machine *m, uint64_t off, uint32_t len)
{
        return io_in(&m->b.mmio, BASE + off, len);
}

static void wr(struct machine *m, uint64_t off, uint32_t len, uint64_t v)
{
        io_out(&m->b.mmio, BASE + off, len, v);
}

static uint32_t rd32(struct machine *m, uint64_t off)
{
        return (uint32_t)rd(m, off, 4);
}

static void wr32(struct machine *m, uint64_t off, uint32_t v)
{
        wr(m, off, 4, v);
}

#define ACK VIRTIO_CONFIG_S_ACKNOWLEDGE
#define DRV VIRTIO_CONFIG_S_DRIVER
#define FOK VIRTIO_CONFIG_S_FEATURES_OK
#define DOK VIRTIO_CONFIG_S_DRIVER_OK
#define VERSION_1 (1ULL << VIRTIO_F_VERSION_1)

static void set_driver_features(struct machine *m, uint64_t features)
{
        wr32(m, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
        wr32(m, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)features);
        wr32(m, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        wr32(m, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(features >> 32));
}

/* The Linux driver's steps up to FEATURES_OK. */
static void negotiate(struct machine *m, uint64_t features)
{
        wr32(m, VIRTIO_MMIO_STATUS, 0);
        wr32(m, VIRTIO_MMIO_STATUS, ACK);
        wr32(m, VIRTIO_MMIO_STATUS, ACK | DRV);
        set_driver_features(m, features);
        wr32(m, VIRTIO_MMIO_STATUS, ACK | DRV | FOK);
}

static void setup_queue0(struct machine *m, uint32_t size, uint64_t desc)
{
        wr32(m, VIRTIO_MMIO_QUEUE_SEL, 0);
        wr32(m, VIRTIO_MMIO_QUEUE_NUM, size);
        wr32(m, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)desc);
        wr32(m, VIRTIO_MMIO_QUEUE_DESC_HIGH, (uint32_t)(desc >> 32));
        wr32(m, VIRTIO_MMIO_QUEUE_AVAIL_LOW, (uint32_t)AVAIL);
        wr32(m, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, 0);
        wr32(m, VIRTIO_MMIO_QUEUE_USED_LOW, (uint32_t)USED);
        wr32(m, VIRTIO_MMIO_QUEUE_USED_HIGH, 0);
        wr32(m, VIRTIO_MMIO_QUEUE_READY, 1);
}

/* Interrupts delivered through the irqfd since the last call. */
static uint64_t interrupts(struct machine *m)
{
        uint64_t n = 0;
        if (read(m->kvm.irq_fd, &n, sizeof(n)) != sizeof(n))
                return 0;
        return n;
}

TEST(mmio_identity_and_announcement)
{
        MACHINE(m);
        CHECK(rd32(&m, VIRTIO_MMIO_MAGIC_VALUE) == 0x74726976);
        CHECK(rd32(&m, VIRTIO_MMIO_VERSION) == 2);
        CHECK(rd32(&m, VIRTIO_MMIO_DEVICE_ID) == VIRTIO_ID_RNG);
        CHECK(rd32(&m, VIRTIO_MMIO_VENDOR_ID) != 0);
        CHECK(rd32(&m, VIRTIO_MMIO_STATUS) == 0);
        CHECK_STR(m.kvm.cmdline, "virtio_mmio.device=4K@0xc0000000:5");
        CHECK(m.kvm.gsi == 5 && m.kvm.irqfd_assigns == 1);
        CHECK(m.kvm.ioeventfd_assigns == NQ && m.kvm.notify_addr == BASE + VIRTIO_MMIO_QUEUE_NOTIFY);
        CHECK(m.kvm.match[1] == 1 && m.kvm.kick_fd[0] != m.kvm.kick_fd[1]);
        /* Offered: the device's own features plus what the core implements. */
        wr32(&m, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
        uint64_t lo = rd32(&m, VIRTIO_MMIO_DEVICE_FEATURES);
        wr32(&m, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
        uint64_t features = lo | (uint64_t)rd32(&m, VIRTIO_MMIO_DEVICE_FEATURES) << 32;
        CHECK(features == (FEATURE_DEVICE | VERSION_1 | (1ULL << VIRTIO_RING_F_INDIRECT_DESC) |
                           (1ULL << VIRTIO_RING_F_EVENT_IDX)));
        wr32(&m, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 2);
        CHECK(rd32(&m, VIRTIO_MMIO_DEVICE_FEATURES) == 0);
        wr32(&m, VIRTIO_MMIO_QUEUE_SEL, 1);
        CHECK(rd32(&m, VIRTIO_MMIO_QUEUE_NUM_MAX) == QSIZE);
        wr32(&m, VIRTIO_MMIO_QUEUE_SEL, NQ);
        CHECK(rd32(&m, VIRTIO_MMIO_QUEUE_NUM_MAX) == 0);
        /* No shared memory regions. */
        CHECK(rd32(&m, VIRTIO_MMIO_SHM_LEN_LOW) == 0xffffffffu && rd32(&m, VIRTIO_MMIO_SHM_LEN_HIGH) == 0xffffffffu);
}

TEST(mmio_registers_only_aligned_32bit)
{
        MACHINE(m);
        CHECK(rd(&m, VIRTIO_MMIO_MAGIC_VALUE, 2) == 0);
        CHECK(rd(&m, VIRTIO_MMIO_MAGIC_VALUE, 1) == 0);
        CHECK(rd(&m, VIRTIO_MMIO_MAGIC_VALUE, 8) == 0);
        CHECK(rd(&m, VIRTIO_MMIO_MAGIC_VALUE + 1, 4) == 0);
        wr(&m, VIRTIO_MMIO_STATUS, 1, ACK);
        wr(&m, VIRTIO_MMIO_STATUS, 2, ACK);
        CHECK(rd32(&m, VIRTIO_MMIO_STATUS) == 0);
        /* Unknown and write-only registers read as zero. */
        CHECK(rd32(&m, 0x0f0) == 0 && rd32(&m, VIRTIO_MMIO_QUEUE_NOTIFY) == 0);
        /* The last register word before the config area, and a 64-bit config read at its end. */
        CHECK(rd32(&m, VIRTIO_MMIO_CONFIG_GENERATION) == 0);
        CHECK(rd(&m, 0xff8, 8) == 0);
}

TEST(status_invalid_transitions_refused)
{
        MACHINE(m);
        wr32(&m, VIRTIO_MMIO_STATUS, DRV); /* skips ACKNOWLEDGE */
        CHECK(rd32(&m, VIRTIO_MMIO_STATUS) == 0);
        wr32(&m, VIRTIO_MMIO_STATUS, ACK);
        CHECK(rd32(&m, VIRTIO_MMIO_STATUS) == ACK);
        wr32(&m, VIRTIO_MMIO_STATUS, ACK | DRV | FOK); /* skips DRIVER */
        CHECK(rd32(&m, VIRTIO_MMIO_STATUS) == ACK);
        wr32(&m, VIRTIO_MMIO_STATUS, ACK | DRV);
        set_driver_features(&m, VERSION_1);
        wr32(&m, VIRTIO_MMIO_STATUS, ACK | DRV | DOK); /* DRIVER_OK before FEATURES_OK */
        CHECK(rd32(&m, VIRTIO_MMIO_STATUS) == (ACK | DRV));
        CHECK(m.fd.activated == 0);
        wr32(&m, VIRTIO_MMIO_STATUS, ACK); /* clearing a bit */
        CHECK(rd32(&m, VIRTIO_MMIO_STATUS) == (ACK | DRV));
        wr32(&m, VIRTIO_MMIO_STATUS, 0x100 | ACK | DRV | FOK); /* not a status byte */
        CHECK(rd32(&m, VIRTIO_MMIO_STATUS) == (ACK | DRV));
        wr32(&m, VIRTIO_MMIO_STATUS, ACK | DRV | FOK);
        CHECK(rd32(&m, VIRTIO_MMIO_STATUS) == (ACK | DRV | FOK));
        wr32(&m, VIRTIO_MMIO_STATUS, ACK | DRV | FOK | DOK);
        CHECK(rd32(&m, VIRTIO_MMIO_STATUS) == (ACK | DRV | FOK | DOK));
        CHECK(m.fd.activated == 1);
        /* FAILED sticks until a reset. */
        wr32(&m, VIRTIO_MMIO_STATUS, ACK | DRV | FOK | DOK | VIRTIO_CONFIG_S_FAILED);
        CHECK(rd32(&m, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_FAILED);
        wr32(&m, VIRTIO_MMIO_STATUS, ACK | DRV | FOK | DOK);
        CHECK(rd32(&m, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_FAILED);
        wr32(&m, VIRTIO_MMIO_STATUS, 0);
        CHECK(rd32(&m, VIRTIO_MMIO_STATUS) == 0);
}

TEST(features_ok_refused_with_unknown_features)
{
        MACHINE(m);
        negotiate(&m, VERSION_1 | (1ULL << 40)); /* not offered */
        CHECK(rd32(&m, VIRTIO_MMIO_STATUS) == (ACK | DRV));
        negotiate(&m, FEATURE_DEVICE); /* no VERSION_1: a legacy driver */
        CHECK(rd32(&m, VIRTIO_MMIO_STATUS) == (ACK | DRV));
        negotiate(&m, VERSION_1 | FEATURE_DEVICE | (1ULL << VIRTIO_RING_F_EVENT_IDX));
        CHECK(rd32(&m, VIRTIO_MMIO_STATUS) == (ACK | DRV | FOK));
        CHECK(virtio_has_feature(&m.fd.dev, 3) && virtio_has_feature(&m.fd.dev, VIRTIO_RING_F_EVENT_IDX));
        CHECK(!virtio_has_feature(&m.fd.dev, VIRTIO_RING_F_INDIRECT_DESC));
        /* After FEATURES_OK the driver's features are fixed. */
        set_driver_features(&m, VERSION_1);
        CHECK(virtio_has_feature(&m.fd.dev, 3));
        /* The ring features reach the queues. */
        CHECK(m.fd.dev.queues[0].event_idx && !m.fd.dev.queues[0].indirect);
}

TEST(reset_clears_everything)
{
        MACHINE(m);
        negotiate(&m, VERSION_1 | FEATURE_DEVICE);
        setup_queue0(&m, QSIZE, DESC);
        CHECK(rd32(&m, VIRTIO_MMIO_QUEUE_READY) == 1);
        wr32(&m, VIRTIO_MMIO_STATUS, ACK | DRV | FOK | DOK);
        virtio_dev_lock(&m.fd.dev);
        virtio_dev_fail(&m.fd.dev, "test");
        virtio_dev_unlock(&m.fd.dev);
        CHECK(rd32(&m, VIRTIO_MMIO_INTERRUPT_STATUS) == VIRTIO_MMIO_INT_CONFIG);
        int resets = m.fd.resets;
        wr32(&m, VIRTIO_MMIO_STATUS, 0);
        CHECK(m.fd.resets == resets + 1);
        CHECK(rd32(&m, VIRTIO_MMIO_STATUS) == 0);
        CHECK(rd32(&m, VIRTIO_MMIO_INTERRUPT_STATUS) == 0);
        CHECK(rd32(&m, VIRTIO_MMIO_QUEUE_READY) == 0);
        CHECK(!virtio_has_feature(&m.fd.dev, 3) && m.fd.dev.driver_features == 0);
        const struct virtq *q = &m.fd.dev.queues[0];
        CHECK(q->size == QSIZE && q->desc_gpa == 0 && q->avail_gpa == 0 && q->used_gpa == 0 && !q->broken);
        /* And the device negotiates again from scratch. */
        negotiate(&m, VERSION_1);
        setup_queue0(&m, 4, DESC);
        wr32(&m, VIRTIO_MMIO_STATUS, ACK | DRV | FOK | DOK);
        CHECK(rd32(&m, VIRTIO_MMIO_STATUS) == (ACK | DRV | FOK | DOK) && m.fd.activated == 2);
}

TEST(activate_failure_needs_reset)
{
        MACHINE(m);
        m.fd.fail_activate = true;
        negotiate(&m, VERSION_1);
        wr32(&m, VIRTIO_MMIO_STATUS, ACK | DRV | FOK | DOK);
        CHECK(rd32(&m, VIRTIO_MMIO_STATUS) == (ACK | DRV | FOK | DOK | VIRTIO_CONFIG_S_NEEDS_RESET));
        CHECK(rd32(&m, VIRTIO_MMIO_INTERRUPT_STATUS) == VIRTIO_MMIO_INT_CONFIG);
        CHECK(interrupts(&m) == 1);
        wr32(&m, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_CONFIG);
        CHECK(rd32(&m, VIRTIO_MMIO_INTERRUPT_STATUS) == 0);
        /* The driver's copy of NEEDS_RESET changes nothing; a second failure is not reported again. */
        wr32(&m, VIRTIO_MMIO_STATUS, ACK | DRV | FOK | DOK | VIRTIO_CONFIG_S_NEEDS_RESET);
        virtio_dev_lock(&m.fd.dev);
        virtio_dev_fail(&m.fd.dev, "again");
        virtio_dev_unlock(&m.fd.dev);
        CHECK(interrupts(&m) == 0);
}

TEST(config_space_bounds)
{
        MACHINE(m);
        CHECK(rd(&m, VIRTIO_MMIO_CONFIG, 1) == 0xa0);
        CHECK(rd(&m, VIRTIO_MMIO_CONFIG + 2, 2) == 0xa3a2);
        CHECK(rd(&m, VIRTIO_MMIO_CONFIG + 8, 4) == 0xabaaa9a8);
        CHECK(rd(&m, VIRTIO_MMIO_CONFIG + 4, 8) == 0xabaaa9a8a7a6a5a4ULL);
        /* Past the end, or straddling it: zero. */
        CHECK(rd(&m, VIRTIO_MMIO_CONFIG + 9, 4) == 0);
        CHECK(rd(&m, VIRTIO_MMIO_CONFIG + 8, 8) == 0);
        CHECK(rd(&m, VIRTIO_MMIO_CONFIG + 12, 1) == 0);
        CHECK(rd(&m, 0xffc, 4) == 0);
        wr(&m, VIRTIO_MMIO_CONFIG + 10, 4, 0x11223344);
        CHECK(m.fd.config_writes == 0 && m.fd.config[10] == 0xaa);
        wr(&m, VIRTIO_MMIO_CONFIG + 10, 2, 0x5566);
        CHECK(m.fd.config_writes == 1 && m.fd.last_config_offset == 10 && m.fd.last_config_len == 2);
        CHECK(m.fd.config[10] == 0x66 && m.fd.config[11] == 0x55);
        /* A config change bumps the generation and, once the driver is up, interrupts it. */
        virtio_dev_lock(&m.fd.dev);
        virtio_config_changed(&m.fd.dev);
        virtio_dev_unlock(&m.fd.dev);
        CHECK(rd32(&m, VIRTIO_MMIO_CONFIG_GENERATION) == 1);
        CHECK(interrupts(&m) == 0);
        negotiate(&m, VERSION_1);
        wr32(&m, VIRTIO_MMIO_STATUS, ACK | DRV | FOK | DOK);
        wr32(&m, VIRTIO_MMIO_INTERRUPT_ACK, 0xffffffff);
        virtio_dev_lock(&m.fd.dev);
        virtio_config_changed(&m.fd.dev);
        virtio_dev_unlock(&m.fd.dev);
        CHECK(rd32(&m, VIRTIO_MMIO_CONFIG_GENERATION) == 2);
        CHECK(rd32(&m, VIRTIO_MMIO_INTERRUPT_STATUS) == VIRTIO_MMIO_INT_CONFIG && interrupts(&m) == 1);
}

TEST(queue_setup_checked)
{
        MACHINE(m);
        /* Before FEATURES_OK a queue cannot be enabled. */
        wr32(&m, VIRTIO_MMIO_STATUS, ACK);
        wr32(&m, VIRTIO_MMIO_STATUS, ACK | DRV);
        setup_queue0(&m, QSIZE, DESC);
        CHECK(rd32(&m, VIRTIO_MMIO_QUEUE_READY) == 0);
        /* Larger than QueueNumMax. */
        negotiate(&m, VERSION_1);
        setup_queue0(&m, QSIZE * 2, DESC);
        CHECK(rd32(&m, VIRTIO_MMIO_QUEUE_READY) == 0);
        CHECK(rd32(&m, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET);
        /* Rings outside guest RAM (in the PCI hole). */
        negotiate(&m, VERSION_1);
        setup_queue0(&m, QSIZE, GUEST_PCI_HOLE_START);
        CHECK(rd32(&m, VIRTIO_MMIO_QUEUE_READY) == 0);
        CHECK(rd32(&m, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET);
        /* A queue the device does not have. */
        negotiate(&m, VERSION_1);
        wr32(&m, VIRTIO_MMIO_QUEUE_SEL, NQ);
        wr32(&m, VIRTIO_MMIO_QUEUE_READY, 1);
        CHECK(rd32(&m, VIRTIO_MMIO_QUEUE_READY) == 0 && rd32(&m, VIRTIO_MMIO_STATUS) == (ACK | DRV | FOK));
        /* A good one; its addresses are fixed once it is ready. */
        setup_queue0(&m, QSIZE, DESC);
        CHECK(rd32(&m, VIRTIO_MMIO_QUEUE_READY) == 1);
        wr32(&m, VIRTIO_MMIO_QUEUE_DESC_LOW, 0x30000);
        CHECK(m.fd.dev.queues[0].desc_gpa == DESC);
        /* Disabled again before DRIVER_OK (Linux does so when it gives up on a queue). */
        wr32(&m, VIRTIO_MMIO_QUEUE_READY, 0);
        CHECK(rd32(&m, VIRTIO_MMIO_QUEUE_READY) == 0);
}

/* Wait for the event loop to call notify on queue q. */
static bool wait_notified(struct machine *m, unsigned int q, int count)
{
        for (int i = 0; i < 2000; i++) {
                virtio_dev_lock(&m->fd.dev);
                int n = m->fd.notified[q];
                virtio_dev_unlock(&m->fd.dev);
                if (n >= count)
                        return true;
                usleep(1000);
        }
        return false;
}

static void put_le16(struct machine *m, uint64_t gpa, uint16_t v)
{
        uint8_t b[2] = { (uint8_t)v, (uint8_t)(v >> 8) };
        guest_mem_write(&m->b.mem, gpa, b, 2);
}

/* A request of one readable and one writable buffer goes through the whole path: a kick on
 * the ioeventfd, notify on the event loop, pop, push, and an interrupt through the irqfd. */
TEST(kick_pop_push_signal)
{
        MACHINE(m);
        cleanup_error cap_error_t err = NULL;
        CHECK(evloop_start(&m.b.loop, &err) == 0);
        negotiate(&m, VERSION_1);
        setup_queue0(&m, QSIZE, DESC);
        struct vring_desc d[2] = {
                { .addr = BUF, .len = 5, .flags = VRING_DESC_F_NEXT, .next = 1 },
                { .addr = BUF + 0x100, .len = 16, .flags = VRING_DESC_F_WRITE },
        };
        CHECK(guest_mem_write(&m.b.mem, DESC, d, sizeof(d)) == 0);
        put_le16(&m, AVAIL + 4, 0); /* ring[0] = head 0 */
        put_le16(&m, AVAIL + 2, 1); /* idx */
        wr32(&m, VIRTIO_MMIO_STATUS, ACK | DRV | FOK | DOK);
        /* DRIVER_OK has the loop look at every ready queue once. */
        CHECK(wait_notified(&m, 0, 1));
        virtio_dev_lock(&m.fd.dev);
        uint32_t popped = m.fd.popped_len;
        virtio_dev_unlock(&m.fd.dev);
        CHECK(popped == 5);
        uint8_t out = 0;
        CHECK(guest_mem_read(&m.b.mem, BUF + 0x100, &out, 1) == 0 && out == 5);
        uint16_t used_idx = 0;
        CHECK(guest_mem_read(&m.b.mem, USED + 2, &used_idx, 2) == 0 && used_idx == 1);
        CHECK(rd32(&m, VIRTIO_MMIO_INTERRUPT_STATUS) == VIRTIO_MMIO_INT_VRING);
        CHECK(interrupts(&m) == 1);
        wr32(&m, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
        /* A kick as KVM delivers it (the ioeventfd), and one through the register. */
        uint64_t one = 1;
        CHECK(write(m.kvm.kick_fd[1], &one, sizeof(one)) == sizeof(one));
        wr32(&m, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
        CHECK(wait_notified(&m, 0, 2));
        /* Queue 1 was never set up: its kick (read by the loop before queue 0's) is not the
         * device's business. */
        virtio_dev_lock(&m.fd.dev);
        int q1 = m.fd.notified[1];
        virtio_dev_unlock(&m.fd.dev);
        CHECK(q1 == 0);
        /* A kick for a queue that does not exist goes nowhere. */
        wr32(&m, VIRTIO_MMIO_QUEUE_NOTIFY, 7);
}

/* A malformed chain fails the device, once, and its queues are not read again. */
TEST(malformed_chain_fails_device)
{
        MACHINE(m);
        negotiate(&m, VERSION_1);
        setup_queue0(&m, QSIZE, DESC);
        put_le16(&m, AVAIL + 4, QSIZE + 3); /* head index out of range */
        put_le16(&m, AVAIL + 2, 1);
        wr32(&m, VIRTIO_MMIO_STATUS, ACK | DRV | FOK | DOK);
        virtio_dev_lock(&m.fd.dev);
        fake_notify(&m.fd.dev, 0);
        virtio_dev_unlock(&m.fd.dev);
        CHECK(rd32(&m, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET);
        CHECK(rd32(&m, VIRTIO_MMIO_INTERRUPT_STATUS) == VIRTIO_MMIO_INT_CONFIG);
        CHECK(interrupts(&m) == 1);
        struct virtq_chain *c = xmalloc0(sizeof(*c));
        virtio_dev_lock(&m.fd.dev);
        int r = virtio_queue_pop(&m.fd.dev, 0, c);
        virtio_dev_unlock(&m.fd.dev);
        free(c);
        CHECK(r == 0 && interrupts(&m) == 0);
}

TEST(queue_fds_for_vhost)
{
        MACHINE(m);
        cleanup_error cap_error_t err = NULL;
        int kick, call;
        CHECK(virtio_queue_fds(&m.fd.dev, 1, &kick, &call, &err) == 0);
        CHECK(kick == m.kvm.kick_fd[1] && call >= 0 && call != kick);
        CHECK(virtio_queue_fds(&m.fd.dev, NQ, &kick, &call, &err) < 0);
}

/* The VM's end resets and destroys the device and closes its eventfds. */
TEST(teardown_resets_and_destroys)
{
        struct machine m;
        cleanup_error cap_error_t err = NULL;
        int r = machine_start(&m, &err);
        if (r < 0)
                fprintf(stderr, "machine_start: %s\n", err->msg);
        CHECK(r == 0);
        int irq_fd = m.kvm.irq_fd, kick = m.kvm.kick_fd[0];
        int resets = m.fd.resets;
        machine_stop(&m);
        CHECK(m.fd.resets == resets + 1 && m.fd.destroyed == 1);
        CHECK(m.kvm.irqfd_deassigns == 1 && m.kvm.ioeventfd_deassigns == NQ);
        CHECK(fcntl(irq_fd, F_GETFD) < 0 && fcntl(kick, F_GETFD) < 0);
        CHECK(m.b.ctx.virtio_devs == NULL);
}

/* A chain the driver made available just before the VM stopped, which the event loop never
 * reached, is still served: the device's stop runs before its reset, with the queue live. */
TEST(teardown_stops_before_reset_with_queues_live)
{
        struct machine m;
        cleanup_error cap_error_t err = NULL;
        CHECK(machine_start(&m, &err) == 0);
        negotiate(&m, VERSION_1);
        setup_queue0(&m, QSIZE, DESC);
        struct vring_desc d[2] = {
                { .addr = BUF, .len = 7, .flags = VRING_DESC_F_NEXT, .next = 1 },
                { .addr = BUF + 0x100, .len = 16, .flags = VRING_DESC_F_WRITE },
        };
        CHECK(guest_mem_write(&m.b.mem, DESC, d, sizeof(d)) == 0);
        put_le16(&m, AVAIL + 4, 0);
        put_le16(&m, AVAIL + 2, 1);
        wr32(&m, VIRTIO_MMIO_STATUS, ACK | DRV | FOK | DOK); /* the loop never runs */
        int resets = m.fd.resets;
        evloop_stop(&m.b.loop);
        devices_exit(&m.b.ctx);
        m.b.up = false;
        CHECK(m.fd.stops == 1 && m.fd.resets_at_stop == resets && m.fd.resets == resets + 1);
        CHECK(m.fd.popped_len == 7);
        uint8_t out = 0;
        CHECK(guest_mem_read(&m.b.mem, BUF + 0x100, &out, 1) == 0 && out == 7);
        machine_stop(&m);
}

TEST(second_device_gets_next_window)
{
        /* Declared first, so it outlives the machine, whose end destroys it. */
        cleanup_free struct fake_dev *g = xmalloc0(sizeof(*g));
        MACHINE(m);
        cleanup_error cap_error_t err = NULL;
        g->dev = (struct virtio_dev){ .name = "virtio-fake1", .device_id = VIRTIO_ID_CONSOLE, .n_queues = 1,
                                      .queue_max = QSIZE, .ops = &fake_ops, .opaque = g };
        CHECK(virtio_dev_add(&m.b.ctx, &g->dev, &err) == 0);
        CHECK(strstr(m.kvm.cmdline, "virtio_mmio.device=4K@0xc0000000:5 virtio_mmio.device=4K@0xc0001000:6"));
        CHECK(m.b.ctx.virtio_devs == &m.fd.dev && m.fd.dev.next == &g->dev);
        CHECK(rd32(&m, 0x1000 + VIRTIO_MMIO_MAGIC_VALUE) == 0x74726976);
        CHECK(rd32(&m, 0x1000 + VIRTIO_MMIO_DEVICE_ID) == VIRTIO_ID_CONSOLE);
        /* No config space: reads as zero. */
        CHECK(rd32(&m, 0x1000 + VIRTIO_MMIO_CONFIG) == 0);
}

TEST(bad_devices_refused)
{
        MACHINE(m);
        cleanup_error cap_error_t err = NULL;
        struct virtio_dev d = { .name = "virtio-bad", .n_queues = 1, .queue_max = 100, .ops = &fake_ops };
        CHECK(virtio_dev_add(&m.b.ctx, &d, &err) < 0 && strstr(err->msg, "virtio-bad") && strstr(err->msg, "power of two"));
        cap_error_free(&err);
        d.queue_max = 8;
        d.n_queues = VIRTIO_MAX_QUEUES + 1;
        CHECK(virtio_dev_add(&m.b.ctx, &d, &err) < 0 && strstr(err->msg, "queues"));
        cap_error_free(&err);
        d.n_queues = 1;
        d.config_len = 4;
        CHECK(virtio_dev_add(&m.b.ctx, &d, &err) < 0 && strstr(err->msg, "config"));
        CHECK(m.b.ctx.virtio_devs == &m.fd.dev && m.fd.dev.next == NULL);
}

/* With EVENT_IDX, a pop that finds the queue empty leaves avail_event at the next entry the
 * device will take, so the driver's next request is kicked. */
TEST(event_idx_empty_pop_publishes_avail_event)
{
        MACHINE(m);
        negotiate(&m, VERSION_1 | (1ULL << VIRTIO_RING_F_EVENT_IDX));
        setup_queue0(&m, QSIZE, DESC);
        wr32(&m, VIRTIO_MMIO_STATUS, ACK | DRV | FOK | DOK);
        const uint64_t avail_event = USED + 4 + 8 * QSIZE;
        put_le16(&m, avail_event, 0x7777);
        struct virtq_chain *c = xmalloc0(sizeof(*c));
        uint16_t ev = 0;
        virtio_dev_lock(&m.fd.dev);
        int r = virtio_queue_pop(&m.fd.dev, 0, c);
        virtio_dev_unlock(&m.fd.dev);
        CHECK(r == 0 && guest_mem_read(&m.b.mem, avail_event, &ev, 2) == 0 && ev == 0);
        struct vring_desc d = { .addr = BUF, .len = 4, .flags = VRING_DESC_F_WRITE };
        CHECK(guest_mem_write(&m.b.mem, DESC, &d, sizeof(d)) == 0);
        put_le16(&m, AVAIL + 4, 0);
        put_le16(&m, AVAIL + 2, 1);
        virtio_dev_lock(&m.fd.dev);
        int first = virtio_queue_pop(&m.fd.dev, 0, c);
        int second = virtio_queue_pop(&m.fd.dev, 0, c);
        virtio_dev_unlock(&m.fd.dev);
        free(c);
        CHECK(first == 1 && second == 0);
        CHECK(guest_mem_read(&m.b.mem, avail_event, &ev, 2) == 0 && ev == 1);
}

/* The driver's and the device's halves of EVENT_IDX racing for real: the test is a Linux-like
 * driver (publish the avail index, full barrier, kick only if avail_event asks; before waiting,
 * publish used_event, full barrier, look at the used index again) and the event loop is the
 * device. Any lost kick or lost interrupt leaves the driver waiting: each wait is bounded. */
TEST(event_idx_no_lost_kick_or_interrupt_under_load)
{
        MACHINE(m);
        cleanup_error cap_error_t err = NULL;
        CHECK(evloop_start(&m.b.loop, &err) == 0);
        negotiate(&m, VERSION_1 | (1ULL << VIRTIO_RING_F_EVENT_IDX));
        setup_queue0(&m, QSIZE, DESC);
        for (uint16_t i = 0; i < QSIZE; i++) {
                struct vring_desc d = { .addr = BUF + 0x10 * i, .len = 1, .flags = VRING_DESC_F_WRITE };
                CHECK(guest_mem_write(&m.b.mem, DESC + sizeof(d) * i, &d, sizeof(d)) == 0);
        }
        wr32(&m, VIRTIO_MMIO_STATUS, ACK | DRV | FOK | DOK);
        uint16_t *avail = guest_mem_ptr(&m.b.mem, AVAIL, 6 + 2 * QSIZE);
        uint16_t *used = guest_mem_ptr(&m.b.mem, USED, 6 + 8 * QSIZE);
        uint16_t *used_event = &avail[2 + QSIZE], *avail_event = &used[2 + 4 * QSIZE];
        uint16_t next = 0, last_used = 0;
        unsigned int done = 0, waits = 0, lost = 0;
        srand(7);
        while (done < 20000 && !lost) {
                uint16_t free_slots = (uint16_t)(QSIZE - (uint16_t)(next - last_used));
                if (free_slots) {
                        uint16_t old = next, n = (uint16_t)(1 + rand() % free_slots);
                        for (uint16_t i = 0; i < n; i++, next++)
                                __atomic_store_n(&avail[2 + next % QSIZE], htole16(next % QSIZE), __ATOMIC_RELAXED);
                        __atomic_store_n(&avail[1], htole16(next), __ATOMIC_RELEASE);
                        __atomic_thread_fence(__ATOMIC_SEQ_CST);
                        uint16_t ev = le16toh(__atomic_load_n(avail_event, __ATOMIC_RELAXED));
                        uint64_t one = 1;
                        if (vring_need_event(ev, next, old))
                                CHECK(write(m.kvm.kick_fd[0], &one, sizeof(one)) == sizeof(one));
                }
                uint16_t ui = le16toh(__atomic_load_n(&used[1], __ATOMIC_ACQUIRE));
                if (ui != last_used || next == last_used || rand() % 2) {
                        done += (uint16_t)(ui - last_used);
                        last_used = ui;
                        continue;
                }
                __atomic_store_n(used_event, htole16(last_used), __ATOMIC_RELAXED);
                __atomic_thread_fence(__ATOMIC_SEQ_CST);
                if (le16toh(__atomic_load_n(&used[1], __ATOMIC_ACQUIRE)) != last_used)
                        continue;
                struct pollfd p = { .fd = m.kvm.irq_fd, .events = POLLIN };
                waits++;
                if (poll(&p, 1, 5000) != 1) {
                        fprintf(stderr, "lost: next %u last_used %u used %u avail_event %u used_event %u\n", next,
                                last_used, le16toh(used[1]), le16toh(*avail_event), le16toh(*used_event));
                        lost++;
                }
                interrupts(&m);
        }
        CHECK(lost == 0 && done >= 20000 && waits > 0);
}
