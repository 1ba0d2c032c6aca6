/* A VM container's network, as Kata's "tcfilter" does it: the VMM's tap is created in the
 * network namespace that podman, CNI or containerd prepared (by create, before the VMM starts:
 * that tap's name is the claim on the namespace's interface), and tied to the namespace's interface by tc filters that redirect every frame
 * from one to the other (sandbox_tc.c). The guest's NIC takes the interface's MAC (the peers'
 * neighbour entries stay valid), MTU, IPv4 and IPv6 addresses and routes, so the pod's
 * addresses keep working, and the guest reaches exactly what the interface reached before.
 * The interface keeps its addresses: no frame reaches the namespace's own stack any more.
 * Each step here runs on a short-lived thread that enters the namespace, so the caller's
 * threads stay where they are. */
#include "sandbox/sandbox_internal.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_arp.h>
#include <linux/nsfs.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "vmm/vm.h"

/* What a dump may hold: a CNI namespace has two or three of each. */
#define GATHER_MAX 64

struct gather {
        struct {
                int index;
                char name[IFNAMSIZ];
                uint8_t mac[6];
                unsigned int mtu;
        } links[GATHER_MAX];
        int n_links;
        struct {
                int index;
                struct agent_net_addr a;
        } addrs[GATHER_MAX];
        int n_addrs;
        struct {
                int oif;
                struct agent_net_route r;
        } routes[GATHER_MAX];
        int n_routes;
        struct {
                int index;
                struct agent_net_addr6 a;
        } addrs6[GATHER_MAX];
        int n_addrs6;
        struct {
                int oif;
                struct agent_net_route6 r;
        } routes6[GATHER_MAX];
        int n_routes6;
        bool tap_found;
};

static const void *attr_data(const struct rtattr *a, size_t len)
{
        return a && RTA_PAYLOAD(a) == len ? RTA_DATA(a) : NULL;
}

static int gather_link(const struct nlmsghdr *h, void *ctx)
{
        struct gather *g = ctx;
        if (h->nlmsg_type != RTM_NEWLINK || h->nlmsg_len < NLMSG_LENGTH(sizeof(struct ifinfomsg)))
                return 0;
        const struct ifinfomsg *ifi = NLMSG_DATA(h);
        const struct rtattr *tb[IFLA_MAX + 1];
        nl_attrs(IFLA_RTA(ifi), (int)IFLA_PAYLOAD(h), tb, IFLA_MAX);
        const char *name = tb[IFLA_IFNAME] ? RTA_DATA(tb[IFLA_IFNAME]) : NULL;
        size_t name_room = tb[IFLA_IFNAME] ? RTA_PAYLOAD(tb[IFLA_IFNAME]) : 0;
        if (!name || strnlen(name, name_room) == name_room || strnlen(name, name_room) >= IFNAMSIZ)
                return 0;
        if (strcmp(name, SANDBOX_TAP) == 0)
                g->tap_found = true;
        const uint8_t *mac = attr_data(tb[IFLA_ADDRESS], 6);
        const uint32_t *mtu = attr_data(tb[IFLA_MTU], sizeof(uint32_t));
        if (ifi->ifi_type != ARPHRD_ETHER || (ifi->ifi_flags & IFF_LOOPBACK) || !mac || !mtu)
                return 0;
        if (g->n_links == GATHER_MAX)
                return -1;
        g->links[g->n_links].index = ifi->ifi_index;
        snprintf(g->links[g->n_links].name, IFNAMSIZ, "%s", name);
        memcpy(g->links[g->n_links].mac, mac, 6);
        g->links[g->n_links].mtu = *mtu;
        g->n_links++;
        return 0;
}

/* The global IPv6 addresses the guest must answer on. Not the link-local one (the guest's
 * kernel makes the same from the MAC), nor one that failed duplicate address detection or
 * was deprecated (on its way out; the guest could only make it a preferred one for ever).
 * A tentative one is taken: it is the pod's, and once the tap is tied in, the interface's
 * detection can no longer hear a duplicate anyway. */
