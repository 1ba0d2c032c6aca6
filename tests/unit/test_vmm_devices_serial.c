/* The 8250 UART (COM1) driven through its ports as a vCPU would, on the PC test machine
 * (pc_machine.c): registers, FIFO, interrupts, and the console it writes and reads. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "check.h"
#include "common/util.h"
#include "pc_machine.h"

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
        struct machine_base b __attribute__((cleanup(machine_base_destroy)));
        cleanup_error cap_error_t err = NULL;
        CHECK(machine_base_init(&b, 64ULL << 20, &err) == 0);
        b.cfg.console = VM_CONSOLE_FILE;
        b.cfg.console_path = (char *)"/nonexistent-dir/console.log";
        CHECK(machine_base_start(&b, false, &err) < 0);
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
                ok_init = machine_start(&m, VM_CONSOLE_STDIO, &err) == 0 && evloop_start(&m.b.loop, &err) == 0;
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
                ok_init = machine_start(&m, VM_CONSOLE_STDIO, &err) == 0 && evloop_start(&m.b.loop, &err) == 0;
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
        io_out(&m.b.pio, COM(6), 2, 0xffff); /* MSR (read-only) and scratch */
        io_out(&m.b.pio, COM(4), 4, 0xffffffff);
        io_in(&m.b.pio, COM(0), 4);
        CHECK(inb(&m, COM(7)) == 0xff);
        outb(&m, COM(4), 0);
        cleanup_free char *out = slurp(m.console);
        CHECK(out != NULL);
}
