/* A VM container's network, the host side (src/sandbox/sandbox_net.c): which interface of the
 * container's network namespace the guest takes over, with which MAC, MTU, addresses and routes;
 * the tc filters that tie the tap to it; and the refusals. Each case builds its own network
 * namespace (root only) with ip(8) in a child. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "common/util.h"
#include "sandbox/sandbox_internal.h"

/* The container's side as CNI leaves it, plus a second interface without a default route. */
#define POD_NETNS                                                                                                  \
        "ip link set lo up && "                                                                                    \
        "ip link add eth1 type veth peer name p1 && ip addr add 10.1.0.2/24 dev eth1 && ip link set eth1 up && "    \
        "ip link add eth0 mtu 1450 address 02:11:22:33:44:55 type veth peer name p0 && "                           \
        "ip addr add 10.77.0.2/24 dev eth0 && ip addr add 10.77.1.2/24 dev eth0 && "                               \
        "ip link set eth0 up && ip link set p0 up && "                                                             \
        "ip route add 169.254.1.1 dev eth0 scope link && ip route add default via 10.77.0.1 && "                    \
        "ip addr add fd77::2/64 dev eth0 nodad && ip addr add fd77::9/64 dev eth0 nodad preferred_lft 0 && "       \
        "ip addr add fd77::3/64 dev eth0 && ip route add default via fd77::1 && "                                  \
        "ip route add fd99::/64 via fe80::1 dev eth0 && ip route add 2001:db8::1 dev eth0"

static void gather_report(int out)
{
        struct sandbox_net net = { .netns_fd = -1 };
        cap_error_t err = NULL;
        if (sandbox_net_gather(&net, &err) < 0) {
                dprintf(out, "error: %s", err->msg);
                cap_error_free(&err);
                return;
        }
        if (net.taken) {
                dprintf(out, "taken");
                return;
        }
        if (!net.ifindex) {
                dprintf(out, "none");
                return;
        }
        json_t *j = sandbox_net_json(&net);
        char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
        dprintf(out, "%s %s", net.ifname, text);
        free(text);
        json_decref(j);
}

/* What cmd printed (its first 4 KiB), after label. */
static void report_cmd(int out, const char *label, const char *cmd)
{
        char buf[4096];
        FILE *p = popen(cmd, "r");
        size_t n = p ? fread(buf, 1, sizeof(buf) - 1, p) : 0;
        if (p)
                pclose(p);
        buf[n] = '\0';
        dprintf(out, "%s%s", label, buf);
}

/* After the gathering, as the sandbox does it: the VMM's tap appears, then the filters go on
 * and come off again. tc(8) says what the kernel holds. */
static void link_report(int out)
{
        struct sandbox_net net = { .netns_fd = -1 };
        cap_error_t err = NULL;
        if (sandbox_net_gather(&net, &err) < 0 || system("ip tuntap add capsule-tap0 mode tap && ip link set capsule-tap0 up") != 0) {
                dprintf(out, "setup failed");
                return;
        }
        net.netns_fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
        if (sandbox_net_link(&net, &err) < 0) {
                dprintf(out, "%s%s", strstr(err->msg, "not supported") || strstr(err->msg, "No such file") ? "SKIP " : "error: ", err->msg);
                cap_error_free(&err);
                return;
        }
        report_cmd(out, "", "tc filter show dev eth0 ingress; echo ---; tc filter show dev capsule-tap0 ingress; echo ---; "
                            "ip link show capsule-tap0; echo ---");
        /* While a tap is there, the qdisc is its VM's: release leaves it. */
        sandbox_net_release(&net);
        report_cmd(out, "with the tap: ", "tc qdisc show dev eth0");
        /* The tap goes with the VMM; then release takes the qdisc away. */
        if (system("ip link del capsule-tap0") != 0)
                dprintf(out, "tap removal failed");
        sandbox_net_release(&net);
        report_cmd(out, "after release: ", "tc qdisc show dev eth0");
        sandbox_net_free(&net);
}

/* setup (shell) in a fresh network namespace of a child, then fn; what fn wrote, or NULL
 * when not root. */
