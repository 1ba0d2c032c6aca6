/* The vsock packet handling as a hostile guest and host clients drive it: tx chains through
 * vsock_chain_tx() (header copy, vsock_pkt_parse()) into the muxer (vsock_mux.c), rx chains
 * filled by vsock_chain_rx(), CONNECT lines and host traffic on real Unix sockets. The event loop is faked: each "pump" calls every watched
 * handler, as spurious edge-triggered events would.
 *
 * The input is a sequence of records, each starting with an op byte:
 *   op % 7 == 0: a tx chain: a 44-byte header, an le16 payload length, two cut points, the
 *                payload (what is left if shorter), in three readable heap buffers cut there.
 *                Bit 3 makes the addresses valid (guest CID 3 to the host), bit 4 the type
 *                STREAM, bits 5-6 pick the destination port 5000, 5001 or 6000 (5000/5001
 *                have host listeners) unless both are set;
 *   op % 7 == 1: an rx chain of three heap buffers of exactly their size (the first readable
 *                if the input says so), filled by vsock_chain_rx() and checked;
 *   op % 7 == 2: a host client connects and writes the next (byte % 48) bytes;
 *   op % 7 == 3: pump the handlers;
 *   op % 7 == 4: accept the host side of guest connects; the next byte says what each does
 *                (write, read, half-close, close);
 *   op % 7 == 5: host clients write the next (byte % 64) bytes, or close (op bit 3);
 *   op % 7 == 6: reset the device. */
#include <errno.h>
#include <linux/virtio_vsock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/util.h"
#include "vmm/virtio/vsock_mux.h"
#include "vmm/virtio/vsock_pkt.h"
#include "fuzz_input.h"
#include "../unit/vsock_host.h"

#define GUEST_CID 3
#define MAX_FDS 64

int LLVMFuzzerInitialize(int *argc, char ***argv);

