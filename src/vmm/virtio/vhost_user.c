#include "vmm/virtio/vhost_user.h"

#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"

/* The front-end asks for REPLY_ACK only: every other protocol feature adds messages
 * or shared state capsule does not use. */
#define VHOST_USER_OUR_PROTOCOL_FEATURES (1ULL << VHOST_USER_PROTOCOL_F_REPLY_ACK)

static const char *request_name(uint32_t request)
{
        switch (request) {
        case VHOST_USER_GET_FEATURES: return "GET_FEATURES";
        case VHOST_USER_SET_FEATURES: return "SET_FEATURES";
        case VHOST_USER_SET_OWNER: return "SET_OWNER";
        case VHOST_USER_SET_MEM_TABLE: return "SET_MEM_TABLE";
        case VHOST_USER_SET_VRING_NUM: return "SET_VRING_NUM";
        case VHOST_USER_SET_VRING_ADDR: return "SET_VRING_ADDR";
        case VHOST_USER_SET_VRING_BASE: return "SET_VRING_BASE";
        case VHOST_USER_GET_VRING_BASE: return "GET_VRING_BASE";
        case VHOST_USER_SET_VRING_KICK: return "SET_VRING_KICK";
        case VHOST_USER_SET_VRING_CALL: return "SET_VRING_CALL";
        case VHOST_USER_GET_PROTOCOL_FEATURES: return "GET_PROTOCOL_FEATURES";
        case VHOST_USER_SET_PROTOCOL_FEATURES: return "SET_PROTOCOL_FEATURES";
        case VHOST_USER_SET_VRING_ENABLE: return "SET_VRING_ENABLE";
        default: return "request";
        }
}

uint32_t vhost_user_reply_size(uint32_t request)
{
        switch (request) {
        case VHOST_USER_GET_FEATURES:
        case VHOST_USER_GET_PROTOCOL_FEATURES:
                return sizeof(uint64_t);
        case VHOST_USER_GET_VRING_BASE:
                return sizeof(struct vhost_user_vring_state);
        default:
                return 0;
        }
}

int vhost_user_parse_reply(uint32_t request, const void *buf, size_t len, struct vhost_user_msg *reply,
                           cap_error_t *err)
{
        struct vhost_user_hdr hdr;
        if (len < sizeof(hdr))
                return cap_fail(err, 0, "short reply (%zu bytes)", len);
        memcpy(&hdr, buf, sizeof(hdr));
        if (hdr.request != request)
                return cap_fail(err, 0, "reply to request %u, expected %u", hdr.request, request);
        if ((hdr.flags & VHOST_USER_VERSION_MASK) != VHOST_USER_VERSION || !(hdr.flags & VHOST_USER_REPLY_MASK) ||
            (hdr.flags & VHOST_USER_NEED_REPLY_MASK))
                return cap_fail(err, 0, "reply flags %#x are not those of a version 1 reply", hdr.flags);
        /* A request without a reply of its own is answered by REPLY_ACK's u64. */
        uint32_t want = vhost_user_reply_size(request);
        if (want == 0)
                want = sizeof(uint64_t);
        if (hdr.size != want || len - sizeof(hdr) != want)
                return cap_fail(err, 0, "reply payload of %u bytes (%zu received), expected %u", hdr.size,
                                len - sizeof(hdr), want);
        memset(reply, 0, sizeof(*reply));
        memcpy(reply, buf, len);
        return 0;
}

void vhost_user_init(struct vhost_user *vu, int fd, const char *name)
{
        *vu = (struct vhost_user){ .fd = fd, .name = name, .timeout_ms = VHOST_USER_TIMEOUT_MS };
}

void vhost_user_close(struct vhost_user *vu)
{
        if (vu->fd >= 0)
                close(vu->fd);
        vu->fd = -1;
        vu->broken = true;
}

/* Wait for events on the socket until deadline: 0 ready, -1 timeout, hang-up or error. */
static int wait_fd(struct vhost_user *vu, short events, long long deadline, const char *what, cap_error_t *err)
{
        for (;;) {
                long long left = deadline - now_ms();
                if (left <= 0)
                        return cap_fail(err, 0, "%s: no answer within %d ms", what, vu->timeout_ms);
                struct pollfd p = { .fd = vu->fd, .events = events };
                int n = poll(&p, 1, (int)left);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return cap_fail(err, errno, "%s: poll", what);
                if (n == 0)
                        continue;
                if (p.revents & events)
                        return 0;
                return cap_fail(err, 0, "%s: the back-end closed the connection", what);
        }
}

