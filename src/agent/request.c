/* Parsing and checking the host's requests: see request.h. */
#include "agent/request.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"
#include "runtime/state.h"

static const char *const op_names[] = {
        [AGENT_OP_STDIO] = "stdio", [AGENT_OP_CREATE] = "create", [AGENT_OP_START] = "start", [AGENT_OP_KILL] = "kill",
        [AGENT_OP_STATE] = "state", [AGENT_OP_EXEC] = "exec",     [AGENT_OP_WAIT] = "wait",   [AGENT_OP_RESIZE] = "resize",
        [AGENT_OP_PAUSE] = "pause", [AGENT_OP_RESUME] = "resume", [AGENT_OP_PS] = "ps",       [AGENT_OP_UPDATE] = "update",
        [AGENT_OP_DELETE] = "delete",
};

/* A string field without embedded NULs (C would see a shorter string than the host sent). */
static int get_string(const json_t *msg, const char *key, const char **out, cap_error_t *err)
{
        const json_t *v = json_object_get(msg, key);
        if (!json_is_string(v))
                return cap_fail(err, 0, "request: \"%s\": a string is required", key);
        if (strlen(json_string_value(v)) != json_string_length(v))
                return cap_fail(err, 0, "request: \"%s\": contains a NUL byte", key);
        *out = json_string_value(v);
        return 0;
}

static int get_int(const json_t *msg, const char *key, long long min, long long max, long long *out, cap_error_t *err)
{
        const json_t *v = json_object_get(msg, key);
        if (!json_is_integer(v))
                return cap_fail(err, 0, "request: \"%s\": an integer is required", key);
        long long n = json_integer_value(v);
        if (n < min || n > max)
                return cap_fail(err, 0, "request: \"%s\": %lld is out of range [%lld, %lld]", key, n, min, max);
        *out = n;
        return 0;
}

static int get_name(const json_t *msg, const char *key, bool init_allowed, const char **out, cap_error_t *err)
{
        if (get_string(msg, key, out, err) < 0)
                return -1;
        bool is_init = strcmp(*out, AGENT_INIT) == 0;
        if (is_init && !init_allowed)
                return cap_fail(err, 0, "request: \"%s\": \"%s\" names the container's init", key, AGENT_INIT);
        if (!is_init && state_check_id(*out, err) < 0)
                return cap_error_prefix(err, "request: \"%s\"", key);
        return 0;
}

static int get_stdio(const json_t *msg, bool *tty, cap_error_t *err)
{
        const char *mode;
        if (get_string(msg, "stdio", &mode, err) < 0)
                return -1;
        if (strcmp(mode, "tty") != 0 && strcmp(mode, "pipes") != 0)
                return cap_fail(err, 0, "request: \"stdio\": `%s` is neither \"pipes\" nor \"tty\"", mode);
        *tty = strcmp(mode, "tty") == 0;
        return 0;
}

/* An optional boolean: false when missing. */
static int get_bool(const json_t *msg, const char *key, bool *out, cap_error_t *err)
{
        const json_t *v = json_object_get(msg, key);
        if (v && !json_is_boolean(v))
                return cap_fail(err, 0, "request: \"%s\": a boolean is required", key);
        *out = json_is_true(v);
        return 0;
}

/* An optional one of AGENT_ROOTFS_*: virtio-fs when missing. */
static int get_rootfs(const json_t *msg, enum agent_rootfs *out, cap_error_t *err)
{
        static const char *const names[] = { [AGENT_ROOTFS_FROM_VIRTIOFS] = AGENT_ROOTFS_VIRTIOFS,
                                             [AGENT_ROOTFS_FROM_BLOCK] = AGENT_ROOTFS_BLOCK,
                                             [AGENT_ROOTFS_FROM_BLOCK_RO] = AGENT_ROOTFS_BLOCK_RO };
        const char *name;
        *out = AGENT_ROOTFS_FROM_VIRTIOFS;
        if (!json_object_get(msg, "rootfs"))
                return 0;
        if (get_string(msg, "rootfs", &name, err) < 0)
                return -1;
        for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
                if (strcmp(name, names[i]) == 0) {
                        *out = (enum agent_rootfs)i;
                        return 0;
                }
        }
        return cap_fail(err, 0, "request: \"rootfs\": `%.64s` is none of \"" AGENT_ROOTFS_VIRTIOFS "\", \"" AGENT_ROOTFS_BLOCK
                                "\", \"" AGENT_ROOTFS_BLOCK_RO "\"", name);
}

