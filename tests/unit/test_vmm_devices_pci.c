/* The PCI host bridge and registered functions through port 0xcf8/0xcfc and ECAM, as a vCPU
 * would, on the PC test machine (pc_machine.c). */
#include <string.h>

#include "check.h"
#include "pc_machine.h"
#include "vmm/devices/pci.h"

TEST(pci_host_bridge_via_cf8_and_ecam)
{
        MACHINE(m, VM_CONSOLE_NONE);
        cf8(&m, 0, 0, 0);
        CHECK(io_in(&m.b.pio, PORT_PCI_CONFIG, 4) == 0x80000000u); /* address reads back */
        CHECK(io_in(&m.b.pio, 0xcfc, 4) == 0x29c08086u);
        cf8(&m, 0, 0, 0x08);
        CHECK((io_in(&m.b.pio, 0xcfc, 4) >> 8) == 0x060000u);
        cf8(&m, 0, 0, 0x0c);
        CHECK(((io_in(&m.b.pio, 0xcfc, 4) >> 16) & 0xff) == 0x00); /* header type 0 */
        CHECK(io_in(&m.b.mmio, LAYOUT_ECAM, 4) == 0x29c08086u);
        CHECK(io_in(&m.b.mmio, LAYOUT_ECAM + 0x0a, 2) == 0x0600u);
        /* Byte and word accesses at odd offsets. */
        cf8(&m, 0, 0, 0);
        CHECK(io_in(&m.b.pio, 0xcfd, 1) == 0x80);
        CHECK(io_in(&m.b.pio, 0xcfe, 2) == 0x29c0);
        CHECK(io_in(&m.b.pio, 0xcfd, 2) == 0xc080);
        CHECK(io_in(&m.b.pio, 0xcff, 1) == 0x29);
        CHECK(io_in(&m.b.mmio, LAYOUT_ECAM + 3, 1) == 0x29);
        CHECK(io_in(&m.b.mmio, LAYOUT_ECAM + 1, 2) == 0xc080);
        /* Read-only ids; the command register takes its writable bits. */
        io_out(&m.b.mmio, LAYOUT_ECAM, 4, 0x12345678);
        CHECK(io_in(&m.b.mmio, LAYOUT_ECAM, 4) == 0x29c08086u);
        cf8(&m, 0, 0, 0x04);
        io_out(&m.b.pio, 0xcfc, 2, 0xffff);
        CHECK(io_in(&m.b.mmio, LAYOUT_ECAM + 4, 2) == 0x0547);
}

TEST(pci_absent_devices_read_all_ones)
{
        MACHINE(m, VM_CONSOLE_NONE);
        cf8(&m, 7, 0, 0);
        CHECK(io_in(&m.b.pio, 0xcfc, 4) == 0xffffffffu);
        cf8(&m, 0, 3, 0); /* function 3 of the bridge */
        CHECK(io_in(&m.b.pio, 0xcfc, 4) == 0xffffffffu);
        io_out(&m.b.pio, PORT_PCI_CONFIG, 4, 0x80010000u); /* bus 1 */
        CHECK(io_in(&m.b.pio, 0xcfc, 4) == 0xffffffffu);
        io_out(&m.b.pio, PORT_PCI_CONFIG, 4, 0x00000000u); /* enable bit clear */
        CHECK(io_in(&m.b.pio, 0xcfc, 4) == 0xffffffffu);
        CHECK(io_in(&m.b.mmio, LAYOUT_ECAM + (31 << 15), 4) == 0xffffffffu);
        CHECK(io_in(&m.b.mmio, LAYOUT_ECAM + (1 << 12), 4) == 0xffffffffu);
        CHECK(pci_get_function(0) != NULL && pci_get_function(7) == NULL && pci_get_function(99) == NULL);
}

