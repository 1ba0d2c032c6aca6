/* The agent's request parser and config rewrite (src/agent/request.c): what the host sends is
 * checked field by field before the agent acts on it. */
#include <arpa/inet.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "agent/request.h"
#include "check.h"
#include "common/util.h"

/* Parse the JSON text as a request: 0 or -1 (with the error's message in *why when given). */
static int parse(const char *text, struct agent_req *req, char **why)
{
        /* JSON_ALLOW_NUL: frame_decode refuses \u0000, the parser must not rely on it. */
        json_t *msg = json_loads(text, JSON_ALLOW_NUL, NULL);
        if (!msg)
                return -2;
        cap_error_t err = NULL;
        int r = agent_req_parse(msg, req, &err);
        if (why)
                *why = err ? xstrdup(err->msg) : NULL;
        cap_error_free(&err);
        /* The request borrows the message's strings: keep them for the caller's checks. */
        static json_t *last;
        json_decref(last);
        last = msg;
        return r;
}

static bool refused(const char *text, const char *needle)
{
        struct agent_req req;
        char *why = NULL;
        bool ok = parse(text, &req, &why) == -1 && why && strstr(why, needle);
        free(why);
        return ok;
}

TEST(request_each_op)
{
        struct agent_req r;
        CHECK(parse("{\"op\":\"stdio\",\"exec\":\"init\",\"fd\":2}", &r, NULL) == 0);
        CHECK(r.op == AGENT_OP_STDIO && r.fd == 2);
        CHECK_STR(r.exec, "init");
        CHECK(parse("{\"op\":\"create\",\"id\":\"c1\",\"config\":\"{}\",\"stdio\":\"tty\"}", &r, NULL) == 0);
        CHECK(r.op == AGENT_OP_CREATE && r.tty && !r.binds);
        CHECK_STR(r.id, "c1");
        CHECK_STR(r.config, "{}");
        CHECK(parse("{\"op\":\"create\",\"id\":\"c1\",\"config\":\"{}\",\"stdio\":\"tty\",\"binds\":true}", &r, NULL) == 0 && r.binds);
        CHECK(refused("{\"op\":\"create\",\"id\":\"c1\",\"config\":\"{}\",\"stdio\":\"tty\",\"binds\":1}", "\"binds\": a boolean"));
        CHECK(parse("{\"op\":\"start\"}", &r, NULL) == 0 && r.op == AGENT_OP_START);
        CHECK(parse("{\"op\":\"state\",\"extra\":[1]}", &r, NULL) == 0 && r.op == AGENT_OP_STATE);
        CHECK(parse("{\"op\":\"kill\",\"signal\":15}", &r, NULL) == 0);
        CHECK(r.op == AGENT_OP_KILL && r.signal == 15 && !r.all);
        CHECK(parse("{\"op\":\"kill\",\"signal\":9,\"all\":true}", &r, NULL) == 0 && r.all);
        CHECK(parse("{\"op\":\"exec\",\"exec\":\"e-1\",\"process\":\"{}\",\"stdio\":\"pipes\"}", &r, NULL) == 0);
        CHECK(r.op == AGENT_OP_EXEC && !r.tty);
        CHECK_STR(r.exec, "e-1");
        CHECK(parse("{\"op\":\"wait\",\"exec\":\"init\"}", &r, NULL) == 0 && r.op == AGENT_OP_WAIT);
        CHECK(parse("{\"op\":\"resize\",\"exec\":\"e1\",\"rows\":50,\"cols\":65535}", &r, NULL) == 0);
        CHECK(r.op == AGENT_OP_RESIZE && r.rows == 50 && r.cols == 65535);
        CHECK(parse("{\"op\":\"pause\"}", &r, NULL) == 0 && r.op == AGENT_OP_PAUSE);
        CHECK(parse("{\"op\":\"resume\"}", &r, NULL) == 0 && r.op == AGENT_OP_RESUME);
        CHECK(parse("{\"op\":\"ps\"}", &r, NULL) == 0 && r.op == AGENT_OP_PS);
        CHECK(parse("{\"op\":\"update\",\"resources\":\"{}\"}", &r, NULL) == 0 && r.op == AGENT_OP_UPDATE);
        CHECK_STR(r.resources, "{}");
}

