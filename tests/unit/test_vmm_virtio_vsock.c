/* The vsock packet parser, credit math and the host muxer (vsock_mux.c) with real Unix
 * sockets and a fake event loop: every watched handler is called on each pump, which the
 * muxer must take as it takes spurious edge-triggered events. */
#include <errno.h>
#include <linux/virtio_vsock.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "check.h"
#include "vsock_host.h"
#include "common/util.h"
#include "vmm/virtio/vsock_mux.h"
#include "vmm/virtio/vsock_pkt.h"

#define GUEST_CID 3

struct env {
        char dir[32];
        char path[48];
        struct vsock_mux *mux;
};

static bool env_init(struct env *e)
{
        vsock_fake_reset();
        e->mux = NULL;
        strcpy(e->dir, "/tmp/capsule-vsock-XXXXXX");
        if (!mkdtemp(e->dir))
                return false;
        snprintf(e->path, sizeof(e->path), "%s/v.sock", e->dir);
        cleanup_error cap_error_t err = NULL;
        return vsock_mux_create(&e->mux, e->path, GUEST_CID, &vsock_fake_host, &err) == 0;
}

static void env_fini(struct env *e)
{
        vsock_mux_destroy(e->mux);
        cleanup_error cap_error_t err = NULL;
        rm_rf(e->dir, &err);
}

/* A fresh muxer e, gone (with its directory) at the end of the test. */
#define ENV(e)                                                          \
        struct env e __attribute__((cleanup(env_fini)));                \
        CHECK(env_init(&e))

static int unix_listen(const struct env *e, uint32_t port)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s_%u", e->path, port);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 1024) < 0)
                return -1;
        return fd;
}

static int unix_connect(const char *path)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        if (strlen(path) >= sizeof(sa.sun_path))
                return -1;
        strcpy(sa.sun_path, path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                return -1;
        return fd;
}

static struct vsock_pkt guest_pkt(uint16_t op, uint32_t src_port, uint32_t dst_port)
{
        return (struct vsock_pkt){ .src_cid = GUEST_CID, .dst_cid = VSOCK_HOST_CID, .src_port = src_port,
                                   .dst_port = dst_port, .type = VIRTIO_VSOCK_TYPE_STREAM, .op = op,
                                   .buf_alloc = 256 * 1024 };
}

static void tx(struct env *e, struct vsock_pkt pkt, const void *data, uint32_t len)
{
        struct iovec iov = { (void *)data, len };
        pkt.len = len;
        vsock_mux_tx(e->mux, &pkt, &iov, len ? 1 : 0);
}

static uint8_t rx_data[VSOCK_MAX_PAYLOAD];

/* The next packet for the guest: 1 got one, 0 none. Payload lands in rx_data. */
static int rx(struct env *e, struct vsock_pkt *pkt)
{
        struct iovec iov[2] = { { rx_data, 100 }, { rx_data + 100, 4096 - 100 } };
        return vsock_mux_rx(e->mux, pkt, iov, 2, 4096);
}

static void hdr_bytes(uint8_t *hdr, uint64_t src_cid, uint64_t dst_cid, uint32_t len, uint16_t type, uint16_t op)
{
        struct vsock_pkt p = { .src_cid = src_cid, .dst_cid = dst_cid, .src_port = 1025, .dst_port = 80,
                               .len = len, .type = type, .op = op, .flags = 3, .buf_alloc = 4096, .fwd_cnt = 7 };
        vsock_pkt_encode(&p, hdr);
}

TEST(parse_decodes_a_valid_rw)
{
        uint8_t hdr[VSOCK_HDR_LEN];
        hdr_bytes(hdr, GUEST_CID, 2, 10, VIRTIO_VSOCK_TYPE_STREAM, VIRTIO_VSOCK_OP_RW);
        struct vsock_pkt p;
        CHECK(vsock_pkt_parse(hdr, 10, GUEST_CID, &p) == VSOCK_PKT_OK);
        CHECK(p.src_port == 1025 && p.dst_port == 80 && p.len == 10 && p.flags == 3);
        CHECK(p.buf_alloc == 4096 && p.fwd_cnt == 7 && p.op == VIRTIO_VSOCK_OP_RW);
        /* Little-endian on the wire: the length's low byte is at offset 24. */
        CHECK(hdr[24] == 10 && hdr[25] == 0);
}

