/* What the VMM (the control channel, src/vmm/api.c) may ask of the virtio-balloon device
 * (balloon.c). The device publishes itself in struct vm_devices (ctx->balloon) when the VM
 * has one. Both calls are thread-safe and never wait for the guest. */
#ifndef CAPSULE_VMM_VIRTIO_BALLOON_H
#define CAPSULE_VMM_VIRTIO_BALLOON_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"

struct balloon;

struct balloon_stats {
        uint64_t target_bytes;    /* what the host asked the guest to give up */
        uint64_t actual_bytes;    /* what the guest says it has given up (config "actual") */
        uint64_t reported_bytes;  /* freed through free page reporting since boot */
        bool have_guest_stats;    /* the guest has answered on the stats queue at least once */
        uint64_t age_ms;          /* how old the guest's numbers below are */
        /* The guest's VIRTIO_BALLOON_S_* values, in bytes or counts as the spec gives them;
         * UINT64_MAX: the guest did not report that tag. */
        uint64_t swap_in, swap_out, major_faults, minor_faults;
        uint64_t free_memory, total_memory, available_memory, disk_caches;
        uint64_t hugetlb_allocations, hugetlb_failures;
};

/* Ask the guest to give up bytes of its memory (0: give everything back). Rounded down to
 * 4 KiB pages; more than the VM's memory is an error naming the size. */
int balloon_set_target(struct balloon *b, uint64_t bytes, cap_error_t *err);
/* The latest numbers; also asks the guest for fresh statistics, so a caller polling every
 * second sees numbers at most about a second old. */
void balloon_get_stats(struct balloon *b, struct balloon_stats *out);

#endif
