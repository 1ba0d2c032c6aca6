/* The virtio-net device end to end on the host (net_machine.h): features and config, the tx
 * header checks, and rx frame placement with and without mergeable buffers. */
#include <endian.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net_machine.h"

TEST(net_config_and_features)
{
        NET_MACHINE(m, 2, true, 0);
        CHECK(netm_rd32(&m, VIRTIO_MMIO_DEVICE_ID) == VIRTIO_ID_NET);
        uint64_t f = netm_device_features(&m);
        uint64_t want = F(MAC) | F(STATUS) | F(MRG_RXBUF) | F(CTRL_VQ) | F(CTRL_RX) | F(MQ) | F(CTRL_GUEST_OFFLOADS) |
                        ALL_OFFLOADS;
        CHECK((f & want) == want);
        CHECK(!(f & F(MTU)) && !(f & F(CTRL_VLAN)) && !(f & F(GUEST_ANNOUNCE)));
        uint8_t mac[6];
        for (unsigned int i = 0; i < 6; i++)
                mac[i] = (uint8_t)netm_rd32(&m, VIRTIO_MMIO_CONFIG + i);
        CHECK(memcmp(mac, m.net.mac, 6) == 0);
        CHECK((netm_rd32(&m, VIRTIO_MMIO_CONFIG + offsetof(struct virtio_net_config, status)) & 0xffff) ==
              VIRTIO_NET_S_LINK_UP);
        CHECK((netm_rd32(&m, VIRTIO_MMIO_CONFIG + offsetof(struct virtio_net_config, max_virtqueue_pairs)) & 0xffff) == 2);
        /* The accepted guest offloads reach the back-end at DRIVER_OK. */
        netm_driver_start(&m, F(GUEST_CSUM) | F(GUEST_TSO4) | F(GUEST_TSO6) | F(GUEST_ECN), 2);
        CHECK(netm_offload_calls == 1);
        CHECK(netm_offloads_seen == (F(GUEST_CSUM) | F(GUEST_TSO4) | F(GUEST_TSO6) | F(GUEST_ECN)));
        /* TSO without the checksum it needs is taken out. */
        netm_driver_start(&m, F(GUEST_TSO4), 2);
        CHECK(netm_offload_calls == 2 && netm_offloads_seen == 0);
}

TEST(net_without_vnet_hdr_offers_no_offloads)
{
        NET_MACHINE(m, 1, false, 0);
        uint64_t f = netm_device_features(&m);
        CHECK(!(f & ALL_OFFLOADS) && !(f & F(CTRL_GUEST_OFFLOADS)) && !(f & F(MQ)));
        CHECK(f & F(MRG_RXBUF));
        /* A frame goes out without the header, and one comes in behind a zeroed one. */
        netm_driver_start(&m, F(MRG_RXBUF), 2);
        struct virtio_net_hdr_v1 h = { 0 };
        netm_guest_tx(&m, 1, 0, &h, 60, 0, 1);
        netm_kick(&m, 1);
        uint8_t got[128], want[60];
        CHECK(netm_host_recv(&m, 0, got, sizeof(got), 2000) == 60);
        netm_pattern(want, 60, 1);
        CHECK(memcmp(got, want, 60) == 0);
        netm_pattern(want, 60, 2);
        CHECK(send(m.peer[0], want, 60, 0) == 60);
        netm_chain_add(&m, 0, &(struct netm_buf){ netm_bufaddr(1), 2048, true }, 1);
        netm_kick(&m, 0);
        CHECK(netm_wait_used(&m, 0, 1));
        CHECK(netm_used_elem(&m, 0, 0).len == HDR + 60);
        const uint8_t *p = netm_ptr(&m, netm_bufaddr(1), HDR + 60);
        struct virtio_net_hdr_v1 rh;
        memcpy(&rh, p, HDR);
        CHECK(rh.flags == 0 && rh.gso_type == 0 && le16toh(rh.num_buffers) == 1);
        CHECK(memcmp(p + HDR, want, 60) == 0);
}