static int send_msg(struct vhost_user *vu, const struct vhost_user_msg *m, const int *fds, unsigned int n_fds,
                    long long deadline, cap_error_t *err)
{
        const char *what = request_name(m->hdr.request);
        const uint8_t *p = (const uint8_t *)m;
        size_t len = sizeof(m->hdr) + m->hdr.size, done = 0;
        union {
                char buf[CMSG_SPACE(sizeof(int) * VHOST_USER_MAX_REGIONS)];
                struct cmsghdr align;
        } control;
        while (done < len) {
                if (wait_fd(vu, POLLOUT, deadline, what, err) < 0)
                        return -1;
                struct iovec iov = { .iov_base = (void *)(p + done), .iov_len = len - done };
                struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
                /* The fds ride with the first byte only. */
                if (n_fds && done == 0) {
                        memset(&control, 0, sizeof(control));
                        mh.msg_control = control.buf;
                        mh.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
                        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
                        c->cmsg_level = SOL_SOCKET;
                        c->cmsg_type = SCM_RIGHTS;
                        c->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
                        memcpy(CMSG_DATA(c), fds, sizeof(int) * n_fds);
                }
                ssize_t n = sendmsg(vu->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0 && (errno == EINTR || errno == EAGAIN))
                        continue;
                if (n < 0)
                        return cap_fail(err, errno, "%s: send", what);
                done += (size_t)n;
        }
        return 0;
}

/* Read exactly len bytes. Any fds that arrive are closed: no reply capsule asks for carries one. */
static int recv_exact(struct vhost_user *vu, void *buf, size_t len, long long deadline, const char *what,
                      cap_error_t *err)
{
        size_t done = 0;
        while (done < len) {
                if (wait_fd(vu, POLLIN, deadline, what, err) < 0)
                        return -1;
                union {
                        char buf[CMSG_SPACE(sizeof(int) * VHOST_USER_MAX_REGIONS)];
                        struct cmsghdr align;
                } control;
                struct iovec iov = { .iov_base = (uint8_t *)buf + done, .iov_len = len - done };
                struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                                     .msg_controllen = sizeof(control.buf) };
                ssize_t n = recvmsg(vu->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
                if (n < 0 && (errno == EINTR || errno == EAGAIN))
                        continue;
                if (n < 0)
                        return cap_fail(err, errno, "%s: receive", what);
                bool got_fds = false;
                for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
                        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                                continue;
                        size_t n_fds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                        for (size_t i = 0; i < n_fds; i++) {
                                int fd;
                                memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(fd));
                                close(fd);
                        }
                        got_fds = true;
                }
                if (got_fds)
                        return cap_fail(err, 0, "%s: the reply carried file descriptors", what);
                if (mh.msg_flags & MSG_CTRUNC)
                        return cap_fail(err, 0, "%s: the reply carried truncated control data", what);
                if (n == 0)
                        return cap_fail(err, 0, "%s: the back-end closed the connection", what);
                done += (size_t)n;
        }
        return 0;
}

static int recv_reply(struct vhost_user *vu, uint32_t request, struct vhost_user_msg *reply, long long deadline,
                      cap_error_t *err)
{
        const char *what = request_name(request);
        struct vhost_user_msg raw;
        if (recv_exact(vu, &raw.hdr, sizeof(raw.hdr), deadline, what, err) < 0)
                return -1;
        /* Bound the payload before reading it: the parser then checks its exact size. */
        if (raw.hdr.size > sizeof(raw.payload))
                return cap_fail(err, 0, "%s: reply payload of %u bytes", what, raw.hdr.size);
        if (recv_exact(vu, &raw.payload, raw.hdr.size, deadline, what, err) < 0)
                return -1;
        if (vhost_user_parse_reply(request, &raw, sizeof(raw.hdr) + raw.hdr.size, reply, err) < 0)
                return cap_error_prefix(err, "%s", what);
        return 0;
}

/* One request: send it (with fds) and wait for its reply, or for the REPLY_ACK when
 * negotiated; a message that has neither is only sent. */