TEST(parse_drops_foreign_addresses)
{
        uint8_t hdr[VSOCK_HDR_LEN];
        struct vsock_pkt p;
        hdr_bytes(hdr, GUEST_CID + 1, 2, 0, VIRTIO_VSOCK_TYPE_STREAM, VIRTIO_VSOCK_OP_REQUEST);
        CHECK(vsock_pkt_parse(hdr, 0, GUEST_CID, &p) == VSOCK_PKT_DROP);
        hdr_bytes(hdr, GUEST_CID, 1, 0, VIRTIO_VSOCK_TYPE_STREAM, VIRTIO_VSOCK_OP_REQUEST);
        CHECK(vsock_pkt_parse(hdr, 0, GUEST_CID, &p) == VSOCK_PKT_DROP);
        hdr_bytes(hdr, GUEST_CID | (1ULL << 32), 2, 0, VIRTIO_VSOCK_TYPE_STREAM, VIRTIO_VSOCK_OP_REQUEST);
        CHECK(vsock_pkt_parse(hdr, 0, GUEST_CID, &p) == VSOCK_PKT_DROP);
}

TEST(parse_resets_malformed_packets)
{
        uint8_t hdr[VSOCK_HDR_LEN];
        struct vsock_pkt p;
        hdr_bytes(hdr, GUEST_CID, 2, 11, VIRTIO_VSOCK_TYPE_STREAM, VIRTIO_VSOCK_OP_RW);
        CHECK(vsock_pkt_parse(hdr, 10, GUEST_CID, &p) == VSOCK_PKT_RESET); /* longer than the chain */
        hdr_bytes(hdr, GUEST_CID, 2, VSOCK_MAX_PAYLOAD + 1, VIRTIO_VSOCK_TYPE_STREAM, VIRTIO_VSOCK_OP_RW);
        CHECK(vsock_pkt_parse(hdr, 1 << 20, GUEST_CID, &p) == VSOCK_PKT_RESET);
        hdr_bytes(hdr, GUEST_CID, 2, 0, VIRTIO_VSOCK_TYPE_SEQPACKET, VIRTIO_VSOCK_OP_REQUEST);
        CHECK(vsock_pkt_parse(hdr, 0, GUEST_CID, &p) == VSOCK_PKT_RESET);
        hdr_bytes(hdr, GUEST_CID, 2, 0, VIRTIO_VSOCK_TYPE_STREAM, VIRTIO_VSOCK_OP_INVALID);
        CHECK(vsock_pkt_parse(hdr, 0, GUEST_CID, &p) == VSOCK_PKT_RESET);
        hdr_bytes(hdr, GUEST_CID, 2, 0, VIRTIO_VSOCK_TYPE_STREAM, VIRTIO_VSOCK_OP_CREDIT_REQUEST + 1);
        CHECK(vsock_pkt_parse(hdr, 0, GUEST_CID, &p) == VSOCK_PKT_RESET);
        hdr_bytes(hdr, GUEST_CID, 2, 4, VIRTIO_VSOCK_TYPE_STREAM, VIRTIO_VSOCK_OP_SHUTDOWN);
        CHECK(vsock_pkt_parse(hdr, 4, GUEST_CID, &p) == VSOCK_PKT_RESET); /* control packets carry nothing */
        CHECK(p.src_port == 1025 && p.dst_port == 80); /* enough to name the connection */
}

TEST(credit_math)
{
        CHECK(vsock_credit(4096, 0, 0) == 4096);
        CHECK(vsock_credit(4096, 100, 4096) == 100);
        CHECK(vsock_credit(4096, 0, 4096) == 0);
        CHECK(vsock_credit(4096, 0xffffff00u, 0x100) == 4096 - 0x200); /* counters wrap */
        CHECK(vsock_credit(4096, 0, 5000) == 0);                         /* more in flight than the buffer */
        CHECK(vsock_credit(4096, 10, 5) == 0);                           /* fwd_cnt ahead of what was sent */
}

TEST(guest_connect_to_absent_port_is_reset)
{
        ENV(e);
        tx(&e, guest_pkt(VIRTIO_VSOCK_OP_REQUEST, 1025, 5000), NULL, 0);
        struct vsock_pkt p;
        CHECK(rx(&e, &p) == 1);
        CHECK(p.op == VIRTIO_VSOCK_OP_RST && p.src_port == 5000 && p.dst_port == 1025);
        CHECK(p.src_cid == VSOCK_HOST_CID && p.dst_cid == GUEST_CID);
        CHECK(rx(&e, &p) == 0);
        CHECK(vsock_mux_conn_count(e.mux) == 0);
}

