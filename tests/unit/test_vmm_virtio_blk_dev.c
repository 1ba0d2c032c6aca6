/* The virtio-blk device end to end on the host: the virtio core and its MMIO
 * transport driven through the bus as a vCPU would, real guest memory, event loop
 * and io_uring, an image file, and fake KVM hooks. Requests are laid out in guest
 * memory as Linux's driver lays them out (header, data, status: three descriptors).
 * The last tests are a hostile driver's attacks through what a guest controls: register
 * writes and guest memory. */
#include <endian.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define VIRTIO_MMIO_NO_LEGACY
#include <linux/virtio_blk.h>
#include <linux/virtio_mmio.h>

#include "check.h"
#include "machine.h"
#include "mmio_driver.h"
#include "common/util.h"
#include "vmm/device.h"
#include "vmm/virtio/virtio.h"
#include "vmm/vm.h"

#define QSIZE 64
#define DESC 0x10000ULL
#define AVAIL 0x11000ULL
#define USED 0x12000ULL
#define HDRS 0x20000ULL   /* one 16-byte header per request slot */
#define STATUS 0x21000ULL /* one status byte per slot */
#define DATA 0x100000ULL  /* 64 KiB per slot */
#define IMAGE_SIZE (4 << 20)

struct fake_kvm {
        int irq_fd;
        int kick_fd;
};

struct machine {
        struct machine_base b;
        struct vm_disk disk;
        struct fake_kvm kvm;
        char image[64];
        uint16_t avail_idx;
};

static int fake_irqfd(void *vm, int fd, uint32_t gsi, bool assign, cap_error_t *err)
{
        (void)gsi, (void)err;
        if (assign)
                ((struct fake_kvm *)vm)->irq_fd = fd;
        return 0;
}

static int fake_ioeventfd_match(void *vm, int fd, uint64_t addr, uint32_t len, bool pio, uint64_t data, bool assign,
                                cap_error_t *err)
{
        (void)addr, (void)len, (void)pio, (void)err;
        if (assign && data == 0)
                ((struct fake_kvm *)vm)->kick_fd = fd;
        return 0;
}

static int machine_start(struct machine *m, bool readonly, const char *serial, cap_error_t *err)
{
        memset(m, 0, sizeof(*m));
        snprintf(m->image, sizeof(m->image), "/tmp/capsule-blk-dev.XXXXXX");
        int fd = mkstemp(m->image);
        if (fd < 0 || ftruncate(fd, IMAGE_SIZE) < 0)
                return cap_fail(err, errno, "image");
        close(fd);
        if (machine_base_init(&m->b, 16ULL << 20, err) < 0)
                return -1;
        m->disk = (struct vm_disk){ .path = m->image, .readonly = readonly, .serial = (char *)serial, .queues = 1 };
        m->b.cfg = (struct vm_config){ .console = VM_CONSOLE_FILE, .console_path = "/dev/null",
                                       .virtio_transport = VM_VIRTIO_MMIO, .disks = &m->disk, .n_disks = 1 };
        m->b.ctx.irqfd = fake_irqfd;
        m->b.ctx.ioeventfd_match = fake_ioeventfd_match;
        m->b.ctx.vm = &m->kvm;
        return machine_base_start(&m->b, true, err);
}

static void machine_stop(struct machine *m)
{
        machine_base_destroy(&m->b);
        unlink(m->image);
}

#define MACHINE(m, readonly, serial) MACHINE_UP(machine, m, machine_start, machine_stop, readonly, serial)

static uint32_t rd32(struct machine *m, uint64_t off)
{
        return mmio_rd32(&m->b.mmio, off);
}

static void wr32(struct machine *m, uint64_t off, uint32_t v)
{
        mmio_wr32(&m->b.mmio, off, v);
}

static uint64_t device_features(struct machine *m)
{
        return mmio_device_features(&m->b.mmio);
}

#define FOK (VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK)