static char *in_netns(const char *setup, void (*fn)(int out))
{
        if (geteuid() != 0)
                return NULL;
        int p[2];
        if (pipe(p) < 0)
                return NULL;
        pid_t pid = fork();
        if (pid == 0) {
                close(p[0]);
                if (unshare(CLONE_NEWNET) < 0 || (setup && system(setup) != 0)) {
                        dprintf(p[1], "setup failed");
                        _exit(1);
                }
                fn(p[1]);
                _exit(0);
        }
        close(p[1]);
        char buf[8192];
        size_t len = 0;
        ssize_t n;
        while (len < sizeof(buf) - 1 && (n = read(p[0], buf + len, sizeof(buf) - 1 - len)) > 0)
                len += (size_t)n;
        buf[len] = '\0';
        close(p[0]);
        waitpid(pid, NULL, 0);
        return xstrdup(buf);
}

TEST(net_gather_takes_the_default_routes_interface)
{
        cleanup_free char *got = in_netns(POD_NETNS, gather_report);
        if (!got)
                SKIP("needs root (a network namespace)");
        /* The kernel's prefix routes stay out (the guest's kernel makes them); the link route
         * comes before the gateway route that needs it. IPv6: the global addresses, the tentative
         * one too, not the deprecated one nor the link-local one; a link-local gateway kept. */
        CHECK_STR(got, "eth0 {\"addresses\":[{\"address\":\"10.77.0.2\",\"prefix\":24},{\"address\":\"10.77.1.2\",\"prefix\":24}],"
                       "\"addresses6\":[{\"address\":\"fd77::3\",\"prefix\":64},{\"address\":\"fd77::2\",\"prefix\":64}],"
                       "\"mac\":\"02:11:22:33:44:55\",\"mtu\":1450,"
                       "\"routes\":[{\"destination\":\"169.254.1.1\",\"prefix\":32},"
                       "{\"destination\":\"0.0.0.0\",\"gateway\":\"10.77.0.1\",\"prefix\":0}],"
                       "\"routes6\":[{\"destination\":\"2001:db8::1\",\"prefix\":128},"
                       "{\"destination\":\"fd99::\",\"gateway\":\"fe80::1\",\"prefix\":64},"
                       "{\"destination\":\"::\",\"gateway\":\"fd77::1\",\"prefix\":0}]}");
}

TEST(net_gather_takes_an_ipv6_only_pods_interface_by_its_default_route)
{
        /* eth6 has an IPv4 address but no default route; eth5, IPv6 only, has IPv6's. */
        cleanup_free char *got = in_netns("ip link add eth6 type veth peer name p6 && ip addr add 10.6.0.2/24 dev eth6 && "
                                          "ip link add eth5 type veth peer name p5 && ip link set eth5 up && ip link set p5 up && "
                                          "ip addr add 2001:db8:5::2/64 dev eth5 nodad && ip route add default via 2001:db8:5::1",
                                          gather_report);
        if (!got)
                SKIP("needs root (a network namespace)");
        CHECK(str_has_prefix(got, "eth5 {\"addresses\":[],\"addresses6\":[{\"address\":\"2001:db8:5::2\",\"prefix\":64}],"));
        CHECK(strstr(got, "\"routes\":[],\"routes6\":[{\"destination\":\"::\",\"gateway\":\"2001:db8:5::1\",\"prefix\":0}]}"));
}

TEST(net_gather_without_a_default_route_takes_an_interface_with_an_address)
{
        cleanup_free char *got = in_netns("ip link add eth3 type veth peer name p3 && ip link add eth4 type veth peer name p4 && "
                                          "ip addr add 192.168.5.9/16 dev eth4",
                                          gather_report);
        if (!got)
                SKIP("needs root (a network namespace)");
        CHECK(str_has_prefix(got, "eth4 {\"addresses\":[{\"address\":\"192.168.5.9\",\"prefix\":16}]"));
        CHECK(strstr(got, "\"routes\":[]"));
}

TEST(net_gather_lo_only_or_no_address_is_no_nic)
{
        cleanup_free char *lo = in_netns("ip link set lo up", gather_report);
        if (!lo)
                SKIP("needs root (a network namespace)");
        CHECK_STR(lo, "none");
        cleanup_free char *bare = in_netns("ip link add eth0 type veth peer name p0 && ip link set eth0 up", gather_report);
        CHECK_STR(bare, "none");
}