static int gather_addr6(struct gather *g, const struct ifaddrmsg *ifa, const struct rtattr *const *tb)
{
        const struct in6_addr *a = attr_data(tb[IFA_LOCAL] ? tb[IFA_LOCAL] : tb[IFA_ADDRESS], sizeof(struct in6_addr));
        const uint32_t *flags = attr_data(tb[IFA_FLAGS], sizeof(uint32_t));
        uint32_t f = flags ? *flags : ifa->ifa_flags;
        if (!a || ifa->ifa_scope != RT_SCOPE_UNIVERSE || ifa->ifa_prefixlen < 1 || ifa->ifa_prefixlen > 128 ||
            (f & (IFA_F_DADFAILED | IFA_F_DEPRECATED)) || IN6_IS_ADDR_LINKLOCAL(a) || IN6_IS_ADDR_V4MAPPED(a))
                return 0;
        if (g->n_addrs6 == GATHER_MAX)
                return -1;
        g->addrs6[g->n_addrs6].index = (int)ifa->ifa_index;
        g->addrs6[g->n_addrs6].a = (struct agent_net_addr6){ .addr = *a, .prefix = ifa->ifa_prefixlen };
        g->n_addrs6++;
        return 0;
}

static int gather_addr(const struct nlmsghdr *h, void *ctx)
{
        struct gather *g = ctx;
        if (h->nlmsg_type != RTM_NEWADDR || h->nlmsg_len < NLMSG_LENGTH(sizeof(struct ifaddrmsg)))
                return 0;
        const struct ifaddrmsg *ifa = NLMSG_DATA(h);
        const struct rtattr *tb[IFA_MAX + 1];
        nl_attrs(IFA_RTA(ifa), (int)IFA_PAYLOAD(h), tb, IFA_MAX);
        if (ifa->ifa_family == AF_INET6)
                return gather_addr6(g, ifa, tb);
        const struct in_addr *a = attr_data(tb[IFA_LOCAL] ? tb[IFA_LOCAL] : tb[IFA_ADDRESS], sizeof(struct in_addr));
        if (ifa->ifa_family != AF_INET || !a || ifa->ifa_prefixlen < 1 || ifa->ifa_prefixlen > 32 ||
            ifa->ifa_scope == RT_SCOPE_HOST)
                return 0;
        if (g->n_addrs == GATHER_MAX)
                return -1;
        g->addrs[g->n_addrs].index = (int)ifa->ifa_index;
        g->addrs[g->n_addrs].a = (struct agent_net_addr){ .addr = *a, .prefix = ifa->ifa_prefixlen };
        g->n_addrs++;
        return 0;
}

static uint32_t prefix_mask(unsigned int prefix)
{
        return prefix ? htonl(~0u << (32 - prefix)) : 0;
}

/* a with its host bits (those past the first prefix bits) zero. */
static struct in6_addr ipv6_masked(const struct in6_addr *a, unsigned int prefix)
{
        struct in6_addr m = *a;
        for (unsigned int i = 0; i < 16; i++) {
                unsigned int keep = prefix >= 8 * (i + 1) ? 8 : prefix > 8 * i ? prefix - 8 * i : 0;
                m.s6_addr[i] &= (uint8_t)(0xff00u >> keep);
        }
        return m;
}

static int gather_route6(struct gather *g, const struct rtmsg *rtm, const struct rtattr *const *tb, int oif)
{
        const struct in6_addr *dst = attr_data(tb[RTA_DST], sizeof(struct in6_addr));
        const struct in6_addr *gw = attr_data(tb[RTA_GATEWAY], sizeof(struct in6_addr));
        if (rtm->rtm_dst_len > 128 || (rtm->rtm_dst_len && !dst))
                return 0;
        if (g->n_routes6 == GATHER_MAX)
                return -1;
        struct agent_net_route6 *r = &g->routes6[g->n_routes6].r;
        g->routes6[g->n_routes6].oif = oif;
        r->prefix = rtm->rtm_dst_len;
        r->dst = dst ? ipv6_masked(dst, r->prefix) : in6addr_any;
        r->gateway = gw ? *gw : in6addr_any;
        g->n_routes6++;
        return 0;
}

/* The main table's unicast routes through one interface; the kernel's own (a prefix route
 * that comes with an address, IPv6's fe80::/64) the guest's kernel makes again. A route a
 * router advertisement gave is kept: the guest takes no advertisement itself. */