TEST(net_tx_header_checked_and_forwarded)
{
        NET_MACHINE(m, 1, true, 0);
        netm_driver_start(&m, F(CSUM) | F(HOST_TSO4), 2);
        /* A TSO frame with its checksum request: forwarded with the header, cut anywhere. */
        struct virtio_net_hdr_v1 good = { .flags = VIRTIO_NET_HDR_F_NEEDS_CSUM, .gso_type = VIRTIO_NET_HDR_GSO_TCPV4,
                                          .hdr_len = htole16(54), .gso_size = htole16(1448),
                                          .csum_start = htole16(34), .csum_offset = htole16(16),
                                          .num_buffers = htole16(7) };
        netm_guest_tx(&m, 1, 0, &good, 3000, 5, 1);
        /* Then frames that must never reach the back-end. */
        struct virtio_net_hdr_v1 bad[6] = { good, good, good, good, good, good };
        bad[0].gso_type = VIRTIO_NET_HDR_GSO_TCPV6;                   /* not negotiated */
        bad[1].csum_start = htole16(2990);                            /* checksum past the end */
        bad[2].flags |= VIRTIO_NET_HDR_F_DATA_VALID;                  /* receive-only flag */
        bad[3].gso_type = VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN; /* no HOST_ECN */
        bad[4].flags = 0;                                             /* TSO without a checksum */
        bad[5].gso_size = 0;
        for (unsigned int i = 0; i < 6; i++)
                netm_guest_tx(&m, 1, 1 + i, &bad[i], 3000, 0, 2);
        struct virtio_net_hdr_v1 none = { 0 };
        netm_guest_tx(&m, 1, 8, &none, 10, 0, 3);                         /* shorter than Ethernet */
        netm_chain_add(&m, 1, &(struct netm_buf){ netm_bufaddr(9), 8, false }, 1);  /* shorter than a header */
        netm_guest_tx(&m, 1, 10, &none, 100, 3, 4);                       /* plain, header cut at 3 */
        netm_kick(&m, 1);
        CHECK(netm_wait_used(&m, 1, 10));
        static uint8_t got[HDR + NET_FRAME_MAX];
        uint8_t want[3000];
        CHECK(netm_host_recv(&m, 0, got, sizeof(got), 2000) == HDR + 3000);
        struct virtio_net_hdr_v1 fwd;
        memcpy(&fwd, got, HDR);
        good.num_buffers = 0;
        CHECK(memcmp(&fwd, &good, HDR) == 0);
        netm_pattern(want, 3000, 1);
        CHECK(memcmp(got + HDR, want, 3000) == 0);
        CHECK(netm_host_recv(&m, 0, got, sizeof(got), 2000) == HDR + 100);
        netm_pattern(want, 100, 4);
        CHECK(memcmp(got + HDR, want, 100) == 0);
        CHECK(netm_host_recv(&m, 0, got, sizeof(got), 100) < 0);
        for (unsigned int i = 0; i < 10; i++)
                CHECK(netm_used_elem(&m, 1, i).len == 0);
        CHECK(!netm_needs_reset(&m));
}

TEST(net_tx_waits_for_the_backend_and_loses_nothing)
{
        /* A small socket buffer: the back-end says EAGAIN long before the guest's 100 frames are
         * out; each is retried when the back-end drains, in order. */
        NET_MACHINE(m, 1, true, 4096);
        netm_driver_start(&m, 0, 2);
        struct virtio_net_hdr_v1 none = { 0 };
        for (unsigned int i = 0; i < 100; i++)
                netm_guest_tx(&m, 1, i, &none, 1400, 0, i);
        netm_kick(&m, 1);
        usleep(100 * 1000);
        CHECK(netm_used_idx(&m, 1) < 100);
        uint8_t got[2048], want[1400];
        for (unsigned int i = 0; i < 100; i++) {
                CHECK(netm_host_recv(&m, 0, got, sizeof(got), 2000) == HDR + 1400);
                netm_pattern(want, 1400, i);
                CHECK(memcmp(got + HDR, want, 1400) == 0);
        }
        CHECK(netm_wait_used(&m, 1, 100));
}

