/* Legacy devices driven through their bus handlers, as a vCPU would, on the PC test machine
 * (pc_machine.c): i8042, RTC, pvpanic, the debug exit port, ACPI PM, and all of them at once
 * (the UART and PCI have their own files). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "common/log.h"
#include "common/util.h"
#include "pc_machine.h"
#include "vmm/devices/pci.h"

/* ---- i8042 ---- */

static bool kbc_read(struct machine *m, uint8_t *v)
{
        if (!(inb(m, PORT_I8042_CMD) & 0x01))
                return false;
        *v = inb(m, PORT_I8042_DATA);
        return true;
}

TEST(i8042_self_test_and_command_byte)
{
        MACHINE(m, VM_CONSOLE_NONE);
        uint8_t v = 0;
        CHECK(!(inb(&m, PORT_I8042_CMD) & 0x01)); /* nothing to read: Linux's flush ends */
        outb(&m, PORT_I8042_CMD, 0xaa);
        CHECK(kbc_read(&m, &v) && v == 0x55);
        CHECK(inb(&m, PORT_I8042_CMD) & 0x04); /* system flag */
        outb(&m, PORT_I8042_CMD, 0xab);
        CHECK(kbc_read(&m, &v) && v == 0x00);
        outb(&m, PORT_I8042_CMD, 0x20);
        CHECK(kbc_read(&m, &v) && (v & 0x01));
        outb(&m, PORT_I8042_CMD, 0x60);
        outb(&m, PORT_I8042_DATA, 0x44); /* interrupts off */
        outb(&m, PORT_I8042_CMD, 0x20);
        CHECK(kbc_read(&m, &v) && v == 0x44);
        outb(&m, PORT_I8042_CMD, 0xad);
        outb(&m, PORT_I8042_CMD, 0xa7);
        outb(&m, PORT_I8042_CMD, 0x20);
        CHECK(kbc_read(&m, &v) && v == (0x44 | 0x10 | 0x20));
        outb(&m, PORT_I8042_CMD, 0xae);
        outb(&m, PORT_I8042_CMD, 0xa8);
        outb(&m, PORT_I8042_CMD, 0x20);
        CHECK(kbc_read(&m, &v) && v == 0x44);
        /* AUX loopback comes back as AUX data; the absent keyboard NAKs. */
        outb(&m, PORT_I8042_CMD, 0xd3);
        outb(&m, PORT_I8042_DATA, 0x5a);
        CHECK((inb(&m, PORT_I8042_CMD) & 0x21) == 0x21);
        CHECK(kbc_read(&m, &v) && v == 0x5a);
        outb(&m, PORT_I8042_DATA, 0xf2);
        CHECK(kbc_read(&m, &v) && v == 0xfe);
        CHECK(!kbc_read(&m, &v));
        CHECK(m.vm.exit_calls == 0);
        CHECK(m.vm.level[IRQ_I8042] == 0 && m.vm.level[12] == 0); /* interrupts off, buffer empty */
}

TEST(i8042_irq_follows_output_buffer)
{
        MACHINE(m, VM_CONSOLE_NONE);
        outb(&m, PORT_I8042_CMD, 0x60);
        outb(&m, PORT_I8042_DATA, 0x03); /* KBDINT | AUXINT */
        outb(&m, PORT_I8042_CMD, 0xd2);
        outb(&m, PORT_I8042_DATA, 0x1c);
        CHECK(m.vm.level[IRQ_I8042] == 1);
        CHECK(inb(&m, PORT_I8042_DATA) == 0x1c);
        CHECK(m.vm.level[IRQ_I8042] == 0);
        outb(&m, PORT_I8042_CMD, 0xd3);
        outb(&m, PORT_I8042_DATA, 0xa5);
        CHECK(m.vm.level[12] == 1 && m.vm.level[IRQ_I8042] == 0);
        inb(&m, PORT_I8042_DATA);
        CHECK(m.vm.level[12] == 0);
}

