/* The vhost-user front-end: message encoding, reply validation, timeouts and the fds that
 * travel with messages, against a scripted back-end on a socketpair; then the real
 * virtiofsd (Debian's, when present and run as root) through a whole start and stop. */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "common/util.h"
#include <linux/virtio_config.h>

#include "vmm/virtio/vhost_user.h"
#include "vmm/virtio/vhost_user_backend.h"
#include "vmm/virtio/virtqueue.h"

#define MiB (1ULL << 20)
#define VIRTIOFSD "/usr/lib/qemu/virtiofsd"

struct peer {
        int front, back; /* capsule's end, the scripted back-end's end */
};

static void peer_open(struct peer *p)
{
        int sv[2];
        p->front = p->back = -1;
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0) {
                p->front = sv[0];
                p->back = sv[1];
        }
}

/* Queue a reply before the front-end asks: it reads replies in order. */
static void reply(struct peer *p, uint32_t request, uint32_t flags, const void *payload, uint32_t size)
{
        struct vhost_user_msg m = { .hdr = { .request = request, .flags = flags, .size = size } };
        memcpy(&m.payload, payload, size);
        if (write(p->back, &m, sizeof(m.hdr) + size) != (ssize_t)(sizeof(m.hdr) + size))
                abort();
}

static void reply_u64(struct peer *p, uint32_t request, uint64_t value)
{
        reply(p, request, VHOST_USER_VERSION | VHOST_USER_REPLY_MASK, &value, sizeof(value));
}

/* Read one request the front-end sent, with the fds that came with it. */
static int read_request(struct peer *p, struct vhost_user_msg *m, int *fds, int *n_fds)
{
        union {
                char buf[CMSG_SPACE(sizeof(int) * VHOST_USER_MAX_REGIONS)];
                struct cmsghdr align;
        } control;
        memset(m, 0, sizeof(*m));
        struct iovec iov = { .iov_base = &m->hdr, .iov_len = sizeof(m->hdr) };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                             .msg_controllen = sizeof(control.buf) };
        *n_fds = 0;
        if (recvmsg(p->back, &mh, MSG_DONTWAIT) != (ssize_t)sizeof(m->hdr))
                return -1;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
                *n_fds = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
                memcpy(fds, CMSG_DATA(c), sizeof(int) * (size_t)*n_fds);
        }
        if (m->hdr.size > sizeof(m->payload))
                return -1;
        if (m->hdr.size && read(p->back, &m->payload, m->hdr.size) != (ssize_t)m->hdr.size)
                return -1;
        return 0;
}

