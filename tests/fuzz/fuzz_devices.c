/* What a guest can do to the VMM: port I/O and MMIO accesses through the buses
 * to every registered device (serial, i8042, rtc, pci, pvpanic, acpi_pm,
 * debug_exit), plus guest-physical addresses and lengths given to guest_mem_*.
 * The devices are set up as in tests/unit/test_vmm_devices.c, with a PCI function
 * that owns two BARs and its own config space; its callbacks abort if the host
 * bridge ever passes them an access outside what pci.h promises.
 *
 * The input is a sequence of records, each starting with an op byte:
 *   op & 3 == 0 / 1: port I/O / MMIO at a known device (table below, op >> 5)
 *                    plus an le32 offset taken modulo the device's span;
 *   op & 3 == 3:     port I/O (op & 0x20) or MMIO at a raw le64 address;
 *   op & 3 == 2:     guest memory: (op >> 2) & 3 picks ptr/read/write/ptr with a
 *                    64-bit length, (op >> 4) a base address, then an le32 offset
 *                    and an le32 (or le64) length.
 * For accesses, bit 2 is "write" and bits 3-4 the size (1, 2, 4, 8); a write is
 * followed by its data. Each access gets a heap buffer of exactly its size, so
 * a handler touching a byte more is an ASan error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common/log.h"
#include "vmm/device.h"
#include "vmm/devices/pci.h"
#include "vmm/vm.h"
#include "vmm/x86/layout.h"
#include "fuzz_input.h"
#include "../unit/machine.h"

/* Low RAM up to the PCI hole and a little above 4 GiB: both regions exist. The
 * memfd is sparse: only pages the input writes take memory (and are dropped). */
#define GUEST_RAM (GUEST_PCI_HOLE_START + (16ULL << 20))
#define BAR0_SIZE 0x1000
#define BAR1_SIZE 0x10000

int LLVMFuzzerInitialize(int *argc, char ***argv);

static struct machine_base machine;
static struct pci_function fn;

static int fake_irq_line(void *vm, uint32_t gsi, int level)
{
        (void)vm;
        if (gsi >= 24 || (level != 0 && level != 1))
                abort(); /* the IOAPIC has 24 inputs */
        return 0;
}

static void fn_bar_access(struct pci_function *f, int bar, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
        if (f != &fn || bar < 0 || bar > 1 || offset >= f->bar_size[bar] || len > f->bar_size[bar] - offset ||
            (len != 1 && len != 2 && len != 4 && len != 8))
                abort();
        if (!is_write)
                memset(data, 0x5a, len);
}

static void fn_config_access(struct pci_function *f, uint32_t offset, uint8_t *data, uint32_t len, bool is_write)
{
        if (f != &fn || offset < PCI_DEVICE_CONFIG || (len != 1 && len != 2 && len != 4) || (offset & 3) + len > 4 ||
            offset + len > PCI_CONFIG_SIZE)
                abort();
        if (is_write)
                memcpy(&f->config[offset], data, len);
        else
                memcpy(data, &f->config[offset], len);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
        cap_error_t err = NULL;

        (void)argc;
        (void)argv;
        /* Devices log (pvpanic's "crash kernel" notice) at info level: not to stderr. */
        if (log_init("/dev/null", NULL, false) < 0)
                fuzz_die("log", &err);
        if (machine_base_init(&machine, GUEST_RAM, &err) < 0)
                fuzz_die("machine", &err);
        if (machine.mem.n_regions != 2)
                fuzz_die("guest memory has no region above 4 GiB", &err);
        machine.cfg = (struct vm_config){ .console = VM_CONSOLE_FILE, .console_path = "/dev/null", .debug_exit = true };
        machine.ctx.irq_line = fake_irq_line;
        return 0;
}

/* Fresh devices for every input, so that a crash reproduces from its input alone. */
static void machine_start(void)
{
        cap_error_t err = NULL;

        if (machine_base_start(&machine, false, &err) < 0)
                fuzz_die("devices", &err);
        memset(&fn, 0, sizeof(fn));
        fn.config[PCI_VENDOR_ID] = 0xf4;
        fn.config[PCI_VENDOR_ID + 1] = 0x1a;
        fn.config[PCI_INTERRUPT_PIN] = 1;
        fn.bar_size[0] = BAR0_SIZE;
        fn.bar_size[1] = BAR1_SIZE;
        fn.bar_access = fn_bar_access;
        fn.config_access = fn_config_access;
        if (pci_register_function(-1, &fn, &err) < 0)
                fuzz_die("PCI function", &err);
}

static void machine_stop(void)
{
        pci_unregister_function(&fn);
        machine_base_stop(&machine);
}

struct target {
        bool is_mmio;
        uint64_t base, span;
};