TEST(request_create_rootfs)
{
        struct agent_req r;
#define CREATE "{\"op\":\"create\",\"id\":\"c1\",\"config\":\"{}\",\"stdio\":\"pipes\""
        CHECK(parse(CREATE "}", &r, NULL) == 0 && r.rootfs == AGENT_ROOTFS_FROM_VIRTIOFS);
        CHECK(parse(CREATE ",\"rootfs\":\"virtiofs\"}", &r, NULL) == 0 && r.rootfs == AGENT_ROOTFS_FROM_VIRTIOFS);
        CHECK(parse(CREATE ",\"rootfs\":\"block\"}", &r, NULL) == 0 && r.rootfs == AGENT_ROOTFS_FROM_BLOCK);
        CHECK(parse(CREATE ",\"rootfs\":\"block-ro\"}", &r, NULL) == 0 && r.rootfs == AGENT_ROOTFS_FROM_BLOCK_RO);
        CHECK(refused(CREATE ",\"rootfs\":\"Block\"}", "\"rootfs\": `Block` is none of"));
        CHECK(refused(CREATE ",\"rootfs\":\"block\\u0000-ro\"}", "\"rootfs\": contains a NUL byte"));
        CHECK(refused(CREATE ",\"rootfs\":\"\"}", "\"rootfs\": `` is none of"));
        CHECK(refused(CREATE ",\"rootfs\":true}", "\"rootfs\": a string is required"));
        CHECK(refused(CREATE ",\"rootfs\":null}", "\"rootfs\": a string is required"));
#undef CREATE
}

TEST(request_bad_op)
{
        CHECK(refused("{}", "\"op\": a string is required"));
        CHECK(refused("{\"op\":1}", "\"op\": a string is required"));
        CHECK(refused("{\"op\":\"reboot\"}", "unknown op `reboot`"));
        CHECK(refused("{\"op\":\"state\\u0000x\"}", "NUL"));
}

TEST(request_bad_names)
{
        CHECK(refused("{\"op\":\"stdio\",\"exec\":\"../x\",\"fd\":0}", "\"exec\""));
        CHECK(refused("{\"op\":\"stdio\",\"exec\":\"\",\"fd\":0}", "\"exec\""));
        CHECK(refused("{\"op\":\"wait\",\"exec\":\"a/b\"}", "\"exec\""));
        CHECK(refused("{\"op\":\"wait\",\"exec\":7}", "\"exec\": a string"));
        CHECK(refused("{\"op\":\"exec\",\"exec\":\"init\",\"process\":\"{}\",\"stdio\":\"pipes\"}", "names the container's init"));
        CHECK(refused("{\"op\":\"create\",\"id\":\"-c\",\"config\":\"{}\",\"stdio\":\"pipes\"}", "\"id\""));
        CHECK(refused("{\"op\":\"create\",\"id\":\"c\\u0000d\",\"config\":\"{}\",\"stdio\":\"pipes\"}", "NUL"));
        CHECK(refused("{\"op\":\"create\",\"config\":\"{}\",\"stdio\":\"pipes\"}", "\"id\": a string"));
}

