/* The guest's NIC, set up as the host's network namespace had its interface: see system.h.
 * The values were checked by request.c; the kernel refuses what it cannot take. IPv6 takes
 * the same ioctls, on an AF_INET6 socket with its own request structures (in6_ifreq, in6_rtmsg). */
#include "agent/system.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/ipv6.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <net/route.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"

static struct sockaddr sockaddr_of(struct in_addr a)
{
        struct sockaddr s;
        struct sockaddr_in in = { .sin_family = AF_INET, .sin_addr = a };
        memcpy(&s, &in, sizeof(in));
        return s;
}

static struct in_addr prefix_mask(unsigned int prefix)
{
        return (struct in_addr){ .s_addr = prefix ? htonl(~0u << (32 - prefix)) : 0 };
}

/* The Ethernet interface with that MAC (there is one virtio NIC; sit0 and lo are not it). */
static int nic_find(int s, const uint8_t mac[6], char name[IFNAMSIZ], cap_error_t *err)
{
        struct if_nameindex *all = if_nameindex();
        if (!all)
                return cap_fail(err, errno, "net: list the interfaces");
        int found = -1;
        for (struct if_nameindex *i = all; i->if_index && found < 0; i++) {
                struct ifreq ifr = { 0 };
                snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", i->if_name);
                if (ioctl(s, SIOCGIFHWADDR, &ifr) == 0 && ifr.ifr_hwaddr.sa_family == ARPHRD_ETHER &&
                    memcmp(ifr.ifr_hwaddr.sa_data, mac, 6) == 0) {
                        memcpy(name, ifr.ifr_name, IFNAMSIZ);
                        found = 0;
                }
        }
        if_freenameindex(all);
        if (found < 0)
                return cap_fail(err, 0, "net: no network interface has the MAC %02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1],
                                mac[2], mac[3], mac[4], mac[5]);
        return 0;
}

static int ifreq_call(int s, unsigned long req, struct ifreq *ifr, const char *what, cap_error_t *err)
{
        if (ioctl(s, req, ifr) < 0)
                return cap_fail(err, errno, "net: %s: %s", ifr->ifr_name, what);
        return 0;
}

/* The first address on the NIC, the others on aliases NAME:N, as ifconfig does. */
static int addr_add(int s, const char *name, int i, const struct agent_net_addr *a, cap_error_t *err)
{
        struct ifreq ifr = { 0 };
        char label[IFNAMSIZ + 8];
        snprintf(label, sizeof(label), i ? "%s:%d" : "%s", name, i);
        if (strlen(label) >= IFNAMSIZ)
                return cap_fail(err, 0, "net: %s: no room for the alias of address %d", name, i);
        memcpy(ifr.ifr_name, label, strlen(label) + 1);
        ifr.ifr_addr = sockaddr_of(a->addr);
        if (ifreq_call(s, SIOCSIFADDR, &ifr, "set the address", err) < 0)
                return -1;
        ifr.ifr_netmask = sockaddr_of(prefix_mask(a->prefix));
        return ifreq_call(s, SIOCSIFNETMASK, &ifr, "set the netmask", err);
}

static int route_add(int s, const char *name, const struct agent_net_route *r, cap_error_t *err)
{
        char dev[IFNAMSIZ];
        memcpy(dev, name, IFNAMSIZ);
        struct rtentry rt = { .rt_dst = sockaddr_of(r->dst), .rt_genmask = sockaddr_of(prefix_mask(r->prefix)), .rt_gateway = sockaddr_of(r->gateway),
                              .rt_flags = RTF_UP, .rt_dev = dev };
        if (r->gateway.s_addr)
                rt.rt_flags |= RTF_GATEWAY;
        if (r->prefix == 32)
                rt.rt_flags |= RTF_HOST;
        if (ioctl(s, SIOCADDRT, &rt) < 0 && errno != EEXIST) {
                char d[INET_ADDRSTRLEN], g[INET_ADDRSTRLEN];
                return cap_fail(err, errno, "net: add the route %s/%u via %s", inet_ntop(AF_INET, &r->dst, d, sizeof(d)), r->prefix,
                                r->gateway.s_addr ? inet_ntop(AF_INET, &r->gateway, g, sizeof(g)) : name);
        }
        return 0;
}

