/* virtio-console's control protocol (src/vmm/virtio/console_ctrl.c): the messages the
 * Linux driver sends are parsed once and checked against the ports, and the device owes
 * the driver exactly the messages that bring it to the ports' current state. */
#include <endian.h>
#include <string.h>

#include "check.h"
#include "vmm/virtio/console.h"

/* Three named ports: "alpha" (0), "beta" (1) and "gamma" (2). */
struct fixture {
        struct console_ctrl_port ports[3];
        struct console_ctrl c;
};

static void fixture_init(struct fixture *f)
{
        memset(f, 0, sizeof(*f));
        f->ports[0].name = "alpha";
        f->ports[1].name = "beta";
        f->ports[2].name = "gamma";
        f->c = (struct console_ctrl){ .n_ports = 3, .ports = f->ports };
}

static int send_msg(struct fixture *f, uint32_t id, uint16_t event, uint16_t value)
{
        const char *why = NULL;
        struct console_ctrl_msg m = { .id = id, .event = event, .value = value };
        int r = console_ctrl_handle(&f->c, &m, &why);
        return r < 0 && !why ? -2 : r; /* a rejection always says why */
}

/* Take the next owed message, as the device does when the driver gave it a buffer. */
static bool take(struct fixture *f, uint32_t id, uint16_t event, uint16_t value, const char *name)
{
        struct console_ctrl_msg m;
        const char *n;
        if (!console_ctrl_next(&f->c, &m, &n))
                return false;
        console_ctrl_sent(&f->c, &m);
        if (m.id != id || m.event != event || m.value != value)
                return false;
        return name ? n && strcmp(n, name) == 0 : n == NULL;
}

static bool nothing_owed(struct fixture *f)
{
        struct console_ctrl_msg m;
        const char *n;
        return !console_ctrl_next(&f->c, &m, &n);
}

/* DEVICE_READY, then every port added and made ready by the driver. */
static bool handshake(struct fixture *f)
{
        if (send_msg(f, VIRTIO_CONSOLE_BAD_ID, VIRTIO_CONSOLE_DEVICE_READY, 1) != 0)
                return false;
        for (uint32_t id = 0; id < 3; id++)
                if (!take(f, id, VIRTIO_CONSOLE_PORT_ADD, 1, NULL))
                        return false;
        if (!nothing_owed(f))
                return false;
        for (uint32_t id = 0; id < 3; id++)
                if (send_msg(f, id, VIRTIO_CONSOLE_PORT_READY, 1) != 0)
                        return false;
        return true;
}

TEST(console_parse_decodes_little_endian)
{
        uint8_t buf[8] = { 0x02, 0x01, 0x00, 0x00, 0x06, 0x00, 0x01, 0x00 };
        struct console_ctrl_msg m;
        const char *why;
        CHECK(console_ctrl_parse(buf, sizeof(buf), &m, &why) == 0);
        CHECK(m.id == 0x102 && m.event == VIRTIO_CONSOLE_PORT_OPEN && m.value == 1);
        uint8_t out[8];
        console_ctrl_encode(&m, out);
        CHECK(memcmp(out, buf, sizeof(buf)) == 0);
}

TEST(console_parse_rejects_other_lengths)
{
        uint8_t buf[9] = { 0 };
        struct console_ctrl_msg m;
        const char *why = NULL;
        CHECK(console_ctrl_parse(buf, 0, &m, &why) < 0 && why);
        CHECK(console_ctrl_parse(buf, 7, &m, &why) < 0);
        CHECK(console_ctrl_parse(buf, 9, &m, &why) < 0);
}

TEST(console_device_ready_adds_every_port_in_order)
{
        struct fixture f;
        fixture_init(&f);
        CHECK(nothing_owed(&f));
        CHECK(send_msg(&f, VIRTIO_CONSOLE_BAD_ID, VIRTIO_CONSOLE_DEVICE_READY, 1) == 0);
        CHECK(take(&f, 0, VIRTIO_CONSOLE_PORT_ADD, 1, NULL));
        CHECK(take(&f, 1, VIRTIO_CONSOLE_PORT_ADD, 1, NULL));
        CHECK(take(&f, 2, VIRTIO_CONSOLE_PORT_ADD, 1, NULL));
        CHECK(nothing_owed(&f));
}