TEST(request_bad_fields)
{
        CHECK(refused("{\"op\":\"stdio\",\"exec\":\"init\",\"fd\":3}", "\"fd\": 3 is out of range"));
        CHECK(refused("{\"op\":\"stdio\",\"exec\":\"init\",\"fd\":-1}", "\"fd\""));
        CHECK(refused("{\"op\":\"stdio\",\"exec\":\"init\",\"fd\":1.0}", "\"fd\": an integer"));
        CHECK(refused("{\"op\":\"stdio\",\"exec\":\"init\"}", "\"fd\": an integer"));
        CHECK(refused("{\"op\":\"create\",\"id\":\"c\",\"config\":{},\"stdio\":\"pipes\"}", "\"config\": a string"));
        CHECK(refused("{\"op\":\"create\",\"id\":\"c\",\"config\":\"{}\",\"stdio\":\"pty\"}", "neither"));
        CHECK(refused("{\"op\":\"create\",\"id\":\"c\",\"config\":\"{}\"}", "\"stdio\": a string"));
        CHECK(refused("{\"op\":\"kill\",\"signal\":0}", "\"signal\": 0 is out of range"));
        CHECK(refused("{\"op\":\"kill\",\"signal\":65}", "\"signal\""));
        CHECK(refused("{\"op\":\"kill\",\"signal\":9,\"all\":1}", "\"all\": a boolean"));
        CHECK(refused("{\"op\":\"kill\"}", "\"signal\": an integer"));
        CHECK(refused("{\"op\":\"exec\",\"exec\":\"e\",\"stdio\":\"pipes\"}", "\"process\": a string"));
        CHECK(refused("{\"op\":\"resize\",\"exec\":\"e\",\"rows\":65536,\"cols\":1}", "\"rows\""));
        CHECK(refused("{\"op\":\"resize\",\"exec\":\"e\",\"rows\":1,\"cols\":-5}", "\"cols\""));
        CHECK(refused("{\"op\":\"resize\",\"exec\":\"e\",\"rows\":1,\"cols\":9007199254740993}", "\"cols\""));
        CHECK(refused("{\"op\":\"update\",\"resources\":{}}", "\"resources\": a string"));
        CHECK(refused("{\"op\":\"update\"}", "\"resources\": a string"));
}

static json_t *rewrite(const char *config, bool tty, char **why)
{
        char *out = NULL;
        cap_error_t err = NULL;
        *why = NULL;
        if (agent_config_rewrite(config, "/run/capsule/rootfs", tty, &out, &err) < 0) {
                *why = xstrdup(err->msg);
                cap_error_free(&err);
                return NULL;
        }
        json_t *j = json_loads(out, 0, NULL);
        free(out);
        return j;
}

TEST(config_rewrite_guest_view)
{
        char *why;
        json_t *c = rewrite("{\"ociVersion\":\"1.0.2\",\"root\":{\"path\":\"/host/rootfs\",\"readonly\":true},"
                            "\"process\":{\"args\":[\"sh\"],\"terminal\":false},"
                            "\"linux\":{\"cgroupsPath\":\"system.slice:libpod:abc\",\"namespaces\":["
                            "{\"type\":\"pid\"},{\"type\":\"network\",\"path\":\"/run/netns/cni-1\"},"
                            "{\"type\":\"ipc\",\"path\":\"/proc/5/ns/ipc\"},{\"type\":\"mount\"}]},"
                            "\"hooks\":{\"prestart\":[{\"path\":\"/bin/x\"}],\"poststop\":[{\"path\":\"/bin/y\"}],"
                            "\"createContainer\":[{\"path\":\"/bin/z\"}]}}",
                            true, &why);
        CHECK(c != NULL);
        CHECK_STR(json_string_value(json_object_get(json_object_get(c, "root"), "path")), "/run/capsule/rootfs");
        CHECK(json_is_true(json_object_get(json_object_get(c, "root"), "readonly")));
        CHECK(json_is_true(json_object_get(json_object_get(c, "process"), "terminal")));
        json_t *lx = json_object_get(c, "linux");
        CHECK(json_object_get(lx, "cgroupsPath") == NULL);
        json_t *nss = json_object_get(lx, "namespaces");
        CHECK(json_array_size(nss) == 3); /* the host's network namespace is gone */
        for (size_t i = 0; i < json_array_size(nss); i++) {
                CHECK(json_object_get(json_array_get(nss, i), "path") == NULL);
                CHECK(strcmp(json_string_value(json_object_get(json_array_get(nss, i), "type")), "network") != 0);
        }
        json_t *hooks = json_object_get(c, "hooks");
        CHECK(json_object_get(hooks, "prestart") == NULL && json_object_get(hooks, "poststop") == NULL);
        CHECK(json_object_get(hooks, "createContainer") != NULL);
        json_decref(c);
}

