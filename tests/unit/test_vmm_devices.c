/* Legacy devices driven through their bus handlers, as a vCPU would: real
 * buses, guest memory and event loop, with fake interrupt lines and exits. */
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "common/log.h"
#include "common/util.h"
#include "vmm/device.h"
#include "vmm/devices/pci.h"
#include "vmm/vm.h"
#include "vmm/x86/layout.h"

#define NO_EXIT (-1)

struct fake_vm {
        int level[32];       /* last level per GSI */
        int irq_calls[32];   /* irq_line calls per GSI */
        int exit_reason, exit_status, exit_calls;
};

struct machine {
        struct bus pio, mmio;
        struct evloop loop;
        struct guest_mem mem;
        struct vm_config cfg;
        struct vm_devices ctx;
        struct fake_vm vm;
        char console[64];
        bool up;
};

static int fake_irq_line(void *opaque, uint32_t gsi, int level)
{
        struct fake_vm *vm = opaque;
        if (gsi < 32) {
                vm->level[gsi] = level;
                vm->irq_calls[gsi]++;
        }
        return 0;
}

static void fake_request_exit(void *opaque, int reason, int status)
{
        struct fake_vm *vm = opaque;
        vm->exit_reason = reason;
        vm->exit_status = status;
        vm->exit_calls++;
}

/* Bring up every registered device; console FILE goes to a fresh temp file. */
static int machine_start(struct machine *m, enum vm_console console, cap_error_t *err)
{
        memset(m, 0, sizeof(*m));
        m->vm.exit_reason = NO_EXIT;
        bus_init(&m->pio);
        bus_init(&m->mmio);
        if (evloop_init(&m->loop, err) < 0)
                return -1;
        if (guest_mem_init(&m->mem, 64ULL << 20, false, err) < 0)
                return -1;
        strcpy(m->console, "/tmp/capsule-serial-XXXXXX");
        int fd = mkstemp(m->console);
        if (fd < 0)
                return cap_fail(err, errno, "mkstemp");
        /* Old content must be truncated by the console. */
        if (write(fd, "stale", 5) != 5) {
                close(fd);
                return cap_fail(err, errno, "write");
        }
        close(fd);
        m->cfg.console = console;
        m->cfg.console_path = m->console;
        m->ctx = (struct vm_devices){ .pio = &m->pio, .mmio = &m->mmio, .mem = &m->mem, .loop = &m->loop, .config = &m->cfg,
                                      .irq_line = fake_irq_line, .request_exit = fake_request_exit, .vm = &m->vm };
        if (devices_init(&m->ctx, err) < 0)
                return -1;
        m->up = true;
        return 0;
}

static void machine_stop(struct machine *m)
{
        evloop_stop(&m->loop);
        if (m->up)
                devices_exit(&m->ctx);
        m->up = false;
        evloop_destroy(&m->loop);
        guest_mem_destroy(&m->mem);
        unlink(m->console);
}

#define MACHINE(m, console)                                                                \
        struct machine m __attribute__((cleanup(machine_stop)));                           \
        do {                                                                               \
                cleanup_error cap_error_t _err = NULL;                                     \
                int _r = machine_start(&m, console, &_err);                                \
                if (_r < 0)                                                                \
                        fprintf(stderr, "machine_start: %s\n", _err ? _err->msg : "?");    \
                CHECK(_r == 0);                                                            \
        } while (0)

static uint32_t io_in(struct bus *bus, uint64_t addr, uint32_t len)
{
        uint8_t d[8] = { 0 };
        bus_dispatch(bus, addr, d, len, false);
        uint32_t v = 0;
        for (uint32_t i = 0; i < len && i < 4; i++)
                v |= (uint32_t)d[i] << (8 * i);
        return v;
}

static void io_out(struct bus *bus, uint64_t addr, uint32_t len, uint32_t v)
{
        uint8_t d[8] = { 0 };
        for (uint32_t i = 0; i < len && i < 4; i++)
                d[i] = (uint8_t)(v >> (8 * i));
        bus_dispatch(bus, addr, d, len, true);
}

static uint8_t inb(struct machine *m, uint16_t port)
{
        return (uint8_t)io_in(&m->pio, port, 1);
}

static void outb(struct machine *m, uint16_t port, uint8_t v)
{
        io_out(&m->pio, port, 1, v);
}

static char *slurp(const char *path)
{
        char *text = NULL;
        cleanup_error cap_error_t err = NULL;
        if (read_file(path, &text, NULL, 0, &err) < 0)
                return NULL;
        return text;
}