/* The Linux driver's steps up to DRIVER_OK (not included), with queue 0 of QSIZE entries
 * and its descriptor table at desc. */
static void driver_setup(struct machine *m, uint64_t features, uint64_t desc)
{
        mmio_driver_features(&m->b.mmio, features);
        /* Fresh rings, as a driver allocates them after a reset. */
        memset(guest_mem_ptr(&m->b.mem, DESC, USED + 0x1000 - DESC), 0, USED + 0x1000 - DESC);
        mmio_queue_setup(&m->b.mmio, 0, QSIZE, desc, AVAIL, USED);
        m->avail_idx = 0;
}

static void driver_start(struct machine *m, uint64_t features)
{
        driver_setup(m, features, DESC);
        wr32(m, VIRTIO_MMIO_STATUS, FOK | VIRTIO_CONFIG_S_DRIVER_OK);
}

static uint8_t *gptr(struct machine *m, uint64_t gpa, uint64_t len)
{
        return guest_mem_ptr(&m->b.mem, gpa, len);
}

/* Queue request slot (header, len bytes of data at DATA + slot * 64K unless len is 0,
 * status) and publish it; the kick is the caller's. */
static void request(struct machine *m, unsigned int slot, uint32_t type, uint64_t sector, uint32_t len)
{
        struct virtio_blk_outhdr h = { .type = htole32(type), .sector = htole64(sector) };
        memcpy(gptr(m, HDRS + slot * 16, 16), &h, 16);
        *gptr(m, STATUS + slot, 1) = 0xff;
        bool in = type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_GET_ID;
        struct vring_desc *d = (struct vring_desc *)gptr(m, DESC, QSIZE * sizeof(*d));
        unsigned int i = slot * 3 % QSIZE;
        d[i] = (struct vring_desc){ .addr = HDRS + slot * 16, .len = 16, .flags = VRING_DESC_F_NEXT,
                                    .next = (uint16_t)(i + 1) };
        unsigned int st = i + 1;
        if (len) {
                d[i + 1] = (struct vring_desc){ .addr = DATA + slot * 65536ULL, .len = len,
                                                .flags = VRING_DESC_F_NEXT | (in ? VRING_DESC_F_WRITE : 0),
                                                .next = (uint16_t)(i + 2) };
                st = i + 2;
        }
        d[st] = (struct vring_desc){ .addr = STATUS + slot, .len = 1, .flags = VRING_DESC_F_WRITE };
        struct vring_avail *a = (struct vring_avail *)gptr(m, AVAIL, 4 + 2 * QSIZE);
        a->ring[m->avail_idx % QSIZE] = (uint16_t)i;
        __atomic_store_n(&a->idx, ++m->avail_idx, __ATOMIC_RELEASE);
}