TEST(config_rewrite_new_network_namespace_stays)
{
        char *why;
        json_t *c = rewrite("{\"process\":{\"terminal\":true},\"linux\":{\"namespaces\":[{\"type\":\"network\"}]}}", false, &why);
        CHECK(c != NULL);
        CHECK(json_array_size(json_object_get(json_object_get(c, "linux"), "namespaces")) == 1);
        CHECK(json_is_false(json_object_get(json_object_get(c, "process"), "terminal")));
        json_decref(c);
}

TEST(config_rewrite_refuses)
{
        static const char *const bad[] = {
                "[]", "{\"root\":\"x\"}", "{\"process\":[]}", "{\"linux\":{\"namespaces\":{}}}",
                "{\"linux\":{\"namespaces\":[1]}}", "not json", "{\"a\":1,\"a\":2}",
        };
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                char *why;
                json_t *c = rewrite(bad[i], false, &why);
                CHECK(c == NULL);
                CHECK(why != NULL && strstr(why, "config.json"));
                free(why);
        }
}

/* A create request whose "net" is the text given. */
static char *create_with_net(const char *net)
{
        return xasprintf("{\"op\":\"create\",\"id\":\"c1\",\"config\":\"{}\",\"stdio\":\"pipes\",\"net\":%s}", net);
}

#define NET_OK                                                                                                  \
        "{\"mac\":\"02:11:22:AA:bb:55\",\"mtu\":1450,"                                                          \
        "\"addresses\":[{\"address\":\"10.77.0.2\",\"prefix\":24},{\"address\":\"10.77.1.2\",\"prefix\":32}]," \
        "\"routes\":[{\"destination\":\"169.254.1.1\",\"prefix\":32},"                                         \
        "{\"destination\":\"0.0.0.0\",\"prefix\":0,\"gateway\":\"169.254.1.1\"}]}"

TEST(request_create_net)
{
        struct agent_req r;
        cleanup_free char *ok = create_with_net(NET_OK);
        CHECK(parse(ok, &r, NULL) == 0 && r.has_net);
        static const uint8_t mac[6] = { 0x02, 0x11, 0x22, 0xaa, 0xbb, 0x55 };
        CHECK(memcmp(r.net.mac, mac, 6) == 0 && r.net.mtu == 1450);
        CHECK(r.net.n_addrs == 2 && r.net.addrs[0].addr.s_addr == htonl(0x0a4d0002) && r.net.addrs[0].prefix == 24);
        CHECK(r.net.addrs[1].prefix == 32);
        CHECK(r.net.n_routes == 2 && r.net.routes[0].dst.s_addr == htonl(0xa9fe0101) && r.net.routes[0].prefix == 32);
        CHECK(r.net.routes[0].gateway.s_addr == 0);
        CHECK(r.net.routes[1].dst.s_addr == 0 && r.net.routes[1].prefix == 0 && r.net.routes[1].gateway.s_addr == htonl(0xa9fe0101));
        CHECK(parse("{\"op\":\"create\",\"id\":\"c1\",\"config\":\"{}\",\"stdio\":\"pipes\"}", &r, NULL) == 0 && !r.has_net);
}