/* ---- serial ---- */

#define COM(r) (PORT_COM1 + (r))

TEST(serial_lsr_after_thr_write)
{
        MACHINE(m, VM_CONSOLE_FILE);
        CHECK((inb(&m, COM(5)) & 0x61) == 0x60); /* THRE, TEMT, no data */
        outb(&m, COM(0), 'A');
        CHECK((inb(&m, COM(5)) & 0x61) == 0x60);
}

TEST(serial_output_goes_to_console_file)
{
        MACHINE(m, VM_CONSOLE_FILE);
        for (const char *p = "hello ttyS0\n"; *p; p++)
                outb(&m, COM(0), (uint8_t)*p);
        cleanup_free char *out = slurp(m.console);
        CHECK_STR(out, "hello ttyS0\n");
}

TEST(serial_console_none_discards)
{
        MACHINE(m, VM_CONSOLE_NONE);
        outb(&m, COM(0), 'x');
        CHECK((inb(&m, COM(5)) & 0x60) == 0x60);
        cleanup_free char *out = slurp(m.console);
        CHECK_STR(out, "stale");
}

TEST(serial_console_file_error_names_option)
{
        struct machine m;
        cleanup_error cap_error_t err = NULL;
        memset(&m, 0, sizeof(m));
        bus_init(&m.pio);
        bus_init(&m.mmio);
        CHECK(evloop_init(&m.loop, &err) == 0);
        m.cfg.console = VM_CONSOLE_FILE;
        m.cfg.console_path = (char *)"/nonexistent-dir/console.log";
        m.ctx = (struct vm_devices){ .pio = &m.pio, .mmio = &m.mmio, .loop = &m.loop, .config = &m.cfg,
                                     .irq_line = fake_irq_line, .request_exit = fake_request_exit, .vm = &m.vm };
        int r = devices_init(&m.ctx, &err);
        evloop_destroy(&m.loop);
        CHECK(r < 0);
        CHECK(err && strstr(err->msg, "--console") && strstr(err->msg, "/nonexistent-dir/console.log"));
}

TEST(serial_divisor_latch)
{
        MACHINE(m, VM_CONSOLE_FILE);
        outb(&m, COM(1), 0x05); /* IER */
        outb(&m, COM(3), 0x83); /* DLAB, 8n1 */
        outb(&m, COM(0), 0x0c); /* DLL: 9600 baud */
        outb(&m, COM(1), 0x01); /* DLM */
        CHECK(inb(&m, COM(0)) == 0x0c);
        CHECK(inb(&m, COM(1)) == 0x01);
        CHECK(inb(&m, COM(3)) == 0x83);
        outb(&m, COM(3), 0x03);
        CHECK(inb(&m, COM(1)) == 0x05); /* IER again, untouched by the DLM write */
        outb(&m, COM(0), 'z');          /* THR, not DLL */
        outb(&m, COM(3), 0x83);
        CHECK(inb(&m, COM(0)) == 0x0c);
        cleanup_free char *out = slurp(m.console);
        CHECK_STR(out, "z");
}

TEST(serial_scratch)
{
        MACHINE(m, VM_CONSOLE_FILE);
        outb(&m, COM(7), 0xa5);
        CHECK(inb(&m, COM(7)) == 0xa5);
        outb(&m, COM(7), 0x5a);
        CHECK(inb(&m, COM(7)) == 0x5a);
}

TEST(serial_loopback)
{
        MACHINE(m, VM_CONSOLE_FILE);
        CHECK((inb(&m, COM(6)) & 0xf0) == 0xb0); /* DCD, DSR, CTS */
        outb(&m, COM(4), 0x10 | 0x0a);           /* LOOP | RTS | OUT2, as Linux's autoconfig test */
        CHECK((inb(&m, COM(6)) & 0xf0) == 0x90); /* DCD | CTS */
        outb(&m, COM(4), 0x10 | 0x05);           /* LOOP | DTR | OUT1 */
        CHECK((inb(&m, COM(6)) & 0xf0) == 0x60); /* RI | DSR */
        outb(&m, COM(2), 0x01);
        outb(&m, COM(0), 'q');
        CHECK(inb(&m, COM(5)) & 0x01);
        CHECK(inb(&m, COM(0)) == 'q');
        CHECK(!(inb(&m, COM(5)) & 0x01));
        outb(&m, COM(4), 0x00);
        CHECK((inb(&m, COM(6)) & 0xf0) == 0xb0);
        cleanup_free char *out = slurp(m.console);
        CHECK_STR(out, ""); /* looped-back bytes never reach the console */
}

