/* The tap back-end against the host's real tun driver: the frames it sends come out of
 * the tap (read here with a packet socket), frames sent into the tap come back through
 * recv(), the offloads land on the interface, and the tap it created is gone once it is
 * destroyed. Needs root and /dev/net/tun; skipped otherwise. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/ethtool.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <linux/virtio_net.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/capability.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "common/util.h"
#include "vmm/virtio/net_backend.h"

#define ETH_TYPE_TEST 0x88b5 /* IEEE "local experimental": nothing on the host answers it */
#define HDR_LEN sizeof(struct virtio_net_hdr_v1)

static bool tap_usable(void)
{
        if (geteuid() != 0 || access("/dev/net/tun", R_OK | W_OK) < 0)
                return false;
        return true;
}

#define NEED_TAP()                                                         \
        do {                                                               \
                if (!tap_usable())                                         \
                        SKIP("needs root and /dev/net/tun");               \
        } while (0)

static void tap_name(struct net_backend *b, unsigned int qp, char name[IFNAMSIZ])
{
        struct ifreq ifr = { 0 };
        name[0] = '\0';
        if (ioctl(b->fds[qp], TUNGETIFF, &ifr) == 0)
                snprintf(name, IFNAMSIZ, "%s", ifr.ifr_name);
}

static int open_tap(const struct vm_net *cfg, unsigned int queues, struct net_backend **b, char **msg)
{
        cleanup_error cap_error_t err = NULL;
        int rc = net_backend_open(cfg, 0, queues, b, &err);
        *msg = err ? xstrdup(err->msg) : NULL;
        return rc;
}

/* A packet socket on the tap: what the host's stack sees of it. */
static int packet_socket(const char *ifname)
{
        int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_TYPE_TEST));
        if (fd < 0)
                return -1;
        struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_TYPE_TEST),
                                   .sll_ifindex = (int)if_nametoindex(ifname) };
        if (bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0) {
                close(fd);
                return -1;
        }
        return fd;
}

static size_t make_frame(uint8_t *f, size_t len, uint8_t fill)
{
        memset(f, 0xff, 6);                                  /* broadcast */
        memcpy(f + 6, (uint8_t[]){ 0x52, 0x54, 0, 0x12, 0x34, 0x56 }, 6);
        f[12] = ETH_TYPE_TEST >> 8;
        f[13] = ETH_TYPE_TEST & 0xff;
        memset(f + 14, fill, len - 14);
        return len;
}

static bool link_up(const char *ifname)
{
        int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct ifreq ifr = { 0 };
        snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
        bool up = s >= 0 && ioctl(s, SIOCGIFFLAGS, &ifr) == 0 && (ifr.ifr_flags & IFF_UP);
        if (s >= 0)
                close(s);
        return up;
}

static int ethtool_get(const char *ifname, uint32_t cmd)
{
        int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct ethtool_value v = { .cmd = cmd };
        struct ifreq ifr = { .ifr_data = (void *)&v };
        snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
        int rc = s >= 0 && ioctl(s, SIOCETHTOOL, &ifr) == 0 ? (int)v.data : -1;
        if (s >= 0)
                close(s);
        return rc;
}

/* The next frame of this test's type: the host's stack sends its own (IPv6 neighbour
 * discovery) into any tap that comes up. */
static ssize_t recv_test_frame(struct net_backend *b, struct iovec rx[2])
{
        for (;;) {
                ssize_t n = b->ops->recv(b, 0, rx, 2);
                const uint8_t *f = rx[1].iov_base;
                if (n < (ssize_t)(HDR_LEN + 14) || (f[12] << 8 | f[13]) == ETH_TYPE_TEST)
                        return n;
        }
}