/* Indexed by op >> 5: ports and windows where the devices are, a little around them. */
static void pick_target(uint8_t op, uint32_t offset, struct target *t)
{
        static const struct target pio_targets[8] = {
                { false, PORT_I8042_DATA, 8 },    { false, PORT_RTC, 4 },          { false, PORT_COM1 - 2, 12 },
                { false, PORT_PCI_CONFIG, 8 },    { false, PORT_PVPANIC - 1, 3 },  { false, PORT_ACPI_PM1A_EVT, 12 },
                { false, PORT_DEBUG_EXIT - 1, 3 }, { false, 0, 0x10000 },
        };
        struct target mmio_targets[8] = {
                { true, LAYOUT_ECAM, LAYOUT_ECAM_SIZE + 16 },
                { true, LAYOUT_ECAM + (1 << 15), 0x1000 }, /* the function at slot 1 */
                { true, pci_bar_address(&fn, 0) - 16, BAR0_SIZE + 32 },
                { true, pci_bar_address(&fn, 1) - 16, BAR1_SIZE + 32 },
                { true, PCI_MMIO_START, PCI_MMIO_END - PCI_MMIO_START },
                { true, PCI_MMIO_END - 16, 32 },
                { true, LAYOUT_MMIO_START, 0x40000000 },
                { true, 0, UINT32_MAX },
        };
        const struct target *table = (op & 3) == 1 ? mmio_targets : pio_targets;

        *t = table[op >> 5];
        t->base += offset % t->span;
}

static void access(struct input *in, uint8_t op)
{
        bool is_write = op & 4;
        uint32_t len = 1u << ((op >> 3) & 3);
        struct target t;
        uint8_t *buf;

        if ((op & 3) == 3) {
                t.is_mmio = !(op & 0x20);
                if (!take(in, &t.base, sizeof(t.base)))
                        return;
        } else {
                uint32_t offset;

                if (!take(in, &offset, sizeof(offset)))
                        return;
                pick_target(op, offset, &t);
        }
        buf = malloc(len);
        if (buf == NULL)
                abort();
        if (is_write) {
                if (!take(in, buf, len)) {
                        free(buf);
                        return;
                }
        } else {
                memset(buf, 0xcc, len);
        }
        bus_dispatch(t.is_mmio ? &machine.mmio : &machine.pio, t.base, buf, len, is_write);
        free(buf);
}

/* Where [gpa, gpa + len) must be, from the layout guest_mem_init() documents. */
static uint8_t *expected_ptr(uint64_t gpa, uint64_t len)
{
        uint64_t low = guest_mem_low_end(&machine.mem), high = machine.mem.size - low;

        if (gpa < low && len <= low - gpa)
                return machine.mem.base + gpa;
        if (gpa >= GUEST_PCI_HOLE_END && gpa - GUEST_PCI_HOLE_END < high && len <= high - (gpa - GUEST_PCI_HOLE_END))
                return machine.mem.base + low + (gpa - GUEST_PCI_HOLE_END);
        return NULL;
}

static void memory_op(struct input *in, uint8_t op)
{
        struct guest_mem *mem = &machine.mem;
        const uint64_t bases[16] = {
                0, LAYOUT_HIMEM, LAYOUT_CMDLINE, LAYOUT_EBDA, guest_mem_low_end(mem), GUEST_PCI_HOLE_START - 1,
                GUEST_PCI_HOLE_END - 0x80000000ULL, GUEST_PCI_HOLE_END, GUEST_PCI_HOLE_END + (mem->size - guest_mem_low_end(mem)),
                UINT64_MAX, UINT64_MAX - 0xffffffffULL, mem->size, 1ULL << 63, 0xfffff000ULL, GUEST_PCI_HOLE_END + 4096, 4096,
        };
        unsigned int kind = (op >> 2) & 3;
        int32_t offset;
        uint64_t gpa, len = 0;
        uint8_t *p, *want;

        if (!take(in, &offset, sizeof(offset)))
                return;
        gpa = bases[op >> 4] + (uint64_t)(int64_t)offset;
        if (kind == 3) {
                if (!take(in, &len, sizeof(len)))
                        return;
        } else {
                uint32_t l32;

                if (!take(in, &l32, sizeof(l32)))
                        return;
                len = kind == 0 ? l32 : l32 & 0xffff; /* copies stay small */
        }
        p = guest_mem_ptr(mem, gpa, len);
        want = expected_ptr(gpa, len);
        if (p != want)
                abort();
        if (kind == 1 || kind == 2) {
                uint8_t *buf = malloc(len ? len : 1);
                int r;

                if (buf == NULL)
                        abort();
                memset(buf, 0xa5, len);
                r = kind == 1 ? guest_mem_read(mem, gpa, buf, len) : guest_mem_write(mem, gpa, buf, len);
                free(buf);
                if ((r == 0) != (want != NULL))
                        abort();
                /* Give the pages back (shared memory pages in even on a read), or a long
                 * run would grow to the whole 3 GiB. */
                if (r == 0 && len) {
                        uint64_t first = (uint64_t)(want - mem->base) & ~4095ULL;
                        uint64_t end = ((uint64_t)(want - mem->base) + len + 4095) & ~4095ULL;

                        madvise(mem->base + first, end - first, MADV_REMOVE);
                }
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct input in = { data, size };
        uint8_t op;

        machine_start();
        while (take(&in, &op, 1)) {
                if ((op & 3) == 2)
                        memory_op(&in, op);
                else
                        access(&in, op);
        }
        machine_stop();
        return 0;
}
