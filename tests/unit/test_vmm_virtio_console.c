/* virtio-console. Its control protocol (src/vmm/virtio/console_ctrl.c): the messages the
 * Linux driver sends are parsed once and checked against the ports, and the device owes
 * the driver exactly the messages that bring it to the ports' current state. Then the
 * named-port device itself, through the virtio core and the MMIO transport with real
 * guest memory, event loop and Unix socket: the handshake, data both ways and the
 * back-pressure on the socket while the guest has no rx buffers. */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define VIRTIO_MMIO_NO_LEGACY
#include <linux/virtio_mmio.h>

#include "check.h"
#include "machine.h"
#include "mmio_driver.h"
#include "common/util.h"
#include "vmm/device.h"
#include "vmm/virtio/console.h"
#include "vmm/vm.h"
#include "vmm/x86/layout.h"

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

/* The named-port device over MMIO, driven as the Linux driver drives it. */
#define DEV_NQ 4
#define DEV_QS 8
#define QBASE(q) (0x100000ULL + (uint64_t)(q) * 0x10000)
#define QBUF(q, i) (QBASE(q) + 0x4000 + (uint64_t)(i) * 0x1000)
#define PORT_NAME "org.test.port"

struct dmachine {
        struct machine_base b;
        struct vm_console_port port;
        int kick_fd[DEV_NQ];
        char dir[64], sock[96];
        uint16_t avail[DEV_NQ], used_seen[DEV_NQ];
};

static int dfake_ioeventfd_match(void *vm, int fd, uint64_t addr, uint32_t len, bool pio, uint64_t data, bool assign,
                                 cap_error_t *err)
{
        struct dmachine *m = vm;
        (void)addr, (void)len, (void)pio;
        if (data >= DEV_NQ)
                return cap_fail(err, 0, "unexpected queue %llu", (unsigned long long)data);
        if (assign)
                m->kick_fd[data] = fd;
        return 0;
}

static void dmachine_stop(struct dmachine *m)
{
        machine_base_destroy(&m->b);
        if (m->dir[0])
                rmdir(m->dir);
}

