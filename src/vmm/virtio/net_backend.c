/* Picks a NIC's back-end from its settings. */
#include "vmm/virtio/net_backend.h"

/* What `--net user` without impl= runs: the faster of the two, measured (README), unless a TCP
 * port is forwarded: Debian's passt completes a forwarded connection only once the host's client
 * sends data, which hangs every protocol whose server speaks first; libslirp has no such limit. */
static enum vm_net_user_impl net_user_default(const struct vm_net *cfg)
{
        for (int i = 0; i < cfg->n_forwards; i++)
                if (!cfg->forwards[i].udp)
                        return VM_NET_USER_SLIRP;
        return VM_NET_USER_PASST;
}

int net_backend_open(const struct vm_net *cfg, unsigned int index, unsigned int queue_pairs, struct net_backend **out,
                     cap_error_t *err)
{
        switch (cfg->backend) {
        case VM_NET_TAP:
                return net_tap_open(cfg, index, queue_pairs, out, err);
        case VM_NET_USER:
                if (queue_pairs != 1)
                        return cap_fail(err, 0, "net[%u]: user-mode networking has one queue pair, not %u", index,
                                        queue_pairs);
                switch (cfg->user_impl == VM_NET_USER_DEFAULT ? net_user_default(cfg) : cfg->user_impl) {
                case VM_NET_USER_SLIRP:
                        return net_slirp_open(cfg, index, out, err);
                default:
                        return net_passt_open(cfg, index, out, err);
                }
        }
        return cap_fail(err, 0, "net[%u]: unknown back-end %d", index, (int)cfg->backend);
}
