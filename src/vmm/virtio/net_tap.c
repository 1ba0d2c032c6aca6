/* The tap back-end: one /dev/net/tun queue per virtio-net queue pair, each frame preceded
 * by a struct virtio_net_hdr_v1 (IFF_VNET_HDR, TUNSETVNETHDRSZ), so checksum and
 * segmentation offloads cross in both directions.
 *
 * capsule never makes a tap persistent: a tap it creates lives exactly as long as its
 * fds, so it disappears however capsule ends (exit, crash, kill -9), and closing the fds
 * of a persistent tap someone else made leaves it in place. Every fd is close-on-exec,
 * or a child (passt, virtiofsd) would keep the tap alive.
 *
 * With netns=PATH a short-lived thread enters that namespace and does the TUNSETIFF
 * there (a tap belongs to the namespace it was created in); the fds it opened keep
 * working in capsule's own namespace. The sandbox makes its tap itself instead
 * (vm_tap_claim(), one queue) and hands the VM its fd. */
#include <fcntl.h>
#include <linux/if_tun.h>
#include <linux/virtio_net.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/util.h"
#include "vmm/virtio/net_backend.h"
#include "vmm/vm.h"

#define TAP_NAME_TEMPLATE "capsule%d" /* the kernel picks the first free number */
#define TAP_MAX_IOV 1023              /* UIO_MAXIOV, readv's own limit, less the spare byte */

/* The offloads a tap can take, as TUN_F_* bits and the virtio-net features they allow:
 * the host side (what capsule may write into the tap) and the guest side (what the tap
 * may hand capsule, and so the guest, once TUNSETOFFLOAD allows it). */
static const struct tap_offload {
        unsigned int tun;
        uint64_t host, guest;
} tap_offloads[] = {
        { TUN_F_CSUM, 1ULL << VIRTIO_NET_F_CSUM, 1ULL << VIRTIO_NET_F_GUEST_CSUM },
        { TUN_F_TSO4, 1ULL << VIRTIO_NET_F_HOST_TSO4, 1ULL << VIRTIO_NET_F_GUEST_TSO4 },
        { TUN_F_TSO6, 1ULL << VIRTIO_NET_F_HOST_TSO6, 1ULL << VIRTIO_NET_F_GUEST_TSO6 },
        { TUN_F_TSO_ECN, 1ULL << VIRTIO_NET_F_HOST_ECN, 1ULL << VIRTIO_NET_F_GUEST_ECN },
        { TUN_F_UFO, 1ULL << VIRTIO_NET_F_HOST_UFO, 1ULL << VIRTIO_NET_F_GUEST_UFO },
};

struct tap {
        struct net_backend b;
        char ifname[IFNAMSIZ];
};

/* What the opening needs and gives back, shared with the netns thread. */
struct tap_open {
        const char *name;    /* NULL: a new tap named by TAP_NAME_TEMPLATE */
        unsigned int queues;
        bool exclusive;      /* name must be new (IFF_TUN_EXCL) */
        int netns_fd;        /* -1: capsule's own namespace */
        int *fds;            /* out: queues fds */
        char ifname[IFNAMSIZ]; /* out */
        int rc;
        cap_error_t *err;    /* the caller's: it waits for the thread */
};

/* A queue fd attached to its tap (ifr: its TUNSETIFF or TUNGETIFF): vnet headers of
 * virtio-net's size, the tap's name in o->ifname, and *fd handed to *fd_out. */
static int tap_queue_take(struct tap_open *o, int *fd, const struct ifreq *ifr, int *fd_out)
{
        int hdr_len = sizeof(struct virtio_net_hdr_v1);
        if (ioctl(*fd, TUNSETVNETHDRSZ, &hdr_len) < 0)
                return cap_fail(o->err, errno, "TUNSETVNETHDRSZ");
        memcpy(o->ifname, ifr->ifr_name, IFNAMSIZ);
        o->ifname[IFNAMSIZ - 1] = '\0';
        *fd_out = steal_fd(fd);
        return 0;
}

static int tap_queue_open(struct tap_open *o, const char *name, int *fd_out)
{
        cleanup_close int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
                return cap_fail(o->err, errno, "cannot open /dev/net/tun");
        unsigned int features = 0;
        if (ioctl(fd, TUNGETFEATURES, &features) < 0 || !(features & IFF_VNET_HDR) ||
            (o->queues > 1 && !(features & IFF_MULTI_QUEUE)))
                return cap_fail(o->err, 0, "the host's tun driver lacks vnet headers or multiqueue");
        struct ifreq ifr = { .ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR };
        if (o->queues > 1)
                ifr.ifr_flags |= IFF_MULTI_QUEUE;
        if (o->exclusive)
                ifr.ifr_flags |= IFF_TUN_EXCL;
        snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
        if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
                int e = errno;
                if (e == EPERM)
                        return cap_fail(o->err, e, "cannot create or attach it (a tap needs CAP_NET_ADMIN: run "
                                        "capsule as root, or use --net user)");
                if (e == EINVAL)
                        return cap_fail(o->err, e, "cannot attach it (not a tap, or a tap whose multi_queue setting "
                                        "does not match queues=%u)", o->queues);
                if (e == EBUSY && o->exclusive)
                        return cap_fail(o->err, e, "an interface of that name exists already");
                if (e == EBUSY)
                        return cap_fail(o->err, e, "cannot attach it (another process holds it)");
                return cap_fail(o->err, e, "TUNSETIFF");
        }
        return tap_queue_take(o, &fd, &ifr, fd_out);
}

