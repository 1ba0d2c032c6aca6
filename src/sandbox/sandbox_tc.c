/* The tie between a VM container's tap and its network namespace's interface (sandbox_net.c
 * runs these inside that namespace): an ingress qdisc on each, whose one filter matches every
 * frame and redirects it to the other one's egress (mirred), as Kata's "tcfilter" does. */
#include "sandbox/sandbox_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <linux/pkt_sched.h>
#include <linux/tc_act/tc_mirred.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"

static int ingress_qdisc(int nl, unsigned short type, unsigned short flags, int ifindex, cap_error_t *err)
{
        struct nl_msg m;
        struct tcmsg t = { .tcm_family = AF_UNSPEC, .tcm_ifindex = ifindex, .tcm_handle = TC_H_MAKE(TC_H_INGRESS, 0),
                           .tcm_parent = TC_H_INGRESS };
        nl_msg_init(&m, type, flags, &t, sizeof(t));
        nl_put(&m, TCA_KIND, "ingress", sizeof("ingress"));
        return nl_call(nl, &m, err);
}

/* The filter's action: mirred egress redirect dev TO. */
static void put_redirect(struct nl_msg *m, unsigned short type, int to)
{
        struct rtattr *acts = nl_nest(m, type);
        struct rtattr *act = nl_nest(m, 1); /* the first action of the list */
        nl_put(m, TCA_ACT_KIND, "mirred", sizeof("mirred"));
        struct rtattr *act_opts = nl_nest(m, TCA_ACT_OPTIONS);
        struct tc_mirred p = { .action = TC_ACT_STOLEN, .eaction = TCA_EGRESS_REDIR, .ifindex = (uint32_t)to };
        nl_put(m, TCA_MIRRED_PARMS, &p, sizeof(p));
        nl_nest_end(m, act_opts);
        nl_nest_end(m, act);
        nl_nest_end(m, acts);
}

/* tc filter add dev FROM ingress matchall action mirred egress redirect dev TO; a kernel
 * without matchall (it is newer, and optional) gets the u32 filter that matches every frame
 * (one key: 0 under the mask 0). */
static int redirect(int nl, int from, int to, cap_error_t *err)
{
        struct nl_msg m;
        struct tcmsg t = { .tcm_family = AF_UNSPEC, .tcm_ifindex = from, .tcm_parent = TC_H_MAKE(TC_H_INGRESS, 0),
                           .tcm_info = TC_H_MAKE(1u << 16, htons(ETH_P_ALL)) };
        nl_msg_init(&m, RTM_NEWTFILTER, NLM_F_CREATE | NLM_F_EXCL, &t, sizeof(t));
        nl_put(&m, TCA_KIND, "matchall", sizeof("matchall"));
        struct rtattr *opts = nl_nest(&m, TCA_OPTIONS);
        put_redirect(&m, TCA_MATCHALL_ACT, to);
        nl_nest_end(&m, opts);
        cleanup_error cap_error_t no_matchall = NULL;
        int r = nl_call(nl, &m, &no_matchall);
        if (r != -ENOENT) {
                if (r < 0)
                        *err = steal_pointer(&no_matchall);
                return r;
        }
        nl_msg_init(&m, RTM_NEWTFILTER, NLM_F_CREATE | NLM_F_EXCL, &t, sizeof(t));
        nl_put(&m, TCA_KIND, "u32", sizeof("u32"));
        opts = nl_nest(&m, TCA_OPTIONS);
        struct {
                struct tc_u32_sel sel;
                struct tc_u32_key key;
        } sel = { .sel = { .flags = TC_U32_TERMINAL, .nkeys = 1 } };
        nl_put(&m, TCA_U32_SEL, &sel, sizeof(sel));
        put_redirect(&m, TCA_U32_ACT, to);
        nl_nest_end(&m, opts);
        return nl_call(nl, &m, err);
}

int sandbox_tc_unlink(struct sandbox_net *net, cap_error_t *err)
{
        /* The kernel removes the tap once the VMM's last descriptor of it is closed. */
        for (int i = 0; i < 100 && if_nametoindex(SANDBOX_TAP); i++)
                usleep(10 * 1000);
        if (if_nametoindex(SANDBOX_TAP))
                return 0;
        cleanup_close int nl = nl_open(err);
        if (nl < 0 || ingress_qdisc(nl, RTM_DELQDISC, 0, net->ifindex, err) < 0)
                return -1;
        return 0;
}

static int tap_mtu(unsigned int mtu, cap_error_t *err)
{
        cleanup_close int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct ifreq ifr = { .ifr_mtu = (int)mtu };
        snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", SANDBOX_TAP);
        if (s < 0 || ioctl(s, SIOCSIFMTU, &ifr) < 0)
                return cap_fail(err, errno, "set the MTU of `%s` to %u", SANDBOX_TAP, mtu);
        return 0;
}

int sandbox_tc_link(struct sandbox_net *net, cap_error_t *err)
{
        int tap = (int)if_nametoindex(SANDBOX_TAP);
        if (!tap)
                return cap_fail(err, errno, "the VM's tap `%s` is missing", SANDBOX_TAP);
        if (tap_mtu(net->nic.mtu, err) < 0)
                return -1;
        cleanup_close int nl = nl_open(err);
        if (nl < 0)
                return -1;
        /* A VM container killed before it could clean up left its qdisc: the tap it named is gone. */
        cleanup_error cap_error_t stale = NULL;
        ingress_qdisc(nl, RTM_DELQDISC, 0, net->ifindex, &stale);
        if (ingress_qdisc(nl, RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL, tap, err) < 0 ||
            ingress_qdisc(nl, RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL, net->ifindex, err) < 0 ||
            redirect(nl, tap, net->ifindex, err) < 0 || redirect(nl, net->ifindex, tap, err) < 0) {
                cleanup_error cap_error_t ignored = NULL;
                ingress_qdisc(nl, RTM_DELQDISC, 0, net->ifindex, &ignored);
                return cap_error_prefix(err, "tc between `%s` and `%s`", net->ifname, SANDBOX_TAP);
        }
        return 0;
}