TEST(request_create_net_refuses_nonsense)
{
        static const struct {
                const char *net, *why;
        } bad[] = {
                { "[]", "\"net\": an object" },
                { "{\"mtu\":1500,\"addresses\":[{\"address\":\"10.0.0.2\",\"prefix\":24}],\"routes\":[]}", "\"net.mac\"" },
                { "{\"mac\":\"02:11:22:33:44\",\"mtu\":1500}", "\"net.mac\"" },
                { "{\"mac\":\"02:11:22:33:44:5g\",\"mtu\":1500}", "\"net.mac\"" },
                { "{\"mac\":\"02:11:22:33:44:-5\",\"mtu\":1500}", "\"net.mac\"" },
                { "{\"mac\":\"03:11:22:33:44:55\",\"mtu\":1500}", "multicast" },
                { "{\"mac\":\"02:11:22:33:44:55\",\"mtu\":67}", "\"mtu\"" },
                { "{\"mac\":\"02:11:22:33:44:55\",\"mtu\":65536}", "\"mtu\"" },
                { "{\"mac\":\"02:11:22:33:44:55\",\"mtu\":1500,\"addresses\":[],\"routes\":[]}", "neither \"addresses\" nor" },
                { "{\"mac\":\"02:11:22:33:44:55\",\"mtu\":1500,\"addresses\":[],\"routes\":[],\"addresses6\":[]}", "neither" },
                { "{\"mac\":\"02:11:22:33:44:55\",\"mtu\":1500,\"addresses\":[{\"address\":\"10.0.0.2\",\"prefix\":24}]}",
                  "\"net.routes\"" },
                { "{\"mac\":\"02:11:22:33:44:55\",\"mtu\":1500,\"addresses\":[{\"address\":\"10.0.0.256\",\"prefix\":24}],"
                  "\"routes\":[]}", "\"net.addresses[0].address\"" },
                { "{\"mac\":\"02:11:22:33:44:55\",\"mtu\":1500,\"addresses\":[{\"address\":\"10.0.0.2\",\"prefix\":33}],"
                  "\"routes\":[]}", "net.addresses[0]" },
                { "{\"mac\":\"02:11:22:33:44:55\",\"mtu\":1500,\"addresses\":[{\"address\":\"10.0.0.2\",\"prefix\":0}],"
                  "\"routes\":[]}", "net.addresses[0]" },
                { "{\"mac\":\"02:11:22:33:44:55\",\"mtu\":1500,\"addresses\":[{\"address\":\"127.0.0.1\",\"prefix\":8}],"
                  "\"routes\":[]}", "not a host's address" },
                { "{\"mac\":\"02:11:22:33:44:55\",\"mtu\":1500,\"addresses\":[{\"address\":\"224.0.0.1\",\"prefix\":8}],"
                  "\"routes\":[]}", "not a host's address" },
                { "{\"mac\":\"02:11:22:33:44:55\",\"mtu\":1500,\"addresses\":[{\"address\":\"0.0.0.0\",\"prefix\":8}],"
                  "\"routes\":[]}", "not a host's address" },
                { "{\"mac\":\"02:11:22:33:44:55\",\"mtu\":1500,\"addresses\":[{\"address\":\"10.0.0.2\",\"prefix\":24}],"
                  "\"routes\":[{\"destination\":\"10.0.0.1\",\"prefix\":24}]}", "beyond its prefix" },
                { "{\"mac\":\"02:11:22:33:44:55\",\"mtu\":1500,\"addresses\":[{\"address\":\"10.0.0.2\",\"prefix\":24}],"
                  "\"routes\":[{\"destination\":\"0.0.0.0\",\"prefix\":0,\"gateway\":\"255.255.255.255\"}]}", "not a host's address" },
                { "{\"mac\":\"02:11:22:33:44:55\",\"mtu\":1500,\"addresses\":[{\"address\":\"10.0.0.2\",\"prefix\":24}],"
                  "\"routes\":[{\"destination\":\"0.0.0.0\",\"prefix\":0,\"gateway\":7}]}", "\"net.routes[0].gateway\"" },
                { "{\"mac\":\"02:11:22:33:44:55\",\"mtu\":1500,\"addresses\":[{\"address\":\"10.0.0.2\\u0000x\",\"prefix\":24}],"
                  "\"routes\":[]}", "\"net.addresses[0].address\"" },
                { "{\"mac\":\"02:11:22:33:44:55\",\"mtu\":1500,\"addresses\":[{\"address\":\"10.0.0.2\",\"prefix\":24}],"
                  "\"routes\":[{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}]}", "\"net.routes\": an array of at most 16" },
        };
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                cleanup_free char *text = create_with_net(bad[i].net);
                CHECK(refused(text, bad[i].why));
        }
        /* Nine addresses: one more than the bound. */
        cleanup_free char *many = create_with_net("{\"mac\":\"02:11:22:33:44:55\",\"mtu\":1500,\"addresses\":["
                                                  "{},{},{},{},{},{},{},{},{}],\"routes\":[]}");
        CHECK(refused(many, "\"net.addresses\": an array of at most 8"));
}

