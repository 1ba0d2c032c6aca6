/* The virtio-net device end to end on the host (net_machine.h): the control queue, multiqueue,
 * reset under traffic, hostile chains and a back-end that is gone. */
#include <endian.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net_machine.h"

/* A control request: class, command, data; the ack byte at ACK(slot). */
#define ACK(slot) (netm_bufaddr(100) + (slot))

static void ctrl(struct net_machine *m, unsigned int q, unsigned int slot, uint8_t cls, uint8_t cmd, const void *data,
                 uint32_t len)
{
        uint8_t *p = netm_ptr(m, netm_bufaddr(101 + slot), 2 + len);
        p[0] = cls;
        p[1] = cmd;
        if (len)
                memcpy(p + 2, data, len);
        *netm_ptr(m, ACK(slot), 1) = 0xee;
        const struct netm_buf b[2] = { { netm_bufaddr(101 + slot), 2 + len, false }, { ACK(slot), 1, true } };
        netm_chain_add(m, q, b, 2);
}

static uint8_t ack(struct net_machine *m, unsigned int slot)
{
        return *netm_ptr(m, ACK(slot), 1);
}

TEST(net_control_queue_good_and_malformed)
{
        NET_MACHINE(m, 1, true, 0);
        netm_driver_start(&m, F(CTRL_VQ) | F(CTRL_RX) | F(CTRL_GUEST_OFFLOADS) | F(GUEST_CSUM) | F(GUEST_TSO4), 3);
        const unsigned int q = 2;
        uint8_t on = 1, two[2] = { 1, 1 };
        ctrl(&m, q, 0, VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC, &on, 1);
        ctrl(&m, q, 1, VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_ALLMULTI, two, 2);     /* too long */
        ctrl(&m, q, 2, VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_NOBCAST, &on, 1);      /* no RX_EXTRA */
        uint8_t table[4 + 4 + 6] = { 0, 0, 0, 0, 1, 0, 0, 0, 0x33, 0x33, 0, 0, 0, 1 };
        ctrl(&m, q, 3, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, table, sizeof(table));
        table[4] = 2;                                                                /* one MAC missing */
        ctrl(&m, q, 4, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, table, sizeof(table));
        uint8_t huge[8] = { 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0 };
        ctrl(&m, q, 5, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, huge, sizeof(huge));
        ctrl(&m, q, 6, 0x77, 0, NULL, 0);                                            /* unknown class */
        uint64_t offl = htole64(F(GUEST_CSUM));
        ctrl(&m, q, 7, VIRTIO_NET_CTRL_GUEST_OFFLOADS, VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET, &offl, 8);
        offl = htole64(F(GUEST_TSO6) | F(GUEST_CSUM));                               /* not negotiated */
        ctrl(&m, q, 8, VIRTIO_NET_CTRL_GUEST_OFFLOADS, VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET, &offl, 8);
        uint16_t pairs = htole16(1);
        ctrl(&m, q, 9, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, &pairs, 2); /* no MQ */
        /* No writable byte for the ack: returned with nothing written. */
        *netm_ptr(&m, netm_bufaddr(111), 2) = VIRTIO_NET_CTRL_RX;
        netm_chain_add(&m, q, &(struct netm_buf){ netm_bufaddr(111), 3, false }, 1);
        /* Nothing but the ack byte. */
        *netm_ptr(&m, ACK(11), 1) = 0xee;
        netm_chain_add(&m, q, &(struct netm_buf){ ACK(11), 1, true }, 1);
        netm_kick(&m, q);
        CHECK(netm_wait_used(&m, q, 12));
        const uint8_t want[] = { VIRTIO_NET_OK,  VIRTIO_NET_ERR, VIRTIO_NET_ERR, VIRTIO_NET_OK,
                                 VIRTIO_NET_ERR, VIRTIO_NET_ERR, VIRTIO_NET_ERR, VIRTIO_NET_OK,
                                 VIRTIO_NET_ERR, VIRTIO_NET_ERR };
        for (unsigned int i = 0; i < ARRAY_SIZE(want); i++) {
                CHECK(ack(&m, i) == want[i]);
                CHECK(netm_used_elem(&m, q, i).len == 1);
        }
        CHECK(netm_used_elem(&m, q, 10).len == 0);
        CHECK(ack(&m, 11) == VIRTIO_NET_ERR && netm_used_elem(&m, q, 11).len == 1);
        CHECK(netm_offload_calls == 2 && netm_offloads_seen == F(GUEST_CSUM));
        CHECK(!netm_needs_reset(&m));
}