TEST(i8042_reset_requests_reboot)
{
        MACHINE(m, VM_CONSOLE_NONE);
        outb(&m, PORT_I8042_CMD, 0xff); /* pulse nothing */
        CHECK(m.vm.exit_calls == 0);
        outb(&m, PORT_I8042_CMD, 0xfe);
        CHECK(m.vm.exit_calls == 1);
        CHECK(m.vm.exit_reason == VM_EXIT_REBOOT && m.vm.exit_status == VM_STATUS_REBOOT);
}

/* ---- rtc ---- */

static void cmos_write(struct machine *m, uint8_t index, uint8_t v)
{
        outb(m, PORT_RTC, index);
        outb(m, PORT_RTC + 1, v);
}

static int from_bcd(uint8_t v)
{
        return (v >> 4) * 10 + (v & 0x0f);
}

/* Read the clock as Linux does, retrying across a second boundary. */
static time_t rtc_time(struct machine *m, bool binary)
{
        for (int tries = 0; tries < 5; tries++) {
                uint8_t s = cmos_read(m, 0x00);
                struct tm tm = { 0 };
                tm.tm_sec = binary ? s : from_bcd(s);
                uint8_t raw[6] = { cmos_read(m, 0x02), cmos_read(m, 0x04), cmos_read(m, 0x07),
                                   cmos_read(m, 0x08), cmos_read(m, 0x09), cmos_read(m, 0x32) };
                if (cmos_read(m, 0x00) != s)
                        continue;
                int f[6];
                for (int i = 0; i < 6; i++)
                        f[i] = binary ? raw[i] : from_bcd(raw[i]);
                tm.tm_min = f[0];
                tm.tm_hour = f[1];
                tm.tm_mday = f[2];
                tm.tm_mon = f[3] - 1;
                tm.tm_year = f[5] * 100 + f[4] - 1900;
                return timegm(&tm);
        }
        return 0;
}

TEST(rtc_time_matches_host_bcd_and_binary)
{
        MACHINE(m, VM_CONSOLE_NONE);
        CHECK(cmos_read(&m, 0x0b) == 0x02); /* 24 h, BCD */
        time_t t = rtc_time(&m, false);
        CHECK(llabs((long long)(t - time(NULL))) <= 2);
        cmos_write(&m, 0x0b, 0x02 | 0x04); /* binary */
        t = rtc_time(&m, true);
        CHECK(llabs((long long)(t - time(NULL))) <= 2);
        struct tm tm;
        time_t now = time(NULL);
        gmtime_r(&now, &tm);
        CHECK(cmos_read(&m, 0x32) == (tm.tm_year + 1900) / 100);
        CHECK(cmos_read(&m, 0x06) == tm.tm_wday + 1);
        /* 12-hour mode: bit 7 is PM. */
        cmos_write(&m, 0x0b, 0x04);
        uint8_t h = cmos_read(&m, 0x04);
        gmtime_r(&now, &tm);
        int want = tm.tm_hour % 12 ? tm.tm_hour % 12 : 12;
        CHECK((h & 0x7f) == want || tm.tm_min == 59);
        CHECK(!!(h & 0x80) == (tm.tm_hour >= 12) || tm.tm_min == 59);
}

