/* The virtio-net device end to end on the host: the virtio core and its MMIO transport
 * driven through the bus as a vCPU would, real guest memory and event loop, and a fake
 * back-end of SOCK_SEQPACKET socketpairs (one per queue pair: one packet is one frame,
 * header first) whose other ends the tests read and write as the host's network would.
 * Chains are laid out in guest memory as a driver lays them out. */
#include <endian.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define VIRTIO_MMIO_NO_LEGACY
#include <linux/virtio_mmio.h>

#include "check.h"
#include "mmio_driver.h"
#include "common/util.h"
#include "vmm/device.h"
#include "vmm/virtio/net.h"
#include "vmm/vm.h"

#define QSIZE 128
#define RINGS 0x10000ULL /* queue q: descriptors, avail and used ring at RINGS + q * 0x4000 */
#define BUFS 0x100000ULL /* buffer i: 64 KiB at BUFS + i * 0x10000 */
#define HDR NET_HDR_LEN
#define ALL_OFFLOADS NET_OFFLOAD_FEATURES

#define F(name) (1ULL << VIRTIO_NET_F_##name)

struct qstate {
        uint16_t avail_idx;
        uint16_t next_desc;
};

struct fake_backend {
        struct net_backend b;
};

/* What the back-end was told, kept past its destruction. */
static uint64_t offloads_seen;
static int offload_calls;

struct machine {
        struct bus pio, mmio;
        struct evloop loop;
        struct guest_mem mem;
        struct vm_config cfg;
        struct vm_net net;
        struct vm_devices ctx;
        int peer[NET_MAX_QUEUE_PAIRS];
        unsigned int pairs;
        struct qstate qs[2 * NET_MAX_QUEUE_PAIRS + 1];
        bool up, mem_up, loop_up;
};

static ssize_t fake_send(struct net_backend *b, unsigned int qp, const struct iovec *iov, int iovcnt)
{
        struct msghdr mh = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt };
        ssize_t n = sendmsg(b->fds[qp], &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
        return n < 0 ? -errno : n;
}

static ssize_t fake_recv(struct net_backend *b, unsigned int qp, const struct iovec *iov, int iovcnt)
{
        for (;;) {
                struct msghdr mh = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt };
                ssize_t n = recvmsg(b->fds[qp], &mh, MSG_DONTWAIT);
                if (n < 0)
                        return -errno;
                if (!(mh.msg_flags & MSG_TRUNC))
                        return n;
        }
}

static int fake_set_offloads(struct net_backend *b, uint64_t guest_features, cap_error_t *err)
{
        (void)b, (void)err;
        offloads_seen = guest_features;
        offload_calls++;
        return 0;
}

static void fake_destroy(struct net_backend *b)
{
        for (unsigned int k = 0; k < b->n_queue_pairs; k++)
                close(b->fds[k]);
        free(b);
}

static const struct net_backend_ops fake_ops = {
        .send = fake_send, .recv = fake_recv, .set_offloads = fake_set_offloads, .destroy = fake_destroy,
};

static int fake_irq_line(void *vm, uint32_t gsi, int level)
{
        (void)vm, (void)gsi, (void)level;
        return 0;
}

static int fake_irqfd(void *vm, int fd, uint32_t gsi, bool assign, cap_error_t *err)
{
        (void)vm, (void)fd, (void)gsi, (void)assign, (void)err;
        return 0;
}

static int fake_ioeventfd_match(void *vm, int fd, uint64_t addr, uint32_t len, bool pio, uint64_t data, bool assign,
                                cap_error_t *err)
{
        (void)vm, (void)fd, (void)addr, (void)len, (void)pio, (void)data, (void)assign, (void)err;
        return 0;
}

static void fake_cmdline_append(void *vm, const char *text)
{
        (void)vm, (void)text;
}

static void fake_request_exit(void *vm, int reason, int status)
{
        (void)vm, (void)reason, (void)status;
}

static int machine_start(struct machine *m, unsigned int pairs, bool vnet_hdr, int sndbuf, cap_error_t *err)
{
        memset(m, 0, sizeof(*m));
        offloads_seen = 0;
        offload_calls = 0;
        bus_init(&m->pio);
        bus_init(&m->mmio);
        if (evloop_init(&m->loop, err) < 0)
                return -1;
        m->loop_up = true;
        if (guest_mem_init(&m->mem, 16ULL << 20, false, err) < 0)
                return -1;
        m->mem_up = true;
        m->net = (struct vm_net){ .backend = VM_NET_TAP, .mac = { 0x52, 0x54, 0, 0x12, 0x34, 0x56 }, .mac_set = true,
                                  .queues = (int)pairs };
        m->cfg = (struct vm_config){ .console = VM_CONSOLE_FILE, .console_path = "/dev/null",
                                     .virtio_transport = VM_VIRTIO_MMIO };
        m->ctx = (struct vm_devices){ .pio = &m->pio, .mmio = &m->mmio, .mem = &m->mem, .loop = &m->loop,
                                      .config = &m->cfg, .irq_line = fake_irq_line, .irqfd = fake_irqfd,
                                      .ioeventfd_match = fake_ioeventfd_match, .cmdline_append = fake_cmdline_append,
                                      .request_exit = fake_request_exit, .vm = m };
        if (devices_init(&m->ctx, err) < 0)
                return -1;
        m->up = true;
        struct net_backend *b = xmalloc0(sizeof(*b));
        *b = (struct net_backend){ .ops = &fake_ops, .n_queue_pairs = pairs, .vnet_hdr = vnet_hdr,
                                   .features = vnet_hdr ? ALL_OFFLOADS : 0 };
        m->pairs = pairs;
        for (unsigned int k = 0; k < pairs; k++) {
                int sv[2];
                if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
                        return cap_fail(err, errno, "socketpair");
                if (sndbuf)
                        setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
                b->fds[k] = sv[0];
                m->peer[k] = sv[1];
        }
        if (net_dev_create(&m->ctx, 0, &m->net, b, err) < 0)
                return -1;
        return evloop_start(&m->loop, err);
}

