/* rtnetlink for the sandbox's network (sandbox_net.c): building requests, reading acks and
 * dumps. The socket belongs to the namespace of the thread that opened it. */
#include "sandbox/sandbox_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"

#define NL_RECV_BUF 32768

int nl_open(cap_error_t *err)
{
        int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
        if (fd < 0)
                return cap_fail(err, errno, "open an rtnetlink socket");
        struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                close(fd);
                return cap_fail(err, errno, "bind an rtnetlink socket");
        }
        return fd;
}

struct nlmsghdr *nl_msg_init(struct nl_msg *m, unsigned short type, unsigned short flags, const void *hdr, size_t len)
{
        memset(m, 0, sizeof(*m));
        m->h.nlmsg_len = NLMSG_LENGTH(len);
        m->h.nlmsg_type = type;
        m->h.nlmsg_flags = NLM_F_REQUEST | flags;
        memcpy(NLMSG_DATA(&m->h), hdr, len);
        return &m->h;
}

/* Our own requests are a few hundred bytes at most: running out of room is a bug of ours. */
struct rtattr *nl_put(struct nl_msg *m, unsigned short type, const void *data, size_t len)
{
        size_t at = NLMSG_ALIGN(m->h.nlmsg_len);
        if (at + RTA_SPACE(len) > sizeof(m->buf))
                abort();
        struct rtattr *rta = (struct rtattr *)(m->buf + at);
        rta->rta_type = type;
        rta->rta_len = (unsigned short)RTA_LENGTH(len);
        if (len)
                memcpy(RTA_DATA(rta), data, len);
        m->h.nlmsg_len = (unsigned int)(at + RTA_ALIGN(rta->rta_len));
        return rta;
}

struct rtattr *nl_nest(struct nl_msg *m, unsigned short type)
{
        return nl_put(m, type | NLA_F_NESTED, NULL, 0);
}

void nl_nest_end(struct nl_msg *m, struct rtattr *nest)
{
        nest->rta_len = (unsigned short)(m->buf + m->h.nlmsg_len - (char *)nest);
}

static int nl_send(int fd, struct nlmsghdr *h, cap_error_t *err)
{
        static unsigned int seq;
        h->nlmsg_seq = ++seq;
        struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
        if (sendto(fd, h, h->nlmsg_len, 0, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                return cap_fail(err, errno, "rtnetlink send");
        return 0;
}

/* Read the replies to h until its ack (fn NULL) or the end of its dump, calling fn on each
 * message. Returns 0, or < 0 with err: the kernel's refusal is its -errno. */
static int nl_replies(int fd, const struct nlmsghdr *h, int (*fn)(const struct nlmsghdr *, void *), void *ctx,
                      cap_error_t *err)
{
        cleanup_free char *buf = xmalloc0(NL_RECV_BUF);
        for (;;) {
                ssize_t n = recv(fd, buf, NL_RECV_BUF, 0);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return cap_fail(err, errno, "rtnetlink receive");
                int left = (int)n;
                for (struct nlmsghdr *r = (struct nlmsghdr *)buf; NLMSG_OK(r, left); r = NLMSG_NEXT(r, left)) {
                        if (r->nlmsg_seq != h->nlmsg_seq)
                                continue;
                        if (r->nlmsg_type == NLMSG_DONE)
                                return 0;
                        if (r->nlmsg_type == NLMSG_ERROR) {
                                if (r->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr)))
                                        return cap_fail(err, 0, "rtnetlink: a short error message");
                                const struct nlmsgerr *e = NLMSG_DATA(r);
                                if (e->error == 0)
                                        return 0;
                                cap_fail(err, -e->error, "rtnetlink");
                                return e->error;
                        }
                        if (fn && fn(r, ctx) < 0)
                                return cap_fail(err, 0, "rtnetlink: more entries than capsule takes");
                }
        }
}

int nl_call(int fd, struct nl_msg *m, cap_error_t *err)
{
        m->h.nlmsg_flags |= NLM_F_ACK;
        if (nl_send(fd, &m->h, err) < 0)
                return -1;
        return nl_replies(fd, &m->h, NULL, NULL, err);
}

int nl_dump(int fd, unsigned short type, unsigned char family, int (*fn)(const struct nlmsghdr *, void *), void *ctx,
            cap_error_t *err)
{
        struct nl_msg m;
        struct rtgenmsg g = { .rtgen_family = family };
        nl_msg_init(&m, type, NLM_F_DUMP, &g, sizeof(g));
        if (nl_send(fd, &m.h, err) < 0)
                return -1;
        return nl_replies(fd, &m.h, fn, ctx, err);
}

void nl_attrs(const struct rtattr *rta, int len, const struct rtattr **tb, unsigned short max)
{
        memset(tb, 0, (max + 1u) * sizeof(*tb));
        for (; RTA_OK(rta, len); rta = RTA_NEXT(rta, len)) {
                unsigned short type = rta->rta_type & NLA_TYPE_MASK;
                if (type <= max)
                        tb[type] = rta;
        }
}