TEST(pci_hostile_offsets_and_sizes)
{
        MACHINE(m, VM_CONSOLE_NONE);
        uint8_t d[8];
        /* 64-bit ECAM: two dwords when aligned, nothing otherwise. */
        memset(d, 0, sizeof(d));
        bus_dispatch(&m.b.mmio, LAYOUT_ECAM, d, 8, false);
        CHECK(d[0] == 0x86 && d[1] == 0x80 && d[2] == 0xc0 && d[3] == 0x29);
        io_out(&m.b.mmio, LAYOUT_ECAM + 4, 2, PCI_COMMAND_MEMORY);
        bus_dispatch(&m.b.mmio, LAYOUT_ECAM, d, 8, false);
        CHECK(d[4] == PCI_COMMAND_MEMORY && d[5] == 0);
        memcpy(d, "\x00\x00\x00\x00\x00\x00\x00\x00", 8);
        bus_dispatch(&m.b.mmio, LAYOUT_ECAM, d, 8, true); /* ids stay, command cleared */
        CHECK(io_in(&m.b.mmio, LAYOUT_ECAM, 4) == 0x29c08086u && io_in(&m.b.mmio, LAYOUT_ECAM + 4, 2) == 0);
        bus_dispatch(&m.b.mmio, LAYOUT_ECAM + 0xffc, d, 8, false);
        CHECK(d[0] == 0xff && d[7] == 0xff);
        /* Dword crossing a dword boundary, and the last bytes of config space. */
        CHECK(io_in(&m.b.mmio, LAYOUT_ECAM + 2, 4) == 0xffffffffu);
        CHECK(io_in(&m.b.mmio, LAYOUT_ECAM + 0xfff, 2) == 0xffff);
        CHECK(io_in(&m.b.mmio, LAYOUT_ECAM + 0xffc, 4) == 0);
        cf8(&m, 0, 0, 0);
        CHECK(io_in(&m.b.pio, 0xcfd, 4) == 0xffffffffu);
        /* Not 32-bit: not the address register. */
        io_out(&m.b.pio, PORT_PCI_CONFIG, 2, 0x0000);
        io_out(&m.b.pio, 0xcfa, 1, 0x12);
        CHECK(io_in(&m.b.pio, PORT_PCI_CONFIG, 4) == 0x80000000u);
        CHECK(io_in(&m.b.pio, PORT_PCI_CONFIG, 2) == 0xffff);
        /* Every offset, size and value on ECAM and mechanism #1. */
        for (uint32_t off = 0; off < 0x2000; off++)
                for (uint32_t len = 1; len <= 8; len *= 2) {
                        memset(d, 0xa5, sizeof(d));
                        bus_dispatch(&m.b.mmio, LAYOUT_ECAM + off, d, len, true);
                        bus_dispatch(&m.b.mmio, LAYOUT_ECAM + off, d, len, false);
                }
        for (uint32_t reg = 0; reg < 256; reg += 4) {
                io_out(&m.b.pio, PORT_PCI_CONFIG, 4, 0x80000000u | reg | 0x7f000000u | 0xff0000u);
                for (uint32_t p = 0; p < 4; p++)
                        for (uint32_t len = 1; len <= 4; len *= 2) {
                                io_out(&m.b.pio, 0xcfc + p, len, 0xffffffffu);
                                io_in(&m.b.pio, 0xcfc + p, len);
                        }
        }
        bus_dispatch(&m.b.mmio, LAYOUT_ECAM + LAYOUT_ECAM_SIZE - 4, d, 8, false); /* past the window: not ECAM's */
        CHECK(io_in(&m.b.mmio, LAYOUT_ECAM, 4) == 0x29c08086u);
        CHECK(m.vm.exit_calls == 0);
}

struct bar_log {
        int calls, bar;
        uint64_t offset;
        uint32_t len;
        bool is_write;
        uint8_t last;
};

static void test_bar_access(struct pci_function *fn, int bar, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
        struct bar_log *log = fn->opaque;
        log->calls++;
        log->bar = bar;
        log->offset = offset;
        log->len = len;
        log->is_write = is_write;
        if (is_write)
                log->last = data[0];
        else
                memset(data, 0x42, len);
}

static void test_config_access(struct pci_function *fn, uint32_t offset, uint8_t *data, uint32_t len, bool is_write)
{
        if (is_write)
                memcpy(&fn->config[offset], data, len);
        else
                memcpy(data, &fn->config[offset], len);
}

