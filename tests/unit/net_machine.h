/* The virtio-net unit tests' machine: the net device on the virtio core and its MMIO transport,
 * driven through the bus as a vCPU would, with real guest memory and event loop and a fake
 * back-end of SOCK_SEQPACKET socketpairs (one per queue pair: one packet is one frame, header
 * first) whose other ends the tests read and write as the host's network would. Chains are laid
 * out in guest memory as a driver lays them out. */
#ifndef CAPSULE_TESTS_NET_MACHINE_H
#define CAPSULE_TESTS_NET_MACHINE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define VIRTIO_MMIO_NO_LEGACY
#include <linux/virtio_mmio.h>

#include "check.h"
#include "common/util.h"
#include "vmm/device.h"
#include "vmm/virtio/net.h"
#include "vmm/vm.h"

#define QSIZE 128
#define RINGS 0x10000ULL /* queue q: descriptors, avail and used ring at RINGS + q * 0x4000 */
#define BUFS 0x100000ULL /* buffer i: 64 KiB at BUFS + i * 0x10000 */
#define HDR NET_HDR_LEN
#define ALL_OFFLOADS NET_OFFLOAD_FEATURES

#define F(name) (1ULL << VIRTIO_NET_F_##name)

struct qstate {
        uint16_t avail_idx;
        uint16_t next_desc;
};

/* What the back-end was told, kept past its destruction. */
extern uint64_t netm_offloads_seen;
extern int netm_offload_calls;

struct net_machine {
        struct bus pio, mmio;
        struct evloop loop;
        struct guest_mem mem;
        struct vm_config cfg;
        struct vm_net net;
        struct vm_devices ctx;
        int peer[NET_MAX_QUEUE_PAIRS];
        unsigned int pairs;
        struct qstate qs[2 * NET_MAX_QUEUE_PAIRS + 1];
        bool up, mem_up, loop_up;
};

struct netm_buf {
        uint64_t gpa;
        uint32_t len;
        bool write;
};

#define FOK (VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK)

int netm_start(struct net_machine *m, unsigned int pairs, bool vnet_hdr, int sndbuf, cap_error_t *err);
void netm_stop(struct net_machine *m);
uint32_t netm_rd32(struct net_machine *m, uint64_t off);
void netm_wr32(struct net_machine *m, uint64_t off, uint32_t v);
uint8_t *netm_ptr(struct net_machine *m, uint64_t gpa, uint64_t len);
uint64_t netm_device_features(struct net_machine *m);
uint64_t netm_ring(unsigned int q);

/* Linux's steps: reset, features, queues 0 .. nq-1, DRIVER_OK. */
void netm_driver_start(struct net_machine *m, uint64_t features, unsigned int nq);
bool netm_needs_reset(struct net_machine *m);
uint64_t netm_bufaddr(unsigned int i);

/* Make a chain of bufs available on queue q (no kick); returns its head. */
uint16_t netm_chain_add(struct net_machine *m, unsigned int q, const struct netm_buf *b, unsigned int n);
void netm_kick(struct net_machine *m, unsigned int q);
struct vring_used *netm_used(struct net_machine *m, unsigned int q);
uint16_t netm_used_idx(struct net_machine *m, unsigned int q);

/* Wait (at most 5 s) until queue q returned n chains in all. */
bool netm_wait_used(struct net_machine *m, unsigned int q, uint16_t n);

/* The i-th used entry of queue q. */
struct vring_used_elem netm_used_elem(struct net_machine *m, unsigned int q, unsigned int i);
void netm_pattern(uint8_t *p, size_t len, unsigned int seed);

/* A frame of len bytes (header included) from the host on pair k. */
bool netm_host_send(struct net_machine *m, unsigned int k, const struct virtio_net_hdr_v1 *h, size_t len,
                    unsigned int seed);

/* The next frame the host got on pair k, waiting at most 2 s; its length or -1. */
ssize_t netm_host_recv(struct net_machine *m, unsigned int k, void *buf, size_t len, int timeout_ms);

/* A guest tx frame: header h then len frame bytes, cut into two buffers at cut. */
void netm_guest_tx(struct net_machine *m, unsigned int q, unsigned int slot, const struct virtio_net_hdr_v1 *h,
                   uint32_t len, uint32_t cut, unsigned int seed);

#define NET_MACHINE(m, pairs, vnet_hdr, sndbuf)                                                \
        struct net_machine m __attribute__((cleanup(netm_stop)));                                 \
        do {                                                                               \
                cleanup_error cap_error_t _err = NULL;                                     \
                int _r = netm_start(&m, pairs, vnet_hdr, sndbuf, &_err);                   \
                if (_r < 0)                                                                \
                        fprintf(stderr, "netm_start: %s\n", _err ? _err->msg : "?");       \
                CHECK(_r == 0);                                                            \
        } while (0)

#endif