static void machine_stop(struct machine *m)
{
        if (m->loop_up)
                evloop_stop(&m->loop);
        if (m->up)
                devices_exit(&m->ctx);
        if (m->loop_up)
                evloop_destroy(&m->loop);
        if (m->mem_up)
                guest_mem_destroy(&m->mem);
        for (unsigned int k = 0; k < m->pairs; k++)
                close(m->peer[k]);
}

#define MACHINE(m, pairs, vnet_hdr, sndbuf)                                                \
        struct machine m __attribute__((cleanup(machine_stop)));                           \
        do {                                                                               \
                cleanup_error cap_error_t _err = NULL;                                     \
                int _r = machine_start(&m, pairs, vnet_hdr, sndbuf, &_err);                \
                if (_r < 0)                                                                \
                        fprintf(stderr, "machine_start: %s\n", _err ? _err->msg : "?");    \
                CHECK(_r == 0);                                                            \
        } while (0)

static uint32_t rd32(struct machine *m, uint64_t off)
{
        return mmio_rd32(&m->mmio, off);
}

static void wr32(struct machine *m, uint64_t off, uint32_t v)
{
        mmio_wr32(&m->mmio, off, v);
}

static uint8_t *gptr(struct machine *m, uint64_t gpa, uint64_t len)
{
        return guest_mem_ptr(&m->mem, gpa, len);
}

static uint64_t device_features(struct machine *m)
{
        return mmio_device_features(&m->mmio);
}

#define FOK (VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK)

static uint64_t ring(unsigned int q)
{
        return RINGS + q * 0x4000ULL;
}

/* Linux's steps: reset, features, queues 0 .. nq-1, DRIVER_OK. */
static void driver_start(struct machine *m, uint64_t features, unsigned int nq)
{
        mmio_driver_features(&m->mmio, features | 1ULL << VIRTIO_RING_F_EVENT_IDX);
        for (unsigned int q = 0; q < nq; q++) {
                memset(gptr(m, ring(q), 0x4000), 0, 0x4000);
                m->qs[q] = (struct qstate){ 0 };
                mmio_queue_setup(&m->mmio, q, QSIZE, ring(q), ring(q) + 0x1000, ring(q) + 0x2000);
        }
        wr32(m, VIRTIO_MMIO_STATUS, FOK | VIRTIO_CONFIG_S_DRIVER_OK);
}

