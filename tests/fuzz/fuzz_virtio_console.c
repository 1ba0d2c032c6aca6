/* virtio-console's control protocol (src/vmm/virtio/console_ctrl.c): what a hostile
 * driver can send on the control queue, interleaved with what the host does (clients
 * coming and going, the driver taking or not taking the device's messages, resets).
 *
 * The input is a sequence of records, each starting with an op byte:
 *   op % 4 == 0: a message from the driver: a length byte (mod 12) and that many bytes,
 *                parsed and applied as the device does (an 8-byte message whose event
 *                and id are picked from the op's high bits when op & 0x80, so valid
 *                messages are common);
 *   op % 4 == 1: the host end of port (op >> 2) % PORTS connects (op & 0x40) or goes;
 *   op % 4 == 2: the driver takes up to (op >> 2) of the messages the device owes it;
 *   op % 4 == 3: a device reset.
 * The invariants: the device only ever owes a bounded number of messages, each for a
 * port that exists, PORT_NAME carries that port's name, and every message encodes and
 * parses back to itself. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/virtio/console.h"

#define PORTS 4

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static void check(bool ok, const char *what)
{
        if (!ok) {
                fprintf(stderr, "fuzz_virtio_console: %s\n", what);
                abort();
        }
}

static void take_owed(struct console_ctrl *c, unsigned int max)
{
        struct console_ctrl_msg m;
        const char *name;
        for (unsigned int i = 0; i < max && console_ctrl_next(c, &m, &name); i++) {
                check(m.id < c->n_ports, "a message for a port that is not there");
                check((m.event == VIRTIO_CONSOLE_PORT_NAME) == (name != NULL), "a name on the wrong message");
                check(!name || name == c->ports[m.id].name, "another port's name");
                check(m.event == VIRTIO_CONSOLE_PORT_ADD || c->ports[m.id].ready, "a port message before PORT_READY");
                uint8_t wire[CONSOLE_CTRL_MSG_SIZE];
                struct console_ctrl_msg back;
                const char *why;
                console_ctrl_encode(&m, wire);
                check(console_ctrl_parse(wire, sizeof(wire), &back, &why) == 0 && back.id == m.id &&
                              back.event == m.event && back.value == m.value,
                      "a message does not round-trip");
                console_ctrl_sent(c, &m);
        }
}

static unsigned int count_owed(const struct console_ctrl *c)
{
        /* A copy: counting takes every message. */
        struct console_ctrl_port ports[PORTS];
        memcpy(ports, c->ports, sizeof(ports));
        struct console_ctrl copy = *c;
        copy.ports = ports;
        struct console_ctrl_msg m;
        const char *name;
        unsigned int n = 0;
        while (n <= 4 * PORTS && console_ctrl_next(&copy, &m, &name)) {
                console_ctrl_sent(&copy, &m);
                n++;
        }
        return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct console_ctrl_port ports[PORTS] = { { .name = "org.capsule.a" }, { .name = "b" }, { .name = "c" },
                                                  { .name = "d" } };
        struct console_ctrl c = { .n_ports = PORTS, .ports = ports };
        size_t i = 0;
        while (i < size) {
                uint8_t op = data[i++];
                switch (op % 4) {
                case 0: {
                        uint8_t buf[12] = { 0 };
                        size_t len = i < size ? data[i++] % sizeof(buf) : 0;
                        len = len < size - i ? len : size - i;
                        memcpy(buf, data + i, len);
                        i += len;
                        if (op & 0x80) {
                                struct console_ctrl_msg m = { .id = (op >> 2) % (PORTS + 1), .event = (op >> 4) % 8,
                                                              .value = len & 1 };
                                console_ctrl_encode(&m, buf);
                                len = CONSOLE_CTRL_MSG_SIZE;
                        }
                        struct console_ctrl_msg m;
                        const char *why = NULL;
                        int r = console_ctrl_parse(buf, len, &m, &why);
                        if (r == 0)
                                r = console_ctrl_handle(&c, &m, &why);
                        check(r == 0 || why, "a rejection without a reason");
                        break;
                }
                case 1:
                        console_ctrl_host_open(&c, (op >> 2) % PORTS, op & 0x40);
                        break;
                case 2:
                        take_owed(&c, op >> 2);
                        break;
                case 3:
                        console_ctrl_reset(&c);
                        break;
                }
                check(count_owed(&c) <= 4 * PORTS, "the device owes the driver too much");
        }
        take_owed(&c, 4 * PORTS + 1);
        return 0;
}