static int gather_route(const struct nlmsghdr *h, void *ctx)
{
        struct gather *g = ctx;
        if (h->nlmsg_type != RTM_NEWROUTE || h->nlmsg_len < NLMSG_LENGTH(sizeof(struct rtmsg)))
                return 0;
        const struct rtmsg *rtm = NLMSG_DATA(h);
        const struct rtattr *tb[RTA_MAX + 1];
        nl_attrs(RTM_RTA(rtm), (int)RTM_PAYLOAD(h), tb, RTA_MAX);
        const uint32_t *table = attr_data(tb[RTA_TABLE], sizeof(uint32_t));
        const uint32_t *oif = attr_data(tb[RTA_OIF], sizeof(uint32_t));
        if (rtm->rtm_type != RTN_UNICAST || rtm->rtm_protocol == RTPROT_KERNEL ||
            (table ? *table : rtm->rtm_table) != RT_TABLE_MAIN || !oif)
                return 0;
        if (rtm->rtm_family == AF_INET6)
                return gather_route6(g, rtm, tb, (int)*oif);
        const struct in_addr *dst = attr_data(tb[RTA_DST], sizeof(struct in_addr));
        const struct in_addr *gw = attr_data(tb[RTA_GATEWAY], sizeof(struct in_addr));
        if (rtm->rtm_family != AF_INET || rtm->rtm_dst_len > 32 || (rtm->rtm_dst_len && !dst))
                return 0;
        if (g->n_routes == GATHER_MAX)
                return -1;
        struct agent_net_route *r = &g->routes[g->n_routes].r;
        g->routes[g->n_routes].oif = (int)*oif;
        r->prefix = rtm->rtm_dst_len;
        r->dst.s_addr = dst ? dst->s_addr & prefix_mask(r->prefix) : 0;
        r->gateway.s_addr = gw ? gw->s_addr : 0;
        g->n_routes++;
        return 0;
}

/* The default route's interface (IPv4's, else IPv6's), else the first Ethernet one with an
 * address. */
static int pick_link(const struct gather *g)
{
        int index = 0;
        for (int i = 0; i < g->n_routes && !index; i++)
                if (g->routes[i].r.prefix == 0)
                        index = g->routes[i].oif;
        for (int i = 0; i < g->n_routes6 && !index; i++)
                if (g->routes6[i].r.prefix == 0)
                        index = g->routes6[i].oif;
        for (int i = 0; i < g->n_links && !index; i++) {
                for (int j = 0; j < g->n_addrs && !index; j++)
                        if (g->addrs[j].index == g->links[i].index)
                                index = g->links[i].index;
                for (int j = 0; j < g->n_addrs6 && !index; j++)
                        if (g->addrs6[j].index == g->links[i].index)
                                index = g->links[i].index;
        }
        for (int i = 0; i < g->n_links; i++)
                if (g->links[i].index == index)
                        return i;
        return -1;
}

/* The routes in an order the guest can add them in: those on the link (a gateway outside the
 * address's prefix is reached through one of them) before those through a gateway. */
static int take_routes(const struct gather *g, struct sandbox_net *net, cap_error_t *err)
{
        for (int pass = 0; pass < 2; pass++) {
                for (int i = 0; i < g->n_routes; i++) {
                        const struct agent_net_route *r = &g->routes[i].r;
                        if (g->routes[i].oif != net->ifindex || (r->gateway.s_addr != 0) != (pass == 1))
                                continue;
                        if (net->nic.n_routes == AGENT_NET_ROUTES_MAX)
                                return cap_fail(err, 0, "more than %d IPv4 routes through `%s`", AGENT_NET_ROUTES_MAX,
                                                net->ifname);
                        net->nic.routes[net->nic.n_routes++] = *r;
                }
        }
        for (int pass = 0; pass < 2; pass++) {
                for (int i = 0; i < g->n_routes6; i++) {
                        const struct agent_net_route6 *r = &g->routes6[i].r;
                        if (g->routes6[i].oif != net->ifindex || !IN6_IS_ADDR_UNSPECIFIED(&r->gateway) != (pass == 1))
                                continue;
                        if (net->nic.n_routes6 == AGENT_NET_ROUTES_MAX)
                                return cap_fail(err, 0, "more than %d IPv6 routes through `%s`", AGENT_NET_ROUTES_MAX,
                                                net->ifname);
                        net->nic.routes6[net->nic.n_routes6++] = *r;
                }
        }
        return 0;
}

