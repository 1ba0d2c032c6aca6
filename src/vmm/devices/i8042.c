/* i8042 keyboard controller with nothing plugged in: enough for Linux's i8042
 * probe (self test, command byte, interface tests, port enable/disable, AUX
 * loopback) to finish without timeouts, and the CPU reset line the kernel
 * pulses to reboot. Bytes sent to the keyboard or mouse are answered with NAK
 * (0xfe), so atkbd and psmouse give up at once instead of waiting. */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "vmm/device.h"
#include "vmm/vm.h"
#include "vmm/x86/layout.h"

#define IRQ_I8042_AUX 12

/* Status register */
#define STR_OBF 0x01
#define STR_SYS 0x04
#define STR_CMD 0x08 /* last write went to the command port */
#define STR_KEYLOCK 0x10 /* set: keyboard not inhibited */
#define STR_AUXDATA 0x20

/* Command byte (controller configuration) */
#define CTR_KBDINT 0x01
#define CTR_AUXINT 0x02
#define CTR_SYS 0x04
#define CTR_KBDDIS 0x10
#define CTR_AUXDIS 0x20
#define CTR_XLATE 0x40

/* Controller commands */
#define CMD_READ_CTR 0x20
#define CMD_WRITE_CTR 0x60
#define CMD_AUX_DISABLE 0xa7
#define CMD_AUX_ENABLE 0xa8
#define CMD_AUX_TEST 0xa9
#define CMD_SELF_TEST 0xaa
#define CMD_KBD_TEST 0xab
#define CMD_KBD_DISABLE 0xad
#define CMD_KBD_ENABLE 0xae
#define CMD_READ_OUTPORT 0xd0
#define CMD_WRITE_OUTPORT 0xd1
#define CMD_WRITE_KBD_OBUF 0xd2
#define CMD_WRITE_AUX_OBUF 0xd3
#define CMD_WRITE_AUX 0xd4

#define OUTPORT_RESET 0x01 /* active low: clearing it resets the CPU */
#define OUTPORT_A20 0x02

#define SELF_TEST_OK 0x55
#define PS2_NAK 0xfe

#define QUEUE_SIZE 16

struct i8042 {
        pthread_mutex_t lock;
        struct vm_devices *ctx;
        uint8_t ctr, outport, status_cmd;
        uint8_t pending; /* controller command waiting for its data byte, 0 if none */
        /* Output buffer: what the guest reads from 0x60, each byte tagged keyboard or AUX. */
        uint8_t queue[QUEUE_SIZE];
        bool queue_aux[QUEUE_SIZE];
        unsigned int head, count;
        int kbd_level, aux_level;
};

static struct i8042 i8042 = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void i8042_set_line(struct i8042 *k, uint32_t gsi, int *cur, int level)
{
        if (*cur == level)
                return;
        *cur = level;
        k->ctx->irq_line(k->ctx->vm, gsi, level);
}

/* IRQ 1 or 12 is up while the byte at the head of the output buffer is for an enabled port interrupt. */
static void i8042_update_irq(struct i8042 *k)
{
        bool aux = k->count && k->queue_aux[k->head];
        i8042_set_line(k, IRQ_I8042, &k->kbd_level, k->count && !aux && (k->ctr & CTR_KBDINT));
        i8042_set_line(k, IRQ_I8042_AUX, &k->aux_level, aux && (k->ctr & CTR_AUXINT));
}

static void i8042_queue(struct i8042 *k, uint8_t byte, bool aux)
{
        if (k->count == QUEUE_SIZE)
                return; /* the guest does not read its replies: drop the newest */
        unsigned int tail = (k->head + k->count) % QUEUE_SIZE;
        k->queue[tail] = byte;
        k->queue_aux[tail] = aux;
        k->count++;
}

static uint8_t i8042_status(const struct i8042 *k)
{
        uint8_t st = k->status_cmd | STR_KEYLOCK | (k->ctr & CTR_SYS ? STR_SYS : 0);
        if (k->count) {
                st |= STR_OBF;
                if (k->queue_aux[k->head])
                        st |= STR_AUXDATA;
        }
        return st;
}

static uint8_t i8042_read_data(struct i8042 *k)
{
        if (!k->count)
                return 0;
        uint8_t byte = k->queue[k->head];
        k->head = (k->head + 1) % QUEUE_SIZE;
        k->count--;
        return byte;
}

