/* virtio-console: hvc0 as the guest console (console_hvc: the 8250 then leaves stdio
 * alone) and, as a second instance, named ports (console_ports), which the guest sees
 * as /dev/vportNpM and the host as Unix sockets (console_port.c); console.h says why
 * two. Queues: port 0's rx/tx are 0 and 1; with MULTIPORT the control queues are 2 (to
 * the driver) and 3 (from it), and port N's rx/tx are 2N+2 and 2N+3.
 *
 * Data only moves when the driver said the port is open (host bytes sent before that
 * would be thrown away by Linux) and has rx buffers; otherwise the port stops reading
 * its host end until the driver kicks. Guest writes the host end cannot take yet stay
 * in their chain, so the guest's writer waits. Everything runs on the event loop under
 * the device's lock; vCPUs only reset or activate. */
#include <endian.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "vmm/virtio/console.h"
#include "vmm/vm.h"

#define CONSOLE_QUEUE_SIZE 128
#define CONSOLE_PUMP_ROUNDS 16 /* host reads per event: a flooding client shares the loop */
#define CTRL_RX_Q 2
#define CTRL_TX_Q 3
/* Every port has two queues, and the control queues two more. */
#define CONSOLE_PORTS_MAX (VIRTIO_MAX_QUEUES / 2 - 1)

static unsigned int port_rx_queue(uint32_t id)
{
        return id == 0 ? 0 : 2 + 2 * id;
}

static bool port_guest_open(const struct console_port *p)
{
        const struct console *con = p->con;
        return con->live && (con->multiport ? con->ctrl.ports[p->id].guest_open : true);
}

static void console_ctrl_flush(struct console *con)
{
        if (!con->multiport || !con->live)
                return;
        struct console_ctrl_msg m;
        const char *name;
        bool pushed = false;
        while (console_ctrl_next(&con->ctrl, &m, &name) && virtio_queue_pop(&con->dev, CTRL_RX_Q, &con->chain) > 0) {
                uint8_t buf[CONSOLE_CTRL_MSG_SIZE + CONSOLE_PORT_NAME_MAX];
                size_t len = CONSOLE_CTRL_MSG_SIZE;
                console_ctrl_encode(&m, buf);
                if (name) {
                        memcpy(buf + len, name, strlen(name));
                        len += strlen(name);
                }
                size_t n = virtq_chain_write(&con->chain, 0, buf, len);
                virtio_queue_push(&con->dev, CTRL_RX_Q, con->chain.head, (uint32_t)n);
                console_ctrl_sent(&con->ctrl, &m);
                pushed = true;
        }
        if (pushed)
                virtio_queue_signal(&con->dev, CTRL_RX_Q);
}

static void console_ctrl_receive(struct console *con)
{
        bool pushed = false;
        while (virtio_queue_pop(&con->dev, CTRL_TX_Q, &con->chain) > 0) {
                /* One copy out of guest memory; one byte more tells a longer message apart. */
                uint8_t buf[CONSOLE_CTRL_MSG_SIZE + 1];
                size_t len = virtq_chain_read(&con->chain, 0, buf, sizeof(buf));
                struct console_ctrl_msg m;
                const char *why;
                if (console_ctrl_parse(buf, len, &m, &why) < 0 || console_ctrl_handle(&con->ctrl, &m, &why) < 0)
                        log_debug("%s: a control message was ignored: %s", con->dev.name, why);
                else if (m.event == VIRTIO_CONSOLE_PORT_OPEN)
                        log_debug("%s: the guest %s port %u", con->dev.name, m.value ? "opened" : "closed", m.id);
                virtio_queue_push(&con->dev, CTRL_TX_Q, con->chain.head, 0);
                pushed = true;
        }
        if (pushed)
                virtio_queue_signal(&con->dev, CTRL_TX_Q);
        console_ctrl_flush(con);
        for (uint32_t id = 0; id < con->n_ports; id++)
                console_port_pump(&con->ports[id]);
}

void console_port_host_changed(struct console_port *p, bool open)
{
        if (!open)
                p->in_off = p->in_len = 0; /* the next client starts afresh */
        console_ctrl_host_open(&p->con->ctrl, p->id, open);
        console_ctrl_flush(p->con);
}