/* An IPv6-only pod: its global addresses, a default route through a link-local gateway (as
 * Calico's), a prefix through a global one, a host route on the link. */
#define NET6_OK                                                                                                  \
        "{\"mac\":\"02:11:22:33:44:55\",\"mtu\":1500,\"addresses\":[],\"routes\":[],"                        \
        "\"addresses6\":[{\"address\":\"fd77::2\",\"prefix\":64},{\"address\":\"2001:db8::5\",\"prefix\":128}],"      \
        "\"routes6\":[{\"destination\":\"2001:db8:1::1\",\"prefix\":128},"                                     \
        "{\"destination\":\"::\",\"prefix\":0,\"gateway\":\"fe80::ecee:eeff:feee:eeee\"},"                       \
        "{\"destination\":\"fd99:0:0:80::\",\"prefix\":57,\"gateway\":\"fd77::1\"}]}"

TEST(request_create_net_ipv6)
{
        struct agent_req r;
        cleanup_free char *ok = create_with_net(NET6_OK);
        CHECK(parse(ok, &r, NULL) == 0 && r.has_net && r.net.n_addrs == 0 && r.net.n_routes == 0);
        struct in6_addr a;
        CHECK(r.net.n_addrs6 == 2 && inet_pton(AF_INET6, "fd77::2", &a) == 1);
        CHECK(memcmp(&r.net.addrs6[0].addr, &a, sizeof(a)) == 0 && r.net.addrs6[0].prefix == 64 && r.net.addrs6[1].prefix == 128);
        CHECK(r.net.n_routes6 == 3 && r.net.routes6[0].prefix == 128 && IN6_IS_ADDR_UNSPECIFIED(&r.net.routes6[0].gateway));
        CHECK(IN6_IS_ADDR_UNSPECIFIED(&r.net.routes6[1].dst) && r.net.routes6[1].prefix == 0 &&
              IN6_IS_ADDR_LINKLOCAL(&r.net.routes6[1].gateway));
        CHECK(inet_pton(AF_INET6, "fd99:0:0:80::", &a) == 1 && memcmp(&r.net.routes6[2].dst, &a, sizeof(a)) == 0);
        CHECK(r.net.routes6[2].prefix == 57);
        /* Dual stack: NET_OK's IPv4 part with NET6_OK's IPv6 part. */
        cleanup_free char *dual = create_with_net(
                "{\"mac\":\"02:11:22:33:44:55\",\"mtu\":1500,\"addresses\":[{\"address\":\"10.0.0.2\",\"prefix\":24}],"
                "\"routes\":[],\"addresses6\":[{\"address\":\"fd77::2\",\"prefix\":64}]}");
        CHECK(parse(dual, &r, NULL) == 0 && r.net.n_addrs == 1 && r.net.n_addrs6 == 1 && r.net.n_routes6 == 0);
}

#define NET6(addrs6, routes6)                                                                                   \
        "{\"mac\":\"02:11:22:33:44:55\",\"mtu\":1500,\"addresses\":[],\"routes\":[],\"addresses6\":" addrs6 \
        ",\"routes6\":" routes6 "}"
#define ADDR6(a, p) "[{\"address\":" a ",\"prefix\":" #p "}]"
#define ROUTE6(d, p, gw) "[{\"destination\":" d ",\"prefix\":" #p gw "}]"