TEST(console_port_ready_announces_the_name)
{
        struct fixture f;
        fixture_init(&f);
        CHECK(handshake(&f));
        /* No client yet, which the driver already assumes: no PORT_OPEN. */
        CHECK(take(&f, 0, VIRTIO_CONSOLE_PORT_NAME, 1, "alpha"));
        CHECK(take(&f, 1, VIRTIO_CONSOLE_PORT_NAME, 1, "beta"));
        CHECK(take(&f, 2, VIRTIO_CONSOLE_PORT_NAME, 1, "gamma"));
        CHECK(nothing_owed(&f));
}

TEST(console_host_client_is_reported_with_port_open)
{
        struct fixture f;
        fixture_init(&f);
        console_ctrl_host_open(&f.c, 1, true); /* connected before the guest was ready */
        CHECK(handshake(&f));
        CHECK(take(&f, 0, VIRTIO_CONSOLE_PORT_NAME, 1, "alpha"));
        CHECK(take(&f, 1, VIRTIO_CONSOLE_PORT_NAME, 1, "beta"));
        CHECK(take(&f, 1, VIRTIO_CONSOLE_PORT_OPEN, 1, NULL));
        CHECK(take(&f, 2, VIRTIO_CONSOLE_PORT_NAME, 1, "gamma"));
        CHECK(nothing_owed(&f));
        console_ctrl_host_open(&f.c, 1, false);
        CHECK(take(&f, 1, VIRTIO_CONSOLE_PORT_OPEN, 0, NULL));
        /* A client that came and went before the driver took a buffer: nothing to say. */
        console_ctrl_host_open(&f.c, 0, true);
        console_ctrl_host_open(&f.c, 0, false);
        CHECK(nothing_owed(&f));
        console_ctrl_host_open(&f.c, 7, true); /* no such port: nothing changes */
        CHECK(nothing_owed(&f));
}

TEST(console_guest_open_and_close_follow_port_open)
{
        struct fixture f;
        fixture_init(&f);
        CHECK(handshake(&f));
        CHECK(!f.ports[1].guest_open);
        CHECK(send_msg(&f, 1, VIRTIO_CONSOLE_PORT_OPEN, 1) == 0 && f.ports[1].guest_open);
        CHECK(!f.ports[0].guest_open && !f.ports[2].guest_open);
        CHECK(send_msg(&f, 1, VIRTIO_CONSOLE_PORT_OPEN, 0) == 0 && !f.ports[1].guest_open);
}

