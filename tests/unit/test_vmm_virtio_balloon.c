/* virtio-balloon: its parsers alone (balloon_req.c), then the device end to end on the
 * host: the virtio core and its MMIO transport driven through the bus as a vCPU would,
 * real memfd guest memory (so given-back pages show in the memfd's allocated blocks, as
 * in the VMM's RSS), the event loop, and fake KVM hooks. Chains are laid out as Linux's
 * driver lays them out: a PFN array per inflate buffer, one writable buffer per freed
 * range, one readable stats buffer kept by the device until the host asks for news. */
#include <endian.h>
#include <fcntl.h>
#include <linux/virtio_balloon.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define VIRTIO_MMIO_NO_LEGACY
#include <linux/virtio_mmio.h>

#include "check.h"
#include "machine.h"
#include "mmio_driver.h"
#include "common/util.h"
#include "vmm/device.h"
#include "vmm/virtio/balloon.h"
#include "vmm/virtio/balloon_req.h"
#include "vmm/virtio/virtio.h"
#include "vmm/vm.h"

#define RAM (64ULL << 20)
#define QSIZE 64
#define RINGS 0x10000ULL   /* queue q: descriptors at RINGS + q * 0x4000, avail +0x1000, used +0x2000 */
#define BUFS 0x40000ULL    /* PFN arrays and stats buffers: 64 KiB per slot */
#define PAGES (16ULL << 20) /* the pages the tests give back */
#define PAGE 4096ULL

/* ---- the parsers alone ---- */

static struct guest_mem two_regions(uint8_t *backing)
{
        /* Like the VMM's: [0, 1 MiB) and [4 GiB, 4 GiB + 1 MiB) of one mapping. */
        struct guest_mem gm = { .memfd = -1, .base = backing, .size = 2 << 20, .n_regions = 2 };
        gm.regions[0] = (struct guest_region){ .gpa = 0, .size = 1 << 20, .host = backing, .offset = 0 };
        gm.regions[1] = (struct guest_region){ .gpa = GUEST_PCI_HOLE_END, .size = 1 << 20, .host = backing + (1 << 20),
                                               .offset = 1 << 20 };
        return gm;
}

TEST(pfns_sorted_merged_and_out_of_ram_skipped)
{
        static uint8_t backing[2 << 20];
        struct guest_mem gm = two_regions(backing);
        const uint32_t hi = (uint32_t)(GUEST_PCI_HOLE_END >> 12);
        uint32_t pfns[] = { htole32(5), htole32(4), htole32(3), htole32(10), htole32(3), htole32(256),
                            htole32(0xc0000), htole32(hi + 1), htole32(hi), htole32(0xffffffff), htole32(255) };
        struct balloon_run runs[ARRAY_SIZE(pfns)];
        size_t skipped;
        size_t n = balloon_pfns_to_runs(&gm, pfns, ARRAY_SIZE(pfns), runs, &skipped);
        /* 256 is the first page past region 0; 0xc0000 the PCI hole; 0xffffffff 16 TiB. */
        CHECK(skipped == 3);
        CHECK(n == 3);
        CHECK(runs[0].offset == 3 * PAGE && runs[0].len == 3 * PAGE);
        CHECK(runs[1].offset == 10 * PAGE && runs[1].len == PAGE);
        /* Page 255 ends region 0 and region 1 starts the memfd's next byte: one run. */
        CHECK(runs[2].offset == 255 * PAGE && runs[2].len == 3 * PAGE);
}

TEST(buffer_runs_take_whole_pages_only)
{
        static uint8_t backing[2 << 20];
        struct guest_mem gm = two_regions(backing);
        struct balloon_run run;
        CHECK(balloon_buffer_run(&gm, backing + 100, 3 * PAGE, &run));
        CHECK(run.offset == PAGE && run.len == 2 * PAGE);
        CHECK(!balloon_buffer_run(&gm, backing + 100, PAGE, &run));
        CHECK(!balloon_buffer_run(&gm, backing, 0, &run));
        CHECK(balloon_buffer_run(&gm, backing + (1 << 20), 1 << 20, &run));
        CHECK(run.offset == 1 << 20 && run.len == 1 << 20);
        /* Crossing from one region into the next is not a buffer the virtqueue hands out. */
        CHECK(!balloon_buffer_run(&gm, backing + (1 << 20) - PAGE, 2 * PAGE, &run));
        CHECK(!balloon_buffer_run(&gm, backing + (2 << 20), PAGE, &run));
}