/* A guest → host connection, accepted by the test: returns the host end. */
static int guest_connected(struct env *e, int lfd, uint32_t gport, uint32_t hport, uint32_t buf_alloc)
{
        struct vsock_pkt req = guest_pkt(VIRTIO_VSOCK_OP_REQUEST, gport, hport);
        req.buf_alloc = buf_alloc;
        tx(e, req, NULL, 0);
        struct vsock_pkt p;
        if (rx(e, &p) != 1 || p.op != VIRTIO_VSOCK_OP_RESPONSE || p.src_port != hport || p.dst_port != gport ||
            p.buf_alloc != VSOCK_BUF_ALLOC)
                return -1;
        vsock_fake_pump();
        return accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
}

/* ENV(e), and the guest's port 1025 connected to host port 5000: lfd listens, host is the
 * host's end. */
#define CONNECTED_ENV(e, lfd, host)                                                     \
        ENV(e);                                                                         \
        cleanup_close int lfd = unix_listen(&e, 5000);                                  \
        cleanup_close int host = guest_connected(&e, lfd, 1025, 5000, 4096);            \
        CHECK(host >= 0)

TEST(guest_connect_bridges_both_ways_within_credit)
{
        ENV(e);
        cleanup_close int lfd = unix_listen(&e, 5000);
        CHECK(lfd >= 0);
        cleanup_close int host = guest_connected(&e, lfd, 1025, 5000, 3);
        CHECK(host >= 0);
        struct vsock_pkt rw = guest_pkt(VIRTIO_VSOCK_OP_RW, 1025, 5000);
        rw.buf_alloc = 3;
        tx(&e, rw, "hello", 5);
        char buf[16];
        CHECK(read(host, buf, sizeof(buf)) == 5 && memcmp(buf, "hello", 5) == 0);
        CHECK(write(host, "world", 5) == 5);
        vsock_fake_pump();
        CHECK(vsock_wakes > 0);
        struct vsock_pkt p;
        CHECK(rx(&e, &p) == 1);
        /* The guest gave 3 bytes of credit. */
        CHECK(p.op == VIRTIO_VSOCK_OP_RW && p.len == 3 && memcmp(rx_data, "wor", 3) == 0);
        CHECK(p.fwd_cnt == 5);
        CHECK(rx(&e, &p) == 0);
        struct vsock_pkt up = guest_pkt(VIRTIO_VSOCK_OP_CREDIT_UPDATE, 1025, 5000);
        up.buf_alloc = 3;
        up.fwd_cnt = 3;
        tx(&e, up, NULL, 0);
        CHECK(rx(&e, &p) == 1);
        CHECK(p.op == VIRTIO_VSOCK_OP_RW && p.len == 2 && memcmp(rx_data, "ld", 2) == 0);
        /* A credit request is answered with our numbers. */
        tx(&e, guest_pkt(VIRTIO_VSOCK_OP_CREDIT_REQUEST, 1025, 5000), NULL, 0);
        CHECK(rx(&e, &p) == 1);
        CHECK(p.op == VIRTIO_VSOCK_OP_CREDIT_UPDATE && p.fwd_cnt == 5 && p.buf_alloc == VSOCK_BUF_ALLOC);
}

TEST(guest_is_told_credit_as_the_host_reads)
{
        CONNECTED_ENV(e, lfd, host);
        static uint8_t chunk[VSOCK_MAX_PAYLOAD];
        memset(chunk, 'x', sizeof(chunk));
        struct vsock_pkt p;
        uint32_t sent = 0;
        /* A quarter of our buffer passed to the host: a CREDIT_UPDATE follows. */
        while (sent < VSOCK_BUF_ALLOC / 4) {
                CHECK(rx(&e, &p) == 0);
                tx(&e, guest_pkt(VIRTIO_VSOCK_OP_RW, 1025, 5000), chunk, 16384);
                sent += 16384;
                for (ssize_t got = 0; got < 16384;) {
                        ssize_t r = read(host, chunk, 16384 - (size_t)got);
                        CHECK(r > 0);
                        got += r;
                }
        }
        CHECK(rx(&e, &p) == 1);
        CHECK(p.op == VIRTIO_VSOCK_OP_CREDIT_UPDATE && p.fwd_cnt == sent);
}

