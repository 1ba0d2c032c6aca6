/* 16550A UART on COM1, as the Linux 8250 driver and console=ttyS0 expect it.
 * Transmission never waits (THR is always empty again at once): bytes go to the
 * console's output ring (vmm/console.h), so only the receive side has a FIFO:
 * 64 bytes fed from stdin by the event loop.
 * Every value the guest writes is masked before use: guest data is hostile. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "common/util.h"
#include "vmm/console.h"
#include "vmm/device.h"
#include "vmm/vm.h"
#include "vmm/x86/layout.h"

#define SERIAL_PORTS 8
#define SERIAL_RX_FIFO 64

/* Register offsets */
#define UART_RBR 0 /* THR on write, DLL with DLAB */
#define UART_IER 1 /* DLM with DLAB */
#define UART_IIR 2 /* FCR on write */
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define UART_MSR 6
#define UART_SCR 7

#define IER_RDI 0x01
#define IER_THRI 0x02
#define IER_RLSI 0x04
#define IER_MSI 0x08
#define IER_MASK 0x0f

#define IIR_NO_INT 0x01
#define IIR_MSI 0x00
#define IIR_THRI 0x02
#define IIR_RDI 0x04
#define IIR_RLSI 0x06
#define IIR_FIFO_ENABLED 0xc0

#define FCR_ENABLE 0x01
#define FCR_CLEAR_RX 0x02

#define LCR_DLAB 0x80

#define MCR_DTR 0x01
#define MCR_RTS 0x02
#define MCR_OUT1 0x04
#define MCR_OUT2 0x08
#define MCR_LOOP 0x10
#define MCR_MASK 0x1f

#define LSR_DR 0x01
#define LSR_OE 0x02
#define LSR_THRE 0x20
#define LSR_TEMT 0x40

#define MSR_DCTS 0x01
#define MSR_DDSR 0x02
#define MSR_TERI 0x04
#define MSR_DDCD 0x08
#define MSR_CTS 0x10
#define MSR_DSR 0x20
#define MSR_RI 0x40
#define MSR_DCD 0x80

struct serial {
        pthread_mutex_t lock; /* vCPU threads and the event loop both touch the registers */
        struct vm_devices *ctx;
        uint8_t ier, lcr, mcr, msr, scr, dll, dlm;
        uint8_t lsr_errors; /* OE: cleared by reading LSR */
        bool fifo_enabled;
        bool thr_ipending; /* THRE interrupt pending, cleared by an IIR read or a THR write */
        int irq_level;
        uint8_t rx[SERIAL_RX_FIFO];
        unsigned int rx_head, rx_count;
        struct console_out out; /* fd -1: output discarded */
        struct console_in in;
};

static struct serial serial = { .lock = PTHREAD_MUTEX_INITIALIZER, .out = { .fd = -1, .kick_fd = -1, .restore_fl = -1 } };

static uint8_t serial_iir(const struct serial *s)
{
        if ((s->ier & IER_RLSI) && s->lsr_errors)
                return IIR_RLSI;
        if ((s->ier & IER_RDI) && s->rx_count)
                return IIR_RDI;
        if ((s->ier & IER_THRI) && s->thr_ipending)
                return IIR_THRI;
        if ((s->ier & IER_MSI) && (s->msr & (MSR_DCTS | MSR_DDSR | MSR_TERI | MSR_DDCD)))
                return IIR_MSI;
        return IIR_NO_INT;
}

/* The line follows "an enabled interrupt is pending"; the irqchip sees only the changes. */
static void serial_update_irq(struct serial *s)
{
        int level = serial_iir(s) != IIR_NO_INT;
        if (level == s->irq_level)
                return;
        s->irq_level = level;
        s->ctx->irq_line(s->ctx->vm, IRQ_COM1, level);
}