TEST(console_rejects_messages_that_do_not_fit)
{
        struct fixture f;
        fixture_init(&f);
        CHECK(send_msg(&f, 1, VIRTIO_CONSOLE_PORT_READY, 1) == -1);  /* before DEVICE_READY */
        CHECK(send_msg(&f, 0, VIRTIO_CONSOLE_DEVICE_READY, 0) == -1); /* the driver failed */
        CHECK(send_msg(&f, 0, VIRTIO_CONSOLE_DEVICE_READY, 1) == 0);
        CHECK(send_msg(&f, 0, VIRTIO_CONSOLE_DEVICE_READY, 1) == -1); /* twice */
        CHECK(send_msg(&f, 1, VIRTIO_CONSOLE_PORT_READY, 1) == -1);  /* PORT_ADD not sent yet */
        CHECK(take(&f, 0, VIRTIO_CONSOLE_PORT_ADD, 1, NULL));
        CHECK(take(&f, 1, VIRTIO_CONSOLE_PORT_ADD, 1, NULL));
        CHECK(take(&f, 2, VIRTIO_CONSOLE_PORT_ADD, 1, NULL));
        CHECK(send_msg(&f, 3, VIRTIO_CONSOLE_PORT_READY, 1) == -1);          /* no such port */
        CHECK(send_msg(&f, 0xffffffff, VIRTIO_CONSOLE_PORT_READY, 1) == -1);
        CHECK(send_msg(&f, 1, VIRTIO_CONSOLE_PORT_OPEN, 1) == -1);           /* not ready */
        CHECK(send_msg(&f, 1, VIRTIO_CONSOLE_PORT_READY, 2) == -1);          /* value */
        CHECK(send_msg(&f, 1, VIRTIO_CONSOLE_PORT_READY, 0) == -1);          /* the driver failed */
        CHECK(send_msg(&f, 1, VIRTIO_CONSOLE_PORT_ADD, 1) == -1);            /* device-to-driver events */
        CHECK(send_msg(&f, 1, VIRTIO_CONSOLE_PORT_NAME, 1) == -1);
        CHECK(send_msg(&f, 1, VIRTIO_CONSOLE_CONSOLE_PORT, 1) == -1);
        CHECK(send_msg(&f, 1, 0xffff, 1) == -1);
        CHECK(!f.ports[1].ready && !f.ports[1].guest_open);
        CHECK(send_msg(&f, 1, VIRTIO_CONSOLE_PORT_READY, 1) == 0);
        CHECK(send_msg(&f, 1, VIRTIO_CONSOLE_PORT_READY, 1) == -1);          /* twice */
        CHECK(take(&f, 1, VIRTIO_CONSOLE_PORT_NAME, 1, "beta"));
        CHECK(nothing_owed(&f));
}

TEST(console_repeated_messages_owe_nothing_more)
{
        struct fixture f;
        fixture_init(&f);
        CHECK(handshake(&f));
        for (int i = 0; i < 1000; i++) {
                send_msg(&f, 1, VIRTIO_CONSOLE_PORT_OPEN, (uint16_t)(i & 1));
                send_msg(&f, 1, VIRTIO_CONSOLE_PORT_READY, 1);
                send_msg(&f, 0, VIRTIO_CONSOLE_DEVICE_READY, 1);
        }
        int owed = 0;
        while (!nothing_owed(&f) && owed < 100) {
                struct console_ctrl_msg m;
                const char *n;
                console_ctrl_next(&f.c, &m, &n);
                console_ctrl_sent(&f.c, &m);
                owed++;
        }
        CHECK(owed == 3); /* the three names */
}

TEST(console_reset_starts_the_protocol_over_but_keeps_the_host_end)
{
        struct fixture f;
        fixture_init(&f);
        console_ctrl_host_open(&f.c, 0, true);
        CHECK(handshake(&f));
        CHECK(take(&f, 0, VIRTIO_CONSOLE_PORT_NAME, 1, "alpha"));
        CHECK(take(&f, 0, VIRTIO_CONSOLE_PORT_OPEN, 1, NULL));
        CHECK(send_msg(&f, 0, VIRTIO_CONSOLE_PORT_OPEN, 1) == 0);
        console_ctrl_reset(&f.c);
        CHECK(!f.c.device_ready && !f.ports[0].ready && !f.ports[0].guest_open && f.ports[0].host_open);
        CHECK(nothing_owed(&f));
        CHECK(send_msg(&f, 0, VIRTIO_CONSOLE_PORT_OPEN, 1) == -1);
        CHECK(handshake(&f));
        CHECK(take(&f, 0, VIRTIO_CONSOLE_PORT_NAME, 1, "alpha"));
        CHECK(take(&f, 0, VIRTIO_CONSOLE_PORT_OPEN, 1, NULL));
        CHECK(take(&f, 1, VIRTIO_CONSOLE_PORT_NAME, 1, "beta"));
        CHECK(take(&f, 2, VIRTIO_CONSOLE_PORT_NAME, 1, "gamma"));
        CHECK(nothing_owed(&f));
}