TEST(tap_created_carries_frames_both_ways_and_disappears)
{
        NEED_TAP();
        struct vm_net cfg = { .backend = VM_NET_TAP, .queues = 1 };
        struct net_backend *b = NULL;
        cleanup_free char *msg = NULL;
        CHECK(open_tap(&cfg, 1, &b, &msg) == 0);
        char name[IFNAMSIZ];
        tap_name(b, 0, name);
        CHECK(str_has_prefix(name, "capsule"));
        CHECK(b->vnet_hdr && b->n_queue_pairs == 1);
        CHECK(b->features & (1ULL << VIRTIO_NET_F_CSUM));
        CHECK(b->features & (1ULL << VIRTIO_NET_F_GUEST_CSUM));
        CHECK(b->features & (1ULL << VIRTIO_NET_F_HOST_TSO4));
        CHECK(b->features & (1ULL << VIRTIO_NET_F_GUEST_TSO6));
        CHECK(link_up(name));
        int pkt = packet_socket(name);
        CHECK(pkt >= 0);

        /* Guest to host: header (no offload) then the frame. */
        struct virtio_net_hdr_v1 hdr = { .gso_type = VIRTIO_NET_HDR_GSO_NONE };
        uint8_t frame[200], got[2048];
        make_frame(frame, sizeof(frame), 0xa5);
        struct iovec tx[2] = { { &hdr, HDR_LEN }, { frame, sizeof(frame) } };
        CHECK(b->ops->send(b, 0, tx, 2) == (ssize_t)(HDR_LEN + sizeof(frame)));
        struct pollfd p = { .fd = pkt, .events = POLLIN };
        CHECK(poll(&p, 1, 2000) == 1);
        CHECK(recv(pkt, got, sizeof(got), 0) == (ssize_t)sizeof(frame) && memcmp(got, frame, sizeof(frame)) == 0);

        /* Host to guest: nothing waiting, then a frame too big for the buffer (dropped
         * whole), then one that fits. */
        struct virtio_net_hdr_v1 rh;
        uint8_t small[300];
        struct iovec rx[2] = { { &rh, HDR_LEN }, { small, sizeof(small) } };
        CHECK(recv_test_frame(b, rx) == -EAGAIN);
        uint8_t big[1000];
        make_frame(big, sizeof(big), 0x11);
        CHECK(send(pkt, big, sizeof(big), 0) == (ssize_t)sizeof(big));
        make_frame(frame, 100, 0x22);
        CHECK(send(pkt, frame, 100, 0) == 100);
        p.fd = b->fds[0];
        CHECK(poll(&p, 1, 2000) == 1);
        CHECK(recv_test_frame(b, rx) == (ssize_t)(HDR_LEN + 100));
        CHECK(rh.gso_type == VIRTIO_NET_HDR_GSO_NONE && memcmp(small, frame, 100) == 0);
        CHECK(recv_test_frame(b, rx) == -EAGAIN);
        close(pkt);

        b->ops->destroy(b);
        CHECK(if_nametoindex(name) == 0);
}

TEST(tap_offloads_follow_the_guest)
{
        NEED_TAP();
        struct vm_net cfg = { .backend = VM_NET_TAP, .queues = 1 };
        struct net_backend *b = NULL;
        cleanup_free char *msg = NULL;
        CHECK(open_tap(&cfg, 1, &b, &msg) == 0);
        char name[IFNAMSIZ];
        tap_name(b, 0, name);
        cleanup_error cap_error_t err = NULL;
        /* Nothing negotiated yet: the host's stack must not hand the tap a TSO segment. */
        int tso_before = ethtool_get(name, ETHTOOL_GTSO);
        int rc1 = b->ops->set_offloads(b, 1ULL << VIRTIO_NET_F_GUEST_CSUM | 1ULL << VIRTIO_NET_F_GUEST_TSO4 |
                                                  1ULL << VIRTIO_NET_F_GUEST_TSO6, &err);
        int tso_on = ethtool_get(name, ETHTOOL_GTSO), csum_on = ethtool_get(name, ETHTOOL_GTXCSUM);
        /* TSO without checksum offload is meaningless: the tap takes neither. */
        int rc2 = b->ops->set_offloads(b, 1ULL << VIRTIO_NET_F_GUEST_TSO4, &err);
        int tso_off = ethtool_get(name, ETHTOOL_GTSO), csum_off = ethtool_get(name, ETHTOOL_GTXCSUM);
        b->ops->destroy(b);
        CHECK(tso_before == 0);
        CHECK(rc1 == 0 && tso_on == 1 && csum_on == 1);
        CHECK(rc2 == 0 && tso_off == 0 && csum_off == 0);
}