TEST(guest_overrunning_credit_is_reset)
{
        CONNECTED_ENV(e, lfd, host);
        static uint8_t chunk[VSOCK_MAX_PAYLOAD];
        /* The host never reads: what its socket does not take is buffered up to our credit,
         * and the guest sending past it loses the connection. */
        for (int i = 0; i < 16 && vsock_mux_conn_count(e.mux) == 1; i++)
                tx(&e, guest_pkt(VIRTIO_VSOCK_OP_RW, 1025, 5000), chunk, sizeof(chunk));
        CHECK(vsock_mux_conn_count(e.mux) == 0);
        struct vsock_pkt p;
        bool reset = false;
        while (rx(&e, &p) == 1)
                reset |= p.op == VIRTIO_VSOCK_OP_RST && p.dst_port == 1025;
        CHECK(reset);
}

TEST(connection_table_is_bounded)
{
        ENV(e);
        cleanup_close int lfd = unix_listen(&e, 6000);
        CHECK(lfd >= 0);
        for (uint32_t i = 0; i < VSOCK_CONN_MAX + 44; i++)
                tx(&e, guest_pkt(VIRTIO_VSOCK_OP_REQUEST, 2000 + i, 6000), NULL, 0);
        CHECK(vsock_mux_conn_count(e.mux) == VSOCK_CONN_MAX);
        unsigned int responses = 0, resets = 0;
        struct vsock_pkt p;
        while (rx(&e, &p) == 1) {
                responses += p.op == VIRTIO_VSOCK_OP_RESPONSE;
                resets += p.op == VIRTIO_VSOCK_OP_RST;
        }
        CHECK(responses == VSOCK_CONN_MAX && resets == 44);
        /* The guest's RSTs free the slots. */
        for (uint32_t i = 0; i < VSOCK_CONN_MAX; i++)
                tx(&e, guest_pkt(VIRTIO_VSOCK_OP_RST, 2000 + i, 6000), NULL, 0);
        CHECK(vsock_mux_conn_count(e.mux) == 0);
        CHECK(rx(&e, &p) == 0);
}

/* A host client that wrote line; returns its fd after the muxer read it. */
static int host_client(struct env *e, const char *line, size_t len)
{
        int fd = unix_connect(e->path);
        if (fd < 0 || write(fd, line, len) != (ssize_t)len)
                return -1;
        vsock_fake_pump(); /* accept */
        vsock_fake_pump(); /* read the line */
        return fd;
}

TEST(host_connect_handshake_and_data)
{
        ENV(e);
        static const char line[] = "CONNECT 1234\nearly";
        cleanup_close int cl = host_client(&e, line, sizeof(line) - 1);
        CHECK(cl >= 0);
        struct vsock_pkt p;
        CHECK(rx(&e, &p) == 1);
        CHECK(p.op == VIRTIO_VSOCK_OP_REQUEST && p.dst_port == 1234 && p.src_port >= (1u << 30));
        CHECK(p.dst_cid == GUEST_CID);
        uint32_t hport = p.src_port;
        CHECK(rx(&e, &p) == 0); /* nothing bridged before the guest accepts */
        tx(&e, guest_pkt(VIRTIO_VSOCK_OP_RESPONSE, 1234, hport), NULL, 0);
        char buf[64] = { 0 }, want[32];
        snprintf(want, sizeof(want), "OK %u\n", hport);
        CHECK(read(cl, buf, sizeof(buf) - 1) == (ssize_t)strlen(want));
        CHECK_STR(buf, want);
        vsock_fake_pump();
        CHECK(rx(&e, &p) == 1);
        CHECK(p.op == VIRTIO_VSOCK_OP_RW && p.len == 5 && memcmp(rx_data, "early", 5) == 0);
        tx(&e, guest_pkt(VIRTIO_VSOCK_OP_RW, 1234, hport), "back", 4);
        CHECK(read(cl, buf, sizeof(buf)) == 4 && memcmp(buf, "back", 4) == 0);
}