TEST(serial_fifo_detection_and_iir_priorities)
{
        MACHINE(m, VM_CONSOLE_FILE);
        CHECK(inb(&m, COM(2)) == 0x01); /* no FIFO, no interrupt */
        outb(&m, COM(2), 0x07);          /* enable and clear FIFOs */
        CHECK(inb(&m, COM(2)) == 0xc1);  /* 16550A: FIFO enabled bits */
        outb(&m, COM(1), 0x0f);          /* every interrupt */
        CHECK(inb(&m, COM(2)) == 0xc2);  /* THRE */
        CHECK(inb(&m, COM(2)) == 0xc1);  /* reading IIR cleared it */
        inb(&m, COM(6));                 /* clear modem status deltas */
        outb(&m, COM(4), 0x10);          /* loopback */
        CHECK(inb(&m, COM(2)) == 0xc0);  /* modem status change: CTS/DSR/DCD dropped */
        inb(&m, COM(6));
        CHECK(inb(&m, COM(2)) == 0xc1);
        outb(&m, COM(0), 'a');           /* THRE again and received data */
        CHECK(inb(&m, COM(2)) == 0xc4);  /* data outranks THRE */
        for (int i = 0; i < 70; i++)     /* overrun */
                outb(&m, COM(0), 'b');
        CHECK(inb(&m, COM(2)) == 0xc6);  /* line status outranks data */
        CHECK(inb(&m, COM(5)) & 0x02);   /* OE, cleared by this read */
        CHECK(inb(&m, COM(2)) == 0xc4);
        outb(&m, COM(2), 0x03);          /* clear the receive FIFO */
        CHECK(inb(&m, COM(2)) == 0xc2);
        CHECK(inb(&m, COM(2)) == 0xc1);
}

TEST(serial_irq_raise_and_lower)
{
        MACHINE(m, VM_CONSOLE_FILE);
        outb(&m, COM(2), 0x01);
        CHECK(m.vm.irq_calls[IRQ_COM1] == 0);
        outb(&m, COM(1), 0x02); /* THRI with THR empty */
        CHECK(m.vm.level[IRQ_COM1] == 1 && m.vm.irq_calls[IRQ_COM1] == 1);
        inb(&m, COM(2));
        CHECK(m.vm.level[IRQ_COM1] == 0 && m.vm.irq_calls[IRQ_COM1] == 2);
        outb(&m, COM(0), 'x'); /* THR empty again at once */
        CHECK(m.vm.level[IRQ_COM1] == 1);
        outb(&m, COM(1), 0x00);
        CHECK(m.vm.level[IRQ_COM1] == 0 && m.vm.irq_calls[IRQ_COM1] == 4);
        outb(&m, COM(1), 0x01); /* RDI, no data: stays low */
        CHECK(m.vm.irq_calls[IRQ_COM1] == 4);
        outb(&m, COM(4), 0x10);
        outb(&m, COM(0), 'y');
        CHECK(m.vm.level[IRQ_COM1] == 1);
        CHECK(inb(&m, COM(0)) == 'y');
        CHECK(m.vm.level[IRQ_COM1] == 0);
}

TEST(serial_rx_fifo_overrun)
{
        MACHINE(m, VM_CONSOLE_FILE);
        outb(&m, COM(2), 0x01);
        outb(&m, COM(4), 0x10);
        for (int i = 0; i < 100; i++)
                outb(&m, COM(0), (uint8_t)i);
        CHECK((inb(&m, COM(5)) & 0x03) == 0x03); /* DR and OE */
        CHECK((inb(&m, COM(5)) & 0x03) == 0x01); /* OE reads once */
        for (int i = 0; i < 64; i++)
                CHECK(inb(&m, COM(0)) == i); /* the first 64 kept, the rest dropped */
        CHECK(!(inb(&m, COM(5)) & 0x01));
        /* Without the FIFO the UART holds one byte. */
        outb(&m, COM(2), 0x00);
        outb(&m, COM(0), 'a');
        outb(&m, COM(0), 'b');
        CHECK((inb(&m, COM(5)) & 0x03) == 0x03);
        CHECK(inb(&m, COM(0)) == 'a');
}

static bool wait_for_data(struct machine *m)
{
        for (int i = 0; i < 400; i++) {
                if (inb(m, COM(5)) & 0x01)
                        return true;
                usleep(5000);
        }
        return false;
}