static unsigned int serial_rx_capacity(const struct serial *s)
{
        /* Without the FIFO the UART holds one character, as a 16450 does. */
        return s->fifo_enabled ? SERIAL_RX_FIFO : 1;
}

static void serial_rx_push(struct serial *s, uint8_t byte)
{
        if (s->rx_count >= serial_rx_capacity(s)) {
                s->lsr_errors |= LSR_OE; /* dropped, as a real UART overruns */
                return;
        }
        s->rx[(s->rx_head + s->rx_count) % SERIAL_RX_FIFO] = byte;
        s->rx_count++;
}

static uint8_t serial_rx_pop(struct serial *s)
{
        if (!s->rx_count)
                return 0;
        uint8_t byte = s->rx[s->rx_head];
        s->rx_head = (s->rx_head + 1) % SERIAL_RX_FIFO;
        s->rx_count--;
        return byte;
}

static void serial_rx_clear(struct serial *s)
{
        s->rx_head = 0;
        s->rx_count = 0;
}

static uint8_t serial_modem_status(const struct serial *s)
{
        if (!(s->mcr & MCR_LOOP))
                return MSR_DCD | MSR_DSR | MSR_CTS;
        /* Loopback wires the modem control outputs back to the status inputs. */
        uint8_t msr = 0;
        if (s->mcr & MCR_DTR)
                msr |= MSR_DSR;
        if (s->mcr & MCR_RTS)
                msr |= MSR_CTS;
        if (s->mcr & MCR_OUT1)
                msr |= MSR_RI;
        if (s->mcr & MCR_OUT2)
                msr |= MSR_DCD;
        return msr;
}

static void serial_update_msr(struct serial *s)
{
        uint8_t old = s->msr & 0xf0, now = serial_modem_status(s), delta = s->msr & 0x0f;
        if ((old ^ now) & MSR_CTS)
                delta |= MSR_DCTS;
        if ((old ^ now) & MSR_DSR)
                delta |= MSR_DDSR;
        if ((old & MSR_RI) && !(now & MSR_RI))
                delta |= MSR_TERI;
        if ((old ^ now) & MSR_DCD)
                delta |= MSR_DDCD;
        s->msr = now | delta;
}

static void serial_transmit(struct serial *s, uint8_t byte)
{
        if (s->mcr & MCR_LOOP) {
                serial_rx_push(s, byte);
                return;
        }
        console_out_put(&s->out, &byte, 1);
}

static uint8_t serial_read(struct serial *s, unsigned int reg)
{
        uint8_t v = 0;
        switch (reg) {
        case UART_RBR:
                if (s->lcr & LCR_DLAB)
                        return s->dll;
                v = serial_rx_pop(s);
                break;
        case UART_IER:
                return (s->lcr & LCR_DLAB) ? s->dlm : s->ier;
        case UART_IIR:
                v = serial_iir(s);
                if (v == IIR_THRI)
                        s->thr_ipending = false;
                if (s->fifo_enabled)
                        v |= IIR_FIFO_ENABLED;
                break;
        case UART_LCR:
                return s->lcr;
        case UART_MCR:
                return s->mcr;
        case UART_LSR:
                v = LSR_THRE | LSR_TEMT | s->lsr_errors | (s->rx_count ? LSR_DR : 0);
                s->lsr_errors = 0;
                break;
        case UART_MSR:
                v = s->msr;
                s->msr &= 0xf0;
                break;
        case UART_SCR:
                return s->scr;
        }
        serial_update_irq(s);
        return v;
}