TEST(pci_registered_function_bars)
{
        MACHINE(m, VM_CONSOLE_NONE);
        static struct pci_function fn;
        struct bar_log log = { 0 };
        cleanup_error cap_error_t err = NULL;
        memset(&fn, 0, sizeof(fn));
        fn.config[PCI_VENDOR_ID] = 0xf4;
        fn.config[PCI_VENDOR_ID + 1] = 0x1a;
        fn.config[PCI_DEVICE_ID] = 0x42;
        fn.config[PCI_DEVICE_ID + 1] = 0x10;
        fn.config[PCI_INTERRUPT_PIN] = 1;
        fn.bar_size[0] = 0x4000;
        fn.bar_size[2] = 0x1000;
        fn.bar_access = test_bar_access;
        fn.config_access = test_config_access;
        fn.opaque = &log;

        static struct pci_function bad;
        memset(&bad, 0, sizeof(bad));
        bad.bar_size[0] = 0x3000;
        bad.bar_access = test_bar_access;
        CHECK(pci_register_function(-1, &bad, &err) < 0 && strstr(err->msg, "power of two"));
        cap_error_free(&err);
        CHECK(pci_register_function(0, &fn, &err) < 0);
        cap_error_free(&err);

        CHECK(pci_register_function(-1, &fn, &err) == 0);
        CHECK(fn.slot == 1 && pci_get_function(1) == &fn);
        CHECK(fn.gsi >= 16 && fn.gsi < 24);
        uint64_t bar0 = pci_bar_address(&fn, 0), bar2 = pci_bar_address(&fn, 2);
        CHECK(bar0 >= PCI_MMIO_START && bar0 + 0x4000 <= PCI_MMIO_END && !(bar0 & 0x3fff));
        CHECK(bar2 >= PCI_MMIO_START && bar2 + 0x1000 <= PCI_MMIO_END && (bar2 >= bar0 + 0x4000 || bar2 + 0x1000 <= bar0));
        CHECK(pci_bar_address(&fn, 1) == 0 && pci_bar_address(&fn, 6) == 0);

        uint64_t cfg = LAYOUT_ECAM + (1 << 15);
        CHECK(io_in(&m.b.mmio, cfg, 4) == 0x10421af4u);
        cf8(&m, 1, 0, 0);
        CHECK(io_in(&m.b.pio, 0xcfc, 4) == 0x10421af4u);
        CHECK(io_in(&m.b.mmio, cfg + PCI_INTERRUPT_LINE, 1) == fn.gsi);
        CHECK(io_in(&m.b.mmio, cfg + PCI_BAR0, 4) == (uint32_t)bar0);

        /* BAR sizing as Linux does it, then put it back. */
        io_out(&m.b.mmio, cfg + PCI_BAR0, 4, 0xffffffffu);
        CHECK(io_in(&m.b.mmio, cfg + PCI_BAR0, 4) == 0xffffc000u);
        io_out(&m.b.mmio, cfg + PCI_BAR0 + 4, 4, 0xffffffffu);
        CHECK(io_in(&m.b.mmio, cfg + PCI_BAR0 + 4, 4) == 0); /* unused BAR */
        io_out(&m.b.mmio, cfg + PCI_BAR0, 4, (uint32_t)bar0);

        /* Memory decoding off: no access reaches the device. */
        CHECK(io_in(&m.b.mmio, bar0 + 0x10, 4) == 0xffffffffu && log.calls == 0);
        io_out(&m.b.mmio, cfg + PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
        CHECK(io_in(&m.b.mmio, bar0 + 0x10, 4) == 0x42424242u);
        CHECK(log.calls == 1 && log.bar == 0 && log.offset == 0x10 && log.len == 4 && !log.is_write);
        io_out(&m.b.mmio, bar2 + 0xfff, 1, 0x77);
        CHECK(log.calls == 2 && log.bar == 2 && log.offset == 0xfff && log.is_write && log.last == 0x77);
        io_in(&m.b.mmio, bar2 + 0xffe, 4); /* runs past the BAR */
        CHECK(log.calls == 2);

        /* The guest moves BAR2 elsewhere in the window. */
        uint64_t moved = PCI_MMIO_END - 0x1000;
        io_out(&m.b.mmio, cfg + PCI_BAR0 + 8, 4, (uint32_t)moved);
        CHECK(pci_bar_address(&fn, 2) == moved);
        io_in(&m.b.mmio, moved + 8, 2);
        CHECK(log.calls == 3 && log.bar == 2 && log.offset == 8 && log.len == 2);
        io_in(&m.b.mmio, bar2 + 8, 2);
        CHECK(log.calls == 3);

        /* Device-specific config space goes to the owner. */
        io_out(&m.b.mmio, cfg + 0x100, 4, 0xdeadbeef);
        CHECK(io_in(&m.b.mmio, cfg + 0x100, 4) == 0xdeadbeefu);
        CHECK(io_in(&m.b.mmio, cfg + 0xffc, 4) == 0);

        pci_unregister_function(&fn);
        CHECK(pci_get_function(1) == NULL);
        CHECK(io_in(&m.b.mmio, cfg, 4) == 0xffffffffu);
        CHECK(io_in(&m.b.mmio, moved + 8, 2) == 0xffff && log.calls == 3);
}

struct move_log {
        int calls, bar;
        uint64_t old_addr, new_addr;
};

static void test_bar_moved(struct pci_function *fn, int bar, uint64_t old_addr, uint64_t new_addr)
{
        struct move_log *log = fn->opaque;
        log->calls++;
        log->bar = bar;
        log->old_addr = old_addr;
        log->new_addr = new_addr;
        /* Called without the PCI lock: the host's own calls work from here. */
        if (pci_bar_decoded(fn, bar) != new_addr)
                log->calls = -1000;
}

/* bar_moved follows where a BAR decodes: memory decoding on and off, a BAR moved
 * inside the window or out of it, and sizing writes while decoding is off. */
TEST(pci_bar_moved_follows_decoding)
{
        MACHINE(m, VM_CONSOLE_NONE);
        static struct pci_function fn;
        struct move_log log = { 0 };
        cleanup_error cap_error_t err = NULL;
        memset(&fn, 0, sizeof(fn));
        fn.bar_size[0] = 0x10000;
        fn.bar_access = test_bar_access;
        fn.bar_moved = test_bar_moved;
        fn.opaque = &log;
        CHECK(pci_register_function(-1, &fn, &err) == 0);
        uint64_t cfg = LAYOUT_ECAM + ((uint64_t)fn.slot << 15), bar0 = pci_bar_address(&fn, 0);
        CHECK(pci_bar_decoded(&fn, 0) == 0 && pci_bar_decoded(&fn, 1) == 0 && pci_bar_decoded(&fn, -1) == 0);

        /* Sizing with decoding off, as Linux does: nothing decodes, nothing moves. */
        io_out(&m.b.mmio, cfg + PCI_BAR0, 4, 0xffffffffu);
        io_out(&m.b.mmio, cfg + PCI_BAR0, 4, (uint32_t)bar0);
        CHECK(log.calls == 0);

        io_out(&m.b.mmio, cfg + PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
        CHECK(log.calls == 1 && log.bar == 0 && log.old_addr == 0 && log.new_addr == bar0);
        CHECK(pci_bar_decoded(&fn, 0) == bar0);
        io_out(&m.b.mmio, cfg + PCI_COMMAND, 2, PCI_COMMAND_MEMORY); /* no change */
        CHECK(log.calls == 1);

        uint64_t moved = PCI_MMIO_END - 0x10000;
        io_out(&m.b.mmio, cfg + PCI_BAR0, 4, (uint32_t)moved);
        CHECK(log.calls == 2 && log.old_addr == bar0 && log.new_addr == moved);
        /* A byte write to the BAR's top byte moves it too. */
        io_out(&m.b.mmio, cfg + PCI_BAR0 + 3, 1, (uint8_t)(bar0 >> 24));
        CHECK(log.calls == 3 && log.old_addr == moved && log.new_addr == ((moved & 0xffffff) | (bar0 & 0xff000000)));
        uint64_t here = log.new_addr;

        /* Out of the BAR window (sizing with decoding on, here RAM): not decoding. */
        io_out(&m.b.mmio, cfg + PCI_BAR0, 4, 0xffffffffu);
        CHECK(log.calls == 4 && log.old_addr == here && log.new_addr == 0);
        io_out(&m.b.mmio, cfg + PCI_BAR0, 4, 0x100000);
        CHECK(log.calls == 4);
        io_out(&m.b.mmio, cfg + PCI_BAR0, 4, (uint32_t)bar0);
        CHECK(log.calls == 5 && log.old_addr == 0 && log.new_addr == bar0);

        io_out(&m.b.mmio, cfg + PCI_COMMAND, 2, 0);
        CHECK(log.calls == 6 && log.old_addr == bar0 && log.new_addr == 0);
        /* Reads and device config writes move nothing. */
        io_in(&m.b.mmio, cfg + PCI_BAR0, 4);
        io_out(&m.b.mmio, cfg + 0x40, 4, 0);
        CHECK(log.calls == 6);
        pci_unregister_function(&fn);
}

TEST(pci_cf9_reset)
{
        MACHINE(m, VM_CONSOLE_NONE);
        io_out(&m.b.pio, 0xcf9, 1, 0x02);
        CHECK(m.vm.exit_calls == 0 && io_in(&m.b.pio, 0xcf9, 1) == 0x02);
        io_out(&m.b.pio, 0xcf9, 1, 0x06);
        CHECK(m.vm.exit_calls == 1 && m.vm.exit_reason == VM_EXIT_REBOOT && m.vm.exit_status == VM_STATUS_REBOOT);
}