static void i8042_command(struct i8042 *k, uint8_t cmd)
{
        switch (cmd) {
        case CMD_READ_CTR:
                i8042_queue(k, k->ctr, false);
                break;
        case CMD_WRITE_CTR:
        case CMD_WRITE_OUTPORT:
        case CMD_WRITE_KBD_OBUF:
        case CMD_WRITE_AUX_OBUF:
        case CMD_WRITE_AUX:
                k->pending = cmd;
                break;
        case CMD_AUX_DISABLE:
                k->ctr |= CTR_AUXDIS;
                break;
        case CMD_AUX_ENABLE:
                k->ctr &= (uint8_t)~CTR_AUXDIS;
                break;
        case CMD_AUX_TEST:
        case CMD_KBD_TEST:
                i8042_queue(k, 0x00, false); /* interface OK */
                break;
        case CMD_SELF_TEST:
                k->ctr |= CTR_SYS;
                i8042_queue(k, SELF_TEST_OK, false);
                break;
        case CMD_KBD_DISABLE:
                k->ctr |= CTR_KBDDIS;
                break;
        case CMD_KBD_ENABLE:
                k->ctr &= (uint8_t)~CTR_KBDDIS;
                break;
        case CMD_READ_OUTPORT:
                i8042_queue(k, k->outport, false);
                break;
        default:
                /* 0xf0-0xff pulse output port lines for 6 us; a clear bit 0 pulses CPU reset. */
                if ((cmd & 0xf0) == 0xf0 && !(cmd & OUTPORT_RESET))
                        k->ctx->request_exit(k->ctx->vm, VM_EXIT_REBOOT, VM_STATUS_REBOOT);
                break;
        }
}

static void i8042_data(struct i8042 *k, uint8_t byte)
{
        uint8_t cmd = k->pending;
        k->pending = 0;
        switch (cmd) {
        case CMD_WRITE_CTR:
                k->ctr = byte;
                break;
        case CMD_WRITE_OUTPORT:
                k->outport = byte;
                if (!(byte & OUTPORT_RESET))
                        k->ctx->request_exit(k->ctx->vm, VM_EXIT_REBOOT, VM_STATUS_REBOOT);
                break;
        case CMD_WRITE_KBD_OBUF:
                i8042_queue(k, byte, false);
                break;
        case CMD_WRITE_AUX_OBUF:
                i8042_queue(k, byte, true);
                break;
        case CMD_WRITE_AUX:
                i8042_queue(k, PS2_NAK, true);
                break;
        default: /* a byte for the keyboard itself, which is absent */
                i8042_queue(k, PS2_NAK, false);
                break;
        }
}

/* Only single-byte accesses mean anything to the controller. */
static void i8042_access(struct i8042 *k, bool cmd_port, uint8_t *data, uint32_t len, bool is_write)
{
        if (len != 1) {
                if (!is_write)
                        for (uint32_t i = 0; i < len; i++)
                                data[i] = 0xff;
                return;
        }
        pthread_mutex_lock(&k->lock);
        if (is_write) {
                k->status_cmd = cmd_port ? STR_CMD : 0;
                if (cmd_port)
                        i8042_command(k, data[0]);
                else
                        i8042_data(k, data[0]);
        } else {
                data[0] = cmd_port ? i8042_status(k) : i8042_read_data(k);
        }
        i8042_update_irq(k);
        pthread_mutex_unlock(&k->lock);
}

static void i8042_data_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
        (void)offset;
        i8042_access(opaque, false, data, len, is_write);
}

static void i8042_cmd_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
        (void)offset;
        i8042_access(opaque, true, data, len, is_write);
}

static int i8042_init(struct vm_devices *ctx, cap_error_t *err)
{
        struct i8042 *k = &i8042;
        pthread_mutex_lock(&k->lock);
        k->ctx = ctx;
        /* As the firmware leaves it: self test passed, keyboard interrupt and translation on. */
        k->ctr = CTR_KBDINT | CTR_SYS | CTR_XLATE;
        k->outport = OUTPORT_RESET | OUTPORT_A20;
        k->status_cmd = 0;
        k->pending = 0;
        k->head = k->count = 0;
        k->kbd_level = k->aux_level = 0;
        pthread_mutex_unlock(&k->lock);
        /* Two single ports: 0x61 (port B) belongs to the in-kernel PIT. */
        if (bus_register(ctx->pio, PORT_I8042_DATA, 1, i8042_data_io, k, "i8042 data", err) < 0)
                return -1;
        return bus_register(ctx->pio, PORT_I8042_CMD, 1, i8042_cmd_io, k, "i8042 command", err);
}

DEVICE_REGISTER(i8042, DEVICE_ORDER_PLATFORM, .name = "i8042", .init = i8042_init)