static void serial_write(struct serial *s, unsigned int reg, uint8_t v)
{
        switch (reg) {
        case UART_RBR:
                if (s->lcr & LCR_DLAB) {
                        s->dll = v;
                        return;
                }
                serial_transmit(s, v);
                s->thr_ipending = true; /* the byte left at once: THR is empty again */
                break;
        case UART_IER:
                if (s->lcr & LCR_DLAB) {
                        s->dlm = v;
                        return;
                }
                /* Enabling THRI with THR empty raises THRE at once; the 8250 driver starts transmitting that way. */
                if ((v & IER_THRI) && !(s->ier & IER_THRI))
                        s->thr_ipending = true;
                s->ier = v & IER_MASK;
                break;
        case UART_IIR: {
                bool enable = v & FCR_ENABLE;
                if (enable != s->fifo_enabled || (enable && (v & FCR_CLEAR_RX)))
                        serial_rx_clear(s);
                s->fifo_enabled = enable;
                break;
        }
        case UART_LCR:
                s->lcr = v;
                return;
        case UART_MCR:
                s->mcr = v & MCR_MASK;
                serial_update_msr(s);
                break;
        case UART_SCR:
                s->scr = v;
                return;
        default: /* LSR and MSR are read-only */
                return;
        }
        serial_update_irq(s);
}

static void serial_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
        struct serial *s = opaque;
        pthread_mutex_lock(&s->lock);
        /* Wider accesses act byte by byte on consecutive ports, as on the ISA bus. */
        for (uint32_t i = 0; i < len; i++) {
                uint64_t reg = offset + i;
                if (reg >= SERIAL_PORTS) {
                        if (!is_write)
                                data[i] = 0xff;
                        continue;
                }
                if (is_write)
                        serial_write(s, (unsigned int)reg, data[i]);
                else
                        data[i] = serial_read(s, (unsigned int)reg);
        }
        pthread_mutex_unlock(&s->lock);
}

static void serial_stdin_ready(void *opaque, uint32_t events)
{
        struct serial *s = opaque;
        uint8_t buf[SERIAL_RX_FIFO];
        (void)events;
        /* One read per wakeup: epoll said data is there, so it cannot block. */
        ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
                return;
        pthread_mutex_lock(&s->lock);
        if (n <= 0) {
                /* EOF or error: stop polling, or a hung-up stdin would wake the loop forever. */
                s->in.usable = false;
                console_in_poll(&s->in, false);
        }
        for (ssize_t i = 0; i < n; i++)
                serial_rx_push(s, buf[i]);
        serial_update_irq(s);
        pthread_mutex_unlock(&s->lock);
}

static void serial_exit(struct vm_devices *ctx)
{
        struct serial *s = &serial;
        (void)ctx;
        pthread_mutex_lock(&s->lock);
        console_in_close(&s->in);
        pthread_mutex_unlock(&s->lock);
        console_out_close(&s->out);
}

static int serial_init(struct vm_devices *ctx, cap_error_t *err)
{
        struct serial *s = &serial;
        const struct vm_config *cfg = ctx->config;

        pthread_mutex_lock(&s->lock);
        s->ctx = ctx;
        s->ier = s->lcr = s->mcr = s->scr = s->dll = s->dlm = s->lsr_errors = 0;
        s->fifo_enabled = s->thr_ipending = false;
        s->irq_level = 0;
        s->msr = serial_modem_status(s);
        serial_rx_clear(s);
        s->in = (struct console_in){ 0 };
        pthread_mutex_unlock(&s->lock);

        /* With console_hvc, virtio-console's hvc0 owns the console; the 8250 is still there, unconnected. */
        bool owner = cfg && !cfg->console_hvc;
        if (owner && (console_out_open_config(&s->out, cfg, ctx->loop, err) < 0 ||
                      (cfg->console == VM_CONSOLE_STDIO && console_in_open(&s->in, ctx->loop, serial_stdin_ready, s, err) < 0))) {
                serial_exit(ctx);
                return -1;
        }
        if (bus_register(ctx->pio, PORT_COM1, SERIAL_PORTS, serial_io, s, "serial", err) < 0) {
                serial_exit(ctx);
                return -1;
        }
        return 0;
}

DEVICE_REGISTER(serial, DEVICE_ORDER_PLATFORM, .name = "serial", .init = serial_init, .exit = serial_exit)
