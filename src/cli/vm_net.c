/* --net (and "net": [...] in the JSON config): one virtio-net NIC per setting.
 *   tap[=NAME][,mac=MAC][,queues=N][,netns=PATH]
 *   user[,hostfwd=tcp|udp:[HOSTADDR]:HOSTPORT-:GUESTPORT]...[,impl=passt|slirp][,mac=MAC] */
#include "cli/vm_net.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"

#define NET_QUEUES_MAX 16 /* NET_MAX_QUEUE_PAIRS */
#define NET_TAP_USAGE "tap[=NAME][,mac=MAC][,queues=N][,netns=PATH]"
#define NET_USER_USAGE "user[,hostfwd=tcp:[HOSTADDR]:HOSTPORT-:GUESTPORT]...[,impl=passt|slirp][,mac=MAC]"

static void net_free(struct vm_net *n)
{
        free(n->ifname);
        free(n->netns);
        for (int i = 0; i < n->n_forwards; i++)
                free(n->forwards[i].host_addr);
        free(n->forwards);
}

static int hex_digit(char c)
{
        return isdigit((unsigned char)c) ? c - '0' : isxdigit((unsigned char)c) ? tolower((unsigned char)c) - 'a' + 10 : -1;
}

/* Exactly "xx:xx:xx:xx:xx:xx", and a unicast address: a NIC cannot own a multicast one. */
static int parse_mac(const char *text, struct vm_net *n, const char *origin, cap_error_t *err)
{
        bool ok = strlen(text) == 17;
        for (int i = 0; ok && i < 6; i++) {
                int hi = hex_digit(text[3 * i]), lo = hex_digit(text[3 * i + 1]);
                ok = hi >= 0 && lo >= 0 && (i == 5 || text[3 * i + 2] == ':');
                n->mac[i] = (uint8_t)(hi << 4 | lo);
        }
        if (!ok)
                return cap_fail(err, 0, "%s: mac=%s is not a MAC address (like 52:54:00:12:34:56)", origin, text);
        if (n->mac[0] & 1)
                return cap_fail(err, 0, "%s: mac=%s is a multicast address (the first byte must be even)", origin, text);
        n->mac_set = true;
        return 0;
}

static int parse_port(const char *text, uint16_t *port)
{
        unsigned long long v;
        if (parse_u64(text, &v) < 0 || v < 1 || v > 65535)
                return -1;
        *port = (uint16_t)v;
        return 0;
}

/* tcp:[HOSTADDR]:HOSTPORT-:GUESTPORT (QEMU's hostfwd, without a guest address: the guest has one). */
static int parse_hostfwd(const char *text, struct vm_net *n, const char *origin, cap_error_t *err)
{
        struct vm_net_forward f = { 0 };
        cleanup_free char *copy = xstrdup(text);
        char *colon = strchr(copy, ':'), *dash = strstr(copy, "-:"), *port_colon = NULL;
        if (colon && dash && dash > colon) {
                *dash = '\0';
                port_colon = strrchr(colon + 1, ':');
        }
        bool ok = port_colon != NULL;
        if (ok) {
                *colon = '\0';
                *port_colon = '\0';
                f.udp = strcmp(copy, "udp") == 0;
                struct in_addr a;
                const char *addr = colon + 1;
                ok = (f.udp || strcmp(copy, "tcp") == 0) && (!*addr || inet_pton(AF_INET, addr, &a) == 1) &&
                     parse_port(port_colon + 1, &f.host_port) == 0 && parse_port(dash + 2, &f.guest_port) == 0;
                if (ok && *addr)
                        f.host_addr = xstrdup(addr);
        }
        if (!ok)
                return cap_fail(err, 0, "%s: hostfwd=%s is not tcp|udp:[HOSTADDR]:HOSTPORT-:GUESTPORT (an IPv4 "
                                "address or none, ports 1 to 65535)", origin, text);
        n->forwards = xrealloc(n->forwards, (size_t)(n->n_forwards + 1) * sizeof(*n->forwards));
        n->forwards[n->n_forwards++] = f;
        return 0;
}