TEST(request_create_net_ipv6_refuses_nonsense)
{
        static const struct {
                const char *net, *why;
        } bad[] = {
                { NET6(ADDR6("\"10.0.0.2\"", 64), "[]"), "\"net.addresses6[0].address\": an IPv6 address" },
                { NET6(ADDR6("\"fd77::2::1\"", 64), "[]"), "\"net.addresses6[0].address\": an IPv6 address" },
                { NET6(ADDR6("\"fd77::2%eth0\"", 64), "[]"), "\"net.addresses6[0].address\": an IPv6 address" },
                { NET6(ADDR6("\"fd77::2\\u0000\"", 64), "[]"), "\"net.addresses6[0].address\": an IPv6 address" },
                { NET6(ADDR6("6", 64), "[]"), "\"net.addresses6[0].address\": an IPv6 address" },
                { NET6(ADDR6("\"fd77::2\"", 0), "[]"), "net.addresses6[0]" },
                { NET6(ADDR6("\"fd77::2\"", 129), "[]"), "net.addresses6[0]" },
                { NET6(ADDR6("\"fd77::2\"", -1), "[]"), "net.addresses6[0]" },
                { NET6(ADDR6("\"fd77::2\"", "64"), "[]"), "net.addresses6[0]" },
                { NET6(ADDR6("\"::\"", 64), "[]"), "not a host's global address" },
                { NET6(ADDR6("\"::1\"", 128), "[]"), "not a host's global address" },
                { NET6(ADDR6("\"ff02::1\"", 64), "[]"), "not a host's global address" },
                { NET6(ADDR6("\"fe80::1\"", 64), "[]"), "not a host's global address" },
                { NET6(ADDR6("\"febf::1\"", 64), "[]"), "not a host's global address" },
                { NET6(ADDR6("\"::ffff:10.0.0.2\"", 96), "[]"), "not a host's global address" },
                { NET6("{}", "[]"), "\"net.addresses6\": an array" },
                { NET6("[{},{},{},{},{},{},{},{},{}]", "[]"), "\"net.addresses6\": an array of at most 8" },
                { NET6(ADDR6("\"fd77::2\"", 64), "7"), "\"net.routes6\": an array" },
                { NET6(ADDR6("\"fd77::2\"", 64), "[{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}]"), "\"net.routes6\": an array of at most 16" },
                { NET6(ADDR6("\"fd77::2\"", 64), ROUTE6("\"fd99::1\"", 64, "")), "beyond its prefix" },
                { NET6(ADDR6("\"fd77::2\"", 64), ROUTE6("\"fd99:0:0:40::\"", 57, "")), "beyond its prefix" },
                { NET6(ADDR6("\"fd77::2\"", 64), ROUTE6("\"::1\"", 0, "")), "beyond its prefix" },
                { NET6(ADDR6("\"fd77::2\"", 64), ROUTE6("\"fd99::\"", 129, "")), "net.routes6[0]" },
                { NET6(ADDR6("\"fd77::2\"", 64), ROUTE6("\"10.0.0.0\"", 8, "")), "\"net.routes6[0].destination\"" },
                { NET6(ADDR6("\"fd77::2\"", 64), ROUTE6("\"::\"", 0, ",\"gateway\":\"::\"")), "not a host's address" },
                { NET6(ADDR6("\"fd77::2\"", 64), ROUTE6("\"::\"", 0, ",\"gateway\":\"ff02::2\"")), "not a host's address" },
                { NET6(ADDR6("\"fd77::2\"", 64), ROUTE6("\"::\"", 0, ",\"gateway\":\"::ffff:10.0.0.1\"")), "not a host's address" },
                { NET6(ADDR6("\"fd77::2\"", 64), ROUTE6("\"::\"", 0, ",\"gateway\":\"10.0.0.1\"")), "\"net.routes6[0].gateway\"" },
                { NET6(ADDR6("\"fd77::2\"", 64), ROUTE6("\"::\"", 0, ",\"gateway\":null")), "\"net.routes6[0].gateway\"" },
                /* An MTU IPv6 cannot run on. */
                { "{\"mac\":\"02:11:22:33:44:55\",\"mtu\":1279,\"addresses\":[],\"routes\":[],"
                  "\"addresses6\":[{\"address\":\"fd77::2\",\"prefix\":64}]}", "IPv6 needs an MTU of 1280" },
        };
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                cleanup_free char *text = create_with_net(bad[i].net);
                CHECK(refused(text, bad[i].why));
        }
}