static int take_addrs(const struct gather *g, struct sandbox_net *net, cap_error_t *err)
{
        for (int i = 0; i < g->n_addrs; i++) {
                if (g->addrs[i].index != net->ifindex)
                        continue;
                if (net->nic.n_addrs == AGENT_NET_ADDRS_MAX)
                        return cap_fail(err, 0, "more than %d IPv4 addresses on `%s`", AGENT_NET_ADDRS_MAX, net->ifname);
                net->nic.addrs[net->nic.n_addrs++] = g->addrs[i].a;
        }
        /* None below IPv6's MTU: the kernel turns IPv6 off on such a link, as the agent expects. */
        for (int i = 0; i < g->n_addrs6; i++) {
                if (g->addrs6[i].index != net->ifindex)
                        continue;
                if (net->nic.n_addrs6 == AGENT_NET_ADDRS_MAX)
                        return cap_fail(err, 0, "more than %d IPv6 addresses on `%s`", AGENT_NET_ADDRS_MAX, net->ifname);
                net->nic.addrs6[net->nic.n_addrs6++] = g->addrs6[i].a;
        }
        return 0;
}

int sandbox_net_gather(struct sandbox_net *net, cap_error_t *err)
{
        cleanup_free struct gather *g = xmalloc0(sizeof(*g));
        memset(&net->nic, 0, sizeof(net->nic));
        net->ifindex = 0;
        net->ifname[0] = '\0';
        cleanup_close int nl = nl_open(err);
        if (nl < 0 || nl_dump(nl, RTM_GETLINK, AF_UNSPEC, gather_link, g, err) < 0 ||
            nl_dump(nl, RTM_GETADDR, AF_INET, gather_addr, g, err) < 0 ||
            nl_dump(nl, RTM_GETADDR, AF_INET6, gather_addr, g, err) < 0 ||
            nl_dump(nl, RTM_GETROUTE, AF_INET, gather_route, g, err) < 0 ||
            nl_dump(nl, RTM_GETROUTE, AF_INET6, gather_route, g, err) < 0)
                return -1;
        /* The tap is the one VM's: its name is fixed, so no second VMM could even make one. */
        net->taken = g->tap_found;
        int l = net->taken ? -1 : pick_link(g);
        if (l < 0)
                return 0;
        net->ifindex = g->links[l].index;
        memcpy(net->ifname, g->links[l].name, IFNAMSIZ);
        memcpy(net->nic.mac, g->links[l].mac, 6);
        net->nic.mtu = g->links[l].mtu;
        if (net->nic.mtu < AGENT_NET_MTU_MIN || net->nic.mtu > AGENT_NET_MTU_MAX)
                return cap_fail(err, 0, "`%s` has an MTU of %u (%d to %d)", net->ifname, net->nic.mtu, AGENT_NET_MTU_MIN,
                                AGENT_NET_MTU_MAX);
        if (take_addrs(g, net, err) < 0)
                return -1;
        if (net->nic.n_addrs + net->nic.n_addrs6 == 0) {
                net->ifindex = 0;
                return 0;
        }
        return take_routes(g, net, err);
}

struct netns_call {
        int fd;
        int (*fn)(struct sandbox_net *net, cap_error_t *err);
        struct sandbox_net *net;
        int rc;
        cap_error_t *err; /* the caller's: it waits for the thread */
};

static void *netns_thread(void *arg)
{
        struct netns_call *c = arg;
        if (setns(c->fd, CLONE_NEWNET) < 0)
                c->rc = cap_fail(c->err, errno, "enter the network namespace");
        else
                c->rc = c->fn(c->net, c->err);
        return NULL;
}

static int in_netns(int fd, int (*fn)(struct sandbox_net *, cap_error_t *), struct sandbox_net *net, cap_error_t *err)
{
        struct netns_call c = { .fd = fd, .fn = fn, .net = net, .err = err };
        pthread_t t;
        int e = pthread_create(&t, NULL, netns_thread, &c);
        if (e)
                return cap_fail(err, e, "start a thread");
        pthread_join(t, NULL);
        return c.rc;
}