TEST(tap_multiqueue_opens_one_queue_per_pair)
{
        NEED_TAP();
        char want[IFNAMSIZ];
        snprintf(want, sizeof(want), "capmq%d", (int)getpid() % 100000);
        struct vm_net cfg = { .backend = VM_NET_TAP, .ifname = want, .queues = 4 };
        struct net_backend *b = NULL;
        cleanup_free char *msg = NULL;
        CHECK(open_tap(&cfg, 4, &b, &msg) == 0);
        CHECK(b->n_queue_pairs == 4);
        bool same = true;
        for (unsigned int q = 0; q < 4; q++) {
                char name[IFNAMSIZ];
                tap_name(b, q, name);
                same = same && strcmp(name, want) == 0;
        }
        b->ops->destroy(b);
        CHECK(same);
        CHECK(if_nametoindex(want) == 0);
}

/* A persistent tap someone else made: capsule attaches, and leaves it in place. */
TEST(tap_existing_is_attached_and_kept)
{
        NEED_TAP();
        char want[IFNAMSIZ];
        snprintf(want, sizeof(want), "capex%d", (int)getpid() % 100000);
        int own = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
        CHECK(own >= 0);
        struct ifreq ifr = { .ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR };
        snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", want);
        CHECK(ioctl(own, TUNSETIFF, &ifr) == 0 && ioctl(own, TUNSETPERSIST, 1) == 0);
        close(own);

        struct vm_net cfg = { .backend = VM_NET_TAP, .ifname = want, .queues = 1 };
        struct net_backend *b = NULL;
        cleanup_free char *msg = NULL;
        int rc = open_tap(&cfg, 1, &b, &msg);
        if (rc == 0)
                b->ops->destroy(b);
        bool kept = if_nametoindex(want) != 0;
        /* Clean up: attach once more and drop persistence, so it goes with this fd. */
        own = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
        if (own >= 0 && ioctl(own, TUNSETIFF, &ifr) == 0)
                ioctl(own, TUNSETPERSIST, 0);
        if (own >= 0)
                close(own);
        CHECK(rc == 0);
        CHECK(kept);
        CHECK(if_nametoindex(want) == 0);
}

/* A child in a network namespace of its own, waiting to be killed. */
static pid_t netns_child(void)
{
        int pipefd[2];
        if (pipe2(pipefd, O_CLOEXEC) < 0)
                return -1;
        pid_t pid = fork();
        if (pid == 0) {
                char ok = unshare(CLONE_NEWNET) == 0 ? 'y' : 'n';
                if (write(pipefd[1], &ok, 1) != 1 || ok != 'y')
                        _exit(1);
                pause();
                _exit(0);
        }
        close(pipefd[1]);
        char ok = 0;
        if (pid > 0 && (read(pipefd[0], &ok, 1) != 1 || ok != 'y')) {
                waitpid(pid, NULL, 0);
                pid = -1;
        }
        close(pipefd[0]);
        return pid;
}

static bool netns_has(pid_t pid, const char *ifname)
{
        cleanup_free char *path = xasprintf("/proc/%d/net/dev", (int)pid), *text = NULL;
        size_t len;
        cap_error_t err = NULL;
        if (read_file(path, &text, &len, 1 << 20, &err) < 0) {
                cap_error_free(&err);
                return false;
        }
        /* Lines "  NAME: counters...", the name right-aligned. */
        for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
                line += strspn(line, " ");
                if (strncmp(line, ifname, strlen(ifname)) == 0 && line[strlen(ifname)] == ':')
                        return true;
        }
        return false;
}