static int dmachine_start(struct dmachine *m, cap_error_t *err)
{
        memset(m, 0, sizeof(*m));
        snprintf(m->dir, sizeof(m->dir), "/tmp/capsule-console-XXXXXX");
        if (!mkdtemp(m->dir))
                return cap_fail(err, errno, "mkdtemp");
        snprintf(m->sock, sizeof(m->sock), "%s/port.sock", m->dir);
        if (machine_base_init(&m->b, 16ULL << 20, err) < 0)
                return -1;
        m->port = (struct vm_console_port){ .name = PORT_NAME, .socket = m->sock };
        m->b.cfg = (struct vm_config){ .console = VM_CONSOLE_NONE, .virtio_transport = VM_VIRTIO_MMIO,
                                       .console_ports = &m->port, .n_console_ports = 1 };
        m->b.ctx.ioeventfd_match = dfake_ioeventfd_match;
        m->b.ctx.vm = m;
        if (machine_base_start(&m->b, true, err) < 0)
                return -1;
        /* The driver: VERSION_1 and MULTIPORT, four queues in guest RAM, DRIVER_OK. */
        mmio_driver_features(&m->b.mmio, 1ULL << VIRTIO_CONSOLE_F_MULTIPORT);
        for (uint32_t q = 0; q < DEV_NQ; q++)
                mmio_queue_setup(&m->b.mmio, q, DEV_QS, QBASE(q), QBASE(q) + 0x1000, QBASE(q) + 0x2000);
        mmio_wr32(&m->b.mmio, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER |
                                                      VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
        return 0;
}

#define DMACHINE(m) MACHINE_UP(dmachine, m, dmachine_start, dmachine_stop)

static void *gpa(struct dmachine *m, uint64_t addr, size_t len)
{
        return guest_mem_ptr(&m->b.mem, addr, len);
}

/* Offer buffer i of queue q (len bytes, writable or holding data) and kick. */
static void offer(struct dmachine *m, uint32_t q, uint16_t i, uint32_t len, bool writable, const void *data)
{
        struct vring_desc *desc = gpa(m, QBASE(q) + i * sizeof(*desc), sizeof(*desc));
        *desc = (struct vring_desc){ .addr = QBUF(q, i), .len = len, .flags = writable ? VRING_DESC_F_WRITE : 0 };
        if (data)
                memcpy(gpa(m, QBUF(q, i), len), data, len);
        uint16_t *avail = gpa(m, QBASE(q) + 0x1000, 4 + 2 * DEV_QS);
        avail[2 + m->avail[q] % DEV_QS] = i;
        __atomic_store_n(&avail[1], ++m->avail[q], __ATOMIC_RELEASE);
        uint64_t one = 1;
        CHECK(write(m->kick_fd[q], &one, sizeof(one)) == sizeof(one));
}

/* The next used entry of queue q, waiting up to 5 s: its buffer's id, or -1. */
static int used(struct dmachine *m, uint32_t q, uint32_t *len)
{
        struct vring_used *u = gpa(m, QBASE(q) + 0x2000, sizeof(*u) + DEV_QS * sizeof(u->ring[0]));
        for (int ms = 0; ms < 5000; ms++) {
                if (__atomic_load_n(&u->idx, __ATOMIC_ACQUIRE) != m->used_seen[q]) {
                        struct vring_used_elem e = u->ring[m->used_seen[q]++ % DEV_QS];
                        *len = e.len;
                        return (int)e.id;
                }
                nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
        }
        return -1;
}

static void send_ctrl(struct dmachine *m, uint16_t i, uint32_t id, uint16_t event, uint16_t value)
{
        uint8_t msg[CONSOLE_CTRL_MSG_SIZE];
        console_ctrl_encode(&(struct console_ctrl_msg){ .id = id, .event = event, .value = value }, msg);
        offer(m, 3, i, sizeof(msg), false, msg);
}

/* The next control message to the driver (in ctrl rx buffer id). */
static bool recv_ctrl(struct dmachine *m, uint16_t event, uint16_t value, const char *name)
{
        uint32_t len;
        int id = used(m, 2, &len);
        if (id < 0 || len < CONSOLE_CTRL_MSG_SIZE)
                return false;
        struct console_ctrl_msg msg;
        const char *why;
        if (console_ctrl_parse(gpa(m, QBUF(2, id), CONSOLE_CTRL_MSG_SIZE), CONSOLE_CTRL_MSG_SIZE, &msg, &why) < 0)
                return false;
        size_t name_len = name ? strlen(name) : 0;
        return msg.id == 0 && msg.event == event && msg.value == value && len == CONSOLE_CTRL_MSG_SIZE + name_len &&
               (!name || memcmp(gpa(m, QBUF(2, id) + CONSOLE_CTRL_MSG_SIZE, name_len), name, name_len) == 0);
}

static int connect_client(struct dmachine *m)
{
        int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
        snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", m->sock);
        if (c >= 0 && connect(c, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
                close(c);
                return -1;
        }
        return c;
}

TEST(console_port_device_carries_bytes_both_ways_with_back_pressure)
{
        DMACHINE(m);
        struct stat st;
        CHECK(stat(m.sock, &st) == 0 && S_ISSOCK(st.st_mode));
        uint32_t len;
        /* Handshake: DEVICE_READY → PORT_ADD; PORT_READY → PORT_NAME. */
        for (uint16_t i = 0; i < 4; i++)
                offer(&m, 2, i, 4096, true, NULL);
        send_ctrl(&m, 0, VIRTIO_CONSOLE_BAD_ID, VIRTIO_CONSOLE_DEVICE_READY, 1);
        CHECK(used(&m, 3, &len) == 0);
        CHECK(recv_ctrl(&m, VIRTIO_CONSOLE_PORT_ADD, 1, NULL));
        send_ctrl(&m, 1, 0, VIRTIO_CONSOLE_PORT_READY, 1);
        CHECK(used(&m, 3, &len) == 1);
        CHECK(recv_ctrl(&m, VIRTIO_CONSOLE_PORT_NAME, 1, PORT_NAME));
        /* A client connects: the driver hears PORT_OPEN 1; the guest opens its end. */
        int c = connect_client(&m);
        CHECK(c >= 0 && fcntl(c, F_SETFL, O_NONBLOCK) == 0);
        bool opened = recv_ctrl(&m, VIRTIO_CONSOLE_PORT_OPEN, 1, NULL);
        send_ctrl(&m, 2, 0, VIRTIO_CONSOLE_PORT_OPEN, 1);
        bool guest_opened = used(&m, 3, &len) == 2;
        /* No rx buffers: capsule stops reading the socket, so the client's writes soon block. */
        static uint8_t pattern[1 << 20];
        for (size_t i = 0; i < sizeof(pattern); i++)
                pattern[i] = (uint8_t)(i % 251);
        size_t sent = 0;
        for (int quiet = 0; quiet < 50 && sent < sizeof(pattern);) {
                ssize_t n = send(c, pattern + sent, sizeof(pattern) - sent, MSG_NOSIGNAL);
                if (n > 0)
                        sent += (size_t)n, quiet = 0;
                else
                        quiet++, nanosleep(&(struct timespec){ .tv_nsec = 2000000 }, NULL);
        }
        /* Buffers arrive: the bytes go in, in order, and reading resumes. */
        for (uint16_t i = 0; i < DEV_QS; i++)
                offer(&m, 0, i, 4096, true, NULL);
        size_t got = 0;
        bool in_order = true;
        for (int i = 0; i < DEV_QS; i++) {
                int id = used(&m, 0, &len);
                if (id < 0)
                        break;
                const uint8_t *b = gpa(&m, QBUF(0, id), len);
                for (uint32_t j = 0; j < len; j++)
                        in_order = in_order && b[j] == (uint8_t)((got + j) % 251);
                got += len;
        }
        /* Guest to host. */
        offer(&m, 1, 0, 10, false, "hello host");
        bool tx_used = used(&m, 1, &len) == 0;
        char reply[64] = { 0 };
        ssize_t r = -1;
        for (int ms = 0; ms < 5000 && r < 0; ms++) {
                r = recv(c, reply, sizeof(reply) - 1, 0);
                if (r < 0)
                        nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
        }
        close(c);
        CHECK(opened && guest_opened);
        CHECK(sent < sizeof(pattern));
        CHECK(got == DEV_QS * 4096 && in_order);
        CHECK(tx_used && r == 10 && strcmp(reply, "hello host") == 0);
        /* The socket goes with the VM. */
        evloop_stop(&m.b.loop);
        devices_exit(&m.b.ctx);
        m.b.up = false;
        CHECK(stat(m.sock, &st) < 0 && errno == ENOENT);
}

TEST(console_port_device_reports_clients_coming_and_going)
{
        DMACHINE(m);
        uint32_t len;
        for (uint16_t i = 0; i < 6; i++)
                offer(&m, 2, i, 4096, true, NULL);
        send_ctrl(&m, 0, VIRTIO_CONSOLE_BAD_ID, VIRTIO_CONSOLE_DEVICE_READY, 1);
        CHECK(recv_ctrl(&m, VIRTIO_CONSOLE_PORT_ADD, 1, NULL));
        send_ctrl(&m, 1, 0, VIRTIO_CONSOLE_PORT_READY, 1);
        CHECK(recv_ctrl(&m, VIRTIO_CONSOLE_PORT_NAME, 1, PORT_NAME));
        int c = connect_client(&m);
        CHECK(c >= 0);
        /* A second client waits in the backlog while the first is served. */
        int c2 = connect_client(&m);
        bool open1 = recv_ctrl(&m, VIRTIO_CONSOLE_PORT_OPEN, 1, NULL);
        close(c);
        bool closed = recv_ctrl(&m, VIRTIO_CONSOLE_PORT_OPEN, 0, NULL);
        bool open2 = recv_ctrl(&m, VIRTIO_CONSOLE_PORT_OPEN, 1, NULL);
        if (c2 >= 0)
                close(c2);
        bool closed2 = recv_ctrl(&m, VIRTIO_CONSOLE_PORT_OPEN, 0, NULL);
        CHECK(used(&m, 3, &len) == 0 && used(&m, 3, &len) == 1);
        CHECK(c2 >= 0 && open1 && closed && open2 && closed2);
}

TEST(console_port_device_ignores_malformed_control_messages)
{
        DMACHINE(m);
        uint32_t len;
        offer(&m, 2, 0, 4096, true, NULL);
        /* Too short, too long, an unknown port, before DEVICE_READY: all consumed, none answered. */
        offer(&m, 3, 0, 7, false, "\0\0\0\0\0\0\0");
        offer(&m, 3, 1, 9, false, "\0\0\0\0\0\0\1\0\0");
        send_ctrl(&m, 2, 5, VIRTIO_CONSOLE_PORT_READY, 1);
        send_ctrl(&m, 3, 0, VIRTIO_CONSOLE_PORT_OPEN, 1);
        int ids[4];
        for (int i = 0; i < 4; i++)
                ids[i] = used(&m, 3, &len);
        /* The device still works: DEVICE_READY is answered. */
        send_ctrl(&m, 4, VIRTIO_CONSOLE_BAD_ID, VIRTIO_CONSOLE_DEVICE_READY, 1);
        CHECK(ids[0] == 0 && ids[1] == 1 && ids[2] == 2 && ids[3] == 3);
        CHECK(recv_ctrl(&m, VIRTIO_CONSOLE_PORT_ADD, 1, NULL));
}