/* The network namespace at path, checked to be one and not the host's; *st its identity. */
static int netns_open(const char *path, struct stat *st, cap_error_t *err)
{
        /* O_NONBLOCK: a hostile path may name a FIFO. */
        cleanup_close int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
                return cap_fail(err, errno, "linux.namespaces: network: open `%s`", path);
        if (ioctl(fd, NS_GET_NSTYPE) != CLONE_NEWNET)
                return cap_fail(err, 0, "linux.namespaces: network: `%s` is not a network namespace", path);
        /* The guest would take over the host's own interface and every frame it receives. */
        struct stat own;
        if (fstat(fd, st) < 0 || stat("/proc/self/ns/net", &own) < 0)
                return cap_fail(err, errno, "linux.namespaces: network: stat `%s`", path);
        if (st->st_dev == own.st_dev && st->st_ino == own.st_ino)
                return cap_fail(err, 0, "linux.namespaces: network: `%s` is the host's network namespace, whose interface "
                                        "a VM would take over", path);
        return steal_fd(&fd);
}

/* Which VM container took the namespace, named when it is one of root's. */
static int refuse_taken(const char *root, const char *path, const struct stat *st, cap_error_t *err)
{
        cleanup_free char *holder = sandbox_netns_holder(root, st->st_dev, st->st_ino);
        if (holder)
                return cap_fail(err, 0, "linux.namespaces: network: `%s`: its interface is taken by VM container `%s` "
                                        "(one VM per network namespace)", path, holder);
        return cap_fail(err, 0, "linux.namespaces: network: `%s`: its interface is taken by another VM container (its tap `%s` "
                                "is there; one VM per network namespace)", path, SANDBOX_TAP);
}

static int claim_tap(struct sandbox_net *net, cap_error_t *err)
{
        net->tap_fd = vm_tap_claim(SANDBOX_TAP, err);
        return net->tap_fd < 0 ? -1 : 0;
}

static int plan_locked(const char *path, int fd, const struct stat *st, const char *root, struct sandbox_net *net,
                       cap_error_t *err)
{
        /* Another VM's jail has lo only: its VM's network is in its guest, out of our VM's reach. */
        cleanup_free char *vmm = sandbox_vmm_netns_holder(root, st->st_dev, st->st_ino);
        if (vmm)
                return cap_fail(err, 0, "linux.namespaces: network: `%s` is the sandbox process's of VM container `%s`, "
                                        "whose network only a member of its pod shares", path, vmm);
        /* A create that won the race may not have made its tap yet: its record says so already. */
        cleanup_free char *holder = sandbox_netns_holder(root, st->st_dev, st->st_ino);
        if (holder)
                return refuse_taken(root, path, st, err);
        if (in_netns(fd, sandbox_net_gather, net, err) < 0)
                return cap_error_prefix(err, "linux.namespaces: network namespace `%s`", path);
        if (net->taken)
                return refuse_taken(root, path, st, err);
        if (!net->ifindex || in_netns(fd, claim_tap, net, err) == 0)
                return 0;
        if ((*err)->errnum != EBUSY)
                return cap_error_prefix(err, "linux.namespaces: network namespace `%s`", path);
        cap_error_free(err);
        return refuse_taken(root, path, st, err);
}

int sandbox_net_plan(const struct spec *spec, const char *root, struct sandbox_net *net, cap_error_t *err)
{
        memset(net, 0, sizeof(*net));
        net->netns_fd = -1;
        net->lock_fd = -1;
        net->tap_fd = -1;
        const struct spec_namespace *ns = spec_namespace(spec, CLONE_NEWNET);
        if (!ns || !ns->path)
                return 0;
        struct stat st;
        cleanup_close int fd = netns_open(ns->path, &st, err);
        if (fd < 0)
                return -1;
        net->lock_fd = sandbox_netns_lock(root, st.st_dev, st.st_ino, &net->lock_path, err);
        if (net->lock_fd < 0)
                return cap_error_prefix(err, "linux.namespaces: network: `%s`", ns->path);
        if (plan_locked(ns->path, fd, &st, root, net, err) < 0) {
                sandbox_net_unlock(net);
                return -1;
        }
        net->netns_dev = st.st_dev;
        net->netns_ino = st.st_ino;
        if (net->ifindex)
                net->netns_fd = steal_fd(&fd);
        return 0;
}