TEST(host_connect_refused_closes_the_client)
{
        ENV(e);
        cleanup_close int cl = host_client(&e, "CONNECT 99\n", 11);
        CHECK(cl >= 0);
        struct vsock_pkt p;
        CHECK(rx(&e, &p) == 1 && p.op == VIRTIO_VSOCK_OP_REQUEST);
        tx(&e, guest_pkt(VIRTIO_VSOCK_OP_RST, 99, p.src_port), NULL, 0);
        char buf[8];
        CHECK(read(cl, buf, sizeof(buf)) == 0);
        CHECK(vsock_mux_conn_count(e.mux) == 0);
}

TEST(host_bad_connect_lines_are_closed_silently)
{
        static const char *const bad[] = {
                "CONNECT abc\n", "CONNECT 4294967296\n", "CONNECT 4294967295\n", "CONNECT 012\n", "CONNECT \n",
                "connect 5\n", "CONNECT 5 \n", "CONNECT 1234567890123456789012345678901234567890",
        };
        ENV(e);
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                cleanup_close int cl = host_client(&e, bad[i], strlen(bad[i]));
                CHECK(cl >= 0);
                char buf[8];
                /* EOF, or ECONNRESET where the muxer closed with the rest of a long line unread */
                CHECK(read(cl, buf, sizeof(buf)) <= 0);
                struct vsock_pkt p;
                CHECK(rx(&e, &p) == 0);
        }
        /* A line in pieces is read to its end. */
        cleanup_close int cl = host_client(&e, "CONN", 4);
        CHECK(cl >= 0 && write(cl, "ECT 7\n", 6) == 6);
        vsock_fake_pump();
        struct vsock_pkt p;
        CHECK(rx(&e, &p) == 1 && p.op == VIRTIO_VSOCK_OP_REQUEST && p.dst_port == 7);
}

TEST(send_shutdowns_both_ways)
{
        CONNECTED_ENV(e, lfd, host);
        struct vsock_pkt sd = guest_pkt(VIRTIO_VSOCK_OP_SHUTDOWN, 1025, 5000);
        sd.flags = VIRTIO_VSOCK_SHUTDOWN_SEND;
        tx(&e, sd, NULL, 0);
        char buf[8];
        CHECK(read(host, buf, sizeof(buf)) == 0); /* the guest's SEND shutdown is the host's EOF */
        CHECK(shutdown(host, SHUT_WR) == 0);
        vsock_fake_pump();
        struct vsock_pkt p;
        CHECK(rx(&e, &p) == 1);
        CHECK(p.op == VIRTIO_VSOCK_OP_SHUTDOWN && p.flags == VIRTIO_VSOCK_SHUTDOWN_SEND);
}

TEST(guest_receive_shutdown_stops_the_host_writer)
{
        CONNECTED_ENV(e, lfd, host);
        struct vsock_pkt sd = guest_pkt(VIRTIO_VSOCK_OP_SHUTDOWN, 1025, 5000);
        sd.flags = VIRTIO_VSOCK_SHUTDOWN_RCV;
        tx(&e, sd, NULL, 0);
        CHECK(send(host, "x", 1, MSG_NOSIGNAL) == -1 && errno == EPIPE);
        vsock_fake_pump();
        struct vsock_pkt p;
        CHECK(rx(&e, &p) == 0);
        /* The guest still sends. */
        tx(&e, guest_pkt(VIRTIO_VSOCK_OP_RW, 1025, 5000), "abc", 3);
        char buf[8];
        CHECK(read(host, buf, sizeof(buf)) == 3);
        sd.flags = VIRTIO_VSOCK_SHUTDOWN_SEND | VIRTIO_VSOCK_SHUTDOWN_RCV;
        tx(&e, sd, NULL, 0);
        CHECK(rx(&e, &p) == 1 && p.op == VIRTIO_VSOCK_OP_RST);
        CHECK(vsock_mux_conn_count(e.mux) == 0);
}