TEST(net_gather_marks_a_namespace_that_has_a_vm_tap_taken)
{
        cleanup_free char *got = in_netns(POD_NETNS " && ip tuntap add capsule-tap0 mode tap", gather_report);
        if (!got)
                SKIP("needs root (a network namespace)");
        CHECK_STR(got, "taken");
}

TEST(net_link_redirects_both_ways_and_release_removes_it_once_the_tap_is_gone)
{
        cleanup_free char *got = in_netns(POD_NETNS, link_report);
        if (!got)
                SKIP("needs root (a network namespace)");
        if (str_has_prefix(got, "SKIP "))
                SKIP("the host kernel lacks the ingress qdisc, u32 or mirred");
        char *tap = strstr(got, "---"), *link = tap ? strstr(tap + 3, "---") : NULL;
        CHECK(tap && link);
        *tap = '\0';
        *link = '\0';
        /* matchall, or u32 matching every frame on a kernel without it (this repository's CI host) */
        CHECK(strstr(got, "matchall") || strstr(got, "match 00000000/00000000 at 0"));
        CHECK(strstr(got, "protocol all") && strstr(got, "mirred (Egress Redirect to device capsule-tap0) stolen"));
        CHECK(strstr(tap + 3, "protocol all") && strstr(tap + 3, "mirred (Egress Redirect to device eth0) stolen"));
        CHECK(strstr(link + 3, "mtu 1450"));
        char *with = strstr(link + 3, "with the tap: "), *after = with ? strstr(with, "after release: ") : NULL;
        CHECK(with && after);
        *after = '\0';
        CHECK(strstr(with, "ingress"));
        CHECK(!strstr(after + 1, "ingress"));
}

TEST(net_plan_refuses_what_is_not_a_network_namespace)
{
        struct spec_namespace ns = { .type = CLONE_NEWNET, .name = "network" };
        struct spec spec = { 0 };
        spec.linux.namespaces = &ns;
        spec.linux.n_namespaces = 1;
        struct sandbox_net net;
        cap_error_t err = NULL;
        char file[] = "/tmp/capsule-netns-XXXXXX";
        int fd = mkstemp(file);
        CHECK(fd >= 0);
        close(fd);
        const char *paths[] = { file, "/proc/self/ns/pid", "/nonexistent/netns" };
        for (size_t i = 0; i < ARRAY_SIZE(paths); i++) {
                ns.path = (char *)paths[i];
                CHECK(sandbox_net_plan(&spec, "/nonexistent", &net, &err) < 0);
                CHECK(str_has_prefix(err->msg, "linux.namespaces: network: "));
                CHECK(i == 2 || strstr(err->msg, "is not a network namespace"));
                CHECK(net.netns_fd == -1);
                cap_error_free(&err);
        }
        unlink(file);
        ns.path = "/proc/self/ns/net";
        CHECK(sandbox_net_plan(&spec, "/nonexistent", &net, &err) < 0 && strstr(err->msg, "is the host's network namespace"));
        cap_error_free(&err);
        /* A new namespace, or the host's own without a NIC we may take: no NIC, nothing kept. */
        ns.path = NULL;
        CHECK(sandbox_net_plan(&spec, "/nonexistent", &net, &err) == 0 && net.netns_fd == -1);
}

TEST(net_plan_gives_a_pods_interface_to_its_sandbox_container_too)
{
        struct spec_namespace ns = { .type = CLONE_NEWNET, .name = "network", .path = "/proc/self/ns/net" };
        struct spec spec = { 0 };
        spec.linux.namespaces = &ns;
        spec.linux.n_namespaces = 1;
        char *annotations[] = { "io.kubernetes.cri.container-type", "sandbox", NULL };
        spec.annotations = annotations;
        struct sandbox_net net;
        cap_error_t err = NULL;
        /* The pod's VM is the sandbox container's: its namespace is checked as any other (the host's is refused). */
        CHECK(sandbox_net_plan(&spec, "/nonexistent", &net, &err) < 0 && strstr(err->msg, "is the host's network namespace"));
        cap_error_free(&err);
        annotations[0] = "io.kubernetes.cri-o.ContainerType";
        CHECK(sandbox_net_plan(&spec, "/nonexistent", &net, &err) < 0 && strstr(err->msg, "is the host's network namespace"));
        cap_error_free(&err);
}