static size_t stat_put(uint8_t *buf, size_t at, uint16_t tag, uint64_t value)
{
        uint16_t t = htole16(tag);
        uint64_t v = htole64(value);
        memcpy(buf + at, &t, 2);
        memcpy(buf + at + 2, &v, 8);
        return at + BALLOON_STAT_SIZE;
}

TEST(stats_parse_known_unknown_repeated_and_partial)
{
        uint8_t buf[128];
        size_t len = stat_put(buf, 0, VIRTIO_BALLOON_S_MEMTOT, 512ULL << 20);
        len = stat_put(buf, len, 77, 1);
        len = stat_put(buf, len, VIRTIO_BALLOON_S_MEMFREE, 1);
        len = stat_put(buf, len, VIRTIO_BALLOON_S_MEMFREE, 300ULL << 20);
        len = stat_put(buf, len, VIRTIO_BALLOON_S_AVAIL, 7);
        struct balloon_stats s;
        memset(&s, 0, sizeof(s));
        /* The last pair is cut short: it is not read. */
        CHECK(balloon_stats_parse(buf, len - 1, &s) == 3);
        CHECK(s.total_memory == 512ULL << 20 && s.free_memory == 300ULL << 20);
        CHECK(s.available_memory == UINT64_MAX && s.swap_in == UINT64_MAX && s.hugetlb_failures == UINT64_MAX);
        CHECK(balloon_stats_parse(buf, 0, &s) == 0 && s.total_memory == UINT64_MAX);
        CHECK(balloon_stats_parse(buf, 9, &s) == 0);
}

/* ---- the device ---- */

struct fake_kvm {
        int irq_fd;
};

struct machine {
        struct machine_base b;
        struct fake_kvm kvm;
        uint16_t avail_idx[4];
        unsigned int n_queues;
};

static int fake_irqfd(void *vm, int fd, uint32_t gsi, bool assign, cap_error_t *err)
{
        (void)gsi, (void)err;
        if (assign)
                ((struct fake_kvm *)vm)->irq_fd = fd;
        return 0;
}

static int machine_start(struct machine *m, bool reporting, bool oom, bool hugepages, bool loop, cap_error_t *err)
{
        memset(m, 0, sizeof(*m));
        if (machine_base_init(&m->b, RAM, err) < 0)
                return -1;
        m->b.mem.hugepages = hugepages; /* what the device sees; the memory itself stays small pages */
        m->b.cfg = (struct vm_config){ .console = VM_CONSOLE_FILE, .console_path = "/dev/null",
                                       .virtio_transport = VM_VIRTIO_MMIO, .balloon = true,
                                       .balloon_free_page_reporting = reporting, .balloon_deflate_on_oom = oom };
        m->b.ctx.irqfd = fake_irqfd;
        m->b.ctx.vm = &m->kvm;
        return machine_base_start(&m->b, loop, err);
}

static void machine_stop(struct machine *m)
{
        m->b.mem.hugepages = false;
        machine_base_destroy(&m->b);
}

#define MACHINE_LOOP(m, reporting, oom, loop)                                              \
        MACHINE_UP(machine, m, machine_start, machine_stop, reporting, oom, false, loop);  \
        CHECK(m.b.ctx.balloon)

#define MACHINE(m, reporting, oom) MACHINE_LOOP(m, reporting, oom, true)

static uint32_t rd32(struct machine *m, uint64_t off)
{
        return mmio_rd32(&m->b.mmio, off);
}

static void wr(struct machine *m, uint64_t off, uint32_t v, uint32_t len)
{
        mmio_wr(&m->b.mmio, off, v, len);
}

static void wr32(struct machine *m, uint64_t off, uint32_t v)
{
        wr(m, off, v, 4);
}

static uint64_t device_features(struct machine *m)
{
        return mmio_device_features(&m->b.mmio);
}

#define FOK (VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK)

static uint64_t desc_gpa(unsigned int q)
{
        return RINGS + q * 0x4000ULL;
}