TEST(net_multiqueue_pairs_switch)
{
        NET_MACHINE(m, 2, true, 0);
        /* With MQ the control queue is 2 * max pairs. */
        netm_driver_start(&m, F(CTRL_VQ) | F(MQ) | F(MRG_RXBUF), 5);
        for (unsigned int i = 0; i < 4; i++) {
                netm_chain_add(&m, 0, &(struct netm_buf){ netm_bufaddr(i), 2048, true }, 1);
                netm_chain_add(&m, 2, &(struct netm_buf){ netm_bufaddr(10 + i), 2048, true }, 1);
        }
        netm_kick(&m, 0);
        netm_kick(&m, 2);
        struct virtio_net_hdr_v1 h = { 0 };
        /* One pair in use: back-end pair 1's frames go to receiveq 1 (queue 0). */
        CHECK(netm_host_send(&m, 1, &h, 300, 1));
        CHECK(netm_wait_used(&m, 0, 1));
        CHECK(netm_used_idx(&m, 2) == 0);
        uint16_t pairs = htole16(3);
        ctrl(&m, 4, 0, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, &pairs, 2);
        pairs = 0;
        ctrl(&m, 4, 1, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, &pairs, 2);
        pairs = htole16(2);
        ctrl(&m, 4, 2, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, &pairs, 2);
        netm_kick(&m, 4);
        CHECK(netm_wait_used(&m, 4, 3));
        CHECK(ack(&m, 0) == VIRTIO_NET_ERR && ack(&m, 1) == VIRTIO_NET_ERR && ack(&m, 2) == VIRTIO_NET_OK);
        /* Two pairs: pair 1's frames reach receiveq2 (queue 2), pair 0's queue 0. */
        CHECK(netm_host_send(&m, 1, &h, 400, 2));
        CHECK(netm_wait_used(&m, 2, 1));
        CHECK(netm_used_elem(&m, 2, 0).len == 400);
        CHECK(netm_host_send(&m, 0, &h, 500, 3));
        CHECK(netm_wait_used(&m, 0, 2));
        CHECK(netm_used_elem(&m, 0, 1).len == 500);
        /* And transmitq2 (queue 3) goes out on back-end pair 1. */
        netm_guest_tx(&m, 3, 20, &h, 80, 0, 4);
        netm_kick(&m, 3);
        uint8_t got[256];
        CHECK(netm_host_recv(&m, 1, got, sizeof(got), 2000) == HDR + 80);
        CHECK(netm_host_recv(&m, 0, got, sizeof(got), 50) < 0);
}

/* Both of a 2-pair device's pairs in use (control request in slot 0). */
static bool two_pairs(struct net_machine *m)
{
        netm_driver_start(m, F(CTRL_VQ) | F(MQ) | F(MRG_RXBUF), 5);
        uint16_t pairs = htole16(2);
        ctrl(m, 4, 0, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, &pairs, 2);
        netm_kick(m, 4);
        return netm_wait_used(m, 4, 1) && ack(m, 0) == VIRTIO_NET_OK;
}