static json_t *addr_json(int family, const void *addr, unsigned int prefix)
{
        char a[INET6_ADDRSTRLEN];
        return json_pack("{s:s,s:i}", "address", inet_ntop(family, addr, a, sizeof(a)), "prefix", (int)prefix);
}

static json_t *route_json(int family, const void *dst, unsigned int prefix, const void *gateway)
{
        char a[INET6_ADDRSTRLEN];
        json_t *o = json_pack("{s:s,s:i}", "destination", inet_ntop(family, dst, a, sizeof(a)), "prefix", (int)prefix);
        if (gateway)
                json_object_set_new(o, "gateway", json_string(inet_ntop(family, gateway, a, sizeof(a))));
        return o;
}

json_t *sandbox_net_json(const struct sandbox_net *net)
{
        const struct agent_net *n = &net->nic;
        char mac[18];
        snprintf(mac, sizeof(mac), "%02x:%02x:%02x:%02x:%02x:%02x", n->mac[0], n->mac[1], n->mac[2], n->mac[3], n->mac[4], n->mac[5]);
        json_t *addrs = json_array(), *routes = json_array(), *addrs6 = json_array(), *routes6 = json_array();
        for (int i = 0; i < n->n_addrs; i++)
                json_array_append_new(addrs, addr_json(AF_INET, &n->addrs[i].addr, n->addrs[i].prefix));
        for (int i = 0; i < n->n_routes; i++) {
                const struct agent_net_route *r = &n->routes[i];
                json_array_append_new(routes, route_json(AF_INET, &r->dst, r->prefix, r->gateway.s_addr ? &r->gateway : NULL));
        }
        for (int i = 0; i < n->n_addrs6; i++)
                json_array_append_new(addrs6, addr_json(AF_INET6, &n->addrs6[i].addr, n->addrs6[i].prefix));
        for (int i = 0; i < n->n_routes6; i++) {
                const struct agent_net_route6 *r = &n->routes6[i];
                json_array_append_new(routes6, route_json(AF_INET6, &r->dst, r->prefix,
                                                          IN6_IS_ADDR_UNSPECIFIED(&r->gateway) ? NULL : &r->gateway));
        }
        return json_pack("{s:s,s:i,s:o,s:o,s:o,s:o}", "mac", mac, "mtu", (int)n->mtu, "addresses", addrs, "routes", routes,
                         "addresses6", addrs6, "routes6", routes6);
}

int sandbox_net_link(struct sandbox_net *net, cap_error_t *err)
{
        if (net->netns_fd < 0)
                return 0;
        return in_netns(net->netns_fd, sandbox_tc_link, net, err);
}

void sandbox_net_release(struct sandbox_net *net)
{
        cleanup_error cap_error_t ignored = NULL;
        cap_closep(&net->tap_fd);
        if (net->netns_fd >= 0)
                in_netns(net->netns_fd, sandbox_tc_unlink, net, &ignored);
}

void sandbox_net_forget(const struct spec *spec, const struct sandbox_record *rec)
{
        const struct spec_namespace *ns = spec_namespace(spec, CLONE_NEWNET);
        if (!rec->net_ifindex || !ns || !ns->path)
                return;
        struct stat st;
        cleanup_error cap_error_t ignored = NULL;
        struct sandbox_net net = { .netns_fd = netns_open(ns->path, &st, &ignored), .ifindex = rec->net_ifindex,
                                   .lock_fd = -1, .tap_fd = -1 };
        /* Gone (podman removed it), or another namespace by now: nothing of ours is left there. */
        if (net.netns_fd >= 0 && st.st_dev == rec->netns_dev && st.st_ino == rec->netns_ino)
                sandbox_net_release(&net);
        sandbox_net_free(&net);
}

void sandbox_net_unlock(struct sandbox_net *net)
{
        sandbox_netns_unlock(&net->lock_fd, &net->lock_path);
}

void sandbox_net_free(struct sandbox_net *net)
{
        sandbox_net_unlock(net);
        cap_closep(&net->tap_fd);
        cap_closep(&net->netns_fd);
}