TEST(net_rx_mergeable_across_chains)
{
        NET_MACHINE(m, 1, true, 0);
        netm_driver_start(&m, F(MRG_RXBUF) | F(GUEST_CSUM), 2);
        for (unsigned int i = 0; i < 8; i++)
                netm_chain_add(&m, 0, &(struct netm_buf){ netm_bufaddr(i), 1000, true }, 1);
        netm_kick(&m, 0);
        struct virtio_net_hdr_v1 h = { .flags = VIRTIO_NET_HDR_F_DATA_VALID };
        CHECK(netm_host_send(&m, 0, &h, 3500, 9));
        CHECK(netm_wait_used(&m, 0, 4));
        /* 3500 bytes in 1000-byte buffers: four chains, the first one's header says so. */
        static uint8_t all[4000], want[3500];
        uint32_t total = 0;
        for (unsigned int i = 0; i < 4; i++) {
                struct vring_used_elem e = netm_used_elem(&m, 0, i);
                CHECK(e.id == i && e.len == (i < 3 ? 1000 : 500));
                memcpy(all + total, netm_ptr(&m, netm_bufaddr(i), e.len), e.len);
                total += e.len;
        }
        struct virtio_net_hdr_v1 rh;
        memcpy(&rh, all, HDR);
        CHECK(le16toh(rh.num_buffers) == 4 && rh.flags == VIRTIO_NET_HDR_F_DATA_VALID);
        memcpy(want, &h, HDR);
        netm_pattern(want + HDR, 3500 - HDR, 9);
        CHECK(memcmp(all + HDR, want + HDR, 3500 - HDR) == 0);
        /* A frame that fits one buffer takes one. */
        CHECK(netm_host_send(&m, 0, &h, 200, 10));
        CHECK(netm_wait_used(&m, 0, 5));
        CHECK(netm_used_elem(&m, 0, 4).len == 200);
        memcpy(&rh, netm_ptr(&m, netm_bufaddr(4), HDR), HDR);
        CHECK(le16toh(rh.num_buffers) == 1);
}

TEST(net_rx_frame_read_into_taken_chains_ends_in_later_ones)
{
        /* A back-end without a header: the device writes a zeroed one into the guest's first
         * buffer. The frame is read into the two chains the guest has, the rest waits for a
         * third, and the three come back together. */
        NET_MACHINE(m, 1, false, 0);
        netm_driver_start(&m, F(MRG_RXBUF), 2);
        memset(netm_ptr(&m, netm_bufaddr(0), 4 * 1000), 0xff, 4 * 1000);
        for (unsigned int i = 0; i < 2; i++)
                netm_chain_add(&m, 0, &(struct netm_buf){ netm_bufaddr(i), 1000, true }, 1);
        netm_kick(&m, 0);
        static uint8_t want[3000 - HDR], all[3000];
        netm_pattern(want, sizeof(want), 4);
        CHECK(send(m.peer[0], want, sizeof(want), 0) == (ssize_t)sizeof(want));
        usleep(100 * 1000);
        CHECK(netm_used_idx(&m, 0) == 0);
        netm_chain_add(&m, 0, &(struct netm_buf){ netm_bufaddr(2), 1000, true }, 1);
        netm_kick(&m, 0);
        CHECK(netm_wait_used(&m, 0, 3));
        for (unsigned int i = 0; i < 3; i++) {
                struct vring_used_elem e = netm_used_elem(&m, 0, i);
                CHECK(e.id == i && e.len == 1000);
                memcpy(all + i * 1000, netm_ptr(&m, netm_bufaddr(i), 1000), 1000);
        }
        struct virtio_net_hdr_v1 rh, zero = { .num_buffers = htole16(3) };
        memcpy(&rh, all, HDR);
        CHECK(memcmp(&rh, &zero, HDR) == 0);
        CHECK(memcmp(all + HDR, want, sizeof(want)) == 0);
        /* The next frame takes one chain of those the device took ahead. */
        for (unsigned int i = 3; i < 5; i++)
                netm_chain_add(&m, 0, &(struct netm_buf){ netm_bufaddr(i), 1000, true }, 1);
        netm_kick(&m, 0);
        CHECK(send(m.peer[0], want, 100, 0) == 100);
        CHECK(netm_wait_used(&m, 0, 4));
        CHECK(netm_used_elem(&m, 0, 3).id == 3 && netm_used_elem(&m, 0, 3).len == HDR + 100);
        memcpy(&rh, netm_ptr(&m, netm_bufaddr(3), HDR), HDR);
        zero.num_buffers = htole16(1);
        CHECK(memcmp(&rh, &zero, HDR) == 0 && memcmp(netm_ptr(&m, netm_bufaddr(3) + HDR, 100), want, 100) == 0);
        usleep(50 * 1000);
        CHECK(netm_used_idx(&m, 0) == 4);
}

