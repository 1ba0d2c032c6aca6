/* What a guest driver can do to the virtio-pci transport: arbitrary config-space accesses
 * (the header with its BAR and command registers, the capabilities, MSI-X control, the
 * PCI configuration window) and BAR accesses (common configuration, ISR, device config,
 * notify, MSI-X table and PBA), interleaved with interrupts from the device side. A fake
 * device goes through the real core on the real PCI host; the KVM plumbing is a fake that
 * aborts on anything KVM would refuse (a second ioeventfd at one address, removing one
 * that is not there, binding an irqfd twice, a route for a GSI never allocated), so the
 * transport's bookkeeping is checked along with memory safety. After each input the
 * device is torn down and nothing may be left in the fake KVM.
 *
 * The input is a sequence of records, each starting with an op byte:
 *   op & 3 == 0: config-space access, le16 offset (modulo 4 KiB);
 *   op & 3 == 1: BAR 0 access, le16 offset (modulo 32 KiB plus a little past it);
 *   op & 3 == 2: an interrupt for queue (op >> 2) % (queues + 1) - 1 (-1: config);
 *   op & 3 == 3: a write of the command register's memory bit (op & 4).
 * For accesses, bit 2 is "write" and bits 3-4 the size (1, 2, 4, 8); a write is followed
 * by its data. Each access gets a heap buffer of exactly its size. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "vmm/device.h"
#include "vmm/devices/pci.h"
#include "vmm/virtio/transport.h"
#include "vmm/virtio/virtio.h"
#include "vmm/vm.h"
#include "vmm/x86/layout.h"
#include "fuzz_input.h"
#include "../unit/machine.h"

#define GUEST_RAM (16ULL << 20)
#define N_QUEUES 3
#define MAX_FDS 4096
#define MAX_GSI 512
#define BAR_SPAN 0x8000

int LLVMFuzzerInitialize(int *argc, char ***argv);

static struct {
        struct {
                int fd;
                uint64_t addr;
        } ioev[64];
        int n_ioev;
        int irqfd_gsi[MAX_FDS];
        uint32_t next_gsi;
        bool allocated[MAX_GSI], installed[MAX_GSI];
} kvm;

static struct machine_base machine;
static struct virtio_dev dev;
static uint8_t dev_config[12];
static const struct pci_function *fn;
static uint64_t ecam;

static int fake_ioeventfd(void *vm, int fd, uint64_t addr, uint32_t len, bool pio_space, bool assign, cap_error_t *err)
{
        int i;

        (void)vm;
        (void)err;
        for (i = 0; i < kvm.n_ioev && kvm.ioev[i].addr != addr; i++)
                ;
        if (pio_space || len != 2 || addr < PCI_MMIO_START || addr >= PCI_MMIO_END)
                abort();
        if (assign) {
                if (i < kvm.n_ioev || kvm.n_ioev == 64)
                        abort();
                kvm.ioev[kvm.n_ioev].fd = fd;
                kvm.ioev[kvm.n_ioev++].addr = addr;
        } else {
                if (i == kvm.n_ioev || kvm.ioev[i].fd != fd)
                        abort();
                kvm.ioev[i] = kvm.ioev[--kvm.n_ioev];
        }
        return 0;
}

static int fake_irqfd(void *vm, int fd, uint32_t gsi, bool assign, cap_error_t *err)
{
        (void)vm;
        (void)err;
        if (fd < 0 || fd >= MAX_FDS || gsi >= MAX_GSI || !kvm.allocated[gsi])
                abort();
        if (assign ? kvm.irqfd_gsi[fd] != -1 : kvm.irqfd_gsi[fd] != (int)gsi)
                abort();
        /* The transport binds an irqfd only to an installed route. */
        if (assign && !kvm.installed[gsi])
                abort();
        kvm.irqfd_gsi[fd] = assign ? (int)gsi : -1;
        return 0;
}

static int fake_gsi_alloc(void *vm, uint32_t *gsi, cap_error_t *err)
{
        (void)vm;
        if (kvm.next_gsi >= MAX_GSI)
                return cap_fail(err, 0, "fake: no GSI left");
        kvm.allocated[kvm.next_gsi] = true;
        *gsi = kvm.next_gsi++;
        return 0;
}

static int fake_msi_route(void *vm, uint32_t gsi, uint64_t addr, uint32_t data, bool mask, cap_error_t *err)
{
        (void)vm;
        (void)addr;
        (void)data;
        (void)err;
        if (gsi >= MAX_GSI || !kvm.allocated[gsi])
                abort();
        /* Removing a route that an irqfd still uses would drop its interrupts. */
        if (mask)
                for (int fd = 0; fd < MAX_FDS; fd++)
                        if (kvm.irqfd_gsi[fd] == (int)gsi)
                                abort();
        kvm.installed[gsi] = !mask;
        return 0;
}

