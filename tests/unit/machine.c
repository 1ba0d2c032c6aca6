/* The device unit tests' machine (machine.h). */
#include "machine.h"

#include <pthread.h>
#include <string.h>


static int nop_irq_line(void *vm, uint32_t gsi, int level)
{
        (void)vm, (void)gsi, (void)level;
        return 0;
}

static int nop_ioeventfd(void *vm, int fd, uint64_t addr, uint32_t len, bool pio, bool assign, cap_error_t *err)
{
        (void)vm, (void)fd, (void)addr, (void)len, (void)pio, (void)assign, (void)err;
        return 0;
}

static int nop_ioeventfd_match(void *vm, int fd, uint64_t addr, uint32_t len, bool pio, uint64_t data, bool assign,
                               cap_error_t *err)
{
        (void)vm, (void)fd, (void)addr, (void)len, (void)pio, (void)data, (void)assign, (void)err;
        return 0;
}

static int nop_irqfd(void *vm, int fd, uint32_t gsi, bool assign, cap_error_t *err)
{
        (void)vm, (void)fd, (void)gsi, (void)assign, (void)err;
        return 0;
}

static void nop_cmdline_append(void *vm, const char *text)
{
        (void)vm, (void)text;
}

static void nop_request_exit(void *vm, int reason, int status)
{
        (void)vm, (void)reason, (void)status;
}

int machine_base_init(struct machine_base *b, uint64_t mem_size, cap_error_t *err)
{
        memset(b, 0, sizeof(*b));
        if (evloop_init(&b->loop, err) < 0)
                return -1;
        b->loop_up = true;
        if (guest_mem_init(&b->mem, mem_size, false, err) < 0)
                return -1;
        b->mem_up = true;
        b->ctx = (struct vm_devices){ .pio = &b->pio, .mmio = &b->mmio, .mem = &b->mem, .loop = &b->loop,
                                      .config = &b->cfg, .irq_line = nop_irq_line, .ioeventfd = nop_ioeventfd,
                                      .ioeventfd_match = nop_ioeventfd_match, .irqfd = nop_irqfd,
                                      .cmdline_append = nop_cmdline_append, .request_exit = nop_request_exit };
        return 0;
}

int machine_base_start(struct machine_base *b, bool run, cap_error_t *err)
{
        bus_init(&b->pio);
        bus_init(&b->mmio);
        b->bus_up = true;
        if (devices_init(&b->ctx, err) < 0)
                return -1;
        b->up = true;
        return run ? evloop_start(&b->loop, err) : 0;
}

void machine_base_stop(struct machine_base *b)
{
        /* The loop's thread first: its handlers use the devices. */
        if (b->loop_up)
                evloop_stop(&b->loop);
        if (b->up)
                devices_exit(&b->ctx);
        b->up = false;
        if (b->bus_up) {
                pthread_mutex_destroy(&b->pio.lock);
                pthread_mutex_destroy(&b->mmio.lock);
        }
        b->bus_up = false;
}

void machine_base_destroy(struct machine_base *b)
{
        machine_base_stop(b);
        if (b->loop_up)
                evloop_destroy(&b->loop);
        b->loop_up = false;
        if (b->mem_up)
                guest_mem_destroy(&b->mem);
        b->mem_up = false;
}

uint64_t io_in(struct bus *bus, uint64_t addr, uint32_t len)
{
        uint8_t d[8] = { 0 };
        uint64_t v = 0;
        bus_dispatch(bus, addr, d, len, false);
        for (uint32_t i = 0; i < len && i < 8; i++)
                v |= (uint64_t)d[i] << (8 * i);
        return v;
}

void io_out(struct bus *bus, uint64_t addr, uint32_t len, uint64_t v)
{
        uint8_t d[8] = { 0 };
        for (uint32_t i = 0; i < len && i < 8; i++)
                d[i] = (uint8_t)(v >> (8 * i));
        bus_dispatch(bus, addr, d, len, true);
}