static bool same_file(int a, int b)
{
        struct stat sa, sb;
        return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

TEST(message_layouts)
{
        struct vhost_user_msg m;
        CHECK(sizeof(m.hdr) == 12);
        CHECK((uint8_t *)&m.payload - (uint8_t *)&m == 12);
        CHECK(sizeof(m.payload.addr) == 40 && sizeof(m.payload.state) == 8);
        CHECK(sizeof(m.payload.mem) == 264);
        CHECK(vhost_user_reply_size(VHOST_USER_GET_FEATURES) == 8);
        CHECK(vhost_user_reply_size(VHOST_USER_GET_VRING_BASE) == 8);
        CHECK(vhost_user_reply_size(VHOST_USER_SET_VRING_ADDR) == 0);
}

TEST(handshake_with_reply_ack)
{
        struct peer p;
        peer_open(&p);
        cleanup_close int back = p.back;
        struct vhost_user vu;
        vhost_user_init(&vu, p.front, "share[0]");
        cleanup_error cap_error_t err = NULL;
        uint64_t features = (1ULL << 32) | (1ULL << VHOST_USER_F_PROTOCOL_FEATURES) | (1ULL << 28);
        reply_u64(&p, VHOST_USER_GET_FEATURES, features);
        reply_u64(&p, VHOST_USER_GET_PROTOCOL_FEATURES, (1ULL << VHOST_USER_PROTOCOL_F_REPLY_ACK) | (1ULL << 9));
        reply_u64(&p, VHOST_USER_SET_OWNER, 0);
        CHECK(vhost_user_handshake(&vu, &err) == 0);
        CHECK(vu.features == features);
        CHECK(vu.protocol_features == 1ULL << VHOST_USER_PROTOCOL_F_REPLY_ACK);

        struct vhost_user_msg m;
        int fds[8], n;
        CHECK(read_request(&p, &m, fds, &n) == 0);
        CHECK(m.hdr.request == VHOST_USER_GET_FEATURES && m.hdr.flags == VHOST_USER_VERSION && m.hdr.size == 0);
        CHECK(read_request(&p, &m, fds, &n) == 0);
        CHECK(m.hdr.request == VHOST_USER_GET_PROTOCOL_FEATURES && m.hdr.size == 0);
        /* Only REPLY_ACK is taken, and it is not in force until the back-end has it. */
        CHECK(read_request(&p, &m, fds, &n) == 0);
        CHECK(m.hdr.request == VHOST_USER_SET_PROTOCOL_FEATURES && m.hdr.flags == VHOST_USER_VERSION);
        CHECK(m.hdr.size == 8 && m.payload.u64 == 1ULL << VHOST_USER_PROTOCOL_F_REPLY_ACK);
        CHECK(read_request(&p, &m, fds, &n) == 0);
        CHECK(m.hdr.request == VHOST_USER_SET_OWNER);
        CHECK(m.hdr.flags == (VHOST_USER_VERSION | VHOST_USER_NEED_REPLY_MASK) && m.hdr.size == 0);
        CHECK(read_request(&p, &m, fds, &n) < 0); /* nothing more */

        /* SET_FEATURES keeps PROTOCOL_FEATURES and refuses what the back-end lacks. */
        reply_u64(&p, VHOST_USER_SET_FEATURES, 0);
        CHECK(vhost_user_set_features(&vu, 1ULL << 32, &err) == 0);
        CHECK(read_request(&p, &m, fds, &n) == 0);
        CHECK(m.hdr.request == VHOST_USER_SET_FEATURES);
        CHECK(m.payload.u64 == ((1ULL << 32) | (1ULL << VHOST_USER_F_PROTOCOL_FEATURES)));
        CHECK(vhost_user_set_features(&vu, 1ULL << 29, &err) < 0);
        CHECK(strstr(err->msg, "share[0]") && strstr(err->msg, "lacks"));
        vhost_user_close(&vu);
}

TEST(handshake_without_protocol_features)
{
        struct peer p;
        peer_open(&p);
        cleanup_close int back = p.back;
        struct vhost_user vu;
        vhost_user_init(&vu, p.front, "share[1]");
        cleanup_error cap_error_t err = NULL;
        reply_u64(&p, VHOST_USER_GET_FEATURES, 1ULL << 32);
        CHECK(vhost_user_handshake(&vu, &err) == 0);
        CHECK(vu.protocol_features == 0);
        struct vhost_user_msg m;
        int fds[8], n;
        CHECK(read_request(&p, &m, fds, &n) == 0 && m.hdr.request == VHOST_USER_GET_FEATURES);
        /* No REPLY_ACK: SET_OWNER is only sent. */
        CHECK(read_request(&p, &m, fds, &n) == 0 && m.hdr.request == VHOST_USER_SET_OWNER);
        CHECK(m.hdr.flags == VHOST_USER_VERSION);
        vhost_user_close(&vu);
}

TEST(reply_validation)
{
        cleanup_error cap_error_t err = NULL;
        struct vhost_user_msg good = { .hdr = { VHOST_USER_GET_FEATURES, VHOST_USER_VERSION | VHOST_USER_REPLY_MASK, 8 },
                                       .payload.u64 = 0x1234 };
        struct vhost_user_msg out, bad;
        CHECK(vhost_user_parse_reply(VHOST_USER_GET_FEATURES, &good, 20, &out, &err) == 0);
        CHECK(out.payload.u64 == 0x1234);
        /* Each rule on its own. */
        CHECK(vhost_user_parse_reply(VHOST_USER_GET_PROTOCOL_FEATURES, &good, 20, &out, &err) < 0);
        cap_error_free(&err);
        CHECK(vhost_user_parse_reply(VHOST_USER_GET_FEATURES, &good, 11, &out, &err) < 0);
        cap_error_free(&err);
        CHECK(vhost_user_parse_reply(VHOST_USER_GET_FEATURES, &good, 19, &out, &err) < 0);
        cap_error_free(&err);
        CHECK(vhost_user_parse_reply(VHOST_USER_GET_FEATURES, &good, 21, &out, &err) < 0);
        cap_error_free(&err);
        bad = good;
        bad.hdr.flags = VHOST_USER_VERSION;
        CHECK(vhost_user_parse_reply(VHOST_USER_GET_FEATURES, &bad, 20, &out, &err) < 0);
        cap_error_free(&err);
        bad.hdr.flags = 2 | VHOST_USER_REPLY_MASK;
        CHECK(vhost_user_parse_reply(VHOST_USER_GET_FEATURES, &bad, 20, &out, &err) < 0);
        cap_error_free(&err);
        bad.hdr.flags = VHOST_USER_VERSION | VHOST_USER_REPLY_MASK | VHOST_USER_NEED_REPLY_MASK;
        CHECK(vhost_user_parse_reply(VHOST_USER_GET_FEATURES, &bad, 20, &out, &err) < 0);
        cap_error_free(&err);
        bad = good;
        bad.hdr.size = 4;
        CHECK(vhost_user_parse_reply(VHOST_USER_GET_FEATURES, &bad, 16, &out, &err) < 0);
        cap_error_free(&err);
        /* An ack is a u64 too; a vring state reply is 8 bytes. */
        bad = good;
        bad.hdr.request = VHOST_USER_SET_VRING_ADDR;
        CHECK(vhost_user_parse_reply(VHOST_USER_SET_VRING_ADDR, &bad, 20, &out, &err) == 0);
        bad.hdr.request = VHOST_USER_GET_VRING_BASE;
        CHECK(vhost_user_parse_reply(VHOST_USER_GET_VRING_BASE, &bad, 20, &out, &err) == 0);
}

TEST(silent_back_end_times_out)
{
        struct peer p;
        peer_open(&p);
        cleanup_close int back = p.back;
        struct vhost_user vu;
        vhost_user_init(&vu, p.front, "share[2]");
        vu.timeout_ms = 100;
        cleanup_error cap_error_t err = NULL;
        long long t = now_ms();
        CHECK(vhost_user_handshake(&vu, &err) < 0);
        /* The first answer waits longer: the back-end may still be starting. */
        CHECK(now_ms() - t >= 100 * VHOST_USER_FIRST_ANSWER_FACTOR && now_ms() - t < 2000);
        CHECK(vu.timeout_ms == 100);
        CHECK(strstr(err->msg, "share[2]") && strstr(err->msg, "GET_FEATURES") && strstr(err->msg, "no answer"));
        CHECK(vu.broken);
        /* A late reply cannot be mistaken for the next one's: the connection is not used again. */
        reply_u64(&p, VHOST_USER_GET_FEATURES, 1);
        cap_error_free(&err);
        CHECK(vhost_user_handshake(&vu, &err) < 0);
        CHECK(strstr(err->msg, "failed earlier"));
        vhost_user_close(&vu);
}

TEST(closed_back_end)
{
        struct peer p;
        peer_open(&p);
        close(p.back);
        struct vhost_user vu;
        vhost_user_init(&vu, p.front, "share[0]");
        cleanup_error cap_error_t err = NULL;
        CHECK(vhost_user_handshake(&vu, &err) < 0);
        CHECK(strstr(err->msg, "closed the connection") || strstr(err->msg, "send"));
        vhost_user_close(&vu);
}

TEST(reply_errors)
{
        struct peer p;
        peer_open(&p);
        cleanup_close int back = p.back;
        struct vhost_user vu;
        vhost_user_init(&vu, p.front, "share[0]");
        cleanup_error cap_error_t err = NULL;
        /* A payload larger than any message is refused before it is read. */
        struct vhost_user_hdr h = { VHOST_USER_GET_FEATURES, VHOST_USER_VERSION | VHOST_USER_REPLY_MASK, 1u << 20 };
        CHECK(write(p.back, &h, sizeof(h)) == sizeof(h));
        CHECK(vhost_user_handshake(&vu, &err) < 0);
        CHECK(strstr(err->msg, "payload"));
        vhost_user_close(&vu);
        cap_error_free(&err);

        /* A reply that carries an fd: refused, and the fd is not kept. */
        peer_open(&p);
        cleanup_close int back2 = p.back;
        vhost_user_init(&vu, p.front, "share[0]");
        cleanup_close int probe = eventfd(0, EFD_CLOEXEC);
        uint64_t v = 1;
        struct vhost_user_msg m = { .hdr = { VHOST_USER_GET_FEATURES, VHOST_USER_VERSION | VHOST_USER_REPLY_MASK, 8 } };
        memcpy(&m.payload, &v, sizeof(v));
        CHECK(send_fd(p.back, probe, &m, 20) == 0);
        CHECK(vhost_user_handshake(&vu, &err) < 0);
        CHECK(strstr(err->msg, "file descriptors"));
        vhost_user_close(&vu);
        cap_error_free(&err);

        /* A refused request (non-zero ack) names the request. */
        peer_open(&p);
        cleanup_close int back3 = p.back;
        vhost_user_init(&vu, p.front, "share[0]");
        reply_u64(&p, VHOST_USER_GET_FEATURES, 1ULL << VHOST_USER_F_PROTOCOL_FEATURES);
        reply_u64(&p, VHOST_USER_GET_PROTOCOL_FEATURES, 1ULL << VHOST_USER_PROTOCOL_F_REPLY_ACK);
        reply_u64(&p, VHOST_USER_SET_OWNER, 1);
        CHECK(vhost_user_handshake(&vu, &err) < 0);
        CHECK(strstr(err->msg, "refused SET_OWNER"));
        vhost_user_close(&vu);
}

TEST(mem_table_passes_the_memfd_per_region)
{
        struct guest_mem gm;
        cleanup_error cap_error_t err = NULL;
        CHECK(guest_mem_init(&gm, 16 * MiB, false, &err) == 0);
        struct peer p;
        peer_open(&p);
        cleanup_close int back = p.back;
        struct vhost_user vu;
        vhost_user_init(&vu, p.front, "share[0]");
        CHECK(vhost_user_set_mem_table(&vu, &gm, &err) == 0);
        struct vhost_user_msg m;
        int fds[8], n;
        CHECK(read_request(&p, &m, fds, &n) == 0);
        CHECK(m.hdr.request == VHOST_USER_SET_MEM_TABLE && m.hdr.size == sizeof(struct vhost_user_mem_table));
        CHECK(m.payload.mem.nregions == 1 && n == 1);
        CHECK(same_file(fds[0], gm.memfd));
        close(fds[0]);
        struct vhost_user_mem_region r = m.payload.mem.regions[0];
        CHECK(r.guest_phys_addr == 0 && r.memory_size == 16 * MiB && r.mmap_offset == 0);
        CHECK(r.userspace_addr == (uint64_t)(uintptr_t)gm.base);
        vhost_user_close(&vu);
        guest_mem_destroy(&gm);
}

TEST(vring_addresses_are_checked_and_translated)
{
        struct guest_mem gm;
        cleanup_error cap_error_t err = NULL;
        CHECK(guest_mem_init(&gm, 16 * MiB, false, &err) == 0);
        struct vhost_user_vring v = { .size = 256, .desc_gpa = 0x10000, .avail_gpa = 0x11000, .used_gpa = 0x12000 };
        struct vhost_user_vring_addr a;
        CHECK(vhost_user_vring_addr(&gm, 1, &v, &a, &err) == 0);
        CHECK(a.index == 1 && a.flags == 0 && a.log == 0);
        CHECK(a.desc == (uint64_t)(uintptr_t)(gm.base + 0x10000));
        CHECK(a.avail == (uint64_t)(uintptr_t)(gm.base + 0x11000));
        CHECK(a.used == (uint64_t)(uintptr_t)(gm.base + 0x12000));
        /* The used ring's last byte past RAM, a wrapping address, an empty ring. */
        v.used_gpa = 16 * MiB - (6 + 8 * 256) + 1;
        CHECK(vhost_user_vring_addr(&gm, 1, &v, &a, &err) < 0);
        cap_error_free(&err);
        v.used_gpa = 0x12000;
        v.desc_gpa = UINT64_MAX - 8;
        CHECK(vhost_user_vring_addr(&gm, 1, &v, &a, &err) < 0);
        cap_error_free(&err);
        v.desc_gpa = 0x10000;
        v.size = 0;
        CHECK(vhost_user_vring_addr(&gm, 1, &v, &a, &err) < 0);
        guest_mem_destroy(&gm);
}

TEST(vring_start_and_stop)
{
        struct guest_mem gm;
        cleanup_error cap_error_t err = NULL;
        CHECK(guest_mem_init(&gm, 16 * MiB, false, &err) == 0);
        struct peer p;
        peer_open(&p);
        cleanup_close int back = p.back;
        cleanup_close int kick = eventfd(0, EFD_CLOEXEC), call = eventfd(0, EFD_CLOEXEC);
        struct vhost_user vu;
        vhost_user_init(&vu, p.front, "share[0]");
        vu.features = 1ULL << VHOST_USER_F_PROTOCOL_FEATURES;
        vu.protocol_features = 1ULL << VHOST_USER_PROTOCOL_F_REPLY_ACK;
        static const uint32_t order[] = { VHOST_USER_SET_VRING_NUM, VHOST_USER_SET_VRING_BASE, VHOST_USER_SET_VRING_ADDR,
                                          VHOST_USER_SET_VRING_CALL, VHOST_USER_SET_VRING_KICK,
                                          VHOST_USER_SET_VRING_ENABLE };
        for (size_t i = 0; i < ARRAY_SIZE(order); i++)
                reply_u64(&p, order[i], 0);
        struct vhost_user_vring v = { .size = 128, .desc_gpa = 0x10000, .avail_gpa = 0x11000, .used_gpa = 0x12000,
                                      .base = 7, .kick_fd = kick, .call_fd = call };
        CHECK(vhost_user_vring_start(&vu, 1, &v, &gm, &err) == 0);
        struct vhost_user_msg m;
        int fds[8], n;
        for (size_t i = 0; i < ARRAY_SIZE(order); i++) {
                CHECK(read_request(&p, &m, fds, &n) == 0);
                CHECK(m.hdr.request == order[i]);
                CHECK(m.hdr.flags == (VHOST_USER_VERSION | VHOST_USER_NEED_REPLY_MASK));
                switch (m.hdr.request) {
                case VHOST_USER_SET_VRING_NUM:
                        CHECK(m.payload.state.index == 1 && m.payload.state.num == 128);
                        break;
                case VHOST_USER_SET_VRING_BASE:
                        CHECK(m.payload.state.index == 1 && m.payload.state.num == 7);
                        break;
                case VHOST_USER_SET_VRING_ADDR:
                        CHECK(m.hdr.size == 40 && m.payload.addr.desc == (uint64_t)(uintptr_t)(gm.base + 0x10000));
                        break;
                case VHOST_USER_SET_VRING_CALL:
                case VHOST_USER_SET_VRING_KICK:
                        CHECK(m.hdr.size == 8 && m.payload.u64 == 1 && n == 1);
                        CHECK(same_file(fds[0], m.hdr.request == VHOST_USER_SET_VRING_KICK ? kick : call));
                        close(fds[0]);
                        break;
                case VHOST_USER_SET_VRING_ENABLE:
                        CHECK(m.payload.state.index == 1 && m.payload.state.num == 1);
                        break;
                }
        }

        /* GET_VRING_BASE: its own reply, for the right queue. */
        struct vhost_user_vring_state s = { .index = 1, .num = 42 };
        reply(&p, VHOST_USER_GET_VRING_BASE, VHOST_USER_VERSION | VHOST_USER_REPLY_MASK, &s, sizeof(s));
        uint16_t base = 0;
        CHECK(vhost_user_vring_stop(&vu, 1, &base, &err) == 0);
        CHECK(base == 42);
        CHECK(read_request(&p, &m, fds, &n) == 0);
        CHECK(m.hdr.request == VHOST_USER_GET_VRING_BASE && m.hdr.flags == VHOST_USER_VERSION);
        s.index = 0;
        reply(&p, VHOST_USER_GET_VRING_BASE, VHOST_USER_VERSION | VHOST_USER_REPLY_MASK, &s, sizeof(s));
        CHECK(vhost_user_vring_stop(&vu, 1, &base, &err) < 0);
        CHECK(vu.broken);
        vhost_user_close(&vu);
        guest_mem_destroy(&gm);
}

TEST(backend_start_missing_binary)
{
        struct vhost_user_backend b;
        cleanup_error cap_error_t err = NULL;
        char *argv[] = { "/nonexistent/virtiofsd", NULL };
        int sock = -1;
        CHECK(vhost_user_backend_start(&b, argv, &sock, &err) < 0);
        CHECK(strstr(err->msg, "/nonexistent/virtiofsd") && sock == -1 && b.pid == 0);
}

static int count_entries(const char *dir)
{
        DIR *d = opendir(dir);
        int n = 0;
        if (!d)
                return -1;
        for (struct dirent *e; (e = readdir(d));)
                n += e->d_name[0] != '.';
        closedir(d);
        return n;
}

/* Debian's virtiofsd through the whole front-end: it maps the memfd, takes a ring, stops. */
TEST(real_virtiofsd)
{
        if (geteuid() != 0)
                SKIP("virtiofsd needs root");
        if (access(VIRTIOFSD, X_OK) < 0)
                SKIP(VIRTIOFSD " is not installed (apt-get install qemu-system-common)");
        char tmp[] = "/tmp/test-vhost-user-XXXXXX";
        CHECK(mkdtemp(tmp));
        cleanup_free char *src = xasprintf("%s/src", tmp), *sockdir = xasprintf("%s/sock", tmp);
        CHECK(mkdir(src, 0700) == 0 && mkdir(sockdir, 0700) == 0);
        setenv("TMPDIR", sockdir, 1);
        cleanup_free char *source = xasprintf("source=%s", src);
        char *argv[] = { VIRTIOFSD, "--fd=3", "-o", source, "-o", "log_level=err", NULL };
        struct vhost_user_backend b;
        cleanup_error cap_error_t err = NULL;
        int sock = -1;
        int rc = vhost_user_backend_start(&b, argv, &sock, &err);
        unsetenv("TMPDIR");
        CHECK(rc == 0);
        /* The socket's path and directory are gone at once. */
        CHECK(count_entries(sockdir) == 0);

        struct guest_mem gm;
        CHECK(guest_mem_init(&gm, 16 * MiB, false, &err) == 0);
        struct vhost_user vu;
        vhost_user_init(&vu, sock, "share[0]");
        cleanup_close int kick = eventfd(0, EFD_CLOEXEC), call = eventfd(0, EFD_CLOEXEC);
        struct vhost_user_vring v = { .size = 128, .desc_gpa = 0x10000, .avail_gpa = 0x11000, .used_gpa = 0x12000,
                                      .kick_fd = kick, .call_fd = call };
        uint64_t want = (1ULL << VIRTIO_F_VERSION_1) | (1ULL << 28) | (1ULL << 29);
        uint16_t base = 1;
        bool ok = vhost_user_handshake(&vu, &err) == 0 && vhost_user_set_mem_table(&vu, &gm, &err) == 0 &&
                  vhost_user_set_features(&vu, want, &err) == 0 && vhost_user_vring_start(&vu, 1, &v, &gm, &err) == 0 &&
                  vhost_user_vring_stop(&vu, 1, &base, &err) == 0;
        if (!ok)
                test_fail(__FILE__, __LINE__, err ? err->msg : "?");
        CHECK(ok);
        CHECK(vu.protocol_features & (1ULL << VHOST_USER_PROTOCOL_F_REPLY_ACK));
        CHECK(base == 0);
        vhost_user_close(&vu);
        vhost_user_backend_stop(&b);
        CHECK(b.pid == 0);
        guest_mem_destroy(&gm);
        rmdir(src);
        rmdir(sockdir);
        rmdir(tmp);
}

/* After a back-end dies, capsule goes on from where it left the ring: the used index it
 * published and the avail_event it left (libvhost-user writes it after each pop). */
TEST(adopt_continues_where_the_back_end_stopped)
{
        struct guest_mem gm;
        cleanup_error cap_error_t err = NULL;
        CHECK(guest_mem_init(&gm, 1 * MiB, false, &err) == 0);
        struct virtq q = { .size = 8, .desc_gpa = 0x1000, .avail_gpa = 0x2000, .used_gpa = 0x3000, .ready = true,
                           .event_idx = true };
        CHECK(virtq_enable(&q, &gm));
        struct vring_desc *desc = (struct vring_desc *)(gm.base + 0x1000);
        struct vring_avail *avail = (struct vring_avail *)(gm.base + 0x2000);
        struct vring_used *used = (struct vring_used *)(gm.base + 0x3000);
        /* The driver made 6 buffers available; the back-end took 5 and returned 3. */
        for (int i = 0; i < 6; i++) {
                desc[i] = (struct vring_desc){ .addr = 0x8000 + 0x100 * i, .len = 64, .flags = VRING_DESC_F_WRITE };
                avail->ring[i] = (uint16_t)i;
        }
        avail->idx = 6;
        used->idx = 3;
        uint16_t avail_event = 5;
        memcpy(&used->ring[8], &avail_event, sizeof(avail_event));
        virtq_adopt(&q);
        CHECK(q.used_idx == 3 && q.last_avail == 5);
        struct virtq_chain *c = malloc(sizeof(*c));
        CHECK(c);
        CHECK(virtq_pop(&q, c) == 1);
        CHECK(c->head == 5 && c->n_in == 1 && c->in_len == 64);
        virtq_push(&q, c->head, 16);
        CHECK(used->idx == 4 && used->ring[3].id == 5 && used->ring[3].len == 16);
        CHECK(virtq_pop(&q, c) == 0);
        free(c);
        /* Without EVENT_IDX the used index is all there is. */
        q.event_idx = false;
        virtq_adopt(&q);
        CHECK(q.used_idx == 4 && q.last_avail == 4);
        guest_mem_destroy(&gm);
}
