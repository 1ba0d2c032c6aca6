#include "vmm/virtio/balloon_req.h"

#include <endian.h>
#include <linux/virtio_balloon.h>
#include <stdlib.h>
#include <string.h>

/* The memfd offset of host address p when [p, p+len) lies inside one region. */
static bool memfd_offset(const struct guest_mem *gm, const uint8_t *p, uint64_t len, uint64_t *offset)
{
        for (int i = 0; i < gm->n_regions; i++) {
                const struct guest_region *r = &gm->regions[i];
                if (p < r->host || (uint64_t)(p - r->host) >= r->size)
                        continue;
                uint64_t off = (uint64_t)(p - r->host);
                if (len > r->size - off)
                        return false;
                *offset = r->offset + off;
                return true;
        }
        return false;
}

static int run_cmp(const void *a, const void *b)
{
        uint64_t x = ((const struct balloon_run *)a)->offset, y = ((const struct balloon_run *)b)->offset;
        return x < y ? -1 : x > y;
}

size_t balloon_pfns_to_runs(const struct guest_mem *gm, const uint32_t *pfns, size_t n, struct balloon_run *runs,
                            size_t *skipped)
{
        size_t count = 0;
        *skipped = 0;
        for (size_t i = 0; i < n; i++) {
                uint64_t gpa = (uint64_t)le32toh(pfns[i]) << VIRTIO_BALLOON_PFN_SHIFT;
                const uint8_t *p = guest_mem_ptr(gm, gpa, BALLOON_PAGE);
                uint64_t off;
                if (!p || !memfd_offset(gm, p, BALLOON_PAGE, &off)) {
                        (*skipped)++;
                        continue;
                }
                runs[count++] = (struct balloon_run){ .offset = off, .len = BALLOON_PAGE };
        }
        /* The driver gives pages in the order its allocator handed them out, often
         * descending: sorting first lets neighbours merge whatever that order. */
        qsort(runs, count, sizeof(*runs), run_cmp);
        size_t out = 0;
        for (size_t i = 0; i < count; i++) {
                struct balloon_run *last = out ? &runs[out - 1] : NULL;
                if (last && runs[i].offset <= last->offset + last->len) {
                        uint64_t end = runs[i].offset + runs[i].len;
                        if (end > last->offset + last->len)
                                last->len = end - last->offset;
                } else {
                        runs[out++] = runs[i];
                }
        }
        return out;
}

bool balloon_buffer_run(const struct guest_mem *gm, const void *host, size_t len, struct balloon_run *run)
{
        uint64_t off;
        if (len == 0 || !memfd_offset(gm, host, len, &off))
                return false;
        /* Only whole pages: a partial one still holds the guest's data around the buffer. */
        uint64_t start = (off + BALLOON_PAGE - 1) & ~(BALLOON_PAGE - 1);
        uint64_t end = (off + len) & ~(BALLOON_PAGE - 1);
        if (end <= start)
                return false;
        *run = (struct balloon_run){ .offset = start, .len = end - start };
        return true;
}

unsigned int balloon_stats_parse(const uint8_t *buf, size_t len, struct balloon_stats *out)
{
        uint64_t *field[VIRTIO_BALLOON_S_NR] = {
                [VIRTIO_BALLOON_S_SWAP_IN] = &out->swap_in,
                [VIRTIO_BALLOON_S_SWAP_OUT] = &out->swap_out,
                [VIRTIO_BALLOON_S_MAJFLT] = &out->major_faults,
                [VIRTIO_BALLOON_S_MINFLT] = &out->minor_faults,
                [VIRTIO_BALLOON_S_MEMFREE] = &out->free_memory,
                [VIRTIO_BALLOON_S_MEMTOT] = &out->total_memory,
                [VIRTIO_BALLOON_S_AVAIL] = &out->available_memory,
                [VIRTIO_BALLOON_S_CACHES] = &out->disk_caches,
                [VIRTIO_BALLOON_S_HTLB_PGALLOC] = &out->hugetlb_allocations,
                [VIRTIO_BALLOON_S_HTLB_PGFAIL] = &out->hugetlb_failures,
        };
        unsigned int known = 0;
        for (size_t i = 0; i < VIRTIO_BALLOON_S_NR; i++)
                *field[i] = UINT64_MAX;
        for (size_t at = 0; len - at >= BALLOON_STAT_SIZE; at += BALLOON_STAT_SIZE) {
                uint16_t tag;
                uint64_t value;
                memcpy(&tag, buf + at, sizeof(tag));
                memcpy(&value, buf + at + sizeof(tag), sizeof(value));
                tag = le16toh(tag);
                if (tag >= VIRTIO_BALLOON_S_NR)
                        continue;
                *field[tag] = le64toh(value);
                known++;
        }
        return known;
}
