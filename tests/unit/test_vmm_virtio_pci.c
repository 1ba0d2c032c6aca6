/* The virtio-pci transport as a guest driver sees it: a fake device registered through
 * the real core on the real PCI host bridge, driven by config-space (ECAM) and BAR
 * accesses through the buses, with the KVM plumbing (ioeventfd, irqfd, GSI routes, the
 * INTx line) replaced by a fake that records what KVM would hold and refuses what KVM
 * would refuse (a second ioeventfd at one address, removing one that is not there). */
#include <linux/virtio_pci.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "check.h"
#include "machine.h"
#include "common/log.h"
#include "common/util.h"
#include "vmm/device.h"
#include "vmm/devices/pci.h"
#include "vmm/virtio/transport.h"
#include "vmm/virtio/virtio.h"
#include "vmm/vm.h"
#include "vmm/x86/layout.h"

#define MAX_FDS 1024
#define MAX_GSI 256
#define N_QUEUES 2
#define QUEUE_MAX 256
/* BAR 0's register blocks, as the capabilities announce them. */
#define COMMON 0x0000
#define ISR 0x1000
#define DEVCFG 0x2000
#define NOTIFY 0x3000
#define TABLE 0x4000
#define PBA 0x5000
#define MSI_ADDR 0xfee00000u

struct fake_kvm {
        struct {
                int fd;
                uint64_t addr;
                uint32_t len;
        } ioev[64];
        int n_ioev;
        int irqfd_gsi[MAX_FDS]; /* -1: not bound */
        uint32_t next_gsi;
        struct {
                bool allocated, installed;
                uint64_t addr;
                uint32_t data;
        } route[MAX_GSI];
        int level[32];
        int errors; /* calls KVM would have refused */
};

static int fake_ioeventfd(void *vm, int fd, uint64_t addr, uint32_t len, bool pio, bool assign, cap_error_t *err)
{
        struct fake_kvm *k = vm;
        int i;

        for (i = 0; i < k->n_ioev && k->ioev[i].addr != addr; i++)
                ;
        if (pio || (assign && (i < k->n_ioev || k->n_ioev == ARRAY_SIZE(k->ioev))) ||
            (!assign && (i == k->n_ioev || k->ioev[i].fd != fd || k->ioev[i].len != len))) {
                k->errors++;
                return cap_fail(err, EINVAL, "fake KVM_IOEVENTFD refused");
        }
        if (assign)
                k->ioev[k->n_ioev++] = (typeof(k->ioev[0])){ fd, addr, len };
        else
                k->ioev[i] = k->ioev[--k->n_ioev];
        return 0;
}

static int fake_irqfd(void *vm, int fd, uint32_t gsi, bool assign, cap_error_t *err)
{
        struct fake_kvm *k = vm;

        if (fd < 0 || fd >= MAX_FDS || (assign && k->irqfd_gsi[fd] != -1) || (!assign && k->irqfd_gsi[fd] != (int)gsi)) {
                k->errors++;
                return cap_fail(err, EINVAL, "fake KVM_IRQFD refused");
        }
        k->irqfd_gsi[fd] = assign ? (int)gsi : -1;
        return 0;
}

static int fake_gsi_alloc(void *vm, uint32_t *gsi, cap_error_t *err)
{
        struct fake_kvm *k = vm;

        if (k->next_gsi >= MAX_GSI)
                return cap_fail(err, ENOSPC, "fake: no GSI");
        k->route[k->next_gsi].allocated = true;
        *gsi = k->next_gsi++;
        return 0;
}

static int fake_msi_route(void *vm, uint32_t gsi, uint64_t addr, uint32_t data, bool mask, cap_error_t *err)
{
        struct fake_kvm *k = vm;

        if (gsi >= MAX_GSI || !k->route[gsi].allocated) {
                k->errors++;
                return cap_fail(err, EINVAL, "fake: GSI %u not allocated", gsi);
        }
        k->route[gsi].installed = !mask;
        k->route[gsi].addr = addr;
        k->route[gsi].data = data;
        return 0;
}

static int fake_irq_line(void *vm, uint32_t gsi, int level)
{
        struct fake_kvm *k = vm;

        if (gsi >= 32)
                k->errors++;
        else
                k->level[gsi] = level;
        return 0;
}

/* The fake device: two queues, an 8-byte config space. */
struct fake_dev {
        int activated, resets;
};

static int fake_activate(struct virtio_dev *dev, cap_error_t *err)
{
        (void)err;
        ((struct fake_dev *)dev->opaque)->activated++;
        return 0;
}

static void fake_notify(struct virtio_dev *dev, unsigned int q)
{
        (void)dev;
        (void)q;
}

