/* virtio-console's control protocol (VIRTIO_CONSOLE_F_MULTIPORT), as the Linux driver
 * speaks it: DEVICE_READY → PORT_ADD for every port → PORT_READY per port → PORT_NAME,
 * and PORT_OPEN both ways. Consoles (CONSOLE_PORT) are never announced: hvc0 is a
 * device of its own (console.h). */
#include "vmm/virtio/console.h"

#include <endian.h>
#include <string.h>

int console_ctrl_parse(const void *buf, size_t len, struct console_ctrl_msg *m, const char **why)
{
        if (len != CONSOLE_CTRL_MSG_SIZE) {
                *why = "a control message is not 8 bytes";
                return -1;
        }
        struct virtio_console_control raw;
        memcpy(&raw, buf, sizeof(raw));
        *m = (struct console_ctrl_msg){ .id = le32toh(raw.id), .event = le16toh(raw.event), .value = le16toh(raw.value) };
        return 0;
}

void console_ctrl_encode(const struct console_ctrl_msg *m, uint8_t out[CONSOLE_CTRL_MSG_SIZE])
{
        struct virtio_console_control raw = { .id = htole32(m->id), .event = htole16(m->event), .value = htole16(m->value) };
        memcpy(out, &raw, sizeof(raw));
}

static struct console_ctrl_port *ctrl_port(struct console_ctrl *c, uint32_t id)
{
        return id < c->n_ports ? &c->ports[id] : NULL;
}

int console_ctrl_handle(struct console_ctrl *c, const struct console_ctrl_msg *m, const char **why)
{
        if (m->value > 1) {
                *why = "a control message's value is not 0 or 1";
                return -1;
        }
        if (m->event == VIRTIO_CONSOLE_DEVICE_READY) {
                /* The id is unused (Linux sends VIRTIO_CONSOLE_BAD_ID). Once per reset. */
                if (c->device_ready || !m->value) {
                        *why = c->device_ready ? "DEVICE_READY sent twice" : "the driver failed to set up";
                        return -1;
                }
                c->device_ready = true;
                for (uint32_t i = 0; i < c->n_ports; i++)
                        c->ports[i].add_owed = true;
                return 0;
        }
        struct console_ctrl_port *p = ctrl_port(c, m->id);
        if (!c->device_ready || !p || p->add_owed) {
                *why = !c->device_ready ? "a port message before DEVICE_READY" : "a message for a port that was not added";
                return -1;
        }
        switch (m->event) {
        case VIRTIO_CONSOLE_PORT_READY:
                if (p->ready || !m->value) {
                        *why = p->ready ? "PORT_READY sent twice" : "the driver failed to set up a port";
                        return -1;
                }
                p->ready = true;
                p->name_owed = true;
                p->open_sent = false;
                return 0;
        case VIRTIO_CONSOLE_PORT_OPEN:
                if (!p->ready) {
                        *why = "PORT_OPEN for a port that is not ready";
                        return -1;
                }
                p->guest_open = m->value;
                return 0;
        default:
                *why = "an unknown control event from the driver";
                return -1;
        }
}

bool console_ctrl_next(const struct console_ctrl *c, struct console_ctrl_msg *m, const char **name)
{
        *name = NULL;
        for (uint32_t id = 0; id < c->n_ports; id++) {
                const struct console_ctrl_port *p = &c->ports[id];
                *m = (struct console_ctrl_msg){ .id = id, .value = 1 };
                if (p->add_owed) {
                        m->event = VIRTIO_CONSOLE_PORT_ADD;
                        return true;
                }
                if (!p->ready)
                        continue;
                if (p->name_owed) {
                        m->event = VIRTIO_CONSOLE_PORT_NAME;
                        *name = p->name;
                        return true;
                }
                /* The host end's state, when it differs from what the driver believes. */
                if (p->open_sent != p->host_open) {
                        m->event = VIRTIO_CONSOLE_PORT_OPEN;
                        m->value = p->host_open;
                        return true;
                }
        }
        return false;
}

void console_ctrl_sent(struct console_ctrl *c, const struct console_ctrl_msg *m)
{
        if (m->id >= c->n_ports)
                return;
        struct console_ctrl_port *p = &c->ports[m->id];
        switch (m->event) {
        case VIRTIO_CONSOLE_PORT_ADD:
                p->add_owed = false;
                break;
        case VIRTIO_CONSOLE_PORT_NAME:
                p->name_owed = false;
                break;
        case VIRTIO_CONSOLE_PORT_OPEN:
                p->open_sent = m->value;
                break;
        }
}

void console_ctrl_host_open(struct console_ctrl *c, uint32_t id, bool open)
{
        if (id < c->n_ports)
                c->ports[id].host_open = open;
}

void console_ctrl_reset(struct console_ctrl *c)
{
        c->device_ready = false;
        for (uint32_t i = 0; i < c->n_ports; i++) {
                struct console_ctrl_port *p = &c->ports[i];
                p->add_owed = p->ready = p->name_owed = false;
                p->open_sent = p->guest_open = false;
        }
}