static char dir[32], path[64];
static int listeners[2];
static int clients[MAX_FDS], n_clients;
static int peers[MAX_FDS], n_peers;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
        (void)argc;
        (void)argv;
        strcpy(dir, "/tmp/fuzz-vsock-XXXXXX");
        if (!mkdtemp(dir))
                abort();
        snprintf(path, sizeof(path), "%s/v.sock", dir);
        static const unsigned int ports[2] = { 5000, 5001 };
        for (int i = 0; i < 2; i++) {
                struct sockaddr_un sa = { .sun_family = AF_UNIX };
                snprintf(sa.sun_path, sizeof(sa.sun_path), "%s_%u", path, ports[i]);
                listeners[i] = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
                if (listeners[i] < 0 || bind(listeners[i], (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
                    listen(listeners[i], 512) < 0)
                        abort();
        }
        return 0;
}

static uint8_t byte(struct input *in)
{
        uint8_t b = 0;
        take(in, &b, 1);
        return b;
}

static struct virtq_chain chain;
static struct iovec scratch[VIRTQ_MAX_SIZE];
static uint8_t *pieces[3];

/* A chain of three heap buffers of exactly their size, cut from data at a and b (a <= b);
 * the first n_out readable. */
static void chain_build(const uint8_t *data, size_t len, size_t a, size_t b, unsigned int n_out)
{
        const size_t cuts[4] = { 0, a, b, len };
        memset(&chain, 0, sizeof(chain));
        for (unsigned int i = 0; i < 3; i++) {
                size_t n = cuts[i + 1] - cuts[i];
                pieces[i] = malloc(n ? n : 1);
                if (data)
                        memcpy(pieces[i], data + cuts[i], n);
                chain.iov[i] = (struct iovec){ pieces[i], n };
                if (i < n_out)
                        chain.out_len += (uint32_t)n;
                else
                        chain.in_len += (uint32_t)n;
        }
        chain.n_out = n_out;
        chain.n_in = 3 - n_out;
}

static void chain_free(void)
{
        for (unsigned int i = 0; i < 3; i++)
                free(pieces[i]);
}

static void op_tx(struct vsock_mux *m, uint8_t op, struct input *in)
{
        static uint8_t pkt[VSOCK_HDR_LEN + 65536];
        uint16_t len;
        uint8_t cut[2];
        if (!take(in, pkt, VSOCK_HDR_LEN) || !take(in, &len, sizeof(len)) || !take(in, cut, sizeof(cut)))
                return;
        struct vsock_pkt p;
        vsock_pkt_parse(pkt, UINT32_MAX, 0, &p); /* only to decode it: vsock_chain_tx judges it */
        if (op & 0x08) {
                p.src_cid = GUEST_CID;
                p.dst_cid = VSOCK_HOST_CID;
        }
        if (op & 0x10)
                p.type = VIRTIO_VSOCK_TYPE_STREAM;
        static const uint32_t ports[3] = { 5000, 5001, 6000 };
        if ((op & 0x60) != 0x60 && (op & 0x60))
                p.dst_port = ports[((op >> 5) & 3) - 1 + (pkt[0] & 1)];
        vsock_pkt_encode(&p, pkt);
        size_t avail = len < in->left ? len : in->left;
        take(in, pkt + VSOCK_HDR_LEN, avail);
        size_t total = VSOCK_HDR_LEN + avail, a = cut[0] * total / 256, b = a + cut[1] * (total - a) / 256;
        chain_build(pkt, total, a, b, 3);
        vsock_chain_tx(m, GUEST_CID, &chain, scratch);
        chain_free();
}

static void op_rx(struct vsock_mux *m, struct input *in)
{
        uint8_t b[4] = { 0 };
        take(in, b, sizeof(b));
        size_t room = ((size_t)b[0] + 1) * 16 + (b[1] & 0x80 ? VSOCK_MAX_PAYLOAD : 0);
        size_t a = b[2] * room / 256, c = a + b[3] * (room - a) / 256;
        chain_build(NULL, room, a, c, b[1] & 1);
        uint32_t written;
        int r = vsock_chain_rx(m, &chain, scratch, &written);
        if (r == 1) {
                uint8_t hdr[VSOCK_HDR_LEN];
                struct vsock_pkt p;
                if (written > chain.in_len || chain.n_out != 0)
                        abort();
                size_t got = 0;
                for (unsigned int i = 0; i < 3 && got < sizeof(hdr); i++) {
                        size_t n = chain.iov[i].iov_len < sizeof(hdr) - got ? chain.iov[i].iov_len : sizeof(hdr) - got;
                        memcpy(hdr + got, chain.iov[i].iov_base, n);
                        got += n;
                }
                vsock_pkt_parse(hdr, UINT32_MAX, 0, &p);
                if (p.len + VSOCK_HDR_LEN != written || p.len > VSOCK_MAX_PAYLOAD || p.dst_cid != GUEST_CID ||
                    p.src_cid != VSOCK_HOST_CID || (p.op != VIRTIO_VSOCK_OP_RW && p.len != 0))
                        abort();
        } else if (written != 0) {
                abort();
        }
        chain_free();
}

static void op_client(const char *line, size_t len)
{
        if (n_clients == MAX_FDS)
                return;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        strcpy(sa.sun_path, path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return;
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                close(fd);
                return;
        }
        if (len)
                send(fd, line, len, MSG_NOSIGNAL);
        clients[n_clients++] = fd;
}

static void op_peers(struct input *in)
{
        for (int i = 0; i < 2; i++) {
                for (int fd; n_peers < MAX_FDS && (fd = accept4(listeners[i], NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0;)
                        peers[n_peers++] = fd;
        }
        uint8_t what = byte(in);
        static char buf[8192];
        for (int i = 0; i < n_peers; i++) {
                switch ((what >> (2 * (i % 4))) & 3) {
                case 0:
                        send(peers[i], buf, sizeof(buf), MSG_NOSIGNAL | MSG_DONTWAIT);
                        break;
                case 1:
                        while (recv(peers[i], buf, sizeof(buf), MSG_DONTWAIT) > 0)
                                ;
                        break;
                case 2:
                        shutdown(peers[i], SHUT_WR);
                        break;
                case 3:
                        close(peers[i]);
                        peers[i--] = peers[--n_peers];
                        break;
                }
        }
}

static void op_clients(uint8_t op, struct input *in)
{
        size_t len = byte(in) % 64;
        if (len > in->left)
                len = in->left;
        for (int i = 0; i < n_clients; i++) {
                if (op & 0x08) {
                        close(clients[i]);
                        clients[i--] = clients[--n_clients];
                } else {
                        send(clients[i], in->p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
                }
        }
        in->p += len;
        in->left -= len;
}

static void drain_listeners(void)
{
        for (int i = 0; i < 2; i++)
                for (int fd; (fd = accept4(listeners[i], NULL, NULL, SOCK_CLOEXEC)) >= 0;)
                        close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct vsock_mux *m;
        cleanup_error cap_error_t err = NULL;
        vsock_fake_reset();
        if (vsock_mux_create(&m, path, GUEST_CID, &vsock_fake_host, &err) < 0)
                abort();
        struct input in = { data, size };
        for (int steps = 0; in.left > 0 && steps < 512; steps++) {
                uint8_t op = byte(&in);
                switch (op % 7) {
                case 0:
                        op_tx(m, op, &in);
                        break;
                case 1:
                        op_rx(m, &in);
                        break;
                case 2: {
                        size_t len = byte(&in) % 48;
                        if (len > in.left)
                                len = in.left;
                        op_client((const char *)in.p, len);
                        in.p += len;
                        in.left -= len;
                        break;
                }
                case 3:
                        vsock_fake_pump();
                        break;
                case 4:
                        op_peers(&in);
                        break;
                case 5:
                        op_clients(op, &in);
                        break;
                case 6:
                        vsock_mux_reset(m);
                        break;
                }
                if (vsock_mux_conn_count(m) > VSOCK_CONN_MAX)
                        abort();
        }
        vsock_mux_destroy(m);
        if (vsock_n_watches != 0)
                abort(); /* every socket the muxer watched was closed */
        for (int i = 0; i < n_clients; i++)
                close(clients[i]);
        for (int i = 0; i < n_peers; i++)
                close(peers[i]);
        n_clients = n_peers = 0;
        drain_listeners();
        return 0;
}