static int get_ipv4(const json_t *obj, const char *key, const char *where, struct in_addr *out, cap_error_t *err)
{
        const json_t *v = json_object_get(obj, key);
        const char *text = json_string_value(v);
        if (!text || strlen(text) != json_string_length(v) || inet_pton(AF_INET, text, out) != 1)
                return cap_fail(err, 0, "request: \"%s.%s\": an IPv4 address (A.B.C.D) is required", where, key);
        return 0;
}

/* An address a NIC or a gateway may have. */
static bool ipv4_host(struct in_addr a)
{
        uint32_t h = ntohl(a.s_addr);
        return h != 0 && h != 0xffffffffu && (h >> 24) != 127 && (h >> 28) != 0xe;
}

static int get_ipv6(const json_t *obj, const char *key, const char *where, struct in6_addr *out, cap_error_t *err)
{
        const json_t *v = json_object_get(obj, key);
        const char *text = json_string_value(v);
        if (!text || strlen(text) != json_string_length(v) || inet_pton(AF_INET6, text, out) != 1)
                return cap_fail(err, 0, "request: \"%s.%s\": an IPv6 address is required", where, key);
        return 0;
}

/* A unicast address a NIC or a gateway may have: not ::, ::1, multicast or IPv4-mapped; a
 * link-local one only as a gateway (the guest's own link-local address comes from its MAC). */
static bool ipv6_host(const struct in6_addr *a, bool link_local_ok)
{
        return !IN6_IS_ADDR_UNSPECIFIED(a) && !IN6_IS_ADDR_LOOPBACK(a) && !IN6_IS_ADDR_MULTICAST(a) &&
               !IN6_IS_ADDR_V4MAPPED(a) && (link_local_ok || !IN6_IS_ADDR_LINKLOCAL(a));
}

/* Whether a has bits set beyond its first prefix bits. */
static bool ipv6_host_bits(const struct in6_addr *a, unsigned int prefix)
{
        for (unsigned int i = 0; i < 16; i++) {
                unsigned int keep = prefix >= 8 * (i + 1) ? 8 : prefix > 8 * i ? prefix - 8 * i : 0;
                if (a->s6_addr[i] & (uint8_t)~(0xff00u >> keep))
                        return true;
        }
        return false;
}