static bool needs_reset(struct machine *m)
{
        return rd32(m, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET;
}

struct buf {
        uint64_t gpa;
        uint32_t len;
        bool write;
};

static uint64_t bufaddr(unsigned int i)
{
        return BUFS + i * 0x10000ULL;
}

/* Make a chain of bufs available on queue q (no kick); returns its head. */
static uint16_t chain_add(struct machine *m, unsigned int q, const struct buf *b, unsigned int n)
{
        struct vring_desc *d = (struct vring_desc *)gptr(m, ring(q), QSIZE * sizeof(*d));
        struct qstate *s = &m->qs[q];
        uint16_t head = s->next_desc % QSIZE;
        for (unsigned int i = 0; i < n; i++) {
                uint16_t idx = s->next_desc++ % QSIZE;
                d[idx] = (struct vring_desc){ .addr = b[i].gpa, .len = b[i].len,
                                              .flags = (uint16_t)((b[i].write ? VRING_DESC_F_WRITE : 0) |
                                                                  (i + 1 < n ? VRING_DESC_F_NEXT : 0)),
                                              .next = (uint16_t)((idx + 1) % QSIZE) };
        }
        struct vring_avail *a = (struct vring_avail *)gptr(m, ring(q) + 0x1000, 4 + 2 * QSIZE);
        a->ring[s->avail_idx % QSIZE] = head;
        __atomic_store_n(&a->idx, ++s->avail_idx, __ATOMIC_RELEASE);
        return head;
}

static void kick(struct machine *m, unsigned int q)
{
        wr32(m, VIRTIO_MMIO_QUEUE_NOTIFY, q);
}

static struct vring_used *used(struct machine *m, unsigned int q)
{
        return (struct vring_used *)gptr(m, ring(q) + 0x2000, 4 + 8 * QSIZE);
}

static uint16_t used_idx(struct machine *m, unsigned int q)
{
        return __atomic_load_n(&used(m, q)->idx, __ATOMIC_ACQUIRE);
}

/* Wait (at most 5 s) until queue q returned n chains in all. */
static bool wait_used(struct machine *m, unsigned int q, uint16_t n)
{
        for (int i = 0; i < 5000 && used_idx(m, q) < n; i++)
                usleep(1000);
        return used_idx(m, q) == n;
}

/* The i-th used entry of queue q. */
static struct vring_used_elem used_elem(struct machine *m, unsigned int q, unsigned int i)
{
        return used(m, q)->ring[i % QSIZE];
}

static void pattern(uint8_t *p, size_t len, unsigned int seed)
{
        for (size_t i = 0; i < len; i++)
                p[i] = (uint8_t)(i * 31 + seed * 7 + 1);
}

/* A frame of len bytes (header included) from the host on pair k. */
static bool host_send(struct machine *m, unsigned int k, const struct virtio_net_hdr_v1 *h, size_t len,
                      unsigned int seed)
{
        static uint8_t pkt[HDR + NET_FRAME_MAX];
        memcpy(pkt, h, HDR);
        pattern(pkt + HDR, len - HDR, seed);
        return send(m->peer[k], pkt, len, MSG_NOSIGNAL) == (ssize_t)len;
}

/* The next frame the host got on pair k, waiting at most 2 s; its length or -1. */
static ssize_t host_recv(struct machine *m, unsigned int k, void *buf, size_t len, int timeout_ms)
{
        for (int i = 0; i < timeout_ms; i++) {
                ssize_t n = recv(m->peer[k], buf, len, MSG_DONTWAIT);
                if (n >= 0 || errno != EAGAIN)
                        return n;
                usleep(1000);
        }
        return -1;
}

/* A guest tx frame: header h then len frame bytes, cut into two buffers at cut. */
static void guest_tx(struct machine *m, unsigned int q, unsigned int slot, const struct virtio_net_hdr_v1 *h,
                     uint32_t len, uint32_t cut, unsigned int seed)
{
        uint8_t *p = gptr(m, bufaddr(slot), HDR + len);
        memcpy(p, h, HDR);
        pattern(p + HDR, len, seed);
        if (cut == 0 || cut >= HDR + len) {
                chain_add(m, q, &(struct buf){ bufaddr(slot), HDR + len, false }, 1);
                return;
        }
        const struct buf b[2] = { { bufaddr(slot), cut, false }, { bufaddr(slot) + cut, HDR + len - cut, false } };
        chain_add(m, q, b, 2);
}

TEST(net_config_and_features)
{
        MACHINE(m, 2, true, 0);
        CHECK(rd32(&m, VIRTIO_MMIO_DEVICE_ID) == VIRTIO_ID_NET);
        uint64_t f = device_features(&m);
        uint64_t want = F(MAC) | F(STATUS) | F(MRG_RXBUF) | F(CTRL_VQ) | F(CTRL_RX) | F(MQ) | F(CTRL_GUEST_OFFLOADS) |
                        ALL_OFFLOADS;
        CHECK((f & want) == want);
        CHECK(!(f & F(MTU)) && !(f & F(CTRL_VLAN)) && !(f & F(GUEST_ANNOUNCE)));
        uint8_t mac[6];
        for (unsigned int i = 0; i < 6; i++)
                mac[i] = (uint8_t)rd32(&m, VIRTIO_MMIO_CONFIG + i);
        CHECK(memcmp(mac, m.net.mac, 6) == 0);
        CHECK((rd32(&m, VIRTIO_MMIO_CONFIG + offsetof(struct virtio_net_config, status)) & 0xffff) ==
              VIRTIO_NET_S_LINK_UP);
        CHECK((rd32(&m, VIRTIO_MMIO_CONFIG + offsetof(struct virtio_net_config, max_virtqueue_pairs)) & 0xffff) == 2);
        /* The accepted guest offloads reach the back-end at DRIVER_OK. */
        driver_start(&m, F(GUEST_CSUM) | F(GUEST_TSO4) | F(GUEST_TSO6) | F(GUEST_ECN), 2);
        CHECK(offload_calls == 1);
        CHECK(offloads_seen == (F(GUEST_CSUM) | F(GUEST_TSO4) | F(GUEST_TSO6) | F(GUEST_ECN)));
        /* TSO without the checksum it needs is taken out. */
        driver_start(&m, F(GUEST_TSO4), 2);
        CHECK(offload_calls == 2 && offloads_seen == 0);
}

TEST(net_without_vnet_hdr_offers_no_offloads)
{
        MACHINE(m, 1, false, 0);
        uint64_t f = device_features(&m);
        CHECK(!(f & ALL_OFFLOADS) && !(f & F(CTRL_GUEST_OFFLOADS)) && !(f & F(MQ)));
        CHECK(f & F(MRG_RXBUF));
        /* A frame goes out without the header, and one comes in behind a zeroed one. */
        driver_start(&m, F(MRG_RXBUF), 2);
        struct virtio_net_hdr_v1 h = { 0 };
        guest_tx(&m, 1, 0, &h, 60, 0, 1);
        kick(&m, 1);
        uint8_t got[128], want[60];
        CHECK(host_recv(&m, 0, got, sizeof(got), 2000) == 60);
        pattern(want, 60, 1);
        CHECK(memcmp(got, want, 60) == 0);
        pattern(want, 60, 2);
        CHECK(send(m.peer[0], want, 60, 0) == 60);
        chain_add(&m, 0, &(struct buf){ bufaddr(1), 2048, true }, 1);
        kick(&m, 0);
        CHECK(wait_used(&m, 0, 1));
        CHECK(used_elem(&m, 0, 0).len == HDR + 60);
        const uint8_t *p = gptr(&m, bufaddr(1), HDR + 60);
        struct virtio_net_hdr_v1 rh;
        memcpy(&rh, p, HDR);
        CHECK(rh.flags == 0 && rh.gso_type == 0 && le16toh(rh.num_buffers) == 1);
        CHECK(memcmp(p + HDR, want, 60) == 0);
}

TEST(net_tx_header_checked_and_forwarded)
{
        MACHINE(m, 1, true, 0);
        driver_start(&m, F(CSUM) | F(HOST_TSO4), 2);
        /* A TSO frame with its checksum request: forwarded with the header, cut anywhere. */
        struct virtio_net_hdr_v1 good = { .flags = VIRTIO_NET_HDR_F_NEEDS_CSUM, .gso_type = VIRTIO_NET_HDR_GSO_TCPV4,
                                          .hdr_len = htole16(54), .gso_size = htole16(1448),
                                          .csum_start = htole16(34), .csum_offset = htole16(16),
                                          .num_buffers = htole16(7) };
        guest_tx(&m, 1, 0, &good, 3000, 5, 1);
        /* Then frames that must never reach the back-end. */
        struct virtio_net_hdr_v1 bad[6] = { good, good, good, good, good, good };
        bad[0].gso_type = VIRTIO_NET_HDR_GSO_TCPV6;                   /* not negotiated */
        bad[1].csum_start = htole16(2990);                            /* checksum past the end */
        bad[2].flags |= VIRTIO_NET_HDR_F_DATA_VALID;                  /* receive-only flag */
        bad[3].gso_type = VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN; /* no HOST_ECN */
        bad[4].flags = 0;                                             /* TSO without a checksum */
        bad[5].gso_size = 0;
        for (unsigned int i = 0; i < 6; i++)
                guest_tx(&m, 1, 1 + i, &bad[i], 3000, 0, 2);
        struct virtio_net_hdr_v1 none = { 0 };
        guest_tx(&m, 1, 8, &none, 10, 0, 3);                         /* shorter than Ethernet */
        chain_add(&m, 1, &(struct buf){ bufaddr(9), 8, false }, 1);  /* shorter than a header */
        guest_tx(&m, 1, 10, &none, 100, 3, 4);                       /* plain, header cut at 3 */
        kick(&m, 1);
        CHECK(wait_used(&m, 1, 10));
        static uint8_t got[HDR + NET_FRAME_MAX];
        uint8_t want[3000];
        CHECK(host_recv(&m, 0, got, sizeof(got), 2000) == HDR + 3000);
        struct virtio_net_hdr_v1 fwd;
        memcpy(&fwd, got, HDR);
        good.num_buffers = 0;
        CHECK(memcmp(&fwd, &good, HDR) == 0);
        pattern(want, 3000, 1);
        CHECK(memcmp(got + HDR, want, 3000) == 0);
        CHECK(host_recv(&m, 0, got, sizeof(got), 2000) == HDR + 100);
        pattern(want, 100, 4);
        CHECK(memcmp(got + HDR, want, 100) == 0);
        CHECK(host_recv(&m, 0, got, sizeof(got), 100) < 0);
        for (unsigned int i = 0; i < 10; i++)
                CHECK(used_elem(&m, 1, i).len == 0);
        CHECK(!needs_reset(&m));
}

TEST(net_tx_waits_for_the_backend_and_loses_nothing)
{
        /* A small socket buffer: the back-end says EAGAIN long before the guest's 100 frames are
         * out; each is retried when the back-end drains, in order. */
        MACHINE(m, 1, true, 4096);
        driver_start(&m, 0, 2);
        struct virtio_net_hdr_v1 none = { 0 };
        for (unsigned int i = 0; i < 100; i++)
                guest_tx(&m, 1, i, &none, 1400, 0, i);
        kick(&m, 1);
        usleep(100 * 1000);
        CHECK(used_idx(&m, 1) < 100);
        uint8_t got[2048], want[1400];
        for (unsigned int i = 0; i < 100; i++) {
                CHECK(host_recv(&m, 0, got, sizeof(got), 2000) == HDR + 1400);
                pattern(want, 1400, i);
                CHECK(memcmp(got + HDR, want, 1400) == 0);
        }
        CHECK(wait_used(&m, 1, 100));
}

TEST(net_rx_mergeable_across_chains)
{
        MACHINE(m, 1, true, 0);
        driver_start(&m, F(MRG_RXBUF) | F(GUEST_CSUM), 2);
        for (unsigned int i = 0; i < 8; i++)
                chain_add(&m, 0, &(struct buf){ bufaddr(i), 1000, true }, 1);
        kick(&m, 0);
        struct virtio_net_hdr_v1 h = { .flags = VIRTIO_NET_HDR_F_DATA_VALID };
        CHECK(host_send(&m, 0, &h, 3500, 9));
        CHECK(wait_used(&m, 0, 4));
        /* 3500 bytes in 1000-byte buffers: four chains, the first one's header says so. */
        static uint8_t all[4000], want[3500];
        uint32_t total = 0;
        for (unsigned int i = 0; i < 4; i++) {
                struct vring_used_elem e = used_elem(&m, 0, i);
                CHECK(e.id == i && e.len == (i < 3 ? 1000 : 500));
                memcpy(all + total, gptr(&m, bufaddr(i), e.len), e.len);
                total += e.len;
        }
        struct virtio_net_hdr_v1 rh;
        memcpy(&rh, all, HDR);
        CHECK(le16toh(rh.num_buffers) == 4 && rh.flags == VIRTIO_NET_HDR_F_DATA_VALID);
        memcpy(want, &h, HDR);
        pattern(want + HDR, 3500 - HDR, 9);
        CHECK(memcmp(all + HDR, want + HDR, 3500 - HDR) == 0);
        /* A frame that fits one buffer takes one. */
        CHECK(host_send(&m, 0, &h, 200, 10));
        CHECK(wait_used(&m, 0, 5));
        CHECK(used_elem(&m, 0, 4).len == 200);
        memcpy(&rh, gptr(&m, bufaddr(4), HDR), HDR);
        CHECK(le16toh(rh.num_buffers) == 1);
}

TEST(net_rx_frame_read_into_taken_chains_ends_in_later_ones)
{
        /* A back-end without a header: the device writes a zeroed one into the guest's first
         * buffer. The frame is read into the two chains the guest has, the rest waits for a
         * third, and the three come back together. */
        MACHINE(m, 1, false, 0);
        driver_start(&m, F(MRG_RXBUF), 2);
        memset(gptr(&m, bufaddr(0), 4 * 1000), 0xff, 4 * 1000);
        for (unsigned int i = 0; i < 2; i++)
                chain_add(&m, 0, &(struct buf){ bufaddr(i), 1000, true }, 1);
        kick(&m, 0);
        static uint8_t want[3000 - HDR], all[3000];
        pattern(want, sizeof(want), 4);
        CHECK(send(m.peer[0], want, sizeof(want), 0) == (ssize_t)sizeof(want));
        usleep(100 * 1000);
        CHECK(used_idx(&m, 0) == 0);
        chain_add(&m, 0, &(struct buf){ bufaddr(2), 1000, true }, 1);
        kick(&m, 0);
        CHECK(wait_used(&m, 0, 3));
        for (unsigned int i = 0; i < 3; i++) {
                struct vring_used_elem e = used_elem(&m, 0, i);
                CHECK(e.id == i && e.len == 1000);
                memcpy(all + i * 1000, gptr(&m, bufaddr(i), 1000), 1000);
        }
        struct virtio_net_hdr_v1 rh, zero = { .num_buffers = htole16(3) };
        memcpy(&rh, all, HDR);
        CHECK(memcmp(&rh, &zero, HDR) == 0);
        CHECK(memcmp(all + HDR, want, sizeof(want)) == 0);
        /* The next frame takes one chain of those the device took ahead. */
        for (unsigned int i = 3; i < 5; i++)
                chain_add(&m, 0, &(struct buf){ bufaddr(i), 1000, true }, 1);
        kick(&m, 0);
        CHECK(send(m.peer[0], want, 100, 0) == 100);
        CHECK(wait_used(&m, 0, 4));
        CHECK(used_elem(&m, 0, 3).id == 3 && used_elem(&m, 0, 3).len == HDR + 100);
        memcpy(&rh, gptr(&m, bufaddr(3), HDR), HDR);
        zero.num_buffers = htole16(1);
        CHECK(memcmp(&rh, &zero, HDR) == 0 && memcmp(gptr(&m, bufaddr(3) + HDR, 100), want, 100) == 0);
        usleep(50 * 1000);
        CHECK(used_idx(&m, 0) == 4);
}

TEST(net_rx_waits_for_buffers_and_loses_nothing)
{
        /* Frames arrive while the guest has no buffers: none is lost; they come in order once
         * buffers are there, a few at a time. */
        MACHINE(m, 1, true, 0);
        driver_start(&m, F(MRG_RXBUF), 2);
        struct virtio_net_hdr_v1 h = { 0 };
        for (unsigned int i = 0; i < 20; i++)
                CHECK(host_send(&m, 0, &h, 1500, i));
        usleep(100 * 1000);
        CHECK(used_idx(&m, 0) == 0);
        uint8_t want[1500];
        for (unsigned int i = 0; i < 20; i++) {
                if (i % 5 == 0) {
                        for (unsigned int j = i; j < i + 5; j++)
                                chain_add(&m, 0, &(struct buf){ bufaddr(j), 2048, true }, 1);
                        kick(&m, 0);
                }
                for (int t = 0; t < 5000 && used_idx(&m, 0) <= i; t++)
                        usleep(1000);
                CHECK(used_idx(&m, 0) > i);
                struct vring_used_elem e = used_elem(&m, 0, i);
                CHECK(e.len == 1500);
                pattern(want, 1500 - HDR, i);
                CHECK(memcmp(gptr(&m, bufaddr(e.id), 1500) + HDR, want, 1500 - HDR) == 0);
        }
        CHECK(wait_used(&m, 0, 20));
}

TEST(net_rx_without_mergeable_one_chain_per_frame)
{
        MACHINE(m, 1, true, 0);
        driver_start(&m, 0, 2);
        /* A chain too small for the frame: the frame is dropped, the chain waits for a frame it
         * can hold. */
        chain_add(&m, 0, &(struct buf){ bufaddr(0), 600, true }, 1);
        kick(&m, 0);
        struct virtio_net_hdr_v1 h = { 0 };
        CHECK(host_send(&m, 0, &h, 1000, 1));
        CHECK(host_send(&m, 0, &h, 500, 2));
        CHECK(wait_used(&m, 0, 1));
        CHECK(used_elem(&m, 0, 0).len == 500);
        uint8_t want[500];
        pattern(want, 500 - HDR, 2);
        CHECK(memcmp(gptr(&m, bufaddr(0), 500) + HDR, want, 500 - HDR) == 0);
        /* A chain of several buffers holds a frame whole. */
        const struct buf b[3] = { { bufaddr(1), 7, true }, { bufaddr(2), 300, true }, { bufaddr(3), 2000, true } };
        chain_add(&m, 0, b, 3);
        kick(&m, 0);
        CHECK(host_send(&m, 0, &h, 1200, 3));
        CHECK(wait_used(&m, 0, 2));
        CHECK(used_elem(&m, 0, 1).len == 1200);
        uint8_t all[1200];
        memcpy(all, gptr(&m, bufaddr(1), 7), 7);
        memcpy(all + 7, gptr(&m, bufaddr(2), 300), 300);
        memcpy(all + 307, gptr(&m, bufaddr(3), 893), 893);
        uint8_t w[1200];
        pattern(w, 1200 - HDR, 3);
        CHECK(memcmp(all + HDR, w, 1200 - HDR) == 0);
        struct virtio_net_hdr_v1 rh;
        memcpy(&rh, all, HDR);
        CHECK(le16toh(rh.num_buffers) == 1);
}

TEST(net_rx_frame_larger_than_the_whole_ring_is_dropped)
{
        /* Mergeable buffers of 16 bytes: even the whole ring (QSIZE chains) cannot hold a 4000-
         * byte frame. Its chains come back empty, and the next frame gets the next buffers. */
        MACHINE(m, 1, true, 0);
        driver_start(&m, F(MRG_RXBUF), 2);
        for (unsigned int i = 0; i < QSIZE; i++)
                chain_add(&m, 0, &(struct buf){ bufaddr(0) + i * 16, 16, true }, 1);
        kick(&m, 0);
        struct virtio_net_hdr_v1 h = { 0 };
        CHECK(host_send(&m, 0, &h, 4000, 1));
        CHECK(wait_used(&m, 0, QSIZE));
        for (unsigned int i = 0; i < QSIZE; i++)
                CHECK(used_elem(&m, 0, i).len == 0);
        for (unsigned int i = 0; i < 4; i++)
                chain_add(&m, 0, &(struct buf){ bufaddr(1 + i), 4096, true }, 1);
        kick(&m, 0);
        CHECK(host_send(&m, 0, &h, 100, 2));
        CHECK(wait_used(&m, 0, QSIZE + 1));
        CHECK(used_elem(&m, 0, QSIZE).len == 100);
        CHECK(!needs_reset(&m));
}

/* A control request: class, command, data; the ack byte at ACK(slot). */
#define ACK(slot) (bufaddr(100) + (slot))
static void ctrl(struct machine *m, unsigned int q, unsigned int slot, uint8_t cls, uint8_t cmd, const void *data,
                 uint32_t len)
{
        uint8_t *p = gptr(m, bufaddr(101 + slot), 2 + len);
        p[0] = cls;
        p[1] = cmd;
        if (len)
                memcpy(p + 2, data, len);
        *gptr(m, ACK(slot), 1) = 0xee;
        const struct buf b[2] = { { bufaddr(101 + slot), 2 + len, false }, { ACK(slot), 1, true } };
        chain_add(m, q, b, 2);
}

static uint8_t ack(struct machine *m, unsigned int slot)
{
        return *gptr(m, ACK(slot), 1);
}

TEST(net_control_queue_good_and_malformed)
{
        MACHINE(m, 1, true, 0);
        driver_start(&m, F(CTRL_VQ) | F(CTRL_RX) | F(CTRL_GUEST_OFFLOADS) | F(GUEST_CSUM) | F(GUEST_TSO4), 3);
        const unsigned int q = 2;
        uint8_t on = 1, two[2] = { 1, 1 };
        ctrl(&m, q, 0, VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC, &on, 1);
        ctrl(&m, q, 1, VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_ALLMULTI, two, 2);     /* too long */
        ctrl(&m, q, 2, VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_NOBCAST, &on, 1);      /* no RX_EXTRA */
        uint8_t table[4 + 4 + 6] = { 0, 0, 0, 0, 1, 0, 0, 0, 0x33, 0x33, 0, 0, 0, 1 };
        ctrl(&m, q, 3, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, table, sizeof(table));
        table[4] = 2;                                                                /* one MAC missing */
        ctrl(&m, q, 4, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, table, sizeof(table));
        uint8_t huge[8] = { 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0 };
        ctrl(&m, q, 5, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, huge, sizeof(huge));
        ctrl(&m, q, 6, 0x77, 0, NULL, 0);                                            /* unknown class */
        uint64_t offl = htole64(F(GUEST_CSUM));
        ctrl(&m, q, 7, VIRTIO_NET_CTRL_GUEST_OFFLOADS, VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET, &offl, 8);
        offl = htole64(F(GUEST_TSO6) | F(GUEST_CSUM));                               /* not negotiated */
        ctrl(&m, q, 8, VIRTIO_NET_CTRL_GUEST_OFFLOADS, VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET, &offl, 8);
        uint16_t pairs = htole16(1);
        ctrl(&m, q, 9, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, &pairs, 2); /* no MQ */
        /* No writable byte for the ack: returned with nothing written. */
        *gptr(&m, bufaddr(111), 2) = VIRTIO_NET_CTRL_RX;
        chain_add(&m, q, &(struct buf){ bufaddr(111), 3, false }, 1);
        /* Nothing but the ack byte. */
        *gptr(&m, ACK(11), 1) = 0xee;
        chain_add(&m, q, &(struct buf){ ACK(11), 1, true }, 1);
        kick(&m, q);
        CHECK(wait_used(&m, q, 12));
        const uint8_t want[] = { VIRTIO_NET_OK,  VIRTIO_NET_ERR, VIRTIO_NET_ERR, VIRTIO_NET_OK,
                                 VIRTIO_NET_ERR, VIRTIO_NET_ERR, VIRTIO_NET_ERR, VIRTIO_NET_OK,
                                 VIRTIO_NET_ERR, VIRTIO_NET_ERR };
        for (unsigned int i = 0; i < ARRAY_SIZE(want); i++) {
                CHECK(ack(&m, i) == want[i]);
                CHECK(used_elem(&m, q, i).len == 1);
        }
        CHECK(used_elem(&m, q, 10).len == 0);
        CHECK(ack(&m, 11) == VIRTIO_NET_ERR && used_elem(&m, q, 11).len == 1);
        CHECK(offload_calls == 2 && offloads_seen == F(GUEST_CSUM));
        CHECK(!needs_reset(&m));
}

TEST(net_multiqueue_pairs_switch)
{
        MACHINE(m, 2, true, 0);
        /* With MQ the control queue is 2 * max pairs. */
        driver_start(&m, F(CTRL_VQ) | F(MQ) | F(MRG_RXBUF), 5);
        for (unsigned int i = 0; i < 4; i++) {
                chain_add(&m, 0, &(struct buf){ bufaddr(i), 2048, true }, 1);
                chain_add(&m, 2, &(struct buf){ bufaddr(10 + i), 2048, true }, 1);
        }
        kick(&m, 0);
        kick(&m, 2);
        struct virtio_net_hdr_v1 h = { 0 };
        /* One pair in use: back-end pair 1's frames go to receiveq 1 (queue 0). */
        CHECK(host_send(&m, 1, &h, 300, 1));
        CHECK(wait_used(&m, 0, 1));
        CHECK(used_idx(&m, 2) == 0);
        uint16_t pairs = htole16(3);
        ctrl(&m, 4, 0, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, &pairs, 2);
        pairs = 0;
        ctrl(&m, 4, 1, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, &pairs, 2);
        pairs = htole16(2);
        ctrl(&m, 4, 2, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, &pairs, 2);
        kick(&m, 4);
        CHECK(wait_used(&m, 4, 3));
        CHECK(ack(&m, 0) == VIRTIO_NET_ERR && ack(&m, 1) == VIRTIO_NET_ERR && ack(&m, 2) == VIRTIO_NET_OK);
        /* Two pairs: pair 1's frames reach receiveq2 (queue 2), pair 0's queue 0. */
        CHECK(host_send(&m, 1, &h, 400, 2));
        CHECK(wait_used(&m, 2, 1));
        CHECK(used_elem(&m, 2, 0).len == 400);
        CHECK(host_send(&m, 0, &h, 500, 3));
        CHECK(wait_used(&m, 0, 2));
        CHECK(used_elem(&m, 0, 1).len == 500);
        /* And transmitq2 (queue 3) goes out on back-end pair 1. */
        guest_tx(&m, 3, 20, &h, 80, 0, 4);
        kick(&m, 3);
        uint8_t got[256];
        CHECK(host_recv(&m, 1, got, sizeof(got), 2000) == HDR + 80);
        CHECK(host_recv(&m, 0, got, sizeof(got), 50) < 0);
}

TEST(net_control_queue_is_queue_2_without_mq)
{
        MACHINE(m, 2, true, 0);
        driver_start(&m, F(CTRL_VQ) | F(CTRL_RX), 3);
        uint8_t on = 0;
        ctrl(&m, 2, 0, VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC, &on, 1);
        kick(&m, 2);
        CHECK(wait_used(&m, 2, 1) && ack(&m, 0) == VIRTIO_NET_OK);
}

TEST(net_reset_mid_traffic)
{
        /* Frames held both ways (tx waiting for the back-end, rx for buffers), then a reset:
         * nothing touches guest memory afterwards, the back-end's fds are not read, and the
         * device works again after the driver sets it up. */
        MACHINE(m, 1, true, 4096);
        driver_start(&m, F(MRG_RXBUF), 2);
        struct virtio_net_hdr_v1 h = { 0 };
        for (unsigned int i = 0; i < 40; i++)
                guest_tx(&m, 1, i, &h, 1400, 0, i);
        kick(&m, 1);
        for (unsigned int i = 0; i < 5; i++)
                CHECK(host_send(&m, 0, &h, 1000, i));
        usleep(100 * 1000);
        wr32(&m, VIRTIO_MMIO_STATUS, 0);
        CHECK(rd32(&m, VIRTIO_MMIO_STATUS) == 0);
        uint16_t tx_used = used_idx(&m, 1);
        static uint8_t snap[0x4000];
        memcpy(snap, gptr(&m, ring(0), 0x4000), 0x4000);
        /* The host drains and sends more: none of it moves while the device is reset. */
        uint8_t got[2048];
        while (host_recv(&m, 0, got, sizeof(got), 50) > 0)
                ;
        CHECK(host_send(&m, 0, &h, 700, 9));
        usleep(100 * 1000);
        CHECK(used_idx(&m, 1) == tx_used);
        CHECK(memcmp(snap, gptr(&m, ring(0), 0x4000), 0x4000) == 0);
        CHECK(recv(m.peer[0], got, sizeof(got), MSG_DONTWAIT) < 0 && errno == EAGAIN);
        /* Set up again: the frames still in the socket arrive (the one the device held for
         * buffers went with the reset). */
        driver_start(&m, F(MRG_RXBUF), 2);
        for (unsigned int i = 0; i < 8; i++)
                chain_add(&m, 0, &(struct buf){ bufaddr(50 + i), 2048, true }, 1);
        kick(&m, 0);
        CHECK(wait_used(&m, 0, 5));
        CHECK(used_elem(&m, 0, 0).len == 1000 && used_elem(&m, 0, 4).len == 700);
        guest_tx(&m, 1, 60, &h, 64, 0, 1);
        kick(&m, 1);
        CHECK(host_recv(&m, 0, got, sizeof(got), 2000) == HDR + 64);
}

TEST(net_hostile_chains_fail_requests_not_the_vmm)
{
        MACHINE(m, 1, true, 0);
        driver_start(&m, F(MRG_RXBUF) | F(CTRL_VQ) | F(CTRL_RX), 3);
        /* rx: a readable-only chain, a chain of 5 writable bytes as a frame's first buffer,
         * then a good one. */
        chain_add(&m, 0, &(struct buf){ bufaddr(0), 2048, false }, 1);
        chain_add(&m, 0, &(struct buf){ bufaddr(1), 5, true }, 1);
        chain_add(&m, 0, &(struct buf){ bufaddr(2), 2048, true }, 1);
        kick(&m, 0);
        struct virtio_net_hdr_v1 h = { 0 };
        CHECK(host_send(&m, 0, &h, 600, 1));
        CHECK(wait_used(&m, 0, 3));
        CHECK(used_elem(&m, 0, 0).len == 0 && used_elem(&m, 0, 1).len == 0);
        CHECK(used_elem(&m, 0, 2).len == 600 && used_elem(&m, 0, 2).id == 2);
        /* tx: a writable-only chain. */
        chain_add(&m, 1, &(struct buf){ bufaddr(3), 2048, true }, 1);
        kick(&m, 1);
        CHECK(wait_used(&m, 1, 1) && used_elem(&m, 1, 0).len == 0);
        /* control: one byte of header. */
        *gptr(&m, bufaddr(4), 1) = VIRTIO_NET_CTRL_RX;
        const struct buf b[2] = { { bufaddr(4), 1, false }, { ACK(0), 1, true } };
        chain_add(&m, 2, b, 2);
        kick(&m, 2);
        CHECK(wait_used(&m, 2, 1) && ack(&m, 0) == VIRTIO_NET_ERR);
        CHECK(!needs_reset(&m));
        /* A kick on a queue the driver never set up is ignored. */
        kick(&m, 9);
        CHECK(!needs_reset(&m));
}

TEST(net_backend_gone_frames_dropped_device_alive)
{
        /* The host's end closes (a passt that died): the fd hangs up, tx frames are returned
         * unsent, nothing spins, and the device stays usable for the driver. */
        MACHINE(m, 1, true, 0);
        driver_start(&m, F(MRG_RXBUF), 2);
        close(m.peer[0]);
        m.peer[0] = -1;
        struct virtio_net_hdr_v1 h = { 0 };
        for (unsigned int i = 0; i < 3; i++)
                guest_tx(&m, 1, i, &h, 100, 0, i);
        kick(&m, 1);
        CHECK(wait_used(&m, 1, 3));
        for (unsigned int i = 0; i < 3; i++)
                CHECK(used_elem(&m, 1, i).len == 0);
        guest_tx(&m, 1, 3, &h, 100, 0, 3);
        kick(&m, 1);
        CHECK(wait_used(&m, 1, 4));
        CHECK(!needs_reset(&m));
}