TEST(reset_closes_every_connection_and_destroy_removes_the_socket)
{
        CONNECTED_ENV(e, lfd, host);
        cleanup_close int cl = host_client(&e, "CONNECT 1\n", 10);
        CHECK(vsock_mux_conn_count(e.mux) == 2);
        void *stale = vsock_watches[vsock_n_watches - 1].arg;
        evloop_fn stale_fn = vsock_watches[vsock_n_watches - 1].fn;
        vsock_mux_reset(e.mux);
        CHECK(vsock_mux_conn_count(e.mux) == 0);
        stale_fn(stale, EPOLLIN); /* an event fetched before the reset */
        char buf[8];
        CHECK(read(host, buf, sizeof(buf)) == 0);
        CHECK(read(cl, buf, sizeof(buf)) == 0);
        struct stat st;
        CHECK(stat(e.path, &st) == 0);
        /* A second device on the same path is refused, naming the setting. */
        struct vsock_mux *other;
        cleanup_error cap_error_t err = NULL;
        CHECK(vsock_mux_create(&other, e.path, GUEST_CID, &vsock_fake_host, &err) < 0);
        CHECK(err && strstr(err->msg, "vsock: socket ") && strstr(err->msg, "in use"));
        vsock_mux_destroy(e.mux);
        CHECK(stat(e.path, &st) < 0 && errno == ENOENT);
        e.mux = NULL;
}

TEST(invalid_packet_resets_its_connection)
{
        CONNECTED_ENV(e, lfd, host);
        struct vsock_pkt bad = guest_pkt(VIRTIO_VSOCK_OP_RW, 1025, 5000);
        bad.type = VIRTIO_VSOCK_TYPE_SEQPACKET;
        vsock_mux_tx_invalid(e.mux, &bad);
        struct vsock_pkt p;
        CHECK(rx(&e, &p) == 1 && p.op == VIRTIO_VSOCK_OP_RST && p.dst_port == 1025);
        char buf[8];
        CHECK(read(host, buf, sizeof(buf)) == 0);
        /* Packets for no connection get an RST, an RST gets nothing. */
        tx(&e, guest_pkt(VIRTIO_VSOCK_OP_RW, 7, 8), "x", 1);
        CHECK(rx(&e, &p) == 1 && p.op == VIRTIO_VSOCK_OP_RST && p.src_port == 8 && p.dst_port == 7);
        tx(&e, guest_pkt(VIRTIO_VSOCK_OP_RST, 7, 8), NULL, 0);
        CHECK(rx(&e, &p) == 0);
}

static uint8_t chunk[VSOCK_MAX_PAYLOAD];

/* Our whole credit, sent by the guest while the host does not read: more than the host
 * socket takes, so the muxer buffers the rest. */
static void guest_fill_credit(struct env *e)
{
        for (size_t i = 0; i < sizeof(chunk); i++)
                chunk[i] = (uint8_t)(i % 251);
        for (int i = 0; i < VSOCK_BUF_ALLOC / VSOCK_MAX_PAYLOAD; i++)
                tx(e, guest_pkt(VIRTIO_VSOCK_OP_RW, 1025, 5000), chunk, sizeof(chunk));
}

/* Read the host end until EOF, pumping the muxer between reads: the bytes read, or -1 if
 * they were not the guest's in order. */
static long host_read_all(int host, bool pumping)
{
        static uint8_t buf[65536];
        size_t total = 0;
        for (;;) {
                ssize_t r = read(host, buf, sizeof(buf));
                if (r < 0)
                        return -1;
                if (r == 0)
                        return (long)total;
                for (ssize_t i = 0; i < r; i++)
                        if (buf[i] != (uint8_t)((total + (size_t)i) % sizeof(chunk) % 251))
                                return -1;
                total += (size_t)r;
                if (pumping)
                        vsock_fake_pump();
        }
}

TEST(guest_close_still_delivers_buffered_bytes)
{
        CONNECTED_ENV(e, lfd, host);
        guest_fill_credit(&e);
        CHECK(vsock_mux_conn_count(e.mux) == 1);
        struct vsock_pkt sd = guest_pkt(VIRTIO_VSOCK_OP_SHUTDOWN, 1025, 5000);
        sd.flags = VIRTIO_VSOCK_SHUTDOWN_SEND | VIRTIO_VSOCK_SHUTDOWN_RCV;
        tx(&e, sd, NULL, 0);
        struct vsock_pkt p;
        CHECK(rx(&e, &p) == 1 && p.op == VIRTIO_VSOCK_OP_RST); /* the guest's close completes at once */
        CHECK(vsock_mux_conn_count(e.mux) == 1);                /* the host's bytes are still on their way */
        CHECK(host_read_all(host, true) == VSOCK_BUF_ALLOC);
        CHECK(vsock_mux_conn_count(e.mux) == 0);
}

/* Linux's guest half-closes, then ends its close with an RST when ours is late (or after
 * the host shut down): the RST must not drop what the host has not read yet. */
