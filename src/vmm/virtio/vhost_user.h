/* A vhost-user front-end (client): capsule hands a back-end process (virtiofsd) the
 * guest's memory table, the ring addresses and the kick/call eventfds over a Unix
 * socket, and the back-end then serves the queues itself.
 *
 * The protocol has no UAPI header: the message layouts below follow the vhost-user
 * specification (QEMU's docs/interop/vhost-user.rst), checked by _Static_assert.
 * The back-end is a separate process and is trusted less than capsule: every reply
 * is bounded, validated (request code, flags, size) and waited for with a timeout, so
 * a stuck or hostile back-end fails the device instead of stalling capsule. */
#ifndef CAPSULE_VMM_VIRTIO_VHOST_USER_H
#define CAPSULE_VMM_VIRTIO_VHOST_USER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "vmm/memory.h"

enum vhost_user_request {
        VHOST_USER_GET_FEATURES = 1,
        VHOST_USER_SET_FEATURES = 2,
        VHOST_USER_SET_OWNER = 3,
        VHOST_USER_SET_MEM_TABLE = 5,
        VHOST_USER_SET_VRING_NUM = 8,
        VHOST_USER_SET_VRING_ADDR = 9,
        VHOST_USER_SET_VRING_BASE = 10,
        VHOST_USER_GET_VRING_BASE = 11,
        VHOST_USER_SET_VRING_KICK = 12,
        VHOST_USER_SET_VRING_CALL = 13,
        VHOST_USER_GET_PROTOCOL_FEATURES = 15,
        VHOST_USER_SET_PROTOCOL_FEATURES = 16,
        VHOST_USER_SET_VRING_ENABLE = 18,
};

/* Header flags: bits 0-1 the protocol version, then "this is a reply" and "ack this". */
#define VHOST_USER_VERSION 0x1u
#define VHOST_USER_VERSION_MASK 0x3u
#define VHOST_USER_REPLY_MASK (1u << 2)
#define VHOST_USER_NEED_REPLY_MASK (1u << 3)

/* The virtio feature bit a back-end sets when it speaks the protocol-feature extension. */
#define VHOST_USER_F_PROTOCOL_FEATURES 30
#define VHOST_USER_PROTOCOL_F_REPLY_ACK 3

/* SET_VRING_KICK/CALL payload: the queue index in bits 0-7; bit 8 says "no fd". */
#define VHOST_USER_VRING_IDX_MASK 0xffu
#define VHOST_USER_VRING_NOFD_MASK (1u << 8)

#define VHOST_USER_MAX_REGIONS 8
#define VHOST_USER_TIMEOUT_MS 5000
/* The first answer of a back-end that is starting may take this many times longer. */
#define VHOST_USER_FIRST_ANSWER_FACTOR 6

struct vhost_user_hdr {
        uint32_t request;
        uint32_t flags;
        uint32_t size; /* payload bytes after the header */
} __attribute__((packed));

struct vhost_user_vring_state {
        uint32_t index;
        uint32_t num;
} __attribute__((packed));

struct vhost_user_vring_addr {
        uint32_t index;
        uint32_t flags;
        uint64_t desc;  /* front-end (VMM) virtual addresses */
        uint64_t used;
        uint64_t avail;
        uint64_t log;
} __attribute__((packed));

struct vhost_user_mem_region {
        uint64_t guest_phys_addr;
        uint64_t memory_size;
        uint64_t userspace_addr; /* where the VMM maps it */
        uint64_t mmap_offset;    /* offset of the region in the fd passed with it */
} __attribute__((packed));

struct vhost_user_mem_table {
        uint32_t nregions;
        uint32_t padding;
        struct vhost_user_mem_region regions[VHOST_USER_MAX_REGIONS];
} __attribute__((packed));

struct vhost_user_msg {
        struct vhost_user_hdr hdr;
        union {
                uint64_t u64;
                struct vhost_user_vring_state state;
                struct vhost_user_vring_addr addr;
                struct vhost_user_mem_table mem;
        } payload;
} __attribute__((packed));

_Static_assert(sizeof(struct vhost_user_hdr) == 12, "vhost-user header is 12 bytes");
_Static_assert(sizeof(struct vhost_user_vring_state) == 8, "vring state is 8 bytes");
_Static_assert(sizeof(struct vhost_user_vring_addr) == 40, "vring address is 40 bytes");
_Static_assert(sizeof(struct vhost_user_mem_region) == 32, "memory region is 32 bytes");
_Static_assert(sizeof(struct vhost_user_mem_table) == 8 + 8 * 32, "memory table is 264 bytes");
_Static_assert(sizeof(struct vhost_user_msg) == 12 + 264, "largest message is 276 bytes");

struct vhost_user {
        int fd;                     /* the connected socket, owned */
        const char *name;           /* errors start with it: "share[0]" */
        int timeout_ms;             /* per message: send plus reply */
        uint64_t features;          /* what the back-end offers (GET_FEATURES) */
        uint64_t protocol_features; /* negotiated protocol features */
        bool broken;                /* a send or reply failed: the stream cannot be trusted */
};

/* One queue as the back-end needs it: ring addresses are guest-physical here and
 * translated to the VMM's addresses (checked against guest RAM) when sent. */
struct vhost_user_vring {
        uint16_t size;
        uint64_t desc_gpa, avail_gpa, used_gpa;
        uint16_t base; /* the next avail index to take */
        int kick_fd, call_fd;
};

void vhost_user_init(struct vhost_user *vu, int fd, const char *name);
void vhost_user_close(struct vhost_user *vu);

/* GET_FEATURES, the protocol features (REPLY_ACK when offered) and SET_OWNER. */
int vhost_user_handshake(struct vhost_user *vu, cap_error_t *err);
/* Hand over guest RAM: every region of mem with the memfd. */
int vhost_user_set_mem_table(struct vhost_user *vu, const struct guest_mem *mem, cap_error_t *err);
/* The features the driver accepted (PROTOCOL_FEATURES is added when the back-end offers it). */
int vhost_user_set_features(struct vhost_user *vu, uint64_t features, cap_error_t *err);
/* Set up and start queue idx: NUM, BASE, ADDR, CALL, KICK, then enable it. */
int vhost_user_vring_start(struct vhost_user *vu, unsigned int idx, const struct vhost_user_vring *v,
                           const struct guest_mem *mem, cap_error_t *err);
/* Stop queue idx (GET_VRING_BASE); *base is where the back-end stopped. */
int vhost_user_vring_stop(struct vhost_user *vu, unsigned int idx, uint16_t *base, cap_error_t *err);

/* Validate one reply (header and payload, len bytes) to request: the version, the reply
 * flag, the request code and the exact payload size that request's reply has. Fills
 * *reply on success. Pure: the fuzz target drives it with arbitrary bytes. */
int vhost_user_parse_reply(uint32_t request, const void *buf, size_t len, struct vhost_user_msg *reply,
                           cap_error_t *err);
/* The payload size of the reply to request (0: that request has no reply of its own). */
uint32_t vhost_user_reply_size(uint32_t request);
/* Ring addresses in the VMM's address space for a queue of size entries at the given
 * guest addresses; -1 unless each ring lies wholly in guest RAM. */
int vhost_user_vring_addr(const struct guest_mem *mem, unsigned int idx, const struct vhost_user_vring *v,
                          struct vhost_user_vring_addr *addr, cap_error_t *err);

#endif
