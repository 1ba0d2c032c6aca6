/* virtio-net's control queue: one request per chain, a class and command byte and the
 * command's data readable, then one writable ack byte (virtio 1.2, 5.1.6.5). Every length
 * is checked against what the command carries before any of it is used; anything capsule
 * does not offer, or that is malformed, is answered VIRTIO_NET_ERR and changes nothing.
 *
 * The receive filters (promiscuous, all-multicast, the MAC tables) are acknowledged and
 * not applied: the back-ends deliver what reaches the host's side, and the guest's
 * kernel filters again. Linux's driver only needs them answered. */
#include <endian.h>

#include "vmm/virtio/net.h"

struct ctrl_req {
        const struct virtq_chain *c;
        uint32_t len;                  /* the command's data, after class and command */
};

static bool has(uint64_t features, unsigned int bit)
{
        return features & (1ULL << bit);
}

static uint8_t ctrl_rx(const struct ctrl_req *r, uint8_t cmd, uint64_t features)
{
        if (!has(features, VIRTIO_NET_F_CTRL_RX) || r->len != 1)
                return VIRTIO_NET_ERR;
        return cmd == VIRTIO_NET_CTRL_RX_PROMISC || cmd == VIRTIO_NET_CTRL_RX_ALLMULTI ? VIRTIO_NET_OK : VIRTIO_NET_ERR;
}

/* MAC_TABLE_SET: two tables (unicast, multicast), each an le32 count and that many MACs,
 * exactly filling the data. */
static uint8_t ctrl_mac_table(const struct ctrl_req *r)
{
        uint64_t off = 0;
        for (int table = 0; table < 2; table++) {
                uint32_t entries;
                if (r->len - off < sizeof(entries))
                        return VIRTIO_NET_ERR;
                virtq_chain_read(r->c, 2 + off, &entries, sizeof(entries));
                off += sizeof(entries) + (uint64_t)le32toh(entries) * 6;
                if (off > r->len)
                        return VIRTIO_NET_ERR;
        }
        return off == r->len ? VIRTIO_NET_OK : VIRTIO_NET_ERR;
}

static uint8_t ctrl_mac(const struct ctrl_req *r, uint8_t cmd, uint64_t features)
{
        if (!has(features, VIRTIO_NET_F_CTRL_RX) || cmd != VIRTIO_NET_CTRL_MAC_TABLE_SET)
                return VIRTIO_NET_ERR;
        return ctrl_mac_table(r);
}

static uint8_t ctrl_mq(const struct ctrl_req *r, uint8_t cmd, uint64_t features, uint16_t max_pairs,
                       struct net_ctrl_cmd *out)
{
        uint16_t pairs;
        if (!has(features, VIRTIO_NET_F_MQ) || cmd != VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET || r->len != sizeof(pairs))
                return VIRTIO_NET_ERR;
        virtq_chain_read(r->c, 2, &pairs, sizeof(pairs));
        pairs = le16toh(pairs);
        if (pairs < VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN || pairs > max_pairs)
                return VIRTIO_NET_ERR;
        out->action = NET_CTRL_PAIRS;
        out->arg = pairs;
        return VIRTIO_NET_OK;
}

static uint8_t ctrl_offloads(const struct ctrl_req *r, uint8_t cmd, uint64_t features, struct net_ctrl_cmd *out)
{
        uint64_t offloads;
        if (!has(features, VIRTIO_NET_F_CTRL_GUEST_OFFLOADS) || cmd != VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET ||
            r->len != sizeof(offloads))
                return VIRTIO_NET_ERR;
        virtq_chain_read(r->c, 2, &offloads, sizeof(offloads));
        offloads = le64toh(offloads);
        /* Only offloads negotiated at start-up, and only with their prerequisites. */
        if ((offloads & ~(features & NET_GUEST_OFFLOADS)) ||
            net_features_effective(offloads | (1ULL << VIRTIO_NET_F_CTRL_VQ)) !=
                    (offloads | (1ULL << VIRTIO_NET_F_CTRL_VQ)))
                return VIRTIO_NET_ERR;
        out->action = NET_CTRL_OFFLOADS;
        out->arg = offloads;
        return VIRTIO_NET_OK;
}

int net_ctrl_parse(const struct virtq_chain *c, uint64_t features, uint16_t max_pairs, struct net_ctrl_cmd *cmd)
{
        *cmd = (struct net_ctrl_cmd){ .ack = VIRTIO_NET_ERR, .action = NET_CTRL_NONE };
        if (c->in_len < 1)
                return -1;
        uint8_t hdr[2];
        if (c->out_len < sizeof(hdr))
                return 0;
        virtq_chain_read(c, 0, hdr, sizeof(hdr));
        const struct ctrl_req r = { .c = c, .len = c->out_len - (uint32_t)sizeof(hdr) };
        switch (hdr[0]) {
        case VIRTIO_NET_CTRL_RX:
                cmd->ack = ctrl_rx(&r, hdr[1], features);
                break;
        case VIRTIO_NET_CTRL_MAC:
                cmd->ack = ctrl_mac(&r, hdr[1], features);
                break;
        case VIRTIO_NET_CTRL_MQ:
                cmd->ack = ctrl_mq(&r, hdr[1], features, max_pairs, cmd);
                break;
        case VIRTIO_NET_CTRL_GUEST_OFFLOADS:
                cmd->ack = ctrl_offloads(&r, hdr[1], features, cmd);
                break;
        default:
                break;
        }
        if (cmd->ack != VIRTIO_NET_OK)
                cmd->action = NET_CTRL_NONE;
        return 0;
}