TEST(rtc_status_registers_and_cmos_ram)
{
        MACHINE(m, VM_CONSOLE_NONE);
        for (int i = 0; i < 1000; i++)
                CHECK(!(cmos_read(&m, 0x0a) & 0x80)); /* UIP never stuck */
        CHECK(cmos_read(&m, 0x0a) == 0x26);
        CHECK(cmos_read(&m, 0x0c) == 0x00);
        CHECK(cmos_read(&m, 0x0d) == 0x80);
        CHECK(cmos_read(&m, 0x80 | 0x0d) == 0x80); /* NMI-disable bit is not part of the index */
        cmos_write(&m, 0x0d, 0x00);
        CHECK(cmos_read(&m, 0x0d) == 0x80);
        cmos_write(&m, 0x40, 0x5a);
        cmos_write(&m, 0x7f, 0xa5);
        CHECK(cmos_read(&m, 0x40) == 0x5a);
        CHECK(cmos_read(&m, 0x80 | 0x7f) == 0xa5);
        CHECK(inb(&m, PORT_RTC) == 0xff);
        /* 64 MiB of RAM: 48 MiB above 16 MiB in 64 KiB units, nothing above 4 GiB. */
        CHECK((cmos_read(&m, 0x34) | cmos_read(&m, 0x35) << 8) == 48 * 16);
        CHECK(cmos_read(&m, 0x5b) == 0 && cmos_read(&m, 0x5c) == 0 && cmos_read(&m, 0x5d) == 0);
        CHECK((cmos_read(&m, 0x17) | cmos_read(&m, 0x18) << 8) == 63 * 1024);
        /* Clock writes do not move the host-derived clock. */
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        cmos_write(&m, 0x09, 0x99);
        CHECK(from_bcd(cmos_read(&m, 0x09)) == tm.tm_year % 100);
}

/* ---- pvpanic ---- */

TEST(pvpanic_events_and_panic)
{
        MACHINE(m, VM_CONSOLE_NONE);
        CHECK(inb(&m, PORT_PVPANIC) == 0x03);
        outb(&m, PORT_PVPANIC, 0x02); /* crash kernel loaded: keep running */
        outb(&m, PORT_PVPANIC, 0x00);
        CHECK(m.vm.exit_calls == 0);
        outb(&m, PORT_PVPANIC, 0x01);
        CHECK(m.vm.exit_calls == 1 && m.vm.exit_reason == VM_EXIT_PANIC && m.vm.exit_status == VM_STATUS_PANIC);
}

/* A guest writing the port in a loop gets one notice, not thousands. */
TEST(pvpanic_notices_rate_limited)
{
        char log[] = "/tmp/capsule-pvpanic-log-XXXXXX";
        int fd = mkstemp(log);
        CHECK(fd >= 0);
        close(fd);
        CHECK(log_init(log, NULL, false) == 0);
        {
                MACHINE(m, VM_CONSOLE_NONE);
                for (int i = 0; i < 5000; i++)
                        outb(&m, PORT_PVPANIC, 0x02);
                CHECK(m.vm.exit_calls == 0);
        }
        cleanup_free char *text = slurp(log);
        unlink(log);
        int notices = 0;
        for (const char *p = text; p && (p = strstr(p, "crash kernel is running")); p++)
                notices++;
        CHECK(notices == 1); /* 5000 writes take far less than the one second between notices */
}

/* ---- debug exit ---- */

TEST(debug_exit_port_off_unless_asked)
{
        MACHINE(m, VM_CONSOLE_NONE);
        outb(&m, PORT_DEBUG_EXIT, 42);
        CHECK(m.vm.exit_calls == 0);
}

/* ---- ACPI PM ---- */

TEST(acpi_pm_s5_poweroff)
{
        MACHINE(m, VM_CONSOLE_NONE);
        CHECK(io_in(&m.b.pio, PORT_ACPI_PM1A_CNT, 2) & 0x0001); /* SCI_EN */
        io_out(&m.b.pio, PORT_ACPI_PM1A_CNT, 2, 0);
        CHECK(io_in(&m.b.pio, PORT_ACPI_PM1A_CNT, 2) & 0x0001); /* always in ACPI mode */
        io_out(&m.b.pio, PORT_ACPI_PM1A_CNT, 2, ACPI_S5_SLP_TYP << 10); /* no SLP_EN yet */
        CHECK(m.vm.exit_calls == 0);
        CHECK(io_in(&m.b.pio, PORT_ACPI_PM1A_CNT, 2) == (ACPI_S5_SLP_TYP << 10 | 1));
        io_out(&m.b.pio, PORT_ACPI_PM1A_CNT, 2, 1 << 10 | 1 << 13); /* S1: not offered */
        CHECK(m.vm.exit_calls == 0);
        CHECK(!(io_in(&m.b.pio, PORT_ACPI_PM1A_CNT, 2) & (1 << 13))); /* SLP_EN is write-only */
        io_out(&m.b.pio, PORT_ACPI_PM1A_CNT, 2, ACPI_S5_SLP_TYP << 10 | 1 << 13 | 1);
        CHECK(m.vm.exit_calls == 1 && m.vm.exit_reason == VM_EXIT_POWEROFF && m.vm.exit_status == 0);
}