static void kick(struct machine *m)
{
        wr32(m, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
}

static uint16_t used_idx(struct machine *m)
{
        struct vring_used *u = (struct vring_used *)gptr(m, USED, 4 + 8 * QSIZE);
        return __atomic_load_n(&u->idx, __ATOMIC_ACQUIRE);
}

/* Wait (at most 5 s) until the device returned n chains in all. */
static bool wait_used(struct machine *m, uint16_t n)
{
        for (int i = 0; i < 5000 && used_idx(m) != n; i++)
                usleep(1000);
        return used_idx(m) == n;
}

static uint8_t status(struct machine *m, unsigned int slot)
{
        return __atomic_load_n(gptr(m, STATUS + slot, 1), __ATOMIC_RELAXED);
}

static uint8_t *data(struct machine *m, unsigned int slot)
{
        return gptr(m, DATA + slot * 65536ULL, 65536);
}

/* The used-ring length of the chain whose head is slot's. */
static uint32_t used_len(struct machine *m, unsigned int slot)
{
        struct vring_used *u = (struct vring_used *)gptr(m, USED, 4 + 8 * QSIZE);
        for (unsigned int i = 0; i < QSIZE; i++)
                if (u->ring[i].id == slot * 3 % QSIZE)
                        return u->ring[i].len;
        return 0;
}

TEST(dev_config_space)
{
        MACHINE(m, false, "sn-1");
        CHECK(rd32(&m, VIRTIO_MMIO_DEVICE_ID) == VIRTIO_ID_BLOCK);
        uint64_t f = device_features(&m);
        CHECK(f & (1ULL << VIRTIO_BLK_F_FLUSH) && f & (1ULL << VIRTIO_BLK_F_MQ) && f & (1ULL << VIRTIO_BLK_F_SEG_MAX));
        CHECK(f & (1ULL << VIRTIO_BLK_F_BLK_SIZE) && f & (1ULL << VIRTIO_BLK_F_SIZE_MAX));
        CHECK(!(f & (1ULL << VIRTIO_BLK_F_RO)));
        uint64_t capacity = rd32(&m, VIRTIO_MMIO_CONFIG) | (uint64_t)rd32(&m, VIRTIO_MMIO_CONFIG + 4) << 32;
        CHECK(capacity == IMAGE_SIZE / 512);
        CHECK(rd32(&m, VIRTIO_MMIO_CONFIG + offsetof(struct virtio_blk_config, seg_max)) == 254);
        CHECK(rd32(&m, VIRTIO_MMIO_CONFIG + offsetof(struct virtio_blk_config, blk_size)) == 512);
        CHECK((rd32(&m, VIRTIO_MMIO_CONFIG + offsetof(struct virtio_blk_config, num_queues)) & 0xffff) == 1);
        if (f & (1ULL << VIRTIO_BLK_F_DISCARD))
                CHECK(rd32(&m, VIRTIO_MMIO_CONFIG + offsetof(struct virtio_blk_config, max_discard_seg)) == 1);
}

TEST(dev_readonly_offers_ro_and_no_discard)
{
        MACHINE(m, true, NULL);
        uint64_t f = device_features(&m);
        CHECK(f & (1ULL << VIRTIO_BLK_F_RO));
        CHECK(!(f & (1ULL << VIRTIO_BLK_F_DISCARD)) && !(f & (1ULL << VIRTIO_BLK_F_WRITE_ZEROES)));
}

TEST(dev_write_read_flush_get_id_and_errors)
{
        MACHINE(m, false, "capsule-serial-1");
        driver_start(&m, 1ULL << VIRTIO_BLK_F_FLUSH);
        for (unsigned int i = 0; i < 1024; i++)
                data(&m, 0)[i] = (uint8_t)(i * 7);
        request(&m, 0, VIRTIO_BLK_T_OUT, 2, 1024);
        kick(&m);
        CHECK(wait_used(&m, 1) && status(&m, 0) == VIRTIO_BLK_S_OK);
        uint8_t file[1024];
        int fd = open(m.image, O_RDONLY | O_CLOEXEC);
        CHECK(fd >= 0 && pread(fd, file, sizeof(file), 1024) == (ssize_t)sizeof(file));
        close(fd);
        CHECK(memcmp(file, data(&m, 0), sizeof(file)) == 0);
        memset(data(&m, 1), 0, 1024);
        request(&m, 1, VIRTIO_BLK_T_IN, 2, 1024);
        request(&m, 2, VIRTIO_BLK_T_FLUSH, 0, 0);
        request(&m, 3, VIRTIO_BLK_T_GET_ID, 0, 20);
        request(&m, 4, 0x42, 0, 0);
        request(&m, 5, VIRTIO_BLK_T_IN, IMAGE_SIZE / 512, 512);
        kick(&m);
        CHECK(wait_used(&m, 6));
        CHECK(status(&m, 1) == VIRTIO_BLK_S_OK && memcmp(data(&m, 1), file, sizeof(file)) == 0);
        CHECK(used_len(&m, 1) == 1025);
        CHECK(status(&m, 2) == VIRTIO_BLK_S_OK);
        CHECK(status(&m, 3) == VIRTIO_BLK_S_OK && memcmp(data(&m, 3), "capsule-serial-1\0\0\0\0", 20) == 0);
        CHECK(status(&m, 4) == VIRTIO_BLK_S_UNSUPP && used_len(&m, 4) == 1);
        CHECK(status(&m, 5) == VIRTIO_BLK_S_IOERR);
        CHECK(!(rd32(&m, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET));
}

TEST(dev_readonly_write_fails_image_unchanged)
{
        MACHINE(m, true, NULL);
        driver_start(&m, 1ULL << VIRTIO_BLK_F_RO);
        memset(data(&m, 0), 0x77, 512);
        request(&m, 0, VIRTIO_BLK_T_OUT, 0, 512);
        request(&m, 1, VIRTIO_BLK_T_IN, 0, 512);
        kick(&m);
        CHECK(wait_used(&m, 2));
        CHECK(status(&m, 0) == VIRTIO_BLK_S_IOERR);
        CHECK(status(&m, 1) == VIRTIO_BLK_S_OK && data(&m, 1)[0] == 0 && data(&m, 1)[511] == 0);
}

TEST(dev_chain_without_status_needs_reset)
{
        MACHINE(m, false, NULL);
        driver_start(&m, 0);
        request(&m, 0, VIRTIO_BLK_T_OUT, 0, 512);
        /* The status descriptor becomes readable: nothing in the chain is writable. */
        struct vring_desc *d = (struct vring_desc *)gptr(&m, DESC, QSIZE * sizeof(*d));
        d[2].flags = 0;
        kick(&m);
        for (int i = 0; i < 5000 && !(rd32(&m, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET); i++)
                usleep(1000);
        CHECK(rd32(&m, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET);
        CHECK(used_idx(&m) == 0 && status(&m, 0) == 0xff);
        /* A reset brings it back. */
        driver_start(&m, 0);
        request(&m, 0, VIRTIO_BLK_T_IN, 0, 512);
        kick(&m);
        CHECK(wait_used(&m, 1) && status(&m, 0) == VIRTIO_BLK_S_OK);
}

TEST(dev_reset_with_requests_in_flight)
{
        /* Nothing reaches guest memory once the reset returned: statuses, data and the used
         * ring stay as they were then. */
        MACHINE(m, false, NULL);
        driver_start(&m, 0);
        for (unsigned int s = 0; s < 16; s++) {
                memset(data(&m, s), 0xee, 65536);
                request(&m, s, VIRTIO_BLK_T_IN, s * 128, 65536);
        }
        kick(&m);
        wr32(&m, VIRTIO_MMIO_STATUS, 0);
        CHECK(rd32(&m, VIRTIO_MMIO_STATUS) == 0);
        uint16_t used = used_idx(&m);
        static uint8_t snap[16][65536];
        uint8_t st[16];
        for (unsigned int s = 0; s < 16; s++) {
                memcpy(snap[s], data(&m, s), 65536);
                st[s] = status(&m, s);
        }
        usleep(200 * 1000);
        CHECK(used_idx(&m) == used);
        for (unsigned int s = 0; s < 16; s++)
                CHECK(status(&m, s) == st[s] && memcmp(snap[s], data(&m, s), 65536) == 0);
}

TEST(dev_more_requests_than_the_queue_holds)
{
        /* 3 * QSIZE requests through a QSIZE-entry ring, refilled as chains come back: every
         * one completes, whatever the order. */
        MACHINE(m, false, NULL);
        driver_start(&m, 0);
        unsigned int done = 0, queued = 0;
        const unsigned int total = 3 * QSIZE, per_round = QSIZE / 3;
        for (int round = 0; done < total && round < 1000; round++) {
                while (queued < total && queued - done < per_round) {
                        unsigned int slot = queued % per_round;
                        request(&m, slot, VIRTIO_BLK_T_IN, queued % 64, 512);
                        queued++;
                }
                kick(&m);
                CHECK(wait_used(&m, (uint16_t)queued));
                done = queued;
        }
        CHECK(done == total && used_idx(&m) == total);
}

TEST(dev_in_flight_bounded_by_the_queue_size)
{
        /* A hostile driver makes the same chain available again and again: the device takes
         * at most QSIZE at once, waits for slots, and answers every one. */
        MACHINE(m, false, NULL);
        driver_start(&m, 0);
        request(&m, 0, VIRTIO_BLK_T_IN, 0, 4096);
        struct vring_avail *a = (struct vring_avail *)gptr(&m, AVAIL, 4 + 2 * QSIZE);
        for (unsigned int round = 0; round < 3; round++) {
                for (unsigned int k = 0; k < QSIZE - (round == 0); k++) {
                        a->ring[m.avail_idx % QSIZE] = 0;
                        __atomic_store_n(&a->idx, ++m.avail_idx, __ATOMIC_RELEASE);
                }
                kick(&m);
                CHECK(wait_used(&m, (uint16_t)((round + 1) * QSIZE)));
        }
        CHECK(status(&m, 0) == VIRTIO_BLK_S_OK);
        CHECK(!(rd32(&m, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET));
}

static off_t image_size(struct machine *m)
{
        struct stat st;
        return stat(m->image, &st) == 0 ? st.st_size : -1;
}

TEST(blk_capacity_written_by_the_driver_does_not_widen_the_disk)
{
        /* The driver writes a huge capacity into the (read-only) config space, resets and
         * sets the device up again, then writes and reads past the image's end. */
        MACHINE(m, false, NULL);
        wr32(&m, VIRTIO_MMIO_CONFIG + offsetof(struct virtio_blk_config, capacity), 0xffffffff);
        wr32(&m, VIRTIO_MMIO_CONFIG + offsetof(struct virtio_blk_config, capacity) + 4, 0x003fffff);
        driver_start(&m, 0);
        memset(data(&m, 0), 0x5a, 4096);
        request(&m, 0, VIRTIO_BLK_T_OUT, (1ULL << 40) / 512, 4096);
        kick(&m);
        CHECK(wait_used(&m, 1));
        CHECK(status(&m, 0) == VIRTIO_BLK_S_IOERR);
        CHECK(image_size(&m) == IMAGE_SIZE);
        request(&m, 1, VIRTIO_BLK_T_IN, IMAGE_SIZE / 512, 512);
        kick(&m);
        CHECK(wait_used(&m, 2));
        CHECK(status(&m, 1) == VIRTIO_BLK_S_IOERR);
        /* The disk itself still works. */
        request(&m, 2, VIRTIO_BLK_T_IN, IMAGE_SIZE / 512 - 1, 512);
        kick(&m);
        CHECK(wait_used(&m, 3));
        CHECK(status(&m, 2) == VIRTIO_BLK_S_OK);
        CHECK(!(rd32(&m, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET));
}

/* Lines of what fn wrote to stderr. */
static int stderr_lines(void (*fn)(struct machine *), struct machine *m)
{
        char path[] = "/tmp/capsule-blk-dev-log.XXXXXX";
        int fd = mkstemp(path);
        if (fd < 0)
                return -1;
        unlink(path);
        int saved = dup(STDERR_FILENO);
        dup2(fd, STDERR_FILENO);
        fn(m);
        dup2(saved, STDERR_FILENO);
        close(saved);
        char buf[65536];
        ssize_t n = pread(fd, buf, sizeof(buf), 0);
        close(fd);
        int lines = 0;
        for (ssize_t i = 0; i < n; i++)
                lines += buf[i] == '\n';
        return lines;
}

/* A thousand rounds of: set the device up with a misaligned descriptor table (the
 * device needs a reset), and reset it. */
static void fail_and_reset_storm(struct machine *m)
{
        for (int i = 0; i < 1000; i++) {
                driver_setup(m, 0, DESC + 8);
                if (!(rd32(m, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET))
                        return;
        }
}

TEST(device_failures_the_guest_repeats_are_not_logged_each_time)
{
        MACHINE(m, false, NULL);
        int lines = stderr_lines(fail_and_reset_storm, &m);
        CHECK(rd32(&m, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET);
        CHECK(lines >= 1 && lines <= 10);
        /* And the device still comes back after a reset. */
        driver_start(&m, 0);
        request(&m, 0, VIRTIO_BLK_T_IN, 0, 512);
        kick(&m);
        CHECK(wait_used(&m, 1) && status(&m, 0) == VIRTIO_BLK_S_OK);
}

/* A Linux-like driver that kicks only when the device asks (the used ring's NO_NOTIFY flag,
 * or avail_event with EVENT_IDX), adding reads while others are in flight, as fio at queue
 * depth 16 does. The device turns kicks off while reads are in flight and takes what came
 * without a kick at their completions: no request may wait for ever (each wait is bounded),
 * with or without EVENT_IDX. */
static void driver_kicks_when_asked(bool event_idx, unsigned int *kicks, unsigned int *done, bool *stalled)
{
        MACHINE(m, false, NULL);
        driver_start(&m, event_idx ? 1ULL << VIRTIO_RING_F_EVENT_IDX : 0);
        struct vring_used *u = (struct vring_used *)gptr(&m, USED, 4 + 8 * QSIZE + 2);
        uint16_t *avail_event = (uint16_t *)&u->ring[QSIZE];
        enum { SLOTS = 16, TOTAL = 3000 };
        unsigned int free_slots[SLOTS], n_free = SLOTS;
        for (unsigned int i = 0; i < SLOTS; i++)
                free_slots[i] = i;
        uint16_t last_used = 0;
        srand(11);
        *kicks = *done = 0;
        *stalled = false;
        while (*done < TOTAL && !*stalled) {
                if (n_free > 0) {
                        uint16_t old = m.avail_idx;
                        for (unsigned int n = 1 + (unsigned int)rand() % n_free; n > 0; n--)
                                request(&m, free_slots[--n_free], VIRTIO_BLK_T_IN,
                                        (uint64_t)rand() % (IMAGE_SIZE / 512 - 8), 4096);
                        __atomic_thread_fence(__ATOMIC_SEQ_CST);
                        bool ask = event_idx ? vring_need_event(le16toh(__atomic_load_n(avail_event, __ATOMIC_RELAXED)),
                                                                m.avail_idx, old)
                                             : !(le16toh(__atomic_load_n(&u->flags, __ATOMIC_RELAXED)) &
                                                 VRING_USED_F_NO_NOTIFY);
                        if (ask) {
                                kick(&m);
                                (*kicks)++;
                        }
                }
                /* Reap; with every slot busy or by chance, wait (bounded) for the next one. */
                bool wait = n_free == 0 || rand() % 2;
                for (int i = 0; wait && used_idx(&m) == last_used && i < 5000; i++)
                        usleep(1000);
                if (wait && used_idx(&m) == last_used)
                        *stalled = true;
                for (uint16_t ui = used_idx(&m); last_used != ui; last_used++) {
                        uint32_t id = le32toh(u->ring[last_used % QSIZE].id);
                        unsigned int slot = 0;
                        while (slot < SLOTS && slot * 3 % QSIZE != id)
                                slot++;
                        if (slot == SLOTS || status(&m, slot) != VIRTIO_BLK_S_OK)
                                *stalled = true;
                        else
                                free_slots[n_free++] = slot;
                        (*done)++;
                }
        }
}

TEST(dev_driver_that_kicks_only_when_asked_never_waits_for_ever)
{
        for (int event_idx = 0; event_idx < 2; event_idx++) {
                unsigned int kicks, done;
                bool stalled;
                driver_kicks_when_asked(event_idx, &kicks, &done, &stalled);
                CHECK(!stalled && done >= 3000 && kicks > 0);
        }
}