TEST(net_fewer_pairs_keep_the_buffers_taken_ahead)
{
        NET_MACHINE(m, 2, true, 0);
        CHECK(two_pairs(&m));
        uint16_t pairs;
        for (unsigned int i = 0; i < 4; i++)
                netm_chain_add(&m, 2, &(struct netm_buf){ netm_bufaddr(10 + i), 2048, true }, 1);
        netm_kick(&m, 2);
        /* The first frame on receiveq2 makes the device take all four buffers ahead. */
        struct virtio_net_hdr_v1 h = { 0 };
        CHECK(netm_host_send(&m, 1, &h, 400, 1));
        CHECK(netm_wait_used(&m, 2, 1));
        /* Down to one pair and back to two, as `ethtool -L` does: the three buffers receiveq2
         * still holds were the guest's and must serve its next frames. */
        pairs = htole16(1);
        ctrl(&m, 4, 1, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, &pairs, 2);
        pairs = htole16(2);
        ctrl(&m, 4, 2, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, &pairs, 2);
        netm_kick(&m, 4);
        CHECK(netm_wait_used(&m, 4, 3) && ack(&m, 1) == VIRTIO_NET_OK && ack(&m, 2) == VIRTIO_NET_OK);
        for (unsigned int i = 0; i < 3; i++)
                CHECK(netm_host_send(&m, 1, &h, 500 + i, 2 + i));
        CHECK(netm_wait_used(&m, 2, 4));
        for (unsigned int i = 0; i < 3; i++)
                CHECK(netm_used_elem(&m, 2, 1 + i).len == 500 + i);
        CHECK(!netm_needs_reset(&m));
}

TEST(net_fewer_pairs_give_back_a_half_placed_frames_buffer)
{
        NET_MACHINE(m, 2, true, 0);
        CHECK(two_pairs(&m));
        uint16_t pairs;
        netm_chain_add(&m, 2, &(struct netm_buf){ netm_bufaddr(10), 2048, true }, 1);
        netm_kick(&m, 2);
        /* 3000 bytes in one 2048-byte buffer: the frame waits for another buffer. */
        struct virtio_net_hdr_v1 h = { 0 };
        CHECK(netm_host_send(&m, 1, &h, 3000, 1));
        usleep(100 * 1000);
        CHECK(netm_used_idx(&m, 2) == 0);
        pairs = htole16(1);
        ctrl(&m, 4, 1, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, &pairs, 2);
        netm_kick(&m, 4);
        CHECK(netm_wait_used(&m, 4, 2) && ack(&m, 1) == VIRTIO_NET_OK);
        /* The frame is dropped and its buffer comes back empty. */
        CHECK(netm_wait_used(&m, 2, 1));
        CHECK(netm_used_elem(&m, 2, 0).len == 0);
        CHECK(!netm_needs_reset(&m));
}

TEST(net_control_queue_is_queue_2_without_mq)
{
        NET_MACHINE(m, 2, true, 0);
        netm_driver_start(&m, F(CTRL_VQ) | F(CTRL_RX), 3);
        uint8_t on = 0;
        ctrl(&m, 2, 0, VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC, &on, 1);
        netm_kick(&m, 2);
        CHECK(netm_wait_used(&m, 2, 1) && ack(&m, 0) == VIRTIO_NET_OK);
}

TEST(net_reset_mid_traffic)
{
        /* Frames held both ways (tx waiting for the back-end, rx for buffers), then a reset:
         * nothing touches guest memory afterwards, the back-end's fds are not read, and the
         * device works again after the driver sets it up. */
        NET_MACHINE(m, 1, true, 4096);
        netm_driver_start(&m, F(MRG_RXBUF), 2);
        struct virtio_net_hdr_v1 h = { 0 };
        for (unsigned int i = 0; i < 40; i++)
                netm_guest_tx(&m, 1, i, &h, 1400, 0, i);
        netm_kick(&m, 1);
        for (unsigned int i = 0; i < 5; i++)
                CHECK(netm_host_send(&m, 0, &h, 1000, i));
        usleep(100 * 1000);
        netm_wr32(&m, VIRTIO_MMIO_STATUS, 0);
        CHECK(netm_rd32(&m, VIRTIO_MMIO_STATUS) == 0);
        uint16_t tx_used = netm_used_idx(&m, 1);
        static uint8_t snap[0x4000];
        memcpy(snap, netm_ptr(&m, netm_ring(0), 0x4000), 0x4000);
        /* The host drains and sends more: none of it moves while the device is reset. */
        uint8_t got[2048];
        while (netm_host_recv(&m, 0, got, sizeof(got), 50) > 0)
                ;
        CHECK(netm_host_send(&m, 0, &h, 700, 9));
        usleep(100 * 1000);
        CHECK(netm_used_idx(&m, 1) == tx_used);
        CHECK(memcmp(snap, netm_ptr(&m, netm_ring(0), 0x4000), 0x4000) == 0);
        CHECK(recv(m.peer[0], got, sizeof(got), MSG_DONTWAIT) < 0 && errno == EAGAIN);
        /* Set up again: the frames still in the socket arrive (the one the device held for
         * buffers went with the reset). */
        netm_driver_start(&m, F(MRG_RXBUF), 2);
        for (unsigned int i = 0; i < 8; i++)
                netm_chain_add(&m, 0, &(struct netm_buf){ netm_bufaddr(50 + i), 2048, true }, 1);
        netm_kick(&m, 0);
        CHECK(netm_wait_used(&m, 0, 5));
        CHECK(netm_used_elem(&m, 0, 0).len == 1000 && netm_used_elem(&m, 0, 4).len == 700);
        netm_guest_tx(&m, 1, 60, &h, 64, 0, 1);
        netm_kick(&m, 1);
        CHECK(netm_host_recv(&m, 0, got, sizeof(got), 2000) == HDR + 64);
}