/* What the kernel accepts as an interface name (dev_valid_name). */
static int check_ifname(const char *name, const char *origin, cap_error_t *err)
{
        if (!*name || strlen(name) >= IFNAMSIZ)
                return cap_fail(err, 0, "%s: tap name `%s` is not 1 to %d bytes", origin, name, IFNAMSIZ - 1);
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0 || strpbrk(name, "/: \t\n"))
                return cap_fail(err, 0, "%s: tap name `%s` is not an interface name (no '/', ':' or spaces)", origin,
                                name);
        return 0;
}

static int net_option(struct vm_net *n, const char *o, const char *base_dir, const char *origin, cap_error_t *err)
{
        bool tap = n->backend == VM_NET_TAP;
        unsigned long long v;
        if (str_has_prefix(o, "mac="))
                return parse_mac(o + 4, n, origin, err);
        if (tap && str_has_prefix(o, "queues=")) {
                if (parse_u64(o + 7, &v) < 0 || v < 1 || v > NET_QUEUES_MAX)
                        return cap_fail(err, 0, "%s: queues=%s is not a number from 1 to %d", origin, o + 7,
                                        NET_QUEUES_MAX);
                n->queues = (int)v;
                return 0;
        }
        if (tap && str_has_prefix(o, "netns=")) {
                if (!o[6])
                        return cap_fail(err, 0, "%s: netns= needs a path (/run/netns/NAME, /proc/PID/ns/net)", origin);
                free(n->netns);
                n->netns = o[6] != '/' && base_dir ? xasprintf("%s/%s", base_dir, o + 6) : xstrdup(o + 6);
                if (access(n->netns, F_OK) < 0)
                        return cap_fail(err, errno, "%s: netns %s", origin, n->netns);
                return 0;
        }
        if (!tap && str_has_prefix(o, "hostfwd="))
                return parse_hostfwd(o + 8, n, origin, err);
        if (!tap && str_has_prefix(o, "impl=")) {
                if (strcmp(o + 5, "passt") == 0)
                        n->user_impl = VM_NET_USER_PASST;
                else if (strcmp(o + 5, "slirp") == 0)
                        n->user_impl = VM_NET_USER_SLIRP;
                else
                        return cap_fail(err, 0, "%s: impl=%s is not passt or slirp", origin, o + 5);
                return 0;
        }
        return cap_fail(err, 0, "%s: unknown option `%s` (%s)", origin, o, tap ? NET_TAP_USAGE : NET_USER_USAGE);
}

int vm_net_setting(struct vm_config *cfg, const char *text, const char *base_dir, const char *origin, cap_error_t *err)
{
        cleanup_free char *buf = xstrdup(text);
        char *rest = buf;
        const char *kind = strsep(&rest, ",");
        struct vm_net n = { .queues = 1 };
        if (strcmp(kind, "user") == 0) {
                n.backend = VM_NET_USER;
        } else if ((strcmp(kind, "tap") == 0 || str_has_prefix(kind, "tap="))) {
                n.backend = VM_NET_TAP;
                if (kind[3] == '=' && check_ifname(kind + 4, origin, err) < 0)
                        return -1;
                n.ifname = kind[3] == '=' ? xstrdup(kind + 4) : NULL;
        } else {
                return cap_fail(err, 0, "%s: `%s` is neither %s nor %s", origin, text, NET_TAP_USAGE, NET_USER_USAGE);
        }
        for (const char *o; (o = strsep(&rest, ","));) {
                if (net_option(&n, o, base_dir, origin, err) < 0) {
                        net_free(&n);
                        return -1;
                }
        }
        cfg->nets = xrealloc(cfg->nets, (size_t)(cfg->n_nets + 1) * sizeof(*cfg->nets));
        cfg->nets[cfg->n_nets++] = n;
        return 0;
}