static void fake_reset(struct virtio_dev *dev)
{
        ((struct fake_dev *)dev->opaque)->resets++;
}

/* Every byte of the fake's config is driver-writable. */
static void fake_config_write(struct virtio_dev *dev, uint32_t offset, const uint8_t *data, uint32_t len)
{
        memcpy((uint8_t *)dev->config + offset, data, len);
}

static const struct virtio_dev_ops fake_ops = { .activate = fake_activate, .notify = fake_notify, .reset = fake_reset,
                                                .config_write = fake_config_write };

struct machine {
        struct machine_base b;
        struct fake_kvm kvm;
        struct virtio_dev dev;
        struct fake_dev fake;
        uint8_t config[8];
        const struct pci_function *fn;
        uint64_t ecam, bar;
};

static int machine_start(struct machine *m, cap_error_t *err)
{
        memset(m, 0, sizeof(*m));
        for (int i = 0; i < MAX_FDS; i++)
                m->kvm.irqfd_gsi[i] = -1;
        m->kvm.next_gsi = 24;
        if (machine_base_init(&m->b, 64ULL << 20, err) < 0)
                return -1;
        m->b.cfg.console = VM_CONSOLE_NONE;
        m->b.cfg.virtio_transport = VM_VIRTIO_PCI;
        m->b.ctx.irq_line = fake_irq_line;
        m->b.ctx.ioeventfd = fake_ioeventfd;
        m->b.ctx.irqfd = fake_irqfd;
        m->b.ctx.gsi_alloc = fake_gsi_alloc;
        m->b.ctx.msi_route = fake_msi_route;
        m->b.ctx.vm = &m->kvm;
        if (machine_base_start(&m->b, false, err) < 0)
                return -1;
        snprintf(m->dev.name, sizeof(m->dev.name), "virtio-test0");
        m->dev.device_id = VIRTIO_ID_RNG;
        m->dev.features = 1ULL << 3;
        m->dev.n_queues = N_QUEUES;
        m->dev.queue_max = QUEUE_MAX;
        memcpy(m->config, "\x11\x22\x33\x44\x55\x66\x77\x88", 8);
        m->dev.config = m->config;
        m->dev.config_len = sizeof(m->config);
        m->dev.ops = &fake_ops;
        m->dev.opaque = &m->fake;
        if (virtio_dev_add(&m->b.ctx, &m->dev, err) < 0)
                return -1;
        for (unsigned int s = 1; s < PCI_SLOTS && !m->fn; s++)
                if (pci_get_function(s) && pci_get_function(s)->opaque == m->dev.transport_data)
                        m->fn = pci_get_function(s);
        if (!m->fn)
                return cap_fail(err, 0, "no PCI function for the device");
        m->ecam = LAYOUT_ECAM + ((uint64_t)m->fn->slot << 15);
        m->bar = pci_bar_address(m->fn, 0);
        return 0;
}

static void machine_stop(struct machine *m)
{
        machine_base_destroy(&m->b);
}

#define MACHINE(m) MACHINE_UP(machine, m, machine_start, machine_stop)

#define CFG_RD(m, off, len) io_in(&(m).b.mmio, (m).ecam + (off), len)
#define CFG_WR(m, off, len, v) io_out(&(m).b.mmio, (m).ecam + (off), len, v)
#define BAR_RD(m, off, len) io_in(&(m).b.mmio, (m).bar + (off), len)
#define BAR_WR(m, off, len, v) io_out(&(m).b.mmio, (m).bar + (off), len, v)

