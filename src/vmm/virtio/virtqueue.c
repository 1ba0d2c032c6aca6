#include "vmm/virtio/virtqueue.h"

#include <endian.h>
#include <string.h>

/* Ring memory is shared with a running guest: loads and stores of the ring
 * fields are atomic, and ordered where the spec asks for it. */
static uint16_t ring_load16(const __virtio16 *p)
{
        return le16toh(__atomic_load_n(p, __ATOMIC_RELAXED));
}

static void ring_store16(__virtio16 *p, uint16_t v)
{
        __atomic_store_n(p, htole16(v), __ATOMIC_RELAXED);
}

static uint16_t *used_avail_event(const struct virtq *q)
{
        return (uint16_t *)&q->used->ring[q->num];
}

static int virtq_break(struct virtq *q, const char *why)
{
        q->broken = true;
        q->broken_why = why;
        return -1;
}

static bool enable_fail(struct virtq *q, const char *why)
{
        virtq_break(q, why);
        return false;
}

/* Host pointer for a ring of len bytes at gpa with the given alignment. The host
 * side is checked too: the atomic accesses need it. */
static void *ring_ptr(const struct guest_mem *mem, uint64_t gpa, uint64_t len, uint64_t align)
{
        if (gpa % align)
                return NULL;
        void *p = guest_mem_ptr(mem, gpa, len);
        if (!p || (uintptr_t)p % align)
                return NULL;
        return p;
}

bool virtq_enable(struct virtq *q, const struct guest_mem *mem)
{
        q->mem = mem;
        q->desc = NULL;
        q->avail = NULL;
        q->used = NULL;
        q->num = 0;
        q->broken = false;
        q->broken_why = NULL;
        q->last_avail = 0;
        q->used_idx = 0;
        q->signalled_used = 0;
        q->signalled_used_valid = false;
        q->notify_off = false;
        if (q->size == 0 || q->size > VIRTQ_MAX_SIZE || (q->size & (q->size - 1)))
                return enable_fail(q, "queue size is not a power of two up to 1024");
        uint64_t n = q->size;
        struct vring_desc *desc = ring_ptr(mem, q->desc_gpa, 16 * n, 16);
        if (!desc)
                return enable_fail(q, "descriptor table is not 16-byte aligned guest RAM");
        struct vring_avail *avail = ring_ptr(mem, q->avail_gpa, 6 + 2 * n, 2);
        if (!avail)
                return enable_fail(q, "available ring is not 2-byte aligned guest RAM");
        struct vring_used *used = ring_ptr(mem, q->used_gpa, 6 + 8 * n, 4);
        if (!used)
                return enable_fail(q, "used ring is not 4-byte aligned guest RAM");
        q->desc = desc;
        q->avail = avail;
        q->used = used;
        q->num = q->size;
        return true;
}

void virtq_reset(struct virtq *q)
{
        memset(q, 0, sizeof(*q));
}

/* One fetch of a descriptor into a local: the compiler barrier keeps later uses
 * from reading guest memory again, where the guest may have changed it. */
static void desc_fetch(struct vring_desc *d, const uint8_t *src)
{
        memcpy(d, src, sizeof(*d));
        __asm__ __volatile__("" ::: "memory");
        d->addr = le64toh(d->addr);
        d->len = le32toh(d->len);
        d->flags = le16toh(d->flags);
        d->next = le16toh(d->next);
}

/* Add one data descriptor to the chain (rule 7). */
static int chain_add(struct virtq *q, struct virtq_chain *c, const struct vring_desc *d)
{
        if (d->len == 0)
                return 0;
        void *p = guest_mem_ptr(q->mem, d->addr, d->len);
        if (!p)
                return virtq_break(q, "buffer outside guest RAM");
        if (d->flags & VRING_DESC_F_WRITE) {
                if (d->len > UINT32_MAX - c->in_len)
                        return virtq_break(q, "writable buffers total more than 4 GiB");
                c->in_len += d->len;
                c->iov[c->n_out + c->n_in++] = (struct iovec){ p, d->len };
        } else {
                if (c->n_in)
                        return virtq_break(q, "readable buffer after a writable one");
                if (d->len > UINT32_MAX - c->out_len)
                        return virtq_break(q, "readable buffers total more than 4 GiB");
                c->out_len += d->len;
                c->iov[c->n_out++] = (struct iovec){ p, d->len };
        }
        return 0;
}