TEST(request_pod_members)
{
        struct agent_req r;
#define CREATE "{\"op\":\"create\",\"id\":\"m1\",\"config\":\"{}\",\"stdio\":\"pipes\""
        CHECK(parse(CREATE ",\"pod\":true}", &r, NULL) == 0 && r.pod && !r.member);
        CHECK(parse(CREATE ",\"member\":\"m1.5\"}", &r, NULL) == 0 && r.member && strcmp(r.member, "m1.5") == 0 && !r.pod);
        CHECK(refused(CREATE ",\"member\":\"m1.5\",\"pod\":true}", "a member takes no"));
        CHECK(refused(CREATE ",\"member\":\"m1.5\",\"rootfs\":\"block\"}", "a member takes no"));
        CHECK(refused(CREATE ",\"member\":\"m1.5\",\"net\":{}}", "a member takes no"));
        CHECK(refused(CREATE ",\"member\":true}", "\"member\": a string"));
        /* A name under AGENT_MEMBERS, never a way out of it. */
        CHECK(refused(CREATE ",\"member\":\"../../etc\"}", "request: \"member\": invalid container id"));
        CHECK(refused(CREATE ",\"member\":\"a/b\"}", "request: \"member\": invalid container id"));
        CHECK(refused(CREATE ",\"member\":\"\"}", "request: \"member\": container id must not be empty"));
#undef CREATE
        /* Every op after create may name a member; none that is no container id. */
        CHECK(parse("{\"op\":\"state\",\"id\":\"m1\"}", &r, NULL) == 0 && strcmp(r.id, "m1") == 0);
        CHECK(parse("{\"op\":\"state\"}", &r, NULL) == 0 && r.id == NULL);
        CHECK(parse("{\"op\":\"kill\",\"id\":\"m1\",\"signal\":9}", &r, NULL) == 0 && strcmp(r.id, "m1") == 0);
        CHECK(refused("{\"op\":\"start\",\"id\":\"../m\"}", "\"id\""));
        CHECK(refused("{\"op\":\"ps\",\"id\":5}", "\"id\": a string"));
        CHECK(parse("{\"op\":\"delete\",\"id\":\"m1\",\"force\":true}", &r, NULL) == 0 && r.op == AGENT_OP_DELETE && r.force);
        CHECK(refused("{\"op\":\"delete\"}", "\"id\": a string"));
}

TEST(config_rewrite_of_a_member_joins_the_pods_ipc_uts_and_pid)
{
        cap_error_t err = NULL;
        char *out = NULL;
        CHECK(agent_member_config_rewrite("{\"linux\":{\"namespaces\":[{\"type\":\"network\",\"path\":\"/run/netns/p\"},"
                                          "{\"type\":\"ipc\",\"path\":\"/proc/9/ns/ipc\"},{\"type\":\"uts\",\"path\":\"/x\"},"
                                          "{\"type\":\"pid\"},{\"type\":\"mount\",\"path\":\"/proc/9/ns/mnt\"}]}}",
                                          "/run/capsule/members/m1/rootfs", false, 42, &out, &err) == 0);
        json_t *c = json_loads(out, 0, NULL);
        json_t *nss = json_object_get(json_object_get(c, "linux"), "namespaces");
        /* network: the guest's own; ipc and uts: the pod's; pid: a new one; mount: never the host's */
        CHECK(json_array_size(nss) == 4);
        static const char *const want[][2] = { { "ipc", "/proc/42/ns/ipc" }, { "uts", "/proc/42/ns/uts" }, { "pid", NULL }, { "mount", NULL } };
        for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
                json_t *ns = json_array_get(nss, i);
                CHECK_STR(json_string_value(json_object_get(ns, "type")), want[i][0]);
                const char *path = json_string_value(json_object_get(ns, "path"));
                CHECK(want[i][1] ? path && strcmp(path, want[i][1]) == 0 : path == NULL);
        }
        CHECK_STR(json_string_value(json_object_get(json_object_get(c, "root"), "path")), "/run/capsule/members/m1/rootfs");
        json_decref(c);
        free(out);
}