static void memory_on(struct machine *m)
{
        CFG_WR(*m, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
}

/* The driver's steps up to FEATURES_OK, accepting VERSION_1 and feature bit 3. */
static void features_ok(struct machine *m)
{
        BAR_WR(*m, COMMON + VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_CONFIG_S_ACKNOWLEDGE);
        BAR_WR(*m, COMMON + VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
        BAR_WR(*m, COMMON + VIRTIO_PCI_COMMON_GFSELECT, 4, 0);
        BAR_WR(*m, COMMON + VIRTIO_PCI_COMMON_GF, 4, 1u << 3);
        BAR_WR(*m, COMMON + VIRTIO_PCI_COMMON_GFSELECT, 4, 1);
        BAR_WR(*m, COMMON + VIRTIO_PCI_COMMON_GF, 4, 1u << (VIRTIO_F_VERSION_1 - 32));
        BAR_WR(*m, COMMON + VIRTIO_PCI_COMMON_STATUS, 1,
               VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
}

/* A vendor capability of cfg_type type in the chain, or 0. */
static uint32_t find_vendor_cap(struct machine *m, uint8_t type)
{
        for (uint32_t at = (uint32_t)CFG_RD(*m, PCI_CAPABILITY_LIST, 1), n = 0; at && n < 48;
             at = (uint32_t)CFG_RD(*m, at + 1, 1), n++)
                if (CFG_RD(*m, at, 1) == 0x09 && CFG_RD(*m, at + VIRTIO_PCI_CAP_CFG_TYPE, 1) == type)
                        return at;
        return 0;
}

static uint64_t eventfd_take(int fd)
{
        uint64_t n = 0;

        return read(fd, &n, sizeof(n)) == sizeof(n) ? n : 0;
}

static void interrupt(struct machine *m, int q)
{
        virtio_dev_lock(&m->dev);
        m->dev.isr |= q < 0 ? 2 : 1;
        m->dev.transport->interrupt(&m->dev, q);
        virtio_dev_unlock(&m->dev);
}

TEST(header_identifies_a_modern_virtio_function)
{
        MACHINE(m);
        CHECK(CFG_RD(m, PCI_VENDOR_ID, 2) == 0x1af4);
        CHECK(CFG_RD(m, PCI_DEVICE_ID, 2) == 0x1040 + VIRTIO_ID_RNG);
        CHECK(CFG_RD(m, PCI_REVISION_ID, 1) == 1);
        CHECK(CFG_RD(m, PCI_CLASS_DEVICE, 2) == 0xff00);
        CHECK(CFG_RD(m, PCI_SUBSYSTEM_VENDOR_ID, 2) == 0x1af4);
        CHECK(CFG_RD(m, PCI_SUBSYSTEM_ID, 2) == 0x1040 + VIRTIO_ID_RNG);
        CHECK(CFG_RD(m, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST);
        CHECK(CFG_RD(m, PCI_INTERRUPT_PIN, 1) == 1);
        CHECK(CFG_RD(m, PCI_INTERRUPT_LINE, 1) == m.fn->gsi && m.fn->gsi >= 16 && m.fn->gsi < 24);
        /* BAR 0: 32-bit memory, 32 KiB, in the BAR window. */
        CHECK(m.bar >= PCI_MMIO_START && m.bar + 0x8000 <= PCI_MMIO_END);
        CFG_WR(m, PCI_BAR0, 4, 0xffffffffu);
        CHECK(CFG_RD(m, PCI_BAR0, 4) == 0xffff8000u);
        CFG_WR(m, PCI_BAR0, 4, m.bar);
        CHECK(CFG_RD(m, PCI_BAR0 + 4, 4) == 0);
        /* Header fields the device does not own stay read-only. */
        CFG_WR(m, PCI_VENDOR_ID, 4, 0);
        CHECK(CFG_RD(m, PCI_VENDOR_ID, 2) == 0x1af4);
}

TEST(capability_chain_layout)
{
        MACHINE(m);
        bool seen[6] = { false };
        uint32_t at = (uint32_t)CFG_RD(m, PCI_CAPABILITY_LIST, 1), n = 0, msix = 0;

        for (; at; at = (uint32_t)CFG_RD(m, at + 1, 1), n++) {
                CHECK(n < 16);
                CHECK(at >= 0x40 && at % 4 == 0 && at < 0x100); /* mechanism #1 reaches it all */
                uint8_t id = (uint8_t)CFG_RD(m, at, 1);
                if (id == 0x11) {
                        msix = at;
                        continue;
                }
                CHECK(id == 0x09);
                uint8_t type = (uint8_t)CFG_RD(m, at + VIRTIO_PCI_CAP_CFG_TYPE, 1);
                CHECK(type >= 1 && type <= 5 && !seen[type]);
                seen[type] = true;
                CHECK(at + CFG_RD(m, at + VIRTIO_PCI_CAP_LEN, 1) <= 0x100);
                if (type == VIRTIO_PCI_CAP_PCI_CFG) {
                        CHECK(CFG_RD(m, at + VIRTIO_PCI_CAP_LEN, 1) == sizeof(struct virtio_pci_cfg_cap));
                        continue;
                }
                static const uint32_t where[] = { 0, COMMON, NOTIFY, ISR, DEVCFG };
                static const uint32_t length[] = { 0, 56, N_QUEUES * 4, 1, 8 };
                CHECK(CFG_RD(m, at + VIRTIO_PCI_CAP_BAR, 1) == 0);
                CHECK(CFG_RD(m, at + VIRTIO_PCI_CAP_OFFSET, 4) == where[type]);
                CHECK(CFG_RD(m, at + VIRTIO_PCI_CAP_LENGTH, 4) == length[type]);
                if (type == VIRTIO_PCI_CAP_NOTIFY_CFG) {
                        CHECK(CFG_RD(m, at + VIRTIO_PCI_CAP_LEN, 1) == sizeof(struct virtio_pci_notify_cap));
                        CHECK(CFG_RD(m, at + VIRTIO_PCI_NOTIFY_CAP_MULT, 4) == 4);
                }
        }
        for (int t = 1; t <= 5; t++)
                CHECK(seen[t]);
        /* MSI-X: one vector per queue and one for config, table and PBA in BAR 0. */
        CHECK(msix != 0);
        CHECK(CFG_RD(m, msix + 2, 2) == N_QUEUES); /* table size N-1, disabled, unmasked */
        CHECK(CFG_RD(m, msix + 4, 4) == TABLE);
        CHECK(CFG_RD(m, msix + 8, 4) == PBA);
        /* Only Message Control's enable and mask bits are writable. */
        uint64_t next = CFG_RD(m, msix + 1, 1);
        CFG_WR(m, msix, 4, 0xffffffffu);
        CHECK(CFG_RD(m, msix, 1) == 0x11 && CFG_RD(m, msix + 1, 1) == next);
        CHECK(CFG_RD(m, msix + 2, 2) == (0xc000u | N_QUEUES));
        CFG_WR(m, msix + 4, 4, 0);
        CHECK(CFG_RD(m, msix + 4, 4) == TABLE);
        CHECK(m.kvm.errors == 0);
}

TEST(feature_select_and_negotiation)
{
        MACHINE(m);
        memory_on(&m);
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_DFSELECT, 4, 0);
        CHECK(BAR_RD(m, COMMON + VIRTIO_PCI_COMMON_DF, 4) & (1u << 3));
        CHECK(BAR_RD(m, COMMON + VIRTIO_PCI_COMMON_DF, 4) & (1u << VIRTIO_RING_F_EVENT_IDX));
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_DFSELECT, 4, 1);
        CHECK(BAR_RD(m, COMMON + VIRTIO_PCI_COMMON_DFSELECT, 4) == 1);
        CHECK(BAR_RD(m, COMMON + VIRTIO_PCI_COMMON_DF, 4) == 1u << (VIRTIO_F_VERSION_1 - 32));
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_DFSELECT, 4, 2);
        CHECK(BAR_RD(m, COMMON + VIRTIO_PCI_COMMON_DF, 4) == 0);
        /* Byte reads of a register. */
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_DFSELECT, 1, 1);
        CHECK(BAR_RD(m, COMMON + VIRTIO_PCI_COMMON_DF + 3, 1) == 0 && BAR_RD(m, COMMON + VIRTIO_PCI_COMMON_DF, 1) == 1);
        CHECK(BAR_RD(m, COMMON + VIRTIO_PCI_COMMON_NUMQ, 2) == N_QUEUES);

        features_ok(&m);
        CHECK(BAR_RD(m, COMMON + VIRTIO_PCI_COMMON_STATUS, 1) & VIRTIO_CONFIG_S_FEATURES_OK);
        CHECK(m.dev.driver_features == (1ULL << VIRTIO_F_VERSION_1 | 1ULL << 3));
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_GFSELECT, 4, 0);
        CHECK(BAR_RD(m, COMMON + VIRTIO_PCI_COMMON_GF, 4) == 1u << 3);
        /* A 64-bit access is two 32-bit ones. */
        CHECK(BAR_RD(m, COMMON + VIRTIO_PCI_COMMON_GFSELECT, 8) == (uint64_t)(1u << 3) << 32);

        /* A feature the device does not offer: FEATURES_OK does not stick. */
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_STATUS, 1, 0);
        CHECK(BAR_RD(m, COMMON + VIRTIO_PCI_COMMON_STATUS, 1) == 0);
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_CONFIG_S_ACKNOWLEDGE);
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_GF, 4, 1u << 5);
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_STATUS, 1,
               VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
        CHECK(!(BAR_RD(m, COMMON + VIRTIO_PCI_COMMON_STATUS, 1) & VIRTIO_CONFIG_S_FEATURES_OK));
}