TEST(tap_in_netns)
{
        NEED_TAP();
        pid_t child = netns_child();
        CHECK(child > 0);
        cleanup_free char *ns = xasprintf("/proc/%d/ns/net", (int)child);
        char want[IFNAMSIZ];
        snprintf(want, sizeof(want), "capns%d", (int)getpid() % 100000);
        struct vm_net cfg = { .backend = VM_NET_TAP, .ifname = want, .netns = ns, .queues = 2 };
        struct net_backend *b = NULL;
        cleanup_free char *msg = NULL;
        int rc = open_tap(&cfg, 2, &b, &msg);
        char name[IFNAMSIZ] = "";
        bool there = false, here = true, up = false;
        if (rc == 0) {
                tap_name(b, 0, name);
                there = netns_has(child, name);
                here = if_nametoindex(name) != 0;
                up = b->fds[1] >= 0;
                b->ops->destroy(b);
        }
        bool gone = !netns_has(child, name);
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        CHECK(rc == 0);
        CHECK(there && !here && up && gone);
}

TEST(tap_bad_settings_name_the_nic)
{
        NEED_TAP();
        struct net_backend *b = NULL;
        cleanup_free char *m1 = NULL, *m2 = NULL, *m3 = NULL, *m4 = NULL;
        struct vm_net missing = { .backend = VM_NET_TAP, .netns = "/nonexistent/netns", .queues = 1 };
        CHECK(open_tap(&missing, 1, &b, &m1) < 0);
        CHECK(m1 && strstr(m1, "net[0]: tap: netns /nonexistent/netns") && strstr(m1, "No such file"));
        struct vm_net notns = { .backend = VM_NET_TAP, .netns = "/dev/null", .queues = 1 };
        CHECK(open_tap(&notns, 1, &b, &m2) < 0);
        CHECK(m2 && strstr(m2, "not a network namespace"));
        struct vm_net longname = { .backend = VM_NET_TAP, .ifname = "a-name-far-too-long", .queues = 1 };
        CHECK(open_tap(&longname, 1, &b, &m3) < 0);
        CHECK(m3 && strstr(m3, "net[0]: tap `a-name-far-too-long`"));
        struct vm_net many = { .backend = VM_NET_TAP, .queues = 17 };
        CHECK(open_tap(&many, 17, &b, &m4) < 0);
        CHECK(m4 && strstr(m4, "17 queues"));
}

/* Capabilities are a thread's: this one gives up CAP_NET_ADMIN and tries. */
static void *open_without_net_admin(void *arg)
{
        char **msg = arg;
        cap_t caps = cap_get_proc();
        cap_value_t admin = CAP_NET_ADMIN;
        if (!caps || cap_set_flag(caps, CAP_EFFECTIVE, 1, &admin, CAP_CLEAR) < 0 || cap_set_proc(caps) < 0) {
                cap_free(caps);
                return NULL;
        }
        cap_free(caps);
        struct vm_net cfg = { .backend = VM_NET_TAP, .queues = 1 };
        struct net_backend *b = NULL;
        if (open_tap(&cfg, 1, &b, msg) == 0)
                b->ops->destroy(b);
        return NULL;
}

TEST(tap_without_cap_net_admin_says_so)
{
        NEED_TAP();
        char *msg = NULL;
        pthread_t t;
        CHECK(pthread_create(&t, NULL, open_without_net_admin, &msg) == 0);
        pthread_join(t, NULL);
        cleanup_free char *m = msg;
        CHECK(m && strstr(m, "net[0]: tap: cannot create or attach it (a tap needs CAP_NET_ADMIN"));
}
