/* What the virtio-balloon driver hands the device, turned into something safe to act on
 * (balloon_req.c): PFN arrays and reported buffers become ranges of the guest RAM's memfd,
 * statistics become numbers. Pure logic over struct guest_mem and bytes already copied out
 * of guest memory: unit-tested and fuzzed alone. */
#ifndef CAPSULE_VMM_VIRTIO_BALLOON_REQ_H
#define CAPSULE_VMM_VIRTIO_BALLOON_REQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmm/memory.h"
#include "vmm/virtio/balloon.h"

#define BALLOON_PAGE 4096ULL  /* the balloon's page: PFNs count 4 KiB whatever the guest's page size */
#define BALLOON_STAT_SIZE 10  /* struct virtio_balloon_stat: le16 tag, le64 value, packed */

/* A byte range of the guest RAM's memfd: what fallocate(PUNCH_HOLE) takes back. */
struct balloon_run {
        uint64_t offset;
        uint64_t len;
};

/* n PFNs (little-endian, as the driver wrote them) into at most n runs, sorted and with
 * neighbours and duplicates merged, so each run is one fallocate call. A PFN whose page
 * is not wholly guest RAM is skipped. Returns the number of runs; *skipped counts the
 * PFNs that were not RAM. */
size_t balloon_pfns_to_runs(const struct guest_mem *gm, const uint32_t *pfns, size_t n, struct balloon_run *runs,
                            size_t *skipped);

/* The whole balloon pages of [host, host+len), a buffer the virtqueue checked to lie in
 * guest RAM, as a memfd run. False if it holds no whole page (or is not in RAM). */
bool balloon_buffer_run(const struct guest_mem *gm, const void *host, size_t len, struct balloon_run *run);

/* The guest's statistics: len bytes of tag/value pairs copied from the stats queue.
 * Every guest field of *out is set: the value of the last pair with its tag, UINT64_MAX
 * for a tag that is absent. Unknown tags and a trailing partial pair are ignored.
 * Returns the number of pairs with a known tag. */
unsigned int balloon_stats_parse(const uint8_t *buf, size_t len, struct balloon_stats *out);

#endif