/* The Linux driver's steps with n_queues queues (dense numbering), up to DRIVER_OK. */
static void driver_start(struct machine *m, uint64_t features, unsigned int n_queues)
{
        mmio_driver_features(&m->b.mmio, features);
        memset(guest_mem_ptr(&m->b.mem, RINGS, 0x10000), 0, 0x10000);
        for (unsigned int q = 0; q < n_queues; q++) {
                mmio_queue_setup(&m->b.mmio, q, QSIZE, desc_gpa(q), desc_gpa(q) + 0x1000, desc_gpa(q) + 0x2000);
                m->avail_idx[q] = 0;
        }
        m->n_queues = n_queues;
        wr32(m, VIRTIO_MMIO_STATUS, FOK | VIRTIO_CONFIG_S_DRIVER_OK);
}

static uint8_t *gptr(struct machine *m, uint64_t gpa, uint64_t len)
{
        return guest_mem_ptr(&m->b.mem, gpa, len);
}

/* Publish a chain of n buffers (addr, len, writable) at descriptor 0 of queue q and kick. */
struct buf {
        uint64_t addr;
        uint32_t len;
        bool writable;
};

static void submit(struct machine *m, unsigned int q, const struct buf *bufs, unsigned int n)
{
        struct vring_desc *d = (struct vring_desc *)gptr(m, desc_gpa(q), QSIZE * sizeof(*d));
        uint16_t first = (uint16_t)(m->avail_idx[q] * 8 % QSIZE);
        for (unsigned int i = 0; i < n; i++)
                d[first + i] = (struct vring_desc){ .addr = htole64(bufs[i].addr), .len = htole32(bufs[i].len),
                                                    .flags = htole16((i + 1 < n ? VRING_DESC_F_NEXT : 0) |
                                                                     (bufs[i].writable ? VRING_DESC_F_WRITE : 0)),
                                                    .next = htole16((uint16_t)(first + i + 1)) };
        struct vring_avail *a = (struct vring_avail *)gptr(m, desc_gpa(q) + 0x1000, 4 + 2 * QSIZE);
        a->ring[m->avail_idx[q] % QSIZE] = htole16(first);
        __atomic_store_n(&a->idx, htole16(++m->avail_idx[q]), __ATOMIC_RELEASE);
        wr32(m, VIRTIO_MMIO_QUEUE_NOTIFY, q);
}

static uint16_t used_idx(struct machine *m, unsigned int q)
{
        struct vring_used *u = (struct vring_used *)gptr(m, desc_gpa(q) + 0x2000, 4 + 8 * QSIZE);
        return le16toh(__atomic_load_n(&u->idx, __ATOMIC_ACQUIRE));
}

/* Wait (at most 5 s) until queue q returned n chains in all. */
static bool wait_used(struct machine *m, unsigned int q, uint16_t n)
{
        for (int i = 0; i < 5000 && used_idx(m, q) != n; i++)
                usleep(1000);
        return used_idx(m, q) == n;
}

/* The memfd's allocated bytes: what guest RAM costs the host. */
static uint64_t allocated(struct machine *m)
{
        struct stat st;
        return fstat(m->b.mem.memfd, &st) == 0 ? (uint64_t)st.st_blocks * 512 : 0;
}

static void touch(struct machine *m, uint64_t gpa, uint64_t len, uint8_t value)
{
        memset(gptr(m, gpa, len), value, len);
}

static bool all(struct machine *m, uint64_t gpa, uint64_t len, uint8_t value)
{
        const uint8_t *p = gptr(m, gpa, len);
        for (uint64_t i = 0; i < len; i++)
                if (p[i] != value)
                        return false;
        return true;
}