TEST(net_hostile_chains_fail_requests_not_the_vmm)
{
        NET_MACHINE(m, 1, true, 0);
        netm_driver_start(&m, F(MRG_RXBUF) | F(CTRL_VQ) | F(CTRL_RX), 3);
        /* rx: a readable-only chain, a chain of 5 writable bytes as a frame's first buffer,
         * then a good one. */
        netm_chain_add(&m, 0, &(struct netm_buf){ netm_bufaddr(0), 2048, false }, 1);
        netm_chain_add(&m, 0, &(struct netm_buf){ netm_bufaddr(1), 5, true }, 1);
        netm_chain_add(&m, 0, &(struct netm_buf){ netm_bufaddr(2), 2048, true }, 1);
        netm_kick(&m, 0);
        struct virtio_net_hdr_v1 h = { 0 };
        CHECK(netm_host_send(&m, 0, &h, 600, 1));
        CHECK(netm_wait_used(&m, 0, 3));
        CHECK(netm_used_elem(&m, 0, 0).len == 0 && netm_used_elem(&m, 0, 1).len == 0);
        CHECK(netm_used_elem(&m, 0, 2).len == 600 && netm_used_elem(&m, 0, 2).id == 2);
        /* tx: a writable-only chain. */
        netm_chain_add(&m, 1, &(struct netm_buf){ netm_bufaddr(3), 2048, true }, 1);
        netm_kick(&m, 1);
        CHECK(netm_wait_used(&m, 1, 1) && netm_used_elem(&m, 1, 0).len == 0);
        /* control: one byte of header. */
        *netm_ptr(&m, netm_bufaddr(4), 1) = VIRTIO_NET_CTRL_RX;
        const struct netm_buf b[2] = { { netm_bufaddr(4), 1, false }, { ACK(0), 1, true } };
        netm_chain_add(&m, 2, b, 2);
        netm_kick(&m, 2);
        CHECK(netm_wait_used(&m, 2, 1) && ack(&m, 0) == VIRTIO_NET_ERR);
        CHECK(!netm_needs_reset(&m));
        /* A kick on a queue the driver never set up is ignored. */
        netm_kick(&m, 9);
        CHECK(!netm_needs_reset(&m));
}

TEST(net_backend_gone_frames_dropped_device_alive)
{
        /* The host's end closes (a passt that died): the fd hangs up, tx frames are returned
         * unsent, nothing spins, and the device stays usable for the driver. */
        NET_MACHINE(m, 1, true, 0);
        netm_driver_start(&m, F(MRG_RXBUF), 2);
        close(m.peer[0]);
        m.peer[0] = -1;
        struct virtio_net_hdr_v1 h = { 0 };
        for (unsigned int i = 0; i < 3; i++)
                netm_guest_tx(&m, 1, i, &h, 100, 0, i);
        netm_kick(&m, 1);
        CHECK(netm_wait_used(&m, 1, 3));
        for (unsigned int i = 0; i < 3; i++)
                CHECK(netm_used_elem(&m, 1, i).len == 0);
        netm_guest_tx(&m, 1, 3, &h, 100, 0, 3);
        netm_kick(&m, 1);
        CHECK(netm_wait_used(&m, 1, 4));
        CHECK(!netm_needs_reset(&m));
}