TEST(guest_reset_still_delivers_buffered_bytes)
{
        CONNECTED_ENV(e, lfd, host);
        guest_fill_credit(&e);
        struct vsock_pkt sd = guest_pkt(VIRTIO_VSOCK_OP_SHUTDOWN, 1025, 5000);
        sd.flags = VIRTIO_VSOCK_SHUTDOWN_SEND;
        tx(&e, sd, NULL, 0);
        tx(&e, guest_pkt(VIRTIO_VSOCK_OP_RST, 1025, 5000), NULL, 0);
        struct vsock_pkt p;
        CHECK(rx(&e, &p) == 0); /* an RST is not answered */
        CHECK(vsock_mux_conn_count(e.mux) == 1);
        /* The guest's port is free again at once: a new connection from it is a new one. */
        cleanup_close int again = guest_connected(&e, lfd, 1025, 5000, 4096);
        CHECK(again >= 0);
        CHECK(host_read_all(host, true) == VSOCK_BUF_ALLOC);
        CHECK(vsock_mux_conn_count(e.mux) == 1);
}

/* Linux resets every virtio device as it powers off: what the guest sent before still
 * reaches the host, then the connection closes; one with nothing pending closes at once. */
TEST(device_reset_still_delivers_buffered_bytes)
{
        CONNECTED_ENV(e, lfd, host);
        cleanup_close int idle = guest_connected(&e, lfd, 1026, 5000, 4096);
        CHECK(idle >= 0);
        guest_fill_credit(&e);
        vsock_mux_reset(e.mux);
        struct vsock_pkt p;
        CHECK(rx(&e, &p) == 0); /* the guest is told nothing: it forgot its connections */
        CHECK(vsock_mux_conn_count(e.mux) == 1);
        char b;
        CHECK(read(idle, &b, 1) == 0);
        CHECK(host_read_all(host, true) == VSOCK_BUF_ALLOC);
        CHECK(vsock_mux_conn_count(e.mux) == 0);
}

static void *host_reader(void *arg)
{
        return (void *)host_read_all(*(int *)arg, false);
}

/* A VM that stops (the guest powered off right after its last write) lets the host peers
 * take the bytes still buffered for them; one that does not read is given up on in time. */
TEST(vm_stop_lingers_until_the_host_took_every_byte)
{
        CONNECTED_ENV(e, lfd, host);
        guest_fill_credit(&e);
        pthread_t reader;
        CHECK(pthread_create(&reader, NULL, host_reader, &host) == 0);
        long long t0 = now_ms();
        vsock_mux_linger(e.mux, 60000);
        CHECK(now_ms() - t0 < 30000);
        vsock_mux_reset(e.mux);
        void *got;
        CHECK(pthread_join(reader, &got) == 0);
        CHECK((long)got == VSOCK_BUF_ALLOC);

        cleanup_close int idle = guest_connected(&e, lfd, 1026, 5000, 4096);
        CHECK(idle >= 0);
        for (int i = 0; i < VSOCK_BUF_ALLOC / VSOCK_MAX_PAYLOAD; i++)
                tx(&e, guest_pkt(VIRTIO_VSOCK_OP_RW, 1026, 5000), chunk, sizeof(chunk));
        t0 = now_ms();
        vsock_mux_linger(e.mux, 200);
        long long waited = now_ms() - t0;
        CHECK(waited >= 190 && waited < 5000);
}

static struct virtq_chain chain;
static struct iovec scratch[VIRTQ_MAX_SIZE];

/* A chain of buffers cut from data at the given lengths: n_out readable, the rest writable. */
static void chain_set(uint8_t *data, const size_t *lens, unsigned int n, unsigned int n_out)
{
        memset(&chain, 0, sizeof(chain));
        for (unsigned int i = 0; i < n; i++) {
                chain.iov[i] = (struct iovec){ data, lens[i] };
                data += lens[i];
                if (i < n_out)
                        chain.out_len += (uint32_t)lens[i];
                else
                        chain.in_len += (uint32_t)lens[i];
        }
        chain.n_out = n_out;
        chain.n_in = n - n_out;
}