TEST(serial_stdin_feeds_rx_fifo)
{
        int pipefd[2];
        CHECK(pipe(pipefd) == 0);
        int saved_in = dup(STDIN_FILENO), saved_out = dup(STDOUT_FILENO);
        char outpath[] = "/tmp/capsule-stdout-XXXXXX";
        int outfd = mkstemp(outpath);
        CHECK(saved_in >= 0 && saved_out >= 0 && outfd >= 0);
        fflush(stdout);
        dup2(pipefd[0], STDIN_FILENO);
        dup2(outfd, STDOUT_FILENO);

        bool ok_init, ok_data = false, ok_irq = false, ok_drop = false;
        uint8_t got[3] = { 0 };
        {
                struct machine m __attribute__((cleanup(machine_stop)));
                cleanup_error cap_error_t err = NULL;
                ok_init = machine_start(&m, VM_CONSOLE_STDIO, &err) == 0 && evloop_start(&m.loop, &err) == 0;
                if (ok_init) {
                        outb(&m, COM(2), 0x01);
                        outb(&m, COM(1), 0x01); /* RDI */
                        ok_init = write(pipefd[1], "hi", 2) == 2;
                        ok_data = wait_for_data(&m);
                        usleep(20000); /* let both bytes land */
                        ok_irq = m.vm.level[IRQ_COM1] == 1;
                        got[0] = inb(&m, COM(0));
                        got[1] = inb(&m, COM(0));
                        /* More than the FIFO holds: the excess is dropped, never blocking the loop. */
                        char big[200];
                        memset(big, 'k', sizeof(big));
                        ok_init = ok_init && write(pipefd[1], big, sizeof(big)) == (ssize_t)sizeof(big);
                        usleep(100000);
                        int n = 0;
                        while ((inb(&m, COM(5)) & 0x01) && n < 1000) {
                                inb(&m, COM(0));
                                n++;
                        }
                        ok_drop = n == 64;
                        outb(&m, COM(0), '!'); /* stdout console */
                        got[2] = 1;
                }
                if (err)
                        fprintf(stderr, "machine_start: %s\n", err->msg);
        }
        close(pipefd[1]);
        close(pipefd[0]);
        dup2(saved_in, STDIN_FILENO);
        dup2(saved_out, STDOUT_FILENO);
        close(saved_in);
        close(saved_out);
        close(outfd);
        cleanup_free char *out = slurp(outpath);
        unlink(outpath);
        CHECK(ok_init);
        CHECK(ok_data);
        CHECK(ok_irq);
        CHECK(got[0] == 'h' && got[1] == 'i');
        CHECK(ok_drop);
        CHECK(got[2] == 1);
        CHECK_STR(out, "!");
}

TEST(serial_tty_raw_mode_restored)
{
        int master = posix_openpt(O_RDWR | O_NOCTTY);
        CHECK(master >= 0 && grantpt(master) == 0 && unlockpt(master) == 0);
        int slave = open(ptsname(master), O_RDWR | O_NOCTTY);
        CHECK(slave >= 0);
        struct termios before, during = { 0 }, after = { 0 };
        CHECK(tcgetattr(slave, &before) == 0 && (before.c_lflag & ICANON) && (before.c_lflag & ECHO));
        int saved_in = dup(STDIN_FILENO), saved_out = dup(STDOUT_FILENO);
        int devnull = open("/dev/null", O_WRONLY);
        CHECK(saved_in >= 0 && saved_out >= 0 && devnull >= 0);
        fflush(stdout);
        dup2(slave, STDIN_FILENO);
        dup2(devnull, STDOUT_FILENO);

        bool ok_init, ok_data = false;
        uint8_t got = 0;
        {
                struct machine m __attribute__((cleanup(machine_stop)));
                cleanup_error cap_error_t err = NULL;
                ok_init = machine_start(&m, VM_CONSOLE_STDIO, &err) == 0 && evloop_start(&m.loop, &err) == 0;
                if (ok_init) {
                        tcgetattr(STDIN_FILENO, &during);
                        outb(&m, COM(2), 0x01);
                        /* Raw: one key arrives alone, without waiting for a newline. */
                        ok_init = write(master, "k", 1) == 1;
                        ok_data = wait_for_data(&m);
                        got = inb(&m, COM(0));
                }
        }
        tcgetattr(STDIN_FILENO, &after);
        dup2(saved_in, STDIN_FILENO);
        dup2(saved_out, STDOUT_FILENO);
        close(saved_in);
        close(saved_out);
        close(devnull);
        close(slave);
        close(master);
        CHECK(ok_init && ok_data && got == 'k');
        CHECK(!(during.c_lflag & (ICANON | ECHO)) && (during.c_lflag & ISIG)); /* Ctrl-C still stops the VM */
        CHECK((after.c_lflag & (ICANON | ECHO | ISIG)) == (before.c_lflag & (ICANON | ECHO | ISIG)));
        CHECK(after.c_iflag == before.c_iflag && after.c_oflag == before.c_oflag);
}