TEST(acpi_pm_event_block)
{
        MACHINE(m, VM_CONSOLE_NONE);
        CHECK(io_in(&m.b.pio, PORT_ACPI_PM1A_EVT, 4) == 0);
        io_out(&m.b.pio, PORT_ACPI_PM1A_EVT + 2, 2, 0x0120); /* enable power button, GBL */
        CHECK(io_in(&m.b.pio, PORT_ACPI_PM1A_EVT + 2, 2) == 0x0120);
        io_out(&m.b.pio, PORT_ACPI_PM1A_EVT, 2, 0xffff); /* status is write-one-to-clear */
        CHECK(io_in(&m.b.pio, PORT_ACPI_PM1A_EVT, 4) == 0x01200000u);
        io_out(&m.b.pio, PORT_ACPI_PM1A_EVT + 3, 1, 0x00);
        CHECK(io_in(&m.b.pio, PORT_ACPI_PM1A_EVT + 2, 2) == 0x0020);
}

TEST(acpi_reset_register)
{
        MACHINE(m, VM_CONSOLE_NONE);
        outb(&m, PORT_ACPI_RESET, 0x00);
        outb(&m, PORT_ACPI_RESET, 0xfe);
        CHECK(m.vm.exit_calls == 0);
        outb(&m, PORT_ACPI_RESET, ACPI_RESET_VALUE);
        CHECK(m.vm.exit_calls == 1 && m.vm.exit_reason == VM_EXIT_REBOOT && m.vm.exit_status == VM_STATUS_REBOOT);
}

/* ---- everything at once ---- */

TEST(devices_survive_random_guest_accesses)
{
        MACHINE(m, VM_CONSOLE_FILE);
        static const uint64_t ports[][2] = {
                { PORT_COM1, 8 }, { PORT_I8042_DATA, 5 }, { PORT_RTC, 2 }, { PORT_PCI_CONFIG, 8 },
                { PORT_PVPANIC, 1 }, { PORT_ACPI_PM1A_EVT, 9 },
        };
        uint32_t seed = 12345;
        uint8_t d[8];
        for (int i = 0; i < 200000; i++) {
                seed = seed * 1103515245u + 12345u;
                uint32_t r = seed >> 8;
                uint32_t len = 1u << (r & 3);
                bool is_write = r & 4;
                for (int j = 0; j < 8; j++)
                        d[j] = (uint8_t)(r >> (j + 3));
                if (r & 8) {
                        const uint64_t *p = ports[(r >> 4) % ARRAY_SIZE(ports)];
                        if (len > 4)
                                len = 4;
                        bus_dispatch(&m.b.pio, p[0] + (r >> 8) % p[1], d, len, is_write);
                } else {
                        uint64_t base = (r & 16) ? LAYOUT_ECAM : PCI_MMIO_START;
                        bus_dispatch(&m.b.mmio, base + (seed % LAYOUT_ECAM_SIZE), d, len, is_write);
                }
        }
        /* Resets and panics may have been requested; only the recorded reasons are valid ones. */
        CHECK(m.vm.exit_calls == 0 || m.vm.exit_reason == VM_EXIT_REBOOT || m.vm.exit_reason == VM_EXIT_PANIC ||
              m.vm.exit_reason == VM_EXIT_POWEROFF);
        /* The devices still answer sanely. */
        cf8(&m, 0, 0, 0);
        CHECK(io_in(&m.b.pio, 0xcfc, 4) == 0x29c08086u);
        CHECK((inb(&m, COM(5)) & 0x60) == 0x60);
        CHECK(cmos_read(&m, 0x0d) == 0x80);
}