TEST(tx_chain_header_split_across_buffers)
{
        CONNECTED_ENV(e, lfd, host);
        uint8_t pkt_bytes[VSOCK_HDR_LEN + 5];
        struct vsock_pkt p = guest_pkt(VIRTIO_VSOCK_OP_RW, 1025, 5000);
        p.len = 5;
        vsock_pkt_encode(&p, pkt_bytes);
        memcpy(pkt_bytes + VSOCK_HDR_LEN, "split", 5);
        /* Header in three pieces, the payload starting inside the last one. */
        chain_set(pkt_bytes, (const size_t[]){ 10, 20, 16, 3 }, 4, 4);
        vsock_chain_tx(e.mux, GUEST_CID, &chain, scratch);
        char buf[8];
        CHECK(read(host, buf, sizeof(buf)) == 5 && memcmp(buf, "split", 5) == 0);
        /* Shorter than a header: nothing happens; a length past the chain: reset. */
        chain_set(pkt_bytes, (const size_t[]){ 43 }, 1, 1);
        vsock_chain_tx(e.mux, GUEST_CID, &chain, scratch);
        CHECK(rx(&e, &p) == 0);
        chain_set(pkt_bytes, (const size_t[]){ VSOCK_HDR_LEN + 4 }, 1, 1);
        vsock_chain_tx(e.mux, GUEST_CID, &chain, scratch);
        CHECK(rx(&e, &p) == 1 && p.op == VIRTIO_VSOCK_OP_RST && p.dst_port == 1025);
        CHECK(vsock_mux_conn_count(e.mux) == 0);
}

TEST(rx_chain_layout)
{
        CONNECTED_ENV(e, lfd, host);
        CHECK(write(host, "payload", 7) == 7);
        vsock_fake_pump();
        static uint8_t mem[256];
        uint32_t written;
        /* Not rx buffers: a readable part, or no room past the header. */
        chain_set(mem, (const size_t[]){ 8, 100 }, 2, 1);
        CHECK(vsock_chain_rx(e.mux, &chain, scratch, &written) == -1 && written == 0);
        chain_set(mem, (const size_t[]){ 20, 24 }, 2, 0);
        CHECK(vsock_chain_rx(e.mux, &chain, scratch, &written) == -1);
        /* Header across two buffers, payload after it, limited to the room there is. */
        memset(mem, 0xee, sizeof(mem));
        chain_set(mem, (const size_t[]){ 30, 18, 1 }, 3, 0);
        CHECK(vsock_chain_rx(e.mux, &chain, scratch, &written) == 1);
        CHECK(written == VSOCK_HDR_LEN + 5);
        struct vsock_pkt p;
        CHECK(vsock_pkt_parse(mem, 5, VSOCK_HOST_CID, &p) == VSOCK_PKT_DROP); /* host → guest addresses */
        CHECK(p.op == VIRTIO_VSOCK_OP_RW && p.len == 5 && p.dst_cid == GUEST_CID && p.dst_port == 1025);
        CHECK(memcmp(mem + VSOCK_HDR_LEN, "paylo", 5) == 0 && mem[VSOCK_HDR_LEN + 5] == 0xee);
        chain_set(mem, (const size_t[]){ 100 }, 1, 0);
        CHECK(vsock_chain_rx(e.mux, &chain, scratch, &written) == 1 && written == VSOCK_HDR_LEN + 2);
        CHECK(memcmp(mem + VSOCK_HDR_LEN, "ad", 2) == 0);
        CHECK(vsock_chain_rx(e.mux, &chain, scratch, &written) == 0 && written == 0);
}

TEST(silent_host_clients_leave_room_for_the_guest)
{
        /* A host client that may connect to the VM's socket opens as many connections as
         * the table holds and never says CONNECT: the guest can still connect out. */
        ENV(e);
        static int cl[VSOCK_CONN_MAX];
        for (unsigned int i = 0; i < VSOCK_CONN_MAX; i++) {
                cl[i] = unix_connect(e.path);
                CHECK(cl[i] >= 0);
                vsock_fake_pump();
        }
        cleanup_close int lfd = unix_listen(&e, 6000);
        CHECK(lfd >= 0);
        int host = guest_connected(&e, lfd, 1025, 6000, 4096);
        CHECK(host >= 0);
        close(host);
        /* The clients past the host's share were closed at once. */
        char c;
        CHECK(read(cl[VSOCK_CONN_MAX - 1], &c, 1) == 0);
        for (unsigned int i = 0; i < VSOCK_CONN_MAX; i++)
                close(cl[i]);
}