TEST(net_rx_waits_for_buffers_and_loses_nothing)
{
        /* Frames arrive while the guest has no buffers: none is lost; they come in order once
         * buffers are there, a few at a time. */
        NET_MACHINE(m, 1, true, 0);
        netm_driver_start(&m, F(MRG_RXBUF), 2);
        struct virtio_net_hdr_v1 h = { 0 };
        for (unsigned int i = 0; i < 20; i++)
                CHECK(netm_host_send(&m, 0, &h, 1500, i));
        usleep(100 * 1000);
        CHECK(netm_used_idx(&m, 0) == 0);
        uint8_t want[1500];
        for (unsigned int i = 0; i < 20; i++) {
                if (i % 5 == 0) {
                        for (unsigned int j = i; j < i + 5; j++)
                                netm_chain_add(&m, 0, &(struct netm_buf){ netm_bufaddr(j), 2048, true }, 1);
                        netm_kick(&m, 0);
                }
                for (int t = 0; t < 5000 && netm_used_idx(&m, 0) <= i; t++)
                        usleep(1000);
                CHECK(netm_used_idx(&m, 0) > i);
                struct vring_used_elem e = netm_used_elem(&m, 0, i);
                CHECK(e.len == 1500);
                netm_pattern(want, 1500 - HDR, i);
                CHECK(memcmp(netm_ptr(&m, netm_bufaddr(e.id), 1500) + HDR, want, 1500 - HDR) == 0);
        }
        CHECK(netm_wait_used(&m, 0, 20));
}

TEST(net_rx_without_mergeable_one_chain_per_frame)
{
        NET_MACHINE(m, 1, true, 0);
        netm_driver_start(&m, 0, 2);
        /* A chain too small for the frame: the frame is dropped, the chain waits for a frame it
         * can hold. */
        netm_chain_add(&m, 0, &(struct netm_buf){ netm_bufaddr(0), 600, true }, 1);
        netm_kick(&m, 0);
        struct virtio_net_hdr_v1 h = { 0 };
        CHECK(netm_host_send(&m, 0, &h, 1000, 1));
        CHECK(netm_host_send(&m, 0, &h, 500, 2));
        CHECK(netm_wait_used(&m, 0, 1));
        CHECK(netm_used_elem(&m, 0, 0).len == 500);
        uint8_t want[500];
        netm_pattern(want, 500 - HDR, 2);
        CHECK(memcmp(netm_ptr(&m, netm_bufaddr(0), 500) + HDR, want, 500 - HDR) == 0);
        /* A chain of several buffers holds a frame whole. */
        const struct netm_buf b[3] = { { netm_bufaddr(1), 7, true }, { netm_bufaddr(2), 300, true }, { netm_bufaddr(3), 2000, true } };
        netm_chain_add(&m, 0, b, 3);
        netm_kick(&m, 0);
        CHECK(netm_host_send(&m, 0, &h, 1200, 3));
        CHECK(netm_wait_used(&m, 0, 2));
        CHECK(netm_used_elem(&m, 0, 1).len == 1200);
        uint8_t all[1200];
        memcpy(all, netm_ptr(&m, netm_bufaddr(1), 7), 7);
        memcpy(all + 7, netm_ptr(&m, netm_bufaddr(2), 300), 300);
        memcpy(all + 307, netm_ptr(&m, netm_bufaddr(3), 893), 893);
        uint8_t w[1200];
        netm_pattern(w, 1200 - HDR, 3);
        CHECK(memcmp(all + HDR, w, 1200 - HDR) == 0);
        struct virtio_net_hdr_v1 rh;
        memcpy(&rh, all, HDR);
        CHECK(le16toh(rh.num_buffers) == 1);
}

TEST(net_rx_frame_larger_than_the_whole_ring_is_dropped)
{
        /* Mergeable buffers of 16 bytes: even the whole ring (QSIZE chains) cannot hold a 4000-
         * byte frame. Its chains come back empty, and the next frame gets the next buffers. */
        NET_MACHINE(m, 1, true, 0);
        netm_driver_start(&m, F(MRG_RXBUF), 2);
        for (unsigned int i = 0; i < QSIZE; i++)
                netm_chain_add(&m, 0, &(struct netm_buf){ netm_bufaddr(0) + i * 16, 16, true }, 1);
        netm_kick(&m, 0);
        struct virtio_net_hdr_v1 h = { 0 };
        CHECK(netm_host_send(&m, 0, &h, 4000, 1));
        CHECK(netm_wait_used(&m, 0, QSIZE));
        for (unsigned int i = 0; i < QSIZE; i++)
                CHECK(netm_used_elem(&m, 0, i).len == 0);
        for (unsigned int i = 0; i < 4; i++)
                netm_chain_add(&m, 0, &(struct netm_buf){ netm_bufaddr(1 + i), 4096, true }, 1);
        netm_kick(&m, 0);
        CHECK(netm_host_send(&m, 0, &h, 100, 2));
        CHECK(netm_wait_used(&m, 0, QSIZE + 1));
        CHECK(netm_used_elem(&m, 0, QSIZE).len == 100);
        CHECK(!netm_needs_reset(&m));
}