static bool device_ok(struct machine *m)
{
        return !(rd32(m, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET);
}

#define ALL_FEATURES ((1ULL << VIRTIO_BALLOON_F_STATS_VQ) | (1ULL << VIRTIO_BALLOON_F_REPORTING))

TEST(dev_features_and_config)
{
        MACHINE(m, false, false);
        CHECK(rd32(&m, VIRTIO_MMIO_DEVICE_ID) == VIRTIO_ID_BALLOON);
        uint64_t f = device_features(&m);
        CHECK(f & (1ULL << VIRTIO_BALLOON_F_STATS_VQ));
        CHECK(!(f & (1ULL << VIRTIO_BALLOON_F_REPORTING)) && !(f & (1ULL << VIRTIO_BALLOON_F_DEFLATE_ON_OOM)));
        CHECK(!(f & (1ULL << VIRTIO_BALLOON_F_FREE_PAGE_HINT)) && !(f & (1ULL << VIRTIO_BALLOON_F_MUST_TELL_HOST)));
        CHECK(rd32(&m, VIRTIO_MMIO_CONFIG) == 0 && rd32(&m, VIRTIO_MMIO_CONFIG + 4) == 0);
        wr32(&m, VIRTIO_MMIO_QUEUE_SEL, 3);
        CHECK(rd32(&m, VIRTIO_MMIO_QUEUE_NUM_MAX) == 0);
}

TEST(dev_options_offer_reporting_and_deflate_on_oom)
{
        MACHINE(m, true, true);
        uint64_t f = device_features(&m);
        CHECK(f & (1ULL << VIRTIO_BALLOON_F_REPORTING) && f & (1ULL << VIRTIO_BALLOON_F_DEFLATE_ON_OOM));
        wr32(&m, VIRTIO_MMIO_QUEUE_SEL, 3);
        CHECK(rd32(&m, VIRTIO_MMIO_QUEUE_NUM_MAX) > 0);
}

TEST(dev_refused_with_hugepages)
{
        struct machine m __attribute__((cleanup(machine_stop)));
        cleanup_error cap_error_t err = NULL;
        CHECK(machine_start(&m, false, false, true, true, &err) < 0);
        CHECK(err && strstr(err->msg, "balloon") && strstr(err->msg, "hugepages"));
        CHECK(m.b.ctx.balloon == NULL);
}

TEST(dev_target_is_config_and_raises_a_config_interrupt)
{
        MACHINE(m, false, false);
        driver_start(&m, 1ULL << VIRTIO_BALLOON_F_STATS_VQ, 3);
        uint32_t gen = rd32(&m, VIRTIO_MMIO_CONFIG_GENERATION);
        cleanup_error cap_error_t err = NULL;
        CHECK(balloon_set_target(m.b.ctx.balloon, (8ULL << 20) + 100, &err) == 0);
        CHECK(rd32(&m, VIRTIO_MMIO_CONFIG) == 2048);
        CHECK(rd32(&m, VIRTIO_MMIO_CONFIG_GENERATION) != gen);
        CHECK(rd32(&m, VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_CONFIG);
        CHECK(balloon_set_target(m.b.ctx.balloon, RAM + 1, &err) < 0);
        CHECK(err && strstr(err->msg, "64 MiB"));
        CHECK(rd32(&m, VIRTIO_MMIO_CONFIG) == 2048);
        struct balloon_stats s;
        balloon_get_stats(m.b.ctx.balloon, &s);
        CHECK(s.target_bytes == 8ULL << 20);
}

TEST(dev_actual_is_the_drivers_within_the_vm)
{
        MACHINE(m, false, false);
        driver_start(&m, 0, 2);
        wr32(&m, VIRTIO_MMIO_CONFIG + 4, 100);
        CHECK(rd32(&m, VIRTIO_MMIO_CONFIG + 4) == 100);
        struct balloon_stats s;
        balloon_get_stats(m.b.ctx.balloon, &s);
        CHECK(s.actual_bytes == 100 * PAGE);
        wr(&m, VIRTIO_MMIO_CONFIG + 5, 1, 1); /* one byte: 100 + 256 */
        CHECK(rd32(&m, VIRTIO_MMIO_CONFIG + 4) == 356);
        wr32(&m, VIRTIO_MMIO_CONFIG + 4, (uint32_t)(RAM / PAGE) + 1); /* more than the VM has */
        CHECK(rd32(&m, VIRTIO_MMIO_CONFIG + 4) == 356);
        wr32(&m, VIRTIO_MMIO_CONFIG, 77); /* num_pages is the host's */
        CHECK(rd32(&m, VIRTIO_MMIO_CONFIG) == 0);
        wr32(&m, VIRTIO_MMIO_STATUS, 0); /* a reset: the guest has all its memory again */
        CHECK(rd32(&m, VIRTIO_MMIO_CONFIG + 4) == 0);
}

TEST(dev_inflate_gives_pages_back_and_skips_foreign_pfns)
{
        MACHINE(m, false, false);
        driver_start(&m, 1ULL << VIRTIO_BALLOON_F_STATS_VQ, 3);
        touch(&m, PAGES, 66 * PAGE, 0xaa);
        /* Pages 1..64 of the block in descending order (as Linux's allocator hands them
         * out), a duplicate, the PCI hole, past the end of RAM and 16 TiB. */
        uint32_t *pfns = (uint32_t *)gptr(&m, BUFS, 4 * 68);
        for (unsigned int i = 0; i < 64; i++)
                pfns[i] = htole32((uint32_t)((PAGES >> 12) + 64 - i));
        pfns[64] = htole32((uint32_t)(PAGES >> 12) + 3);
        pfns[65] = htole32(0xc0000);
        pfns[66] = htole32((uint32_t)(RAM >> 12));
        pfns[67] = htole32(0xffffffff);
        uint64_t before = allocated(&m);
        struct buf b = { BUFS, 4 * 68, false };
        submit(&m, 0, &b, 1);
        CHECK(wait_used(&m, 0, 1));
        CHECK(allocated(&m) + 64 * PAGE <= before); /* first: reading a hole allocates a page again */
        CHECK(all(&m, PAGES + PAGE, 64 * PAGE, 0));
        CHECK(all(&m, PAGES, PAGE, 0xaa) && all(&m, PAGES + 65 * PAGE, PAGE, 0xaa));
        CHECK(device_ok(&m));
}

TEST(dev_huge_inflate_chain_is_served_over_rounds)
{
        MACHINE(m, false, false);
        driver_start(&m, 0, 2);
        /* 40000 PFNs (more than two rounds' worth) over 8 MiB of RAM, in one chain. */
        const unsigned int n = 40000;
        touch(&m, PAGES, 8ULL << 20, 0x55);
        uint32_t *pfns = (uint32_t *)gptr(&m, PAGES + (16ULL << 20), 4ULL * n);
        for (unsigned int i = 0; i < n; i++)
                pfns[i] = htole32((uint32_t)((PAGES >> 12) + i % 2048));
        uint64_t before = allocated(&m);
        struct buf b[2] = { { PAGES + (16ULL << 20), 4 * 20000, false },
                            { PAGES + (16ULL << 20) + 4 * 20000, 4 * 20000, false } };
        submit(&m, 0, b, 2);
        CHECK(wait_used(&m, 0, 1));
        CHECK(allocated(&m) + (8ULL << 20) <= before);
        CHECK(all(&m, PAGES, 8ULL << 20, 0));
        /* Deflating is only returning the chain: the pages come back as they are touched. */
        submit(&m, 1, b, 1);
        CHECK(wait_used(&m, 1, 1));
        touch(&m, PAGES, PAGE, 1);
        CHECK(all(&m, PAGES, PAGE, 1) && device_ok(&m));
}

static void stats_buffer(struct machine *m, uint64_t total, uint64_t avail)
{
        uint8_t *buf = gptr(m, BUFS + 0x10000, 64);
        size_t len = stat_put(buf, 0, VIRTIO_BALLOON_S_MEMTOT, total);
        len = stat_put(buf, len, 99, 5);
        len = stat_put(buf, len, VIRTIO_BALLOON_S_AVAIL, avail);
        struct buf b = { BUFS + 0x10000, (uint32_t)len + 3, false };
        submit(m, 2, &b, 1);
}

TEST(dev_stats_are_kept_and_the_buffer_returned_on_request)
{
        MACHINE(m, false, false);
        driver_start(&m, 1ULL << VIRTIO_BALLOON_F_STATS_VQ, 3);
        struct balloon_stats s;
        balloon_get_stats(m.b.ctx.balloon, &s);
        CHECK(!s.have_guest_stats && s.total_memory == UINT64_MAX);
        stats_buffer(&m, 500ULL << 20, 200ULL << 20);
        /* Asking hands the buffer back at once: watch the device take it instead. */
        struct virtio_dev *dev = m.b.ctx.virtio_devs;
        bool taken = false;
        for (int i = 0; i < 5000 && !taken; i++) {
                usleep(1000);
                virtio_dev_lock(dev);
                taken = dev->queues[2].last_avail == 1;
                virtio_dev_unlock(dev);
        }
        usleep(20000);
        CHECK(taken && used_idx(&m, 2) == 0); /* kept: the driver waits for the host */
        balloon_get_stats(m.b.ctx.balloon, &s);
        CHECK(s.have_guest_stats && s.total_memory == 500ULL << 20 && s.available_memory == 200ULL << 20);
        CHECK(s.free_memory == UINT64_MAX && s.age_ms < 5000);
        CHECK(wait_used(&m, 2, 1)); /* given back: the driver refreshes it */
        stats_buffer(&m, 500ULL << 20, 100ULL << 20);
        for (int i = 0; i < 5000 && s.available_memory != 100ULL << 20; i++) {
                usleep(1000);
                balloon_get_stats(m.b.ctx.balloon, &s);
        }
        CHECK(s.available_memory == 100ULL << 20 && device_ok(&m));
}

TEST(dev_reported_ranges_are_given_back)
{
        MACHINE(m, true, false);
        /* Without the stats queue the reporting queue is number 2, as Linux numbers them. */
        driver_start(&m, 1ULL << VIRTIO_BALLOON_F_REPORTING, 3);
        touch(&m, PAGES, 4ULL << 20, 0x77);
        uint64_t before = allocated(&m);
        struct buf b[3] = { { PAGES, 2 << 20, true }, { PAGES + (3ULL << 20) + 100, 2 * PAGE, true },
                            { 0x7fffffffULL << 12, 4096, true } };
        submit(&m, 2, b, 2);
        CHECK(wait_used(&m, 2, 1));
        CHECK(allocated(&m) + (2 << 20) + PAGE <= before);
        CHECK(all(&m, PAGES, 2 << 20, 0));
        /* The partly covered pages keep their data; the one whole page is gone. */
        CHECK(all(&m, PAGES + (3ULL << 20), PAGE, 0x77) && all(&m, PAGES + (3ULL << 20) + PAGE, PAGE, 0));
        CHECK(all(&m, PAGES + (3ULL << 20) + 2 * PAGE, PAGE, 0x77));
        struct balloon_stats s;
        balloon_get_stats(m.b.ctx.balloon, &s);
        CHECK(s.reported_bytes == (2 << 20) + PAGE);
        CHECK(device_ok(&m));
        /* A buffer outside RAM is a malformed chain: the device asks for a reset. */
        submit(&m, 2, &b[2], 1);
        for (int i = 0; i < 5000 && device_ok(&m); i++)
                usleep(1000);
        CHECK(!device_ok(&m));
}

TEST(dev_reporting_follows_the_stats_queue)
{
        MACHINE(m, true, true);
        driver_start(&m, ALL_FEATURES | (1ULL << VIRTIO_BALLOON_F_DEFLATE_ON_OOM), 4);
        touch(&m, PAGES, 1 << 20, 0x11);
        uint64_t before = allocated(&m);
        struct buf b = { PAGES, 1 << 20, true };
        submit(&m, 3, &b, 1);
        CHECK(wait_used(&m, 3, 1));
        CHECK(allocated(&m) + (1 << 20) <= before);
        CHECK(all(&m, PAGES, 1 << 20, 0));
        struct balloon_stats s;
        balloon_get_stats(m.b.ctx.balloon, &s);
        CHECK(s.reported_bytes == 1 << 20 && device_ok(&m));
}

/* No event loop thread: each call is one round, as the loop would run it after a kick. */
static void one_round(struct machine *m)
{
        struct virtio_dev *dev = m->b.ctx.virtio_devs;
        virtio_dev_lock(dev);
        dev->ops->notify(dev, 0);
        virtio_dev_unlock(dev);
}

TEST(dev_inflate_work_is_bounded_per_round)
{
        MACHINE_LOOP(m, false, false, false);
        driver_start(&m, 0, 2);
        /* 40000 PFNs cycling over 8 MiB: 16384 are done in a round, so it takes three. */
        const unsigned int n = 40000;
        touch(&m, PAGES, 8ULL << 20, 0x55);
        uint32_t *pfns = (uint32_t *)gptr(&m, PAGES + (16ULL << 20), 4ULL * n);
        for (unsigned int i = 0; i < n; i++)
                pfns[i] = htole32((uint32_t)((PAGES >> 12) + i % 2048));
        uint64_t before = allocated(&m);
        struct buf b = { PAGES + (16ULL << 20), 4 * n, false };
        submit(&m, 0, &b, 1);
        one_round(&m);
        CHECK(used_idx(&m, 0) == 0);
        CHECK(allocated(&m) + (8ULL << 20) <= before);
        one_round(&m);
        CHECK(used_idx(&m, 0) == 0);
        one_round(&m);
        CHECK(used_idx(&m, 0) == 1 && device_ok(&m));
}