TEST(serial_hostile_values)
{
        MACHINE(m, VM_CONSOLE_FILE);
        for (int reg = 0; reg < 8; reg++)
                for (int v = 0; v < 256; v++) {
                        if (reg == 3 && (v & 0x80))
                                continue; /* keep DLAB off so THR bytes are counted below */
                        outb(&m, COM(reg), (uint8_t)v);
                        inb(&m, COM(reg));
                }
        outb(&m, COM(3), 0x03);
        outb(&m, COM(1), 0xff);
        CHECK(inb(&m, COM(1)) == 0x0f); /* reserved IER bits (XScale UUE) do not stick */
        outb(&m, COM(4), 0xff);
        CHECK(inb(&m, COM(4)) == 0x1f);
        /* Wide accesses touch consecutive registers, never beyond the UART. */
        io_out(&m.pio, COM(6), 2, 0xffff); /* MSR (read-only) and scratch */
        io_out(&m.pio, COM(4), 4, 0xffffffff);
        io_in(&m.pio, COM(0), 4);
        CHECK(inb(&m, COM(7)) == 0xff);
        outb(&m, COM(4), 0);
        cleanup_free char *out = slurp(m.console);
        CHECK(out != NULL);
}

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

static uint8_t cmos_read(struct machine *m, uint8_t index)
{
        outb(m, PORT_RTC, index);
        return inb(m, PORT_RTC + 1);
}

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

/* ---- pci ---- */

static void cf8(struct machine *m, unsigned int slot, unsigned int fn, unsigned int reg)
{
        io_out(&m->pio, PORT_PCI_CONFIG, 4, 0x80000000u | slot << 11 | fn << 8 | (reg & 0xfc));
}

TEST(pci_host_bridge_via_cf8_and_ecam)
{
        MACHINE(m, VM_CONSOLE_NONE);
        cf8(&m, 0, 0, 0);
        CHECK(io_in(&m.pio, PORT_PCI_CONFIG, 4) == 0x80000000u); /* address reads back */
        CHECK(io_in(&m.pio, 0xcfc, 4) == 0x29c08086u);
        cf8(&m, 0, 0, 0x08);
        CHECK((io_in(&m.pio, 0xcfc, 4) >> 8) == 0x060000u);
        cf8(&m, 0, 0, 0x0c);
        CHECK(((io_in(&m.pio, 0xcfc, 4) >> 16) & 0xff) == 0x00); /* header type 0 */
        CHECK(io_in(&m.mmio, LAYOUT_ECAM, 4) == 0x29c08086u);
        CHECK(io_in(&m.mmio, LAYOUT_ECAM + 0x0a, 2) == 0x0600u);
        /* Byte and word accesses at odd offsets. */
        cf8(&m, 0, 0, 0);
        CHECK(io_in(&m.pio, 0xcfd, 1) == 0x80);
        CHECK(io_in(&m.pio, 0xcfe, 2) == 0x29c0);
        CHECK(io_in(&m.pio, 0xcfd, 2) == 0xc080);
        CHECK(io_in(&m.pio, 0xcff, 1) == 0x29);
        CHECK(io_in(&m.mmio, LAYOUT_ECAM + 3, 1) == 0x29);
        CHECK(io_in(&m.mmio, LAYOUT_ECAM + 1, 2) == 0xc080);
        /* Read-only ids; the command register takes its writable bits. */
        io_out(&m.mmio, LAYOUT_ECAM, 4, 0x12345678);
        CHECK(io_in(&m.mmio, LAYOUT_ECAM, 4) == 0x29c08086u);
        cf8(&m, 0, 0, 0x04);
        io_out(&m.pio, 0xcfc, 2, 0xffff);
        CHECK(io_in(&m.mmio, LAYOUT_ECAM + 4, 2) == 0x0547);
}