static int addr6_add(int s6, int index, const char *name, const struct agent_net_addr6 *a, cap_error_t *err)
{
        struct in6_ifreq ifr6 = { .ifr6_addr = a->addr, .ifr6_prefixlen = a->prefix, .ifr6_ifindex = index };
        if (ioctl(s6, SIOCSIFADDR, &ifr6) < 0) {
                char t[INET6_ADDRSTRLEN];
                return cap_fail(err, errno, "net: %s: add the address %s/%u", name, inet_ntop(AF_INET6, &a->addr, t, sizeof(t)),
                                a->prefix);
        }
        return 0;
}

static int route6_add(int s6, int index, const char *name, const struct agent_net_route6 *r, cap_error_t *err)
{
        bool via = !IN6_IS_ADDR_UNSPECIFIED(&r->gateway);
        struct in6_rtmsg rt = { .rtmsg_dst = r->dst, .rtmsg_gateway = r->gateway, .rtmsg_dst_len = (uint16_t)r->prefix,
                                .rtmsg_flags = RTF_UP | (via ? RTF_GATEWAY : 0), .rtmsg_ifindex = index };
        if (ioctl(s6, SIOCADDRT, &rt) < 0 && errno != EEXIST) {
                char d[INET6_ADDRSTRLEN], g[INET6_ADDRSTRLEN];
                return cap_fail(err, errno, "net: add the route %s/%u via %s", inet_ntop(AF_INET6, &r->dst, d, sizeof(d)), r->prefix,
                                via ? inet_ntop(AF_INET6, &r->gateway, g, sizeof(g)) : name);
        }
        return 0;
}

static int sysctl_set(const char *name, const char *key, cap_error_t *err)
{
        char path[128];
        snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/%s", name, key);
        cleanup_close int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, "0", 1) != 1)
                return cap_fail(err, errno, "net: turn %s off", path);
        return 0;
}

/* The NIC's IPv6 addresses are the host interface's, whose peers know them already: no
 * duplicate address detection (an address is usable at once, never "tentative"), and no
 * router advertisement taken (no SLAAC address or route besides what the host had). Its
 * link-local address comes from the MAC, so it is the interface's too. */
static int ipv6_setup(const char *name, cap_error_t *err)
{
        static const char *const keys[] = { "accept_dad", "accept_ra", "autoconf" };
        if (sysctl_set("all", "accept_dad", err) < 0)
                return -1;
        for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
                if (sysctl_set(name, keys[i], err) < 0)
                        return -1;
        return 0;
}

int system_net_setup(const struct agent_net *n, cap_error_t *err)
{
        cleanup_close int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        char name[IFNAMSIZ];
        if (s < 0)
                return cap_fail(err, errno, "net: socket");
        if (nic_find(s, n->mac, name, err) < 0)
                return -1;
        struct ifreq ifr = { .ifr_mtu = (int)n->mtu };
        memcpy(ifr.ifr_name, name, IFNAMSIZ);
        if (ifreq_call(s, SIOCSIFMTU, &ifr, "set the MTU", err) < 0)
                return -1;
        /* Below IPv6's MTU the kernel has no IPv6 on the link (and request.c took no address);
         * a kernel without IPv6 (capsule.vm.kernel) has nothing to turn off. */
        if (n->mtu >= AGENT_NET_MTU_IPV6_MIN && access("/proc/sys/net/ipv6", F_OK) == 0 && ipv6_setup(name, err) < 0)
                return -1;
        for (int i = 0; i < n->n_addrs; i++)
                if (addr_add(s, name, i, &n->addrs[i], err) < 0)
                        return -1;
        if (ifreq_call(s, SIOCGIFFLAGS, &ifr, "get the flags", err) < 0)
                return -1;
        ifr.ifr_flags |= IFF_UP;
        if (ifreq_call(s, SIOCSIFFLAGS, &ifr, "bring it up", err) < 0)
                return -1;
        for (int i = 0; i < n->n_routes; i++)
                if (route_add(s, name, &n->routes[i], err) < 0)
                        return -1;
        if (n->n_addrs6 == 0 && n->n_routes6 == 0)
                return 0;
        cleanup_close int s6 = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        int index = (int)if_nametoindex(name);
        if (s6 < 0 || index == 0)
                return cap_fail(err, errno, "net: %s: an IPv6 socket and the interface's index", name);
        for (int i = 0; i < n->n_addrs6; i++)
                if (addr6_add(s6, index, name, &n->addrs6[i], err) < 0)
                        return -1;
        for (int i = 0; i < n->n_routes6; i++)
                if (route6_add(s6, index, name, &n->routes6[i], err) < 0)
                        return -1;
        return 0;
}