int virtq_pop(struct virtq *q, struct virtq_chain *c)
{
        if (q->broken)
                return -1;
        if (!q->desc)
                return 0;
        uint16_t size = q->num;
        /* Acquire: the ring entry and descriptors the driver wrote before idx are visible. */
        uint16_t avail_idx = le16toh(__atomic_load_n(&q->avail->idx, __ATOMIC_ACQUIRE));
        uint16_t pending = (uint16_t)(avail_idx - q->last_avail);
        if (pending > size)
                return virtq_break(q, "available index ahead by more than the queue size");
        if (pending == 0)
                return 0;
        uint16_t head = ring_load16(&q->avail->ring[q->last_avail & (size - 1)]);
        if (head >= size)
                return virtq_break(q, "head index out of range");

        c->head = head;
        c->n_out = c->n_in = 0;
        c->out_len = c->in_len = 0;
        /* Bytes, not struct vring_desc: an indirect table need not be aligned. */
        const uint8_t *table = (const uint8_t *)q->desc;
        uint32_t table_len = size;
        bool indirect = false;
        unsigned int count = 0; /* data descriptors, across the indirect table: bounds loops and iov[] */
        uint16_t i = head;
        for (;;) {
                struct vring_desc d;
                desc_fetch(&d, table + (size_t)i * sizeof(d));
                if (d.flags & VRING_DESC_F_INDIRECT) {
                        if (!q->indirect)
                                return virtq_break(q, "indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC");
                        if (indirect)
                                return virtq_break(q, "nested indirect table");
                        if (d.flags & VRING_DESC_F_NEXT)
                                return virtq_break(q, "indirect descriptor with NEXT");
                        if (d.len == 0 || d.len % sizeof(struct vring_desc) || d.len > size * sizeof(struct vring_desc))
                                return virtq_break(q, "indirect table length not a non-zero multiple of 16 "
                                                      "up to 16 * queue size");
                        table = guest_mem_ptr(q->mem, d.addr, d.len);
                        if (!table)
                                return virtq_break(q, "indirect table outside guest RAM");
                        table_len = d.len / sizeof(struct vring_desc);
                        indirect = true;
                        i = 0;
                        continue;
                }
                if (++count > size)
                        return virtq_break(q, "chain longer than the queue size");
                if (chain_add(q, c, &d) < 0)
                        return -1;
                if (!(d.flags & VRING_DESC_F_NEXT))
                        break;
                if (d.next >= table_len)
                        return virtq_break(q, indirect ? "next index outside the indirect table"
                                                       : "next index out of range");
                i = d.next;
        }

        q->last_avail++;
        /* While kicks are off, avail_event stays behind: the driver kicks at most once. */
        if (q->event_idx && !q->notify_off)
                ring_store16(used_avail_event(q), q->last_avail);
        return 1;
}

void virtq_push(struct virtq *q, uint16_t head, uint32_t written)
{
        virtq_push_many(q, &head, &written, 1);
}

void virtq_push_many(struct virtq *q, const uint16_t *heads, const uint32_t *written, unsigned int n)
{
        if (q->broken || !q->used)
                return;
        for (unsigned int i = 0; i < n; i++) {
                struct vring_used_elem *e = &q->used->ring[(uint16_t)(q->used_idx + i) & (q->num - 1)];
                __atomic_store_n(&e->id, htole32(heads[i]), __ATOMIC_RELAXED);
                __atomic_store_n(&e->len, htole32(written[i]), __ATOMIC_RELAXED);
        }
        q->used_idx = (uint16_t)(q->used_idx + n);
        /* Release: the elements are visible before the index that publishes them. */
        __atomic_store_n(&q->used->idx, htole16(q->used_idx), __ATOMIC_RELEASE);
}

bool virtq_should_signal(struct virtq *q)
{
        if (q->broken || !q->used)
                return false;
        uint16_t old = q->signalled_used;
        /* Nothing pushed since the previous call (or since enabling: old is 0 then). */
        if (old == q->used_idx)
                return false;
        /* The used index store must be visible before the driver's used_event or
         * flags are read, or an interrupt it asked for could be missed. */
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        bool valid = q->signalled_used_valid;
        q->signalled_used = q->used_idx;
        q->signalled_used_valid = true;
        if (q->event_idx) {
                uint16_t used_event = ring_load16(&q->avail->ring[q->num]);
                return !valid || vring_need_event(used_event, q->used_idx, old);
        }
        return !(ring_load16(&q->avail->flags) & VRING_AVAIL_F_NO_INTERRUPT);
}

void virtq_set_notification(struct virtq *q, bool enable)
{
        if (q->broken || !q->used)
                return;
        q->notify_off = !enable;
        if (q->event_idx) {
                /* Disabling has nothing to write: avail_event stays behind the driver's index. */
                if (enable)
                        ring_store16(used_avail_event(q), q->last_avail);
        } else {
                ring_store16(&q->used->flags, enable ? 0 : VRING_USED_F_NO_NOTIFY);
        }
        /* The caller re-reads the avail index next: that load must not pass this store. */
        if (enable)
                __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

void virtq_kicks_off(struct virtq *q)
{
        if (q->broken || !q->used)
                return;
        q->notify_off = true;
        if (q->event_idx)
                ring_store16(used_avail_event(q), (uint16_t)(q->last_avail - 1));
        else
                ring_store16(&q->used->flags, VRING_USED_F_NO_NOTIFY);
}

void virtq_adopt(struct virtq *q)
{
        if (q->broken || !q->used)
                return;
        q->used_idx = le16toh(__atomic_load_n(&q->used->idx, __ATOMIC_ACQUIRE));
        q->last_avail = q->event_idx ? ring_load16(used_avail_event(q)) : q->used_idx;
        q->signalled_used_valid = false;
        virtq_set_notification(q, true);
}

/* Copy between buf and the iovecs iov[0..n) starting at byte offset of their
 * concatenation; to_iov picks the direction. */
static size_t iov_copy(const struct iovec *iov, unsigned int n, size_t offset, void *buf, size_t len, bool to_iov)
{
        size_t done = 0;
        for (unsigned int i = 0; i < n && done < len; i++) {
                if (offset >= iov[i].iov_len) {
                        offset -= iov[i].iov_len;
                        continue;
                }
                size_t chunk = iov[i].iov_len - offset;
                if (chunk > len - done)
                        chunk = len - done;
                uint8_t *g = (uint8_t *)iov[i].iov_base + offset;
                if (to_iov)
                        memcpy(g, (uint8_t *)buf + done, chunk);
                else
                        memcpy((uint8_t *)buf + done, g, chunk);
                done += chunk;
                offset = 0;
        }
        return done;
}

size_t virtq_chain_read(const struct virtq_chain *c, size_t offset, void *buf, size_t len)
{
        return iov_copy(c->iov, c->n_out, offset, buf, len, false);
}

size_t virtq_chain_write(const struct virtq_chain *c, size_t offset, const void *buf, size_t len)
{
        return iov_copy(c->iov + c->n_out, c->n_in, offset, (void *)buf, len, true);
}