TEST(pci_absent_devices_read_all_ones)
{
        MACHINE(m, VM_CONSOLE_NONE);
        cf8(&m, 7, 0, 0);
        CHECK(io_in(&m.pio, 0xcfc, 4) == 0xffffffffu);
        cf8(&m, 0, 3, 0); /* function 3 of the bridge */
        CHECK(io_in(&m.pio, 0xcfc, 4) == 0xffffffffu);
        io_out(&m.pio, PORT_PCI_CONFIG, 4, 0x80010000u); /* bus 1 */
        CHECK(io_in(&m.pio, 0xcfc, 4) == 0xffffffffu);
        io_out(&m.pio, PORT_PCI_CONFIG, 4, 0x00000000u); /* enable bit clear */
        CHECK(io_in(&m.pio, 0xcfc, 4) == 0xffffffffu);
        CHECK(io_in(&m.mmio, LAYOUT_ECAM + (31 << 15), 4) == 0xffffffffu);
        CHECK(io_in(&m.mmio, LAYOUT_ECAM + (1 << 12), 4) == 0xffffffffu);
        CHECK(pci_get_function(0) != NULL && pci_get_function(7) == NULL && pci_get_function(99) == NULL);
}

TEST(pci_hostile_offsets_and_sizes)
{
        MACHINE(m, VM_CONSOLE_NONE);
        uint8_t d[8];
        /* 64-bit ECAM: two dwords when aligned, nothing otherwise. */
        memset(d, 0, sizeof(d));
        bus_dispatch(&m.mmio, LAYOUT_ECAM, d, 8, false);
        CHECK(d[0] == 0x86 && d[1] == 0x80 && d[2] == 0xc0 && d[3] == 0x29);
        io_out(&m.mmio, LAYOUT_ECAM + 4, 2, PCI_COMMAND_MEMORY);
        bus_dispatch(&m.mmio, LAYOUT_ECAM, d, 8, false);
        CHECK(d[4] == PCI_COMMAND_MEMORY && d[5] == 0);
        memcpy(d, "\x00\x00\x00\x00\x00\x00\x00\x00", 8);
        bus_dispatch(&m.mmio, LAYOUT_ECAM, d, 8, true); /* ids stay, command cleared */
        CHECK(io_in(&m.mmio, LAYOUT_ECAM, 4) == 0x29c08086u && io_in(&m.mmio, LAYOUT_ECAM + 4, 2) == 0);
        bus_dispatch(&m.mmio, LAYOUT_ECAM + 0xffc, d, 8, false);
        CHECK(d[0] == 0xff && d[7] == 0xff);
        /* Dword crossing a dword boundary, and the last bytes of config space. */
        CHECK(io_in(&m.mmio, LAYOUT_ECAM + 2, 4) == 0xffffffffu);
        CHECK(io_in(&m.mmio, LAYOUT_ECAM + 0xfff, 2) == 0xffff);
        CHECK(io_in(&m.mmio, LAYOUT_ECAM + 0xffc, 4) == 0);
        cf8(&m, 0, 0, 0);
        CHECK(io_in(&m.pio, 0xcfd, 4) == 0xffffffffu);
        /* Not 32-bit: not the address register. */
        io_out(&m.pio, PORT_PCI_CONFIG, 2, 0x0000);
        io_out(&m.pio, 0xcfa, 1, 0x12);
        CHECK(io_in(&m.pio, PORT_PCI_CONFIG, 4) == 0x80000000u);
        CHECK(io_in(&m.pio, PORT_PCI_CONFIG, 2) == 0xffff);
        /* Every offset, size and value on ECAM and mechanism #1. */
        for (uint32_t off = 0; off < 0x2000; off++)
                for (uint32_t len = 1; len <= 8; len *= 2) {
                        memset(d, 0xa5, sizeof(d));
                        bus_dispatch(&m.mmio, LAYOUT_ECAM + off, d, len, true);
                        bus_dispatch(&m.mmio, LAYOUT_ECAM + off, d, len, false);
                }
        for (uint32_t reg = 0; reg < 256; reg += 4) {
                io_out(&m.pio, PORT_PCI_CONFIG, 4, 0x80000000u | reg | 0x7f000000u | 0xff0000u);
                for (uint32_t p = 0; p < 4; p++)
                        for (uint32_t len = 1; len <= 4; len *= 2) {
                                io_out(&m.pio, 0xcfc + p, len, 0xffffffffu);
                                io_in(&m.pio, 0xcfc + p, len);
                        }
        }
        bus_dispatch(&m.mmio, LAYOUT_ECAM + LAYOUT_ECAM_SIZE - 4, d, 8, false); /* past the window: not ECAM's */
        CHECK(io_in(&m.mmio, LAYOUT_ECAM, 4) == 0x29c08086u);
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
        CHECK(io_in(&m.mmio, cfg, 4) == 0x10421af4u);
        cf8(&m, 1, 0, 0);
        CHECK(io_in(&m.pio, 0xcfc, 4) == 0x10421af4u);
        CHECK(io_in(&m.mmio, cfg + PCI_INTERRUPT_LINE, 1) == fn.gsi);
        CHECK(io_in(&m.mmio, cfg + PCI_BAR0, 4) == (uint32_t)bar0);

        /* BAR sizing as Linux does it, then put it back. */
        io_out(&m.mmio, cfg + PCI_BAR0, 4, 0xffffffffu);
        CHECK(io_in(&m.mmio, cfg + PCI_BAR0, 4) == 0xffffc000u);
        io_out(&m.mmio, cfg + PCI_BAR0 + 4, 4, 0xffffffffu);
        CHECK(io_in(&m.mmio, cfg + PCI_BAR0 + 4, 4) == 0); /* unused BAR */
        io_out(&m.mmio, cfg + PCI_BAR0, 4, (uint32_t)bar0);

        /* Memory decoding off: no access reaches the device. */
        CHECK(io_in(&m.mmio, bar0 + 0x10, 4) == 0xffffffffu && log.calls == 0);
        io_out(&m.mmio, cfg + PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
        CHECK(io_in(&m.mmio, bar0 + 0x10, 4) == 0x42424242u);
        CHECK(log.calls == 1 && log.bar == 0 && log.offset == 0x10 && log.len == 4 && !log.is_write);
        io_out(&m.mmio, bar2 + 0xfff, 1, 0x77);
        CHECK(log.calls == 2 && log.bar == 2 && log.offset == 0xfff && log.is_write && log.last == 0x77);
        io_in(&m.mmio, bar2 + 0xffe, 4); /* runs past the BAR */
        CHECK(log.calls == 2);

        /* The guest moves BAR2 elsewhere in the window. */
        uint64_t moved = PCI_MMIO_END - 0x1000;
        io_out(&m.mmio, cfg + PCI_BAR0 + 8, 4, (uint32_t)moved);
        CHECK(pci_bar_address(&fn, 2) == moved);
        io_in(&m.mmio, moved + 8, 2);
        CHECK(log.calls == 3 && log.bar == 2 && log.offset == 8 && log.len == 2);
        io_in(&m.mmio, bar2 + 8, 2);
        CHECK(log.calls == 3);

        /* Device-specific config space goes to the owner. */
        io_out(&m.mmio, cfg + 0x100, 4, 0xdeadbeef);
        CHECK(io_in(&m.mmio, cfg + 0x100, 4) == 0xdeadbeefu);
        CHECK(io_in(&m.mmio, cfg + 0xffc, 4) == 0);

        pci_unregister_function(&fn);
        CHECK(pci_get_function(1) == NULL);
        CHECK(io_in(&m.mmio, cfg, 4) == 0xffffffffu);
        CHECK(io_in(&m.mmio, moved + 8, 2) == 0xffff && log.calls == 3);
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
        io_out(&m.mmio, cfg + PCI_BAR0, 4, 0xffffffffu);
        io_out(&m.mmio, cfg + PCI_BAR0, 4, (uint32_t)bar0);
        CHECK(log.calls == 0);

        io_out(&m.mmio, cfg + PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
        CHECK(log.calls == 1 && log.bar == 0 && log.old_addr == 0 && log.new_addr == bar0);
        CHECK(pci_bar_decoded(&fn, 0) == bar0);
        io_out(&m.mmio, cfg + PCI_COMMAND, 2, PCI_COMMAND_MEMORY); /* no change */
        CHECK(log.calls == 1);

        uint64_t moved = PCI_MMIO_END - 0x10000;
        io_out(&m.mmio, cfg + PCI_BAR0, 4, (uint32_t)moved);
        CHECK(log.calls == 2 && log.old_addr == bar0 && log.new_addr == moved);
        /* A byte write to the BAR's top byte moves it too. */
        io_out(&m.mmio, cfg + PCI_BAR0 + 3, 1, (uint8_t)(bar0 >> 24));
        CHECK(log.calls == 3 && log.old_addr == moved && log.new_addr == ((moved & 0xffffff) | (bar0 & 0xff000000)));
        uint64_t here = log.new_addr;

        /* Out of the BAR window (sizing with decoding on, here RAM): not decoding. */
        io_out(&m.mmio, cfg + PCI_BAR0, 4, 0xffffffffu);
        CHECK(log.calls == 4 && log.old_addr == here && log.new_addr == 0);
        io_out(&m.mmio, cfg + PCI_BAR0, 4, 0x100000);
        CHECK(log.calls == 4);
        io_out(&m.mmio, cfg + PCI_BAR0, 4, (uint32_t)bar0);
        CHECK(log.calls == 5 && log.old_addr == 0 && log.new_addr == bar0);

        io_out(&m.mmio, cfg + PCI_COMMAND, 2, 0);
        CHECK(log.calls == 6 && log.old_addr == bar0 && log.new_addr == 0);
        /* Reads and device config writes move nothing. */
        io_in(&m.mmio, cfg + PCI_BAR0, 4);
        io_out(&m.mmio, cfg + 0x40, 4, 0);
        CHECK(log.calls == 6);
        pci_unregister_function(&fn);
}

TEST(pci_cf9_reset)
{
        MACHINE(m, VM_CONSOLE_NONE);
        io_out(&m.pio, 0xcf9, 1, 0x02);
        CHECK(m.vm.exit_calls == 0 && io_in(&m.pio, 0xcf9, 1) == 0x02);
        io_out(&m.pio, 0xcf9, 1, 0x06);
        CHECK(m.vm.exit_calls == 1 && m.vm.exit_reason == VM_EXIT_REBOOT && m.vm.exit_status == VM_STATUS_REBOOT);
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
        CHECK(io_in(&m.pio, PORT_ACPI_PM1A_CNT, 2) & 0x0001); /* SCI_EN */
        io_out(&m.pio, PORT_ACPI_PM1A_CNT, 2, 0);
        CHECK(io_in(&m.pio, PORT_ACPI_PM1A_CNT, 2) & 0x0001); /* always in ACPI mode */
        io_out(&m.pio, PORT_ACPI_PM1A_CNT, 2, ACPI_S5_SLP_TYP << 10); /* no SLP_EN yet */
        CHECK(m.vm.exit_calls == 0);
        CHECK(io_in(&m.pio, PORT_ACPI_PM1A_CNT, 2) == (ACPI_S5_SLP_TYP << 10 | 1));
        io_out(&m.pio, PORT_ACPI_PM1A_CNT, 2, 1 << 10 | 1 << 13); /* S1: not offered */
        CHECK(m.vm.exit_calls == 0);
        CHECK(!(io_in(&m.pio, PORT_ACPI_PM1A_CNT, 2) & (1 << 13))); /* SLP_EN is write-only */
        io_out(&m.pio, PORT_ACPI_PM1A_CNT, 2, ACPI_S5_SLP_TYP << 10 | 1 << 13 | 1);
        CHECK(m.vm.exit_calls == 1 && m.vm.exit_reason == VM_EXIT_POWEROFF && m.vm.exit_status == 0);
}

TEST(acpi_pm_event_block)
{
        MACHINE(m, VM_CONSOLE_NONE);
        CHECK(io_in(&m.pio, PORT_ACPI_PM1A_EVT, 4) == 0);
        io_out(&m.pio, PORT_ACPI_PM1A_EVT + 2, 2, 0x0120); /* enable power button, GBL */
        CHECK(io_in(&m.pio, PORT_ACPI_PM1A_EVT + 2, 2) == 0x0120);
        io_out(&m.pio, PORT_ACPI_PM1A_EVT, 2, 0xffff); /* status is write-one-to-clear */
        CHECK(io_in(&m.pio, PORT_ACPI_PM1A_EVT, 4) == 0x01200000u);
        io_out(&m.pio, PORT_ACPI_PM1A_EVT + 3, 1, 0x00);
        CHECK(io_in(&m.pio, PORT_ACPI_PM1A_EVT + 2, 2) == 0x0020);
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
                        bus_dispatch(&m.pio, p[0] + (r >> 8) % p[1], d, len, is_write);
                } else {
                        uint64_t base = (r & 16) ? LAYOUT_ECAM : PCI_MMIO_START;
                        bus_dispatch(&m.mmio, base + (seed % LAYOUT_ECAM_SIZE), d, len, is_write);
                }
        }
        /* Resets and panics may have been requested; only the recorded reasons are valid ones. */
        CHECK(m.vm.exit_calls == 0 || m.vm.exit_reason == VM_EXIT_REBOOT || m.vm.exit_reason == VM_EXIT_PANIC ||
              m.vm.exit_reason == VM_EXIT_POWEROFF);
        /* The devices still answer sanely. */
        cf8(&m, 0, 0, 0);
        CHECK(io_in(&m.pio, 0xcfc, 4) == 0x29c08086u);
        CHECK((inb(&m, COM(5)) & 0x60) == 0x60);
        CHECK(cmos_read(&m, 0x0d) == 0x80);
}
