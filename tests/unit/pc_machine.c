/* The legacy PC devices' test machine (pc_machine.h). */
#include "pc_machine.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"

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

/* Console FILE goes to a fresh temp file. */
int machine_start(struct machine *m, enum vm_console console, cap_error_t *err)
{
        memset(m, 0, sizeof(*m));
        m->vm.exit_reason = NO_EXIT;
        if (machine_base_init(&m->b, 64ULL << 20, err) < 0)
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
        m->b.cfg.console = console;
        m->b.cfg.console_path = m->console;
        m->b.ctx.irq_line = fake_irq_line;
        m->b.ctx.request_exit = fake_request_exit;
        m->b.ctx.vm = &m->vm;
        return machine_base_start(&m->b, false, err);
}

void machine_stop(struct machine *m)
{
        machine_base_destroy(&m->b);
        unlink(m->console);
}

uint8_t inb(struct machine *m, uint16_t port)
{
        return (uint8_t)io_in(&m->b.pio, port, 1);
}

void outb(struct machine *m, uint16_t port, uint8_t v)
{
        io_out(&m->b.pio, port, 1, v);
}

void cf8(struct machine *m, unsigned int slot, unsigned int fn, unsigned int reg)
{
        io_out(&m->b.pio, PORT_PCI_CONFIG, 4, 0x80000000u | slot << 11 | fn << 8 | (reg & 0xfc));
}

uint8_t cmos_read(struct machine *m, uint8_t index)
{
        outb(m, PORT_RTC, index);
        return inb(m, PORT_RTC + 1);
}

char *slurp(const char *path)
{
        char *text = NULL;
        cleanup_error cap_error_t err = NULL;
        if (read_file(path, &text, NULL, 0, &err) < 0)
                return NULL;
        return text;
}