TEST(queue_setup_and_notify)
{
        MACHINE(m);
        memory_on(&m);
        features_ok(&m);
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_Q_SELECT, 2, 1);
        CHECK(BAR_RD(m, COMMON + VIRTIO_PCI_COMMON_Q_SIZE, 2) == QUEUE_MAX);
        CHECK(BAR_RD(m, COMMON + VIRTIO_PCI_COMMON_Q_NOFF, 2) == 1);
        CHECK(BAR_RD(m, COMMON + VIRTIO_PCI_COMMON_Q_ENABLE, 2) == 0);
        CHECK(BAR_RD(m, COMMON + VIRTIO_PCI_COMMON_Q_MSIX, 2) == VIRTIO_MSI_NO_VECTOR);
        /* Sizes: a power of two up to the maximum, anything else is ignored. */
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_Q_SIZE, 2, 100);
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_Q_SIZE, 2, 2 * QUEUE_MAX);
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_Q_SIZE, 2, 0);
        CHECK(BAR_RD(m, COMMON + VIRTIO_PCI_COMMON_Q_SIZE, 2) == QUEUE_MAX);
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_Q_SIZE, 2, 64);
        CHECK(BAR_RD(m, COMMON + VIRTIO_PCI_COMMON_Q_SIZE, 2) == 64);
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_Q_DESCLO, 4, 0x10000);
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_Q_DESCHI, 4, 0);
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_Q_AVAILLO, 4, 0x11000);
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_Q_AVAILHI, 4, 0);
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_Q_USEDLO, 4, 0x12000);
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_Q_USEDHI, 4, 0);
        CHECK(BAR_RD(m, COMMON + VIRTIO_PCI_COMMON_Q_AVAILLO, 4) == 0x11000);
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
        CHECK(BAR_RD(m, COMMON + VIRTIO_PCI_COMMON_Q_ENABLE, 2) == 1);
        CHECK(m.dev.queues[1].ready && m.dev.queues[1].size == 64 && m.dev.queues[1].desc_gpa == 0x10000 &&
              m.dev.queues[1].avail_gpa == 0x11000 && m.dev.queues[1].used_gpa == 0x12000);
        /* An enabled queue's setup is frozen. */
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_Q_SIZE, 2, 32);
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_Q_DESCLO, 4, 0x20000);
        CHECK(m.dev.queues[1].size == 64 && m.dev.queues[1].desc_gpa == 0x10000);
        /* No such queue: size 0, nothing is written. */
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_Q_SELECT, 2, N_QUEUES);
        CHECK(BAR_RD(m, COMMON + VIRTIO_PCI_COMMON_Q_SIZE, 2) == 0);
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_Q_DESCLO, 4, 0x30000);
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);

        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_STATUS, 1, 0x0f);
        CHECK(m.fake.activated == 1);
        eventfd_take(m.dev.io[1].kick_fd); /* DRIVER_OK has the event loop look at each queue */
        /* A notify write that reached user space still kicks, through the kick fd. */
        BAR_WR(m, NOTIFY + 4, 2, 1);
        CHECK(eventfd_take(m.dev.io[1].kick_fd) == 1);
        BAR_WR(m, NOTIFY + 4 * N_QUEUES, 2, N_QUEUES); /* past the last queue */
        CHECK(eventfd_take(m.dev.io[0].kick_fd) == 0);

        /* Reset: the queue is forgotten, the selectors start over. */
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_STATUS, 1, 0);
        CHECK(m.fake.resets == 1 && !m.dev.queues[1].ready);
        CHECK(BAR_RD(m, COMMON + VIRTIO_PCI_COMMON_Q_SELECT, 2) == 0);
        CHECK(m.kvm.errors == 0);
}