static int request(struct vhost_user *vu, uint32_t req, const void *payload, uint32_t size, const int *fds,
                   unsigned int n_fds, struct vhost_user_msg *reply, cap_error_t *err)
{
        if (vu->broken || vu->fd < 0)
                return cap_fail(err, 0, "%s: vhost-user back-end: %s: the connection failed earlier", vu->name,
                                request_name(req));
        struct vhost_user_msg m = { .hdr = { .request = req, .flags = VHOST_USER_VERSION, .size = size } };
        if (size)
                memcpy(&m.payload, payload, size);
        bool has_reply = vhost_user_reply_size(req) != 0;
        bool ack = !has_reply && (vu->protocol_features & VHOST_USER_OUR_PROTOCOL_FEATURES);
        if (ack)
                m.hdr.flags |= VHOST_USER_NEED_REPLY_MASK;
        long long deadline = now_ms() + vu->timeout_ms;
        struct vhost_user_msg local;
        if (!reply)
                reply = &local;
        if (send_msg(vu, &m, fds, n_fds, deadline, err) < 0 ||
            ((has_reply || ack) && recv_reply(vu, req, reply, deadline, err) < 0)) {
                vu->broken = true;
                return cap_error_prefix(err, "%s: vhost-user back-end", vu->name);
        }
        if (ack && reply->payload.u64 != 0)
                return cap_fail(err, 0, "%s: vhost-user back-end refused %s (status %llu)", vu->name,
                                request_name(req), (unsigned long long)reply->payload.u64);
        return 0;
}

static int request_u64(struct vhost_user *vu, uint32_t req, uint64_t value, cap_error_t *err)
{
        return request(vu, req, &value, sizeof(value), NULL, 0, NULL, err);
}

static int get_u64(struct vhost_user *vu, uint32_t req, uint64_t *value, cap_error_t *err)
{
        struct vhost_user_msg reply;
        if (request(vu, req, NULL, 0, NULL, 0, &reply, err) < 0)
                return -1;
        *value = reply.payload.u64;
        return 0;
}

int vhost_user_handshake(struct vhost_user *vu, cap_error_t *err)
{
        /* A back-end we just started answers its first message only once it is up: on a loaded
         * host (ten sandboxes starting at once in the testbed) virtiofsd took over 5 s. */
        int timeout = vu->timeout_ms;
        vu->timeout_ms = VHOST_USER_FIRST_ANSWER_FACTOR * timeout;
        int r = get_u64(vu, VHOST_USER_GET_FEATURES, &vu->features, err);
        vu->timeout_ms = timeout;
        if (r < 0)
                return -1;
        if (vu->features & (1ULL << VHOST_USER_F_PROTOCOL_FEATURES)) {
                uint64_t offered;
                if (get_u64(vu, VHOST_USER_GET_PROTOCOL_FEATURES, &offered, err) < 0)
                        return -1;
                uint64_t use = offered & VHOST_USER_OUR_PROTOCOL_FEATURES;
                if (request_u64(vu, VHOST_USER_SET_PROTOCOL_FEATURES, use, err) < 0)
                        return -1;
                vu->protocol_features = use;
        }
        return request(vu, VHOST_USER_SET_OWNER, NULL, 0, NULL, 0, NULL, err);
}

int vhost_user_set_mem_table(struct vhost_user *vu, const struct guest_mem *mem, cap_error_t *err)
{
        struct vhost_user_mem_table t = { .nregions = (uint32_t)mem->n_regions };
        int fds[VHOST_USER_MAX_REGIONS];
        if (mem->n_regions < 1 || mem->n_regions > VHOST_USER_MAX_REGIONS)
                return cap_fail(err, 0, "%s: %d guest memory regions", vu->name, mem->n_regions);
        /* Each region travels with its own fd: here the same memfd, at the region's offset. */
        for (int i = 0; i < mem->n_regions; i++) {
                const struct guest_region *r = &mem->regions[i];
                t.regions[i] = (struct vhost_user_mem_region){
                        .guest_phys_addr = r->gpa,
                        .memory_size = r->size,
                        .userspace_addr = (uint64_t)(uintptr_t)r->host,
                        .mmap_offset = r->offset,
                };
                fds[i] = mem->memfd;
        }
        return request(vu, VHOST_USER_SET_MEM_TABLE, &t, sizeof(t), fds, (unsigned int)mem->n_regions, NULL, err);
}

int vhost_user_set_features(struct vhost_user *vu, uint64_t features, cap_error_t *err)
{
        uint64_t extra = 1ULL << VHOST_USER_F_PROTOCOL_FEATURES;
        if (features & ~vu->features)
                return cap_fail(err, 0, "%s: vhost-user back-end lacks feature bits %#llx", vu->name,
                                (unsigned long long)(features & ~vu->features));
        return request_u64(vu, VHOST_USER_SET_FEATURES, features | (vu->features & extra), err);
}