/* Up, as a NIC whose cable is plugged in: the host's side then sees the guest's frames. */
static int tap_link_up(struct tap_open *o, bool created)
{
        cleanup_close int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (sock < 0)
                return cap_fail(o->err, errno, "socket");
        struct ifreq ifr = { 0 };
        memcpy(ifr.ifr_name, o->ifname, IFNAMSIZ);
        if (ioctl(sock, SIOCGIFFLAGS, &ifr) < 0)
                return cap_fail(o->err, errno, "SIOCGIFFLAGS");
        if (ifr.ifr_flags & IFF_UP)
                return 0;
        ifr.ifr_flags |= IFF_UP;
        /* A tap someone else made is theirs to configure: capsule brings it up when it may. */
        if (ioctl(sock, SIOCSIFFLAGS, &ifr) < 0 && created)
                return cap_fail(o->err, errno, "cannot bring the link up");
        return 0;
}

static int tap_open_queues(struct tap_open *o)
{
        bool created = o->exclusive || !o->name || !if_nametoindex(o->name);
        for (unsigned int q = 0; q < o->queues; q++) {
                const char *name = q > 0 ? o->ifname : o->name ? o->name : TAP_NAME_TEMPLATE;
                if (tap_queue_open(o, name, &o->fds[q]) < 0)
                        return -1;
        }
        return tap_link_up(o, created);
}

static void *tap_open_thread(void *arg)
{
        struct tap_open *o = arg;
        if (setns(o->netns_fd, CLONE_NEWNET) < 0)
                o->rc = cap_fail(o->err, errno, errno == EINVAL ? "not a network namespace" : "cannot enter it");
        else
                o->rc = tap_open_queues(o);
        return NULL;
}

/* In the namespace at netns, on a thread of its own, so capsule's threads stay in theirs. */
static int tap_open_in_netns(struct tap_open *o, const char *netns)
{
        cleanup_close int ns = open(netns, O_RDONLY | O_CLOEXEC);
        if (ns < 0)
                return cap_fail(o->err, errno, "netns %s", netns);
        o->netns_fd = ns;
        pthread_t t;
        int e = pthread_create(&t, NULL, tap_open_thread, o);
        if (e)
                return cap_fail(o->err, e, "cannot start a thread");
        pthread_join(t, NULL);
        return o->rc < 0 ? cap_error_prefix(o->err, "netns %s", netns) : 0;
}

int vm_tap_claim(const char *name, cap_error_t *err)
{
        int fd = -1;
        struct tap_open o = { .name = name, .queues = 1, .exclusive = true, .netns_fd = -1, .fds = &fd, .err = err };
        if (tap_open_queues(&o) < 0) {
                cap_closep(&fd);
                return cap_error_prefix(err, "tap `%s`", name);
        }
        return fd;
}