TEST(device_config_and_isr)
{
        MACHINE(m);
        memory_on(&m);
        CHECK(BAR_RD(m, DEVCFG, 4) == 0x44332211u);
        CHECK(BAR_RD(m, DEVCFG, 8) == 0x8877665544332211ull);
        CHECK(BAR_RD(m, DEVCFG + 7, 1) == 0x88);
        CHECK(BAR_RD(m, DEVCFG + 6, 4) == 0); /* past config_len */
        BAR_WR(m, DEVCFG + 1, 1, 0xab);
        CHECK(m.config[1] == 0xab);
        /* ISR: read-and-clear. */
        m.dev.isr = 3;
        CHECK(BAR_RD(m, ISR, 1) == 3);
        CHECK(BAR_RD(m, ISR, 1) == 0);
        /* Unused space reads as zero. */
        CHECK(BAR_RD(m, COMMON + 0x100, 4) == 0 && BAR_RD(m, 0x7ffc, 4) == 0);
}

TEST(ioeventfds_follow_bar0)
{
        MACHINE(m);
        CHECK(m.kvm.n_ioev == 0); /* memory decoding is off */
        memory_on(&m);
        CHECK(m.kvm.n_ioev == N_QUEUES);
        for (int i = 0; i < m.kvm.n_ioev; i++) {
                int q = m.kvm.ioev[i].fd == m.dev.io[0].kick_fd ? 0 : 1;
                CHECK(m.kvm.ioev[i].fd == m.dev.io[q].kick_fd);
                CHECK(m.kvm.ioev[i].addr == m.bar + NOTIFY + 4 * (uint64_t)q && m.kvm.ioev[i].len == 2);
        }
        uint64_t moved = PCI_MMIO_END - 0x8000;
        CFG_WR(m, PCI_BAR0, 4, moved);
        CHECK(m.kvm.n_ioev == N_QUEUES);
        for (int i = 0; i < m.kvm.n_ioev; i++)
                CHECK(m.kvm.ioev[i].addr >= moved + NOTIFY && m.kvm.ioev[i].addr < moved + NOTIFY + 8);
        /* The registers moved too. */
        m.bar = moved;
        CHECK(BAR_RD(m, COMMON + VIRTIO_PCI_COMMON_NUMQ, 2) == N_QUEUES);
        CFG_WR(m, PCI_COMMAND, 2, 0);
        CHECK(m.kvm.n_ioev == 0);
        memory_on(&m);
        CHECK(m.kvm.n_ioev == N_QUEUES);
        CHECK(m.kvm.errors == 0);
}