int vhost_user_vring_addr(const struct guest_mem *mem, unsigned int idx, const struct vhost_user_vring *v,
                          struct vhost_user_vring_addr *addr, cap_error_t *err)
{
        uint64_t n = v->size;
        void *desc = guest_mem_ptr(mem, v->desc_gpa, 16 * n);
        void *avail = guest_mem_ptr(mem, v->avail_gpa, 6 + 2 * n);
        void *used = guest_mem_ptr(mem, v->used_gpa, 6 + 8 * n);
        if (n == 0 || !desc || !avail || !used)
                return cap_fail(err, 0, "queue %u: rings of %llu entries at %#llx/%#llx/%#llx are not in guest RAM", idx,
                                (unsigned long long)n, (unsigned long long)v->desc_gpa,
                                (unsigned long long)v->avail_gpa, (unsigned long long)v->used_gpa);
        *addr = (struct vhost_user_vring_addr){
                .index = idx,
                .desc = (uint64_t)(uintptr_t)desc,
                .used = (uint64_t)(uintptr_t)used,
                .avail = (uint64_t)(uintptr_t)avail,
        };
        return 0;
}

static int set_vring_fd(struct vhost_user *vu, uint32_t req, unsigned int idx, int fd, cap_error_t *err)
{
        uint64_t value = idx & VHOST_USER_VRING_IDX_MASK;
        if (fd < 0)
                value |= VHOST_USER_VRING_NOFD_MASK;
        return request(vu, req, &value, sizeof(value), fd < 0 ? NULL : &fd, fd < 0 ? 0 : 1, NULL, err);
}

int vhost_user_vring_start(struct vhost_user *vu, unsigned int idx, const struct vhost_user_vring *v,
                           const struct guest_mem *mem, cap_error_t *err)
{
        struct vhost_user_vring_addr addr;
        if (idx > VHOST_USER_VRING_IDX_MASK)
                return cap_fail(err, 0, "%s: queue %u is past the protocol's 256", vu->name, idx);
        if (vhost_user_vring_addr(mem, idx, v, &addr, err) < 0)
                return cap_error_prefix(err, "%s", vu->name);
        struct vhost_user_vring_state num = { .index = idx, .num = v->size };
        struct vhost_user_vring_state base = { .index = idx, .num = v->base };
        struct vhost_user_vring_state enable = { .index = idx, .num = 1 };
        /* The call fd before the kick fd: the back-end starts serving on the kick, and an
         * interrupt it raised before having a call fd would be lost. */
        if (request(vu, VHOST_USER_SET_VRING_NUM, &num, sizeof(num), NULL, 0, NULL, err) < 0 ||
            request(vu, VHOST_USER_SET_VRING_BASE, &base, sizeof(base), NULL, 0, NULL, err) < 0 ||
            request(vu, VHOST_USER_SET_VRING_ADDR, &addr, sizeof(addr), NULL, 0, NULL, err) < 0 ||
            set_vring_fd(vu, VHOST_USER_SET_VRING_CALL, idx, v->call_fd, err) < 0 ||
            set_vring_fd(vu, VHOST_USER_SET_VRING_KICK, idx, v->kick_fd, err) < 0)
                return -1;
        /* Without protocol features a ring is enabled as soon as it starts. */
        if (!(vu->features & (1ULL << VHOST_USER_F_PROTOCOL_FEATURES)))
                return 0;
        return request(vu, VHOST_USER_SET_VRING_ENABLE, &enable, sizeof(enable), NULL, 0, NULL, err);
}

int vhost_user_vring_stop(struct vhost_user *vu, unsigned int idx, uint16_t *base, cap_error_t *err)
{
        struct vhost_user_vring_state s = { .index = idx };
        struct vhost_user_msg reply;
        if (request(vu, VHOST_USER_GET_VRING_BASE, &s, sizeof(s), NULL, 0, &reply, err) < 0)
                return -1;
        if (reply.payload.state.index != idx || reply.payload.state.num > UINT16_MAX) {
                vu->broken = true;
                return cap_fail(err, 0, "%s: vhost-user back-end: GET_VRING_BASE answered queue %u index %u for queue %u",
                                vu->name, reply.payload.state.index, reply.payload.state.num, idx);
        }
        *base = (uint16_t)reply.payload.state.num;
        return 0;
}