static int get_mac(const json_t *net, uint8_t mac[6], cap_error_t *err)
{
        const char *text = json_string_value(json_object_get(net, "mac"));
        unsigned int b[6];
        char end;
        if (!text || strlen(text) != 17 ||
            sscanf(text, "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &end) != 6)
                return cap_fail(err, 0, "request: \"net.mac\": a MAC address (xx:xx:xx:xx:xx:xx) is required");
        for (int i = 0; i < 6; i++) {
                if (!isxdigit((unsigned char)text[3 * i]) || !isxdigit((unsigned char)text[3 * i + 1]))
                        return cap_fail(err, 0, "request: \"net.mac\": a MAC address (xx:xx:xx:xx:xx:xx) is required");
                mac[i] = (uint8_t)b[i];
        }
        if (mac[0] & 1)
                return cap_fail(err, 0, "request: \"net.mac\": %s is a multicast address", text);
        return 0;
}

/* *out the array at key, of at most max entries; an optional one may be missing (*out NULL,
 * which jansson sizes as 0). */
static int get_array(const json_t *net, const char *key, bool optional, size_t max, const json_t **out, cap_error_t *err)
{
        *out = json_object_get(net, key);
        if (!*out && optional)
                return 0;
        if (!json_is_array(*out) || json_array_size(*out) > max)
                return cap_fail(err, 0, "request: \"net.%s\": an array of at most %zu entries is required", key, max);
        return 0;
}

static int get_addrs(const json_t *addrs, struct agent_net *n, cap_error_t *err)
{
        char where[64];
        long long v;
        for (size_t i = 0; i < json_array_size(addrs); i++) {
                const json_t *a = json_array_get(addrs, i);
                struct agent_net_addr *out = &n->addrs[n->n_addrs++];
                snprintf(where, sizeof(where), "net.addresses[%zu]", i);
                if (get_ipv4(a, "address", where, &out->addr, err) < 0 || get_int(a, "prefix", 1, 32, &v, err) < 0)
                        return cap_error_prefix(err, "%s", where);
                out->prefix = (unsigned int)v;
                if (!ipv4_host(out->addr))
                        return cap_fail(err, 0, "request: \"%s.address\": not a host's address", where);
        }
        return 0;
}

static int get_routes(const json_t *routes, struct agent_net *n, cap_error_t *err)
{
        char where[64];
        long long v;
        for (size_t i = 0; i < json_array_size(routes); i++) {
                const json_t *r = json_array_get(routes, i);
                struct agent_net_route *out = &n->routes[n->n_routes++];
                snprintf(where, sizeof(where), "net.routes[%zu]", i);
                if (get_ipv4(r, "destination", where, &out->dst, err) < 0 || get_int(r, "prefix", 0, 32, &v, err) < 0)
                        return cap_error_prefix(err, "%s", where);
                out->prefix = (unsigned int)v;
                if (out->dst.s_addr & ~(v ? htonl(~0u << (32 - v)) : 0))
                        return cap_fail(err, 0, "request: \"%s.destination\": has bits beyond its prefix", where);
                out->gateway.s_addr = 0;
                if (!json_object_get(r, "gateway"))
                        continue;
                if (get_ipv4(r, "gateway", where, &out->gateway, err) < 0)
                        return -1;
                if (!ipv4_host(out->gateway))
                        return cap_fail(err, 0, "request: \"%s.gateway\": not a host's address", where);
        }
        return 0;
}

static int get_addrs6(const json_t *addrs, struct agent_net *n, cap_error_t *err)
{
        char where[64];
        long long v;
        for (size_t i = 0; i < json_array_size(addrs); i++) {
                const json_t *a = json_array_get(addrs, i);
                struct agent_net_addr6 *out = &n->addrs6[n->n_addrs6++];
                snprintf(where, sizeof(where), "net.addresses6[%zu]", i);
                if (get_ipv6(a, "address", where, &out->addr, err) < 0 || get_int(a, "prefix", 1, 128, &v, err) < 0)
                        return cap_error_prefix(err, "%s", where);
                out->prefix = (unsigned int)v;
                if (!ipv6_host(&out->addr, false))
                        return cap_fail(err, 0, "request: \"%s.address\": not a host's global address", where);
        }
        return 0;
}

static int get_routes6(const json_t *routes, struct agent_net *n, cap_error_t *err)
{
        char where[64];
        long long v;
        for (size_t i = 0; i < json_array_size(routes); i++) {
                const json_t *r = json_array_get(routes, i);
                struct agent_net_route6 *out = &n->routes6[n->n_routes6++];
                snprintf(where, sizeof(where), "net.routes6[%zu]", i);
                if (get_ipv6(r, "destination", where, &out->dst, err) < 0 || get_int(r, "prefix", 0, 128, &v, err) < 0)
                        return cap_error_prefix(err, "%s", where);
                out->prefix = (unsigned int)v;
                if (ipv6_host_bits(&out->dst, out->prefix))
                        return cap_fail(err, 0, "request: \"%s.destination\": has bits beyond its prefix", where);
                out->gateway = in6addr_any;
                if (!json_object_get(r, "gateway"))
                        continue;
                if (get_ipv6(r, "gateway", where, &out->gateway, err) < 0)
                        return -1;
                if (!ipv6_host(&out->gateway, true))
                        return cap_fail(err, 0, "request: \"%s.gateway\": not a host's address", where);
        }
        return 0;
}

static int get_net(const json_t *msg, struct agent_req *req, cap_error_t *err)
{
        const json_t *net = json_object_get(msg, "net");
        struct agent_net *n = &req->net;
        long long v;
        if (!net)
                return 0;
        if (!json_is_object(net))
                return cap_fail(err, 0, "request: \"net\": an object is required");
        req->has_net = true;
        if (get_mac(net, n->mac, err) < 0)
                return -1;
        if (get_int(net, "mtu", AGENT_NET_MTU_MIN, AGENT_NET_MTU_MAX, &v, err) < 0)
                return cap_error_prefix(err, "net");
        n->mtu = (unsigned int)v;
        const json_t *addrs, *routes, *addrs6, *routes6;
        if (get_array(net, "addresses", false, AGENT_NET_ADDRS_MAX, &addrs, err) < 0 ||
            get_array(net, "routes", false, AGENT_NET_ROUTES_MAX, &routes, err) < 0 ||
            get_array(net, "addresses6", true, AGENT_NET_ADDRS_MAX, &addrs6, err) < 0 ||
            get_array(net, "routes6", true, AGENT_NET_ROUTES_MAX, &routes6, err) < 0)
                return -1;
        if (json_array_size(addrs) + json_array_size(addrs6) == 0)
                return cap_fail(err, 0, "request: \"net\": neither \"addresses\" nor \"addresses6\" has an address");
        if (json_array_size(addrs6) && n->mtu < AGENT_NET_MTU_IPV6_MIN)
                return cap_fail(err, 0, "request: \"net.addresses6\": IPv6 needs an MTU of %d, not %u", AGENT_NET_MTU_IPV6_MIN,
                                n->mtu);
        if (get_addrs(addrs, n, err) < 0 || get_routes(routes, n, err) < 0 || get_addrs6(addrs6, n, err) < 0)
                return -1;
        return get_routes6(routes6, n, err);
}

/* A container's id, or another name that must be one (never a path): required or optional. */
static int get_id(const json_t *msg, const char *key, bool required, const char **out, cap_error_t *err)
{
        if (!required && !json_object_get(msg, key))
                return 0;
        if (get_string(msg, key, out, err) < 0)
                return -1;
        if (state_check_id(*out, err) < 0)
                return cap_error_prefix(err, "request: \"%s\"", key);
        return 0;
}

static int get_create(const json_t *msg, struct agent_req *req, cap_error_t *err)
{
        if (get_id(msg, "id", true, &req->id, err) < 0 || get_string(msg, "config", &req->config, err) < 0 ||
            get_stdio(msg, &req->tty, err) < 0)
                return -1;
        if (get_bool(msg, "binds", &req->binds, err) < 0 || get_rootfs(msg, &req->rootfs, err) < 0 ||
            get_bool(msg, "pod", &req->pod, err) < 0 || get_id(msg, "member", false, &req->member, err) < 0)
                return -1;
        if (req->member && (req->pod || json_object_get(msg, "net") || json_object_get(msg, "rootfs")))
                return cap_fail(err, 0, "request: a member takes no \"pod\", \"net\" or \"rootfs\"");
        return get_net(msg, req, err);
}

int agent_req_parse(const json_t *msg, struct agent_req *req, cap_error_t *err)
{
        const char *op;
        long long n;
        memset(req, 0, sizeof(*req));
        if (get_string(msg, "op", &op, err) < 0)
                return -1;
        size_t i;
        for (i = 0; i < ARRAY_SIZE(op_names); i++)
                if (strcmp(op, op_names[i]) == 0)
                        break;
        if (i == ARRAY_SIZE(op_names))
                return cap_fail(err, 0, "request: unknown op `%.64s`", op);
        req->op = (enum agent_op)i;
        switch (req->op) {
        case AGENT_OP_STDIO:
                if (get_name(msg, "exec", true, &req->exec, err) < 0 || get_int(msg, "fd", 0, 2, &n, err) < 0)
                        return -1;
                req->fd = (int)n;
                return 0;
        case AGENT_OP_CREATE:
                return get_create(msg, req, err);
        case AGENT_OP_DELETE:
                if (get_id(msg, "id", true, &req->id, err) < 0)
                        return -1;
                return get_bool(msg, "force", &req->force, err);
        default:
                break;
        }
        if (get_id(msg, "id", false, &req->id, err) < 0)
                return -1;
        switch (req->op) {
        case AGENT_OP_START:
        case AGENT_OP_STATE:
        case AGENT_OP_PAUSE:
        case AGENT_OP_RESUME:
        case AGENT_OP_PS:
                return 0;
        case AGENT_OP_UPDATE:
                return get_string(msg, "resources", &req->resources, err);
        case AGENT_OP_KILL:
                if (get_int(msg, "signal", 1, SIGRTMAX, &n, err) < 0)
                        return -1;
                req->signal = (int)n;
                return get_bool(msg, "all", &req->all, err);
        case AGENT_OP_EXEC:
                if (get_name(msg, "exec", false, &req->exec, err) < 0 || get_string(msg, "process", &req->process, err) < 0)
                        return -1;
                return get_stdio(msg, &req->tty, err);
        case AGENT_OP_WAIT:
                return get_name(msg, "exec", true, &req->exec, err);
        case AGENT_OP_RESIZE:
                if (get_name(msg, "exec", true, &req->exec, err) < 0 || get_int(msg, "rows", 0, 0xffff, &n, err) < 0)
                        return -1;
                req->rows = (unsigned short)n;
                if (get_int(msg, "cols", 0, 0xffff, &n, err) < 0)
                        return -1;
                req->cols = (unsigned short)n;
                return 0;
        default:
                break;
        }
        return cap_fail(err, 0, "request: unknown op `%.64s`", op);
}

/* An object member of obj, created empty when missing; NULL when it is there but no object. */
static json_t *object_member(json_t *obj, const char *key)
{
        json_t *v = json_object_get(obj, key);
        if (!v) {
                v = json_object();
                json_object_set_new(obj, key, v);
        }
        return json_is_object(v) ? v : NULL;
}

/* What joins by path: for a member, its ipc, uts and pid namespaces are the pod's (pod_init's);
 * every other path is the host's and goes (a new namespace; the network one is the guest's own). */
static int strip_host_namespaces(json_t *linux_obj, pid_t pod_init, cap_error_t *err)
{
        static const char *const pod_shared[] = { "ipc", "uts", "pid" };
        json_t *nss = json_object_get(linux_obj, "namespaces");
        if (!nss)
                return 0;
        if (!json_is_array(nss))
                return cap_fail(err, 0, "config.json: linux.namespaces: an array is required");
        for (size_t i = 0; i < json_array_size(nss);) {
                json_t *ns = json_array_get(nss, i);
                if (!json_is_object(ns))
                        return cap_fail(err, 0, "config.json: linux.namespaces[%zu]: an object is required", i);
                const char *type = json_string_value(json_object_get(ns, "type"));
                bool joins = json_object_get(ns, "path") != NULL;
                if (joins && type && strcmp(type, "network") == 0) {
                        json_array_remove(nss, i);
                        continue;
                }
                json_object_del(ns, "path");
                for (size_t k = 0; joins && type && pod_init > 0 && k < ARRAY_SIZE(pod_shared); k++)
                        if (strcmp(type, pod_shared[k]) == 0)
                                json_object_set_new(ns, "path", json_sprintf("/proc/%d/ns/%s", (int)pod_init, type));
                i++;
        }
        return 0;
}

static int config_rewrite(const char *text, const char *rootfs, bool tty, pid_t pod_init, char **out, cap_error_t *err)
{
        json_error_t jerr;
        json_t *cfg = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
        if (!cfg)
                return cap_fail(err, 0, "config.json: line %d: %s", jerr.line, jerr.text);
        int ret = -1;
        json_t *root, *process, *linux_obj, *hooks;
        if (!json_is_object(cfg)) {
                cap_fail(err, 0, "config.json: an object is required");
                goto out;
        }
        if (!(root = object_member(cfg, "root")) || !(process = object_member(cfg, "process")) ||
            !(linux_obj = object_member(cfg, "linux"))) {
                cap_fail(err, 0, "config.json: root, process and linux must be objects");
                goto out;
        }
        json_object_set_new(root, "path", json_string(rootfs));
        json_object_set_new(process, "terminal", json_boolean(tty));
        json_object_del(linux_obj, "cgroupsPath");
        if (strip_host_namespaces(linux_obj, pod_init, err) < 0)
                goto out;
        hooks = json_object_get(cfg, "hooks");
        if (json_is_object(hooks)) {
                static const char *const host_hooks[] = { "prestart", "createRuntime", "poststart", "poststop" };
                for (size_t i = 0; i < ARRAY_SIZE(host_hooks); i++)
                        json_object_del(hooks, host_hooks[i]);
        }
        *out = json_dumps(cfg, JSON_INDENT(1));
        if (!*out) {
                cap_fail(err, 0, "config.json: cannot encode");
                goto out;
        }
        ret = 0;
out:
        json_decref(cfg);
        return ret;
}

int agent_config_rewrite(const char *text, const char *rootfs, bool tty, char **out, cap_error_t *err)
{
        return config_rewrite(text, rootfs, tty, 0, out, err);
}

int agent_member_config_rewrite(const char *text, const char *rootfs, bool tty, pid_t pod_init, char **out, cap_error_t *err)
{
        return config_rewrite(text, rootfs, tty, pod_init, out, err);
}