static void vector_program(struct machine *m, unsigned int v, uint32_t data, bool masked)
{
        BAR_WR(*m, TABLE + 16 * v, 4, MSI_ADDR);
        BAR_WR(*m, TABLE + 16 * v + 4, 4, 0);
        BAR_WR(*m, TABLE + 16 * v + 8, 4, data);
        BAR_WR(*m, TABLE + 16 * v + 12, 4, masked);
}

TEST(msix_routes_irqfds_mask_and_pending)
{
        MACHINE(m);
        uint32_t msix = (uint32_t)CFG_RD(m, PCI_CAPABILITY_LIST, 1);
        CHECK(CFG_RD(m, msix, 1) == 0x11);
        memory_on(&m);
        /* Entries come out of reset masked. */
        CHECK(BAR_RD(m, TABLE + 12, 4) == 1 && BAR_RD(m, TABLE + 16 * N_QUEUES + 12, 4) == 1);
        CHECK(BAR_RD(m, TABLE + 16 * (N_QUEUES + 1), 4) == 0); /* past the table */
        for (unsigned int v = 0; v <= N_QUEUES; v++)
                vector_program(&m, v, 0x40 + v, true);
        CHECK(BAR_RD(m, TABLE + 16 + 8, 4) == 0x41);
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_MSIX, 2, 0);
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_Q_SELECT, 2, 0);
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_Q_MSIX, 2, 1);
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_Q_SELECT, 2, 1);
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_Q_MSIX, 2, N_QUEUES + 1); /* no such vector */
        CHECK(BAR_RD(m, COMMON + VIRTIO_PCI_COMMON_Q_MSIX, 2) == VIRTIO_MSI_NO_VECTOR);
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_Q_MSIX, 2, 2);
        CHECK(BAR_RD(m, COMMON + VIRTIO_PCI_COMMON_Q_MSIX, 2) == 2);
        /* MSI-X off: nothing is bound. */
        CHECK(m.kvm.irqfd_gsi[m.dev.io[0].call_fd] == -1);

        CFG_WR(m, msix + 2, 2, 0x8000);
        /* Enabled, every vector still masked: no routes, no irqfds. */
        for (uint32_t g = 24; g < m.kvm.next_gsi; g++)
                CHECK(!m.kvm.route[g].installed);
        CHECK(m.kvm.irqfd_gsi[m.dev.io[0].call_fd] == -1);
        BAR_WR(m, TABLE + 16 + 12, 4, 0); /* unmask vector 1: queue 0's */
        int gsi = m.kvm.irqfd_gsi[m.dev.io[0].call_fd];
        CHECK(gsi >= 24 && m.kvm.route[gsi].installed && m.kvm.route[gsi].addr == MSI_ADDR &&
              m.kvm.route[gsi].data == 0x41);
        CHECK(m.kvm.irqfd_gsi[m.dev.io[1].call_fd] == -1);
        /* An interrupt is a write to the call fd, which KVM injects through the irqfd. */
        interrupt(&m, 0);
        CHECK(eventfd_take(m.dev.io[0].call_fd) == 1);
        /* The driver retargets an unmasked vector: the route follows. */
        BAR_WR(m, TABLE + 16 + 8, 4, 0x51);
        CHECK(m.kvm.route[gsi].installed && m.kvm.route[gsi].data == 0x51);

        /* Masked: the irqfd is unbound before the route goes; the interrupt is pending. */
        BAR_WR(m, TABLE + 16 + 12, 4, 1);
        CHECK(m.kvm.irqfd_gsi[m.dev.io[0].call_fd] == -1 && !m.kvm.route[gsi].installed);
        interrupt(&m, 0);
        CHECK(BAR_RD(m, PBA, 8) == 1u << 1);
        BAR_WR(m, PBA, 8, 0); /* read-only */
        CHECK(BAR_RD(m, PBA, 8) == 1u << 1);
        /* Unmasked: bound again (KVM then injects what the eventfd holds), no longer pending. */
        BAR_WR(m, TABLE + 16 + 12, 4, 0);
        CHECK(m.kvm.irqfd_gsi[m.dev.io[0].call_fd] == gsi && m.kvm.route[gsi].installed);
        CHECK(BAR_RD(m, PBA, 8) == 0);
        CHECK(eventfd_take(m.dev.io[0].call_fd) == 1);

        /* The function mask works the same way for every vector. */
        CFG_WR(m, msix + 2, 2, 0xc000);
        CHECK(m.kvm.irqfd_gsi[m.dev.io[0].call_fd] == -1 && !m.kvm.route[gsi].installed);
        interrupt(&m, 0);
        CHECK(BAR_RD(m, PBA, 4) == 1u << 1);
        CFG_WR(m, msix + 2, 2, 0x8000);
        CHECK(m.kvm.irqfd_gsi[m.dev.io[0].call_fd] == gsi && BAR_RD(m, PBA, 4) == 0);
        CHECK(eventfd_take(m.dev.io[0].call_fd) == 1);

        /* The config vector (0) has an eventfd of its own, bound once the vector is live. */
        int config_fd = -1;
        BAR_WR(m, TABLE + 12, 4, 0);
        for (int fd = 0; fd < MAX_FDS; fd++)
                if (m.kvm.irqfd_gsi[fd] >= 0 && fd != m.dev.io[0].call_fd && fd != m.dev.io[1].call_fd)
                        config_fd = fd;
        CHECK(config_fd >= 0 && m.kvm.route[m.kvm.irqfd_gsi[config_fd]].data == 0x40);
        interrupt(&m, -1);
        CHECK(eventfd_take(config_fd) == 1 && eventfd_take(m.dev.io[0].call_fd) == 0);
        /* No vector: no interrupt at all. */
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_Q_SELECT, 2, 0);
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_Q_MSIX, 2, VIRTIO_MSI_NO_VECTOR);
        CHECK(m.kvm.irqfd_gsi[m.dev.io[0].call_fd] == -1);
        eventfd_take(m.dev.io[0].call_fd);
        interrupt(&m, 0);
        CHECK(eventfd_take(m.dev.io[0].call_fd) == 0 && BAR_RD(m, PBA, 4) == 0);

        /* MSI-X off again: everything unbound and removed. */
        CFG_WR(m, msix + 2, 2, 0);
        for (uint32_t g = 24; g < m.kvm.next_gsi; g++)
                CHECK(!m.kvm.route[g].installed);
        CHECK(m.kvm.errors == 0);
}