static void port_host_gone(struct console_port *p)
{
        console_port_disconnect(p);
        console_port_host_changed(p, false);
}

static void port_rx_fill(struct console_port *p)
{
        struct console *con = p->con;
        unsigned int q = port_rx_queue(p->id);
        bool pushed = false;
        while (p->in_off < p->in_len && virtio_queue_pop(&con->dev, q, &con->chain) > 0) {
                size_t n = virtq_chain_write(&con->chain, 0, p->in + p->in_off, p->in_len - p->in_off);
                virtio_queue_push(&con->dev, q, con->chain.head, (uint32_t)n);
                p->in_off += n;
                pushed = true;
        }
        if (pushed)
                virtio_queue_signal(&con->dev, q);
}

static void port_tx_drain(struct console_port *p)
{
        struct console *con = p->con;
        unsigned int q = port_rx_queue(p->id) + 1;
        bool pushed = false;
        for (;;) {
                if (!p->tx_held) {
                        if (virtio_queue_pop(&con->dev, q, p->tx) <= 0)
                                break;
                        p->tx_held = true;
                        p->tx_off = 0;
                }
                int r = console_port_host_write(p);
                if (r == 0)
                        break; /* the host end is full: the chain waits for room */
                /* Written, or lost with the host end (the driver hears of it through PORT_OPEN). */
                if (r < 0 && p->fd >= 0)
                        port_host_gone(p);
                virtio_queue_push(&con->dev, q, p->tx->head, 0);
                p->tx_held = false;
                pushed = true;
        }
        if (pushed)
                virtio_queue_signal(&con->dev, q);
}

void console_port_pump(struct console_port *p)
{
        bool open = port_guest_open(p);
        if (open) {
                port_rx_fill(p);
                for (int round = 0; round < CONSOLE_PUMP_ROUNDS && p->in_off >= p->in_len; round++) {
                        int r = console_port_host_read(p);
                        if (r < 0)
                                port_host_gone(p);
                        if (r <= 0)
                                break;
                        port_rx_fill(p);
                }
        }
        if (p->con->live)
                port_tx_drain(p);
        console_port_poll(p, open && p->in_off >= p->in_len, p->tx_held);
}

static void console_stdin_event(void *opaque, uint32_t events)
{
        struct console *con = opaque;
        (void)events;
        virtio_dev_lock(&con->dev);
        console_port_pump(&con->ports[0]);
        virtio_dev_unlock(&con->dev);
}

static int console_activate(struct virtio_dev *dev, cap_error_t *err)
{
        struct console *con = dev->opaque;
        (void)err;
        con->live = true;
        for (uint32_t id = 0; id < con->n_ports; id++)
                console_port_pump(&con->ports[id]);
        return 0;
}

static void console_notify(struct virtio_dev *dev, unsigned int q)
{
        struct console *con = dev->opaque;
        if (con->multiport && q == CTRL_RX_Q)
                console_ctrl_flush(con);
        else if (con->multiport && q == CTRL_TX_Q)
                console_ctrl_receive(con);
        else if ((q < 2 ? 0 : q / 2 - 1) < con->n_ports)
                console_port_pump(&con->ports[q < 2 ? 0 : q / 2 - 1]);
}

static void console_reset(struct virtio_dev *dev)
{
        struct console *con = dev->opaque;
        con->live = false;
        console_ctrl_reset(&con->ctrl);
        for (uint32_t id = 0; id < con->n_ports; id++) {
                /* The rings are gone: a held chain is forgotten, never touched again. */
                con->ports[id].tx_held = false;
                console_port_pump(&con->ports[id]);
        }
}

static void console_free(struct console *con)
{
        for (uint32_t id = 0; id < con->n_ports; id++)
                console_port_close(&con->ports[id]);
        console_in_close(&con->in);
        console_out_close(&con->out);
        free(con->ports);
        free(con->ctrl.ports);
        free(con);
}

static void console_destroy(struct virtio_dev *dev)
{
        console_free(dev->opaque);
}

static const struct virtio_dev_ops console_ops = {
        .activate = console_activate,
        .notify = console_notify,
        .reset = console_reset,
        .destroy = console_destroy,
};