static int fake_irq_line(void *vm, uint32_t gsi, int level)
{
        (void)vm;
        if (gsi < 16 || gsi >= 24 || (level != 0 && level != 1))
                abort(); /* the PCI INTx GSIs */
        return 0;
}

static int fake_activate(struct virtio_dev *d, cap_error_t *err)
{
        (void)d;
        (void)err;
        return 0;
}

static void fake_notify(struct virtio_dev *d, unsigned int q)
{
        (void)d;
        (void)q;
}

static void fake_reset(struct virtio_dev *d)
{
        (void)d;
}

static const struct virtio_dev_ops fake_ops = { .activate = fake_activate, .notify = fake_notify, .reset = fake_reset };

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
        cap_error_t err = NULL;

        (void)argc;
        (void)argv;
        /* The transport warns once per device about KVM failures: not to stderr. */
        if (log_init("/dev/null", NULL, false) < 0)
                fuzz_die("log", &err);
        if (machine_base_init(&machine, GUEST_RAM, &err) < 0)
                fuzz_die("machine", &err);
        machine.cfg = (struct vm_config){ .console = VM_CONSOLE_NONE, .virtio_transport = VM_VIRTIO_PCI };
        machine.ctx.irq_line = fake_irq_line;
        machine.ctx.ioeventfd = fake_ioeventfd;
        machine.ctx.irqfd = fake_irqfd;
        machine.ctx.gsi_alloc = fake_gsi_alloc;
        machine.ctx.msi_route = fake_msi_route;
        return 0;
}

static void machine_start(void)
{
        cap_error_t err = NULL;

        memset(&kvm, 0, sizeof(kvm));
        for (int i = 0; i < MAX_FDS; i++)
                kvm.irqfd_gsi[i] = -1;
        kvm.next_gsi = 24;
        if (machine_base_start(&machine, false, &err) < 0)
                fuzz_die("devices", &err);
        memset(&dev, 0, sizeof(dev));
        snprintf(dev.name, sizeof(dev.name), "virtio-fuzz0");
        dev.device_id = VIRTIO_ID_BLOCK;
        dev.n_queues = N_QUEUES;
        dev.queue_max = 256;
        memset(dev_config, 0x5a, sizeof(dev_config));
        dev.config = dev_config;
        dev.config_len = sizeof(dev_config);
        dev.ops = &fake_ops;
        if (virtio_dev_add(&machine.ctx, &dev, &err) < 0)
                fuzz_die("virtio device", &err);
        fn = NULL;
        for (unsigned int s = 1; s < PCI_SLOTS && !fn; s++)
                if (pci_get_function(s) && pci_get_function(s)->opaque == dev.transport_data)
                        fn = pci_get_function(s);
        if (!fn)
                fuzz_die("no PCI function", &err);
        ecam = LAYOUT_ECAM + ((uint64_t)fn->slot << 15);
}

static void machine_stop(void)
{
        machine_base_stop(&machine);
        /* Teardown leaves nothing behind in KVM. */
        if (kvm.n_ioev)
                abort();
        for (int fd = 0; fd < MAX_FDS; fd++)
                if (kvm.irqfd_gsi[fd] != -1)
                        abort();
        for (int g = 0; g < MAX_GSI; g++)
                if (kvm.installed[g])
                        abort();
}

static void access(struct input *in, uint8_t op)
{
        bool is_write = op & 4;
        uint32_t len = 1u << ((op >> 3) & 3);
        uint16_t offset;
        uint64_t addr;
        uint8_t *buf;

        if (!take(in, &offset, sizeof(offset)))
                return;
        if ((op & 3) == 0) {
                addr = ecam + offset % PCI_CONFIG_SIZE;
        } else {
                addr = pci_bar_address(fn, 0) + offset % (BAR_SPAN + 16);
        }
        buf = malloc(len);
        if (buf == NULL)
                abort();
        if (is_write) {
                if (!take(in, buf, len)) {
                        free(buf);
                        return;
                }
        }
        bus_dispatch(&machine.mmio, addr, buf, len, is_write);
        free(buf);
}

static void interrupt(uint8_t op)
{
        int q = (int)((op >> 2) % (N_QUEUES + 1)) - 1;

        virtio_dev_lock(&dev);
        dev.isr |= q < 0 ? 2 : 1;
        dev.transport->interrupt(&dev, q);
        virtio_dev_unlock(&dev);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct input in = { data, size };
        uint8_t op;

        machine_start();
        while (take(&in, &op, 1)) {
                switch (op & 3) {
                case 0:
                case 1:
                        access(&in, op);
                        break;
                case 2:
                        interrupt(op);
                        break;
                default: {
                        uint8_t cmd[2] = { (op & 4) ? PCI_COMMAND_MEMORY : 0, 0 };
                        bus_dispatch(&machine.mmio, ecam + PCI_COMMAND, cmd, 2, true);
                        break;
                }
                }
        }
        machine_stop();
        return 0;
}