TEST(msix_reset_unbinds_and_teardown_leaves_nothing)
{
        MACHINE(m);
        uint32_t msix = (uint32_t)CFG_RD(m, PCI_CAPABILITY_LIST, 1);
        memory_on(&m);
        vector_program(&m, 0, 0x40, false);
        vector_program(&m, 1, 0x41, false);
        CFG_WR(m, msix + 2, 2, 0x8000);
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_MSIX, 2, 0);
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_Q_MSIX, 2, 1);
        CHECK(m.kvm.irqfd_gsi[m.dev.io[0].call_fd] >= 24);
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_STATUS, 1, 0);
        CHECK(m.kvm.irqfd_gsi[m.dev.io[0].call_fd] == -1);
        CHECK(BAR_RD(m, COMMON + VIRTIO_PCI_COMMON_MSIX, 2) == VIRTIO_MSI_NO_VECTOR);
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_MSIX, 2, 0);
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_Q_MSIX, 2, 1);

        unsigned int slot = m.fn->slot;
        devices_exit(&m.b.ctx);
        m.b.up = false;
        CHECK(m.kvm.n_ioev == 0);
        for (int fd = 0; fd < MAX_FDS; fd++)
                CHECK(m.kvm.irqfd_gsi[fd] == -1);
        for (uint32_t g = 24; g < m.kvm.next_gsi; g++)
                CHECK(!m.kvm.route[g].installed);
        CHECK(pci_get_function(slot) == NULL);
        CHECK(m.kvm.errors == 0);
}

