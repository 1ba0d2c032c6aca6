/* virtio-console, inside the device only (console.c: queues and data; console_port.c:
 * the host side of each port; console_ctrl.c: the MULTIPORT control protocol).
 *
 * Two instances at most. hvc0 (console_hvc) is a device without MULTIPORT, whose only
 * port the driver makes its console while it probes the device, so /dev/console is
 * there when the kernel opens it for init. (With MULTIPORT hvc0 would appear only
 * after a round of control messages through a guest workqueue, which can lose that
 * race.) The named ports (console_ports) are a second device, with MULTIPORT: ids
 * 0..n-1, each announced with its name.
 *
 * The control protocol is pure logic over struct console_ctrl, unit-tested and fuzzed
 * alone: every message from the driver is parsed once into a struct console_ctrl_msg
 * and checked against the ports before it changes anything, and what the device owes
 * the driver is derived from per-port state (not queued), so a driver that sends
 * messages without taking the answers cannot make the device remember more. */
#ifndef CAPSULE_VMM_VIRTIO_CONSOLE_H
#define CAPSULE_VMM_VIRTIO_CONSOLE_H

#include <linux/virtio_console.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/error.h"
#include "vmm/console.h"
#include "vmm/virtio/virtio.h"

#define CONSOLE_CTRL_MSG_SIZE 8 /* struct virtio_console_control */
#define CONSOLE_PORT_NAME_MAX 128

struct console_ctrl_msg {
        uint32_t id;
        uint16_t event; /* VIRTIO_CONSOLE_* */
        uint16_t value;
};

struct console_ctrl_port {
        /* Set up by the device. */
        const char *name;      /* announced with PORT_NAME */
        bool host_open;        /* the host end (the socket's client) is connected */
        /* The protocol's state, back to false on a device reset. */
        bool add_owed;         /* PORT_ADD not sent yet (after DEVICE_READY) */
        bool ready;            /* the driver sent PORT_READY 1 */
        bool name_owed;
        bool open_sent;        /* what the driver was told of the host end (false until told) */
        bool guest_open;       /* the driver's last PORT_OPEN value */
};

struct console_ctrl {
        uint32_t n_ports;      /* max_nr_ports */
        struct console_ctrl_port *ports;
        bool device_ready;
};

/* One message from the driver's control queue: exactly 8 bytes. 0, or -1 with *why. */
int console_ctrl_parse(const void *buf, size_t len, struct console_ctrl_msg *m, const char **why);
/* Apply a parsed message. 0, or -1 with *why when it does not fit the ports or the
 * protocol's state (the message is then ignored). */
int console_ctrl_handle(struct console_ctrl *c, const struct console_ctrl_msg *m, const char **why);
/* The next message the device owes the driver, if any; *name (or NULL) follows its header. */
bool console_ctrl_next(const struct console_ctrl *c, struct console_ctrl_msg *m, const char **name);
/* The driver took the message console_ctrl_next() gave. */
void console_ctrl_sent(struct console_ctrl *c, const struct console_ctrl_msg *m);
/* The host end of port id was connected or disconnected. */
void console_ctrl_host_open(struct console_ctrl *c, uint32_t id, bool open);
/* Device reset: the driver knows nothing any more. */
void console_ctrl_reset(struct console_ctrl *c);
/* Encode a header into 8 bytes, little-endian. */
void console_ctrl_encode(const struct console_ctrl_msg *m, uint8_t out[CONSOLE_CTRL_MSG_SIZE]);


/* The device (console.c) and its ports' host side (console_port.c). */
#define CONSOLE_IN_BUF 4096

struct console;

struct console_port {
        struct console *con;
        uint32_t id;
        /* A named port: the Unix socket capsule listens on and its one client. */
        int index;               /* console-port[index]; -1 for hvc0 */
        const char *socket_path;
        bool socket_created;
        int listen_fd, fd;       /* -1: none */
        bool hup_seen;           /* the client hung up with bytes left to pass on */
        int polled_fd;           /* what the loop watches for this port, with polled_events */
        uint32_t polled_events;
        /* Guest to host: the tx chain the host end has not taken all of yet. */
        struct virtq_chain *tx;
        bool tx_held;
        size_t tx_off;
        /* Host to guest: bytes read from the host end, not yet in the driver's rx buffers. */
        uint8_t in[CONSOLE_IN_BUF];
        size_t in_off, in_len;
};

struct console {
        struct virtio_dev dev;
        struct evloop *loop;
        struct virtio_console_config config;
        bool multiport;          /* the named ports' device; else hvc0's */
        bool live;               /* activated, not reset since */
        uint32_t n_ports;
        struct console_port *ports; /* indexed by port id */
        struct console_ctrl ctrl;   /* multiport: the same n_ports */
        struct console_out out;  /* hvc0: its output, the console the settings name */
        struct console_in in;    /* hvc0: its input, stdin with --console stdio */
        struct virtq_chain chain;
};

/* console.c: move what can move between the port's host end and its queues (dev->lock held). */
void console_port_pump(struct console_port *p);
/* console.c: the host end connected or went away. */
void console_port_host_changed(struct console_port *p, bool open);

/* console_port.c, all with dev->lock held except listen and close. */
int console_port_listen(struct console_port *p, cap_error_t *err);
/* Read the host end into the empty p->in: 1 got bytes, 0 none now, -1 it is gone. */
int console_port_host_read(struct console_port *p);
/* Send what is left of the held tx chain: 1 all of it, 0 the host end is full, -1 it is gone. */
int console_port_host_write(struct console_port *p);
/* Close the client (a named port's host end). */
void console_port_disconnect(struct console_port *p);
/* Watch the host end for input and/or room (a named port without a client: for a client). */
void console_port_poll(struct console_port *p, bool want_in, bool want_out);
/* The VM is going away: close everything and remove the socket file. */
void console_port_close(struct console_port *p);

#endif
