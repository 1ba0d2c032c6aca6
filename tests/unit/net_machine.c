/* The virtio-net unit tests' machine (net_machine.h). */
#include "net_machine.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mmio_driver.h"

uint64_t netm_offloads_seen;
int netm_offload_calls;

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
        netm_offloads_seen = guest_features;
        netm_offload_calls++;
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

int netm_start(struct net_machine *m, unsigned int pairs, bool vnet_hdr, int sndbuf, cap_error_t *err)
{
        memset(m, 0, sizeof(*m));
        netm_offloads_seen = 0;
        netm_offload_calls = 0;
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

void netm_stop(struct net_machine *m)
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

uint32_t netm_rd32(struct net_machine *m, uint64_t off)
{
        return mmio_rd32(&m->mmio, off);
}

void netm_wr32(struct net_machine *m, uint64_t off, uint32_t v)
{
        mmio_wr32(&m->mmio, off, v);
}

uint8_t *netm_ptr(struct net_machine *m, uint64_t gpa, uint64_t len)
{
        return guest_mem_ptr(&m->mem, gpa, len);
}

uint64_t netm_device_features(struct net_machine *m)
{
        return mmio_device_features(&m->mmio);
}

uint64_t netm_ring(unsigned int q)
{
        return RINGS + q * 0x4000ULL;
}

/* Linux's steps: reset, features, queues 0 .. nq-1, DRIVER_OK. */
void netm_driver_start(struct net_machine *m, uint64_t features, unsigned int nq)
{
        mmio_driver_features(&m->mmio, features | 1ULL << VIRTIO_RING_F_EVENT_IDX);
        for (unsigned int q = 0; q < nq; q++) {
                memset(netm_ptr(m, netm_ring(q), 0x4000), 0, 0x4000);
                m->qs[q] = (struct qstate){ 0 };
                mmio_queue_setup(&m->mmio, q, QSIZE, netm_ring(q), netm_ring(q) + 0x1000, netm_ring(q) + 0x2000);
        }
        netm_wr32(m, VIRTIO_MMIO_STATUS, FOK | VIRTIO_CONFIG_S_DRIVER_OK);
}

bool netm_needs_reset(struct net_machine *m)
{
        return netm_rd32(m, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET;
}

uint64_t netm_bufaddr(unsigned int i)
{
        return BUFS + i * 0x10000ULL;
}

/* Make a chain of bufs available on queue q (no kick); returns its head. */
uint16_t netm_chain_add(struct net_machine *m, unsigned int q, const struct netm_buf *b, unsigned int n)
{
        struct vring_desc *d = (struct vring_desc *)netm_ptr(m, netm_ring(q), QSIZE * sizeof(*d));
        struct qstate *s = &m->qs[q];
        uint16_t head = s->next_desc % QSIZE;
        for (unsigned int i = 0; i < n; i++) {
                uint16_t idx = s->next_desc++ % QSIZE;
                d[idx] = (struct vring_desc){ .addr = b[i].gpa, .len = b[i].len,
                                              .flags = (uint16_t)((b[i].write ? VRING_DESC_F_WRITE : 0) |
                                                                  (i + 1 < n ? VRING_DESC_F_NEXT : 0)),
                                              .next = (uint16_t)((idx + 1) % QSIZE) };
        }
        struct vring_avail *a = (struct vring_avail *)netm_ptr(m, netm_ring(q) + 0x1000, 4 + 2 * QSIZE);
        a->ring[s->avail_idx % QSIZE] = head;
        __atomic_store_n(&a->idx, ++s->avail_idx, __ATOMIC_RELEASE);
        return head;
}

void netm_kick(struct net_machine *m, unsigned int q)
{
        netm_wr32(m, VIRTIO_MMIO_QUEUE_NOTIFY, q);
}

struct vring_used *netm_used(struct net_machine *m, unsigned int q)
{
        return (struct vring_used *)netm_ptr(m, netm_ring(q) + 0x2000, 4 + 8 * QSIZE);
}

uint16_t netm_used_idx(struct net_machine *m, unsigned int q)
{
        return __atomic_load_n(&netm_used(m, q)->idx, __ATOMIC_ACQUIRE);
}

/* Wait (at most 5 s) until queue q returned n chains in all. */
bool netm_wait_used(struct net_machine *m, unsigned int q, uint16_t n)
{
        for (int i = 0; i < 5000 && netm_used_idx(m, q) < n; i++)
                usleep(1000);
        return netm_used_idx(m, q) == n;
}

/* The i-th used entry of queue q. */
struct vring_used_elem netm_used_elem(struct net_machine *m, unsigned int q, unsigned int i)
{
        return netm_used(m, q)->ring[i % QSIZE];
}

void netm_pattern(uint8_t *p, size_t len, unsigned int seed)
{
        for (size_t i = 0; i < len; i++)
                p[i] = (uint8_t)(i * 31 + seed * 7 + 1);
}

/* A frame of len bytes (header included) from the host on pair k. */
bool netm_host_send(struct net_machine *m, unsigned int k, const struct virtio_net_hdr_v1 *h, size_t len,
                    unsigned int seed)
{
        static uint8_t pkt[HDR + NET_FRAME_MAX];
        memcpy(pkt, h, HDR);
        netm_pattern(pkt + HDR, len - HDR, seed);
        return send(m->peer[k], pkt, len, MSG_NOSIGNAL) == (ssize_t)len;
}

/* The next frame the host got on pair k, waiting at most 2 s; its length or -1. */
ssize_t netm_host_recv(struct net_machine *m, unsigned int k, void *buf, size_t len, int timeout_ms)
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
void netm_guest_tx(struct net_machine *m, unsigned int q, unsigned int slot, const struct virtio_net_hdr_v1 *h,
                   uint32_t len, uint32_t cut, unsigned int seed)
{
        uint8_t *p = netm_ptr(m, netm_bufaddr(slot), HDR + len);
        memcpy(p, h, HDR);
        netm_pattern(p + HDR, len, seed);
        if (cut == 0 || cut >= HDR + len) {
                netm_chain_add(m, q, &(struct netm_buf){ netm_bufaddr(slot), HDR + len, false }, 1);
                return;
        }
        const struct netm_buf b[2] = { { netm_bufaddr(slot), cut, false }, { netm_bufaddr(slot) + cut, HDR + len - cut, false } };
        netm_chain_add(m, q, b, 2);
}