TEST(intx_fallback_follows_the_isr)
{
        MACHINE(m);
        uint32_t msix = (uint32_t)CFG_RD(m, PCI_CAPABILITY_LIST, 1);
        memory_on(&m);
        interrupt(&m, 0);
        CHECK(m.kvm.level[m.fn->gsi] == 1);
        interrupt(&m, -1);
        CHECK(m.kvm.level[m.fn->gsi] == 1);
        CHECK(BAR_RD(m, ISR, 1) == 3);
        CHECK(m.kvm.level[m.fn->gsi] == 0);
        /* MSI-X on: INTx is off, even with the ISR set. */
        interrupt(&m, 0);
        CFG_WR(m, msix + 2, 2, 0x8000);
        CHECK(m.kvm.level[m.fn->gsi] == 0);
        interrupt(&m, 0);
        CHECK(m.kvm.level[m.fn->gsi] == 0);
        /* Off again with the ISR still set: the line comes back. */
        CFG_WR(m, msix + 2, 2, 0);
        CHECK(m.kvm.level[m.fn->gsi] == 1);
        BAR_WR(m, COMMON + VIRTIO_PCI_COMMON_STATUS, 1, 0); /* reset clears the ISR */
        CHECK(m.kvm.level[m.fn->gsi] == 0);
}

TEST(pci_cfg_capability_reaches_bar0)
{
        MACHINE(m);
        uint32_t cap = find_vendor_cap(&m, VIRTIO_PCI_CAP_PCI_CFG);
        uint32_t data = cap + offsetof(struct virtio_pci_cfg_cap, pci_cfg_data);
        CHECK(cap != 0);
        /* Works with memory decoding off too: it is a config-space path. */
        CFG_WR(m, cap + VIRTIO_PCI_CAP_BAR, 1, 0);
        CFG_WR(m, cap + VIRTIO_PCI_CAP_OFFSET, 4, COMMON + VIRTIO_PCI_COMMON_NUMQ);
        CFG_WR(m, cap + VIRTIO_PCI_CAP_LENGTH, 4, 2);
        CHECK(CFG_RD(m, data, 2) == N_QUEUES);
        CFG_WR(m, cap + VIRTIO_PCI_CAP_OFFSET, 4, COMMON + VIRTIO_PCI_COMMON_STATUS);
        CFG_WR(m, cap + VIRTIO_PCI_CAP_LENGTH, 4, 1);
        CFG_WR(m, data, 1, VIRTIO_CONFIG_S_ACKNOWLEDGE);
        CHECK(m.dev.status == VIRTIO_CONFIG_S_ACKNOWLEDGE);
        CHECK(CFG_RD(m, data, 1) == VIRTIO_CONFIG_S_ACKNOWLEDGE);
        /* Misaligned, a bad length or another BAR: nothing happens, zero reads. */
        CFG_WR(m, cap + VIRTIO_PCI_CAP_OFFSET, 4, COMMON + VIRTIO_PCI_COMMON_NUMQ + 1);
        CFG_WR(m, cap + VIRTIO_PCI_CAP_LENGTH, 4, 2);
        CHECK(CFG_RD(m, data, 4) == 0);
        CFG_WR(m, cap + VIRTIO_PCI_CAP_OFFSET, 4, 0x8000);
        CFG_WR(m, cap + VIRTIO_PCI_CAP_LENGTH, 4, 4);
        CHECK(CFG_RD(m, data, 4) == 0);
        CFG_WR(m, cap + VIRTIO_PCI_CAP_BAR, 1, 1);
        CFG_WR(m, cap + VIRTIO_PCI_CAP_OFFSET, 4, 0);
        CHECK(CFG_RD(m, data, 4) == 0);
        /* The capability's own header is read-only. */
        CFG_WR(m, cap, 4, 0);
        CHECK(CFG_RD(m, cap, 1) == 0x09 && CFG_RD(m, cap + VIRTIO_PCI_CAP_CFG_TYPE, 1) == VIRTIO_PCI_CAP_PCI_CFG);
}

TEST(hostile_accesses_everywhere)
{
        MACHINE(m);
        memory_on(&m);
        /* Every offset and size, twice over: the BAR (with all-ones writes) and config space. */
        for (int pass = 0; pass < 2; pass++) {
                for (uint64_t off = 0; off < 0x8000; off += (off & 0xfff) < 0x100 ? 1 : 0x3f)
                        for (uint32_t len = 1; len <= 8; len *= 2) {
                                io_out(&m.b.mmio, m.bar + off, len, ~0ULL);
                                io_in(&m.b.mmio, m.bar + off, len);
                        }
                for (uint32_t off = 0x40; off < 0x1000; off++)
                        for (uint32_t len = 1; len <= 4; len *= 2) {
                                CFG_WR(m, off, len, 0xffffffffu);
                                CFG_RD(m, off, len);
                        }
                memory_on(&m);
        }
        CHECK(m.kvm.errors == 0);
}