/* The caller's tap (vm_tap_claim()): a copy of its fd, checked to be one queue with vnet headers. */
static int tap_adopt(struct tap_open *o, int given)
{
        cleanup_close int fd = fcntl(given, F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
                return cap_fail(o->err, errno, "its fd %d", given);
        struct ifreq ifr = { 0 };
        if (ioctl(fd, TUNGETIFF, &ifr) < 0)
                return cap_fail(o->err, errno, "its fd %d is no tap", given);
        if ((ifr.ifr_flags & (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE)) != (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
                return cap_fail(o->err, 0, "its fd %d is no single-queue tap with vnet headers", given);
        if (fcntl(fd, F_SETFL, O_NONBLOCK) < 0)
                return cap_fail(o->err, errno, "its fd %d: O_NONBLOCK", given);
        return tap_queue_take(o, &fd, &ifr, &o->fds[0]);
}

static ssize_t tap_send(struct net_backend *b, unsigned int qp, const struct iovec *iov, int iovcnt)
{
        size_t len = 0;
        for (int i = 0; i < iovcnt; i++)
                len += iov[i].iov_len;
        ssize_t n;
        do
                n = writev(b->fds[qp], iov, iovcnt);
        while (n < 0 && errno == EINTR);
        if (n >= 0)
                return (ssize_t)len;
        switch (errno) {
        case EAGAIN:
                return -EAGAIN;
        case EBADF:
        case EBADFD:
        case ENXIO:
        case ENODEV:
                return -errno;
        default:
                /* Refused (link down: EIO; a header the kernel rejects: EINVAL; no memory):
                 * that frame is lost, as on a wire, and the next may pass. */
                return (ssize_t)len;
        }
}

static ssize_t tap_recv(struct net_backend *b, unsigned int qp, const struct iovec *iov, int iovcnt)
{
        /* tun cuts a frame to the buffer and says nothing: one spare byte behind the
         * caller's buffers tells a frame that fitted from one that did not. */
        struct iovec v[TAP_MAX_IOV + 1];
        if (iovcnt < 0 || iovcnt > TAP_MAX_IOV)
                return -EINVAL;
        size_t room = 0;
        for (int i = 0; i < iovcnt; i++) {
                v[i] = iov[i];
                room += iov[i].iov_len;
        }
        uint8_t spare;
        v[iovcnt] = (struct iovec){ &spare, 1 };
        for (;;) {
                ssize_t n = readv(b->fds[qp], v, iovcnt + 1);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                if ((size_t)n <= room)
                        return n;
        }
}

static int tap_set_offloads(struct net_backend *b, uint64_t guest_features, cap_error_t *err)
{
        struct tap *t = b->opaque;
        unsigned int tun = 0;
        for (size_t i = 0; i < ARRAY_SIZE(tap_offloads); i++)
                if (guest_features & tap_offloads[i].guest)
                        tun |= tap_offloads[i].tun;
        /* Segments arrive with partial checksums: without GUEST_CSUM the guest takes neither. */
        if (!(tun & TUN_F_CSUM))
                tun = 0;
        if (ioctl(b->fds[0], TUNSETOFFLOAD, tun) < 0)
                return cap_fail(err, errno, "tap `%s`: TUNSETOFFLOAD %#x", t->ifname, tun);
        return 0;
}

static void tap_destroy(struct net_backend *b)
{
        struct tap *t = b->opaque;
        for (unsigned int q = 0; q < b->n_queue_pairs; q++)
                if (b->fds[q] >= 0)
                        close(b->fds[q]);
        free(t);
}

static const struct net_backend_ops tap_ops = {
        .send = tap_send,
        .recv = tap_recv,
        .set_offloads = tap_set_offloads,
        .destroy = tap_destroy,
};

/* The offloads this host's tap takes: all of them, but kernels differ on UFO. Probing
 * leaves the tap taking none, until the guest's features say otherwise. */
static uint64_t tap_probe_features(int fd)
{
        uint64_t features = 0;
        unsigned int all = 0;
        for (size_t i = 0; i < ARRAY_SIZE(tap_offloads); i++)
                all |= tap_offloads[i].tun;
        if (ioctl(fd, TUNSETOFFLOAD, all) < 0)
                all &= ~TUN_F_UFO;
        if (ioctl(fd, TUNSETOFFLOAD, all) < 0)
                all = 0;
        for (size_t i = 0; i < ARRAY_SIZE(tap_offloads); i++)
                if (all & tap_offloads[i].tun)
                        features |= tap_offloads[i].host | tap_offloads[i].guest;
        ioctl(fd, TUNSETOFFLOAD, 0);
        return features;
}

int net_tap_open(const struct vm_net *cfg, unsigned int index, unsigned int queue_pairs, struct net_backend **out,
                 cap_error_t *err)
{
        cleanup_free char *what = cfg->ifname ? xasprintf("net[%u]: tap `%s`", index, cfg->ifname)
                                              : xasprintf("net[%u]: tap", index);
        if (cfg->ifname && (!*cfg->ifname || strlen(cfg->ifname) >= IFNAMSIZ || strchr(cfg->ifname, '/')))
                return cap_fail(err, 0, "%s: not an interface name (1 to %d bytes, no '/')", what, IFNAMSIZ - 1);
        if (queue_pairs < 1 || queue_pairs > NET_MAX_QUEUE_PAIRS)
                return cap_fail(err, 0, "%s: %u queues (1 to %d)", what, queue_pairs, NET_MAX_QUEUE_PAIRS);
        struct tap *t = xmalloc0(sizeof(*t));
        t->b.ops = &tap_ops;
        t->b.opaque = t;
        t->b.vnet_hdr = true;
        for (unsigned int q = 0; q < NET_MAX_QUEUE_PAIRS; q++)
                t->b.fds[q] = -1;
        struct tap_open o = { .name = cfg->ifname, .queues = queue_pairs, .netns_fd = -1, .fds = t->b.fds, .err = err };
        /* Every queue opened so far closes with the tap, whatever failed. */
        t->b.n_queue_pairs = queue_pairs;
        if (cfg->tap_fd_set && queue_pairs != 1) {
                tap_destroy(&t->b);
                return cap_fail(err, 0, "%s: a tap made by the caller has one queue, not %u", what, queue_pairs);
        }
        int rc = cfg->tap_fd_set ? tap_adopt(&o, cfg->tap_fd)
                 : cfg->netns    ? tap_open_in_netns(&o, cfg->netns)
                                 : tap_open_queues(&o);
        if (rc < 0) {
                tap_destroy(&t->b);
                return cap_error_prefix(err, "%s", what);
        }
        memcpy(t->ifname, o.ifname, IFNAMSIZ);
        t->b.features = tap_probe_features(t->b.fds[0]);
        *out = &t->b;
        return 0;
}