static int console_check_ports(const struct vm_config *cfg, cap_error_t *err)
{
        if (cfg->n_console_ports > CONSOLE_PORTS_MAX)
                return cap_fail(err, 0, "console-port: at most %d ports", CONSOLE_PORTS_MAX);
        for (int i = 0; i < cfg->n_console_ports; i++) {
                const char *name = cfg->console_ports[i].name;
                size_t len = strlen(name);
                if (len == 0 || len > CONSOLE_PORT_NAME_MAX)
                        return cap_fail(err, 0, "console-port[%d]: the name `%s` is not 1 to %d bytes", i, name,
                                        CONSOLE_PORT_NAME_MAX);
                for (size_t j = 0; j < len; j++)
                        if (name[j] <= ' ' || name[j] == '/' || name[j] == 0x7f)
                                return cap_fail(err, 0, "console-port[%d]: the name `%s` has a space, a slash or a control "
                                                "character", i, name);
        }
        return 0;
}

/* The ports' host ends, before the device is added. */
static int console_setup(struct console *con, const struct vm_config *cfg, cap_error_t *err)
{
        for (uint32_t id = 0; id < con->n_ports; id++)
                con->ports[id] = (struct console_port){ .con = con, .id = id, .index = -1, .listen_fd = -1, .fd = -1,
                                                        .polled_fd = -1, .tx = xmalloc0(sizeof(struct virtq_chain)) };
        con->out = (struct console_out){ .fd = -1, .kick_fd = -1, .restore_fl = -1 };
        if (!con->multiport) {
                if (console_out_open_config(&con->out, cfg, con->loop, err) < 0)
                        return -1;
                if (cfg->console == VM_CONSOLE_STDIO)
                        return console_in_open(&con->in, con->loop, console_stdin_event, con, err);
                return 0;
        }
        for (uint32_t id = 0; id < con->n_ports; id++) {
                struct console_port *p = &con->ports[id];
                con->ctrl.ports[id].name = cfg->console_ports[id].name;
                p->index = (int)id;
                p->socket_path = cfg->console_ports[id].socket;
                if (console_port_listen(p, err) < 0)
                        return -1;
                console_port_poll(p, false, false);
        }
        return 0;
}

static int console_create(struct vm_devices *ctx, bool multiport, cap_error_t *err)
{
        const struct vm_config *cfg = ctx->config;
        struct console *con = xmalloc0(sizeof(*con));
        con->loop = ctx->loop;
        con->multiport = multiport;
        con->n_ports = multiport ? (uint32_t)cfg->n_console_ports : 1;
        con->ports = xmalloc0(con->n_ports * sizeof(*con->ports));
        snprintf(con->dev.name, sizeof(con->dev.name), multiport ? "virtio-console-ports" : "virtio-console");
        con->dev.device_id = VIRTIO_ID_CONSOLE;
        con->dev.n_queues = 2;
        if (multiport) {
                con->ctrl.n_ports = con->n_ports;
                con->ctrl.ports = xmalloc0(con->n_ports * sizeof(*con->ctrl.ports));
                con->dev.features = 1ULL << VIRTIO_CONSOLE_F_MULTIPORT;
                con->dev.n_queues = 2 * (con->n_ports + 1);
                con->config.max_nr_ports = htole32(con->n_ports);
        }
        con->dev.queue_max = CONSOLE_QUEUE_SIZE;
        con->dev.config = &con->config;
        con->dev.config_len = sizeof(con->config);
        con->dev.ops = &console_ops;
        con->dev.opaque = con;
        if (console_setup(con, cfg, err) < 0 || virtio_dev_add(ctx, &con->dev, err) < 0) {
                console_free(con);
                return -1;
        }
        return 0;
}

static int console_init(struct vm_devices *ctx, cap_error_t *err)
{
        const struct vm_config *cfg = ctx->config;
        if (!cfg)
                return 0;
        if (console_check_ports(cfg, err) < 0)
                return -1;
        if (cfg->console_hvc && console_create(ctx, false, err) < 0)
                return -1;
        return cfg->n_console_ports ? console_create(ctx, true, err) : 0;
}

DEVICE_REGISTER(virtio_console, DEVICE_ORDER_VIRTIO, .name = "virtio-console", .init = console_init)
