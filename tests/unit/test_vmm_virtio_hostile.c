/* Attacks of a hostile guest driver on the virtio layer, each through what a guest
 * controls: register writes on the MMIO transport and guest memory. A virtio-blk disk
 * (an image file, real io_uring and event loop, fake KVM hooks) stands for any device. */
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
#include "common/util.h"
#include "vmm/device.h"
#include "vmm/virtio/virtio.h"
#include "vmm/vm.h"
#include "vmm/x86/layout.h"

#define BASE LAYOUT_MMIO_START
#define QSIZE 16
#define DESC 0x10000ULL
#define AVAIL 0x11000ULL
#define USED 0x12000ULL
#define HDR 0x20000ULL
#define STATUS 0x21000ULL
#define DATA 0x30000ULL
#define IMAGE_SIZE (1 << 20)

struct fake_kvm {
        int irq_fd;
};

struct machine {
        struct bus pio, mmio;
        struct evloop loop;
        struct guest_mem mem;
        struct vm_disk disk;
        struct vm_config cfg;
        struct vm_devices ctx;
        struct fake_kvm kvm;
        char image[64];
        bool up, mem_up, loop_up;
        uint16_t avail_idx;
};

static int fake_irq_line(void *vm, uint32_t gsi, int level)
{
        (void)vm, (void)gsi, (void)level;
        return 0;
}

static void fake_request_exit(void *vm, int reason, int status)
{
        (void)vm, (void)reason, (void)status;
}

static int fake_irqfd(void *vm, int fd, uint32_t gsi, bool assign, cap_error_t *err)
{
        (void)gsi, (void)err;
        if (assign)
                ((struct fake_kvm *)vm)->irq_fd = fd;
        return 0;
}

/* No ioeventfds: every kick comes through the QueueNotify register. */
static int fake_ioeventfd_match(void *vm, int fd, uint64_t addr, uint32_t len, bool pio, uint64_t data, bool assign,
                                cap_error_t *err)
{
        (void)vm, (void)fd, (void)addr, (void)len, (void)pio, (void)data, (void)assign, (void)err;
        return 0;
}

static void fake_cmdline_append(void *vm, const char *text)
{
        (void)vm, (void)text;
}

static int machine_start(struct machine *m, cap_error_t *err)
{
        memset(m, 0, sizeof(*m));
        snprintf(m->image, sizeof(m->image), "/tmp/capsule-hostile.XXXXXX");
        int fd = mkstemp(m->image);
        if (fd < 0 || ftruncate(fd, IMAGE_SIZE) < 0)
                return cap_fail(err, errno, "image");
        close(fd);
        bus_init(&m->pio);
        bus_init(&m->mmio);
        if (evloop_init(&m->loop, err) < 0)
                return -1;
        m->loop_up = true;
        if (guest_mem_init(&m->mem, 16ULL << 20, false, err) < 0)
                return -1;
        m->mem_up = true;
        m->disk = (struct vm_disk){ .path = m->image, .queues = 1 };
        m->cfg = (struct vm_config){ .console = VM_CONSOLE_FILE, .console_path = "/dev/null",
                                     .virtio_transport = VM_VIRTIO_MMIO, .disks = &m->disk, .n_disks = 1 };
        m->ctx = (struct vm_devices){ .pio = &m->pio, .mmio = &m->mmio, .mem = &m->mem, .loop = &m->loop,
                                      .config = &m->cfg, .irq_line = fake_irq_line, .irqfd = fake_irqfd,
                                      .ioeventfd_match = fake_ioeventfd_match, .cmdline_append = fake_cmdline_append,
                                      .request_exit = fake_request_exit, .vm = &m->kvm };
        if (devices_init(&m->ctx, err) < 0)
                return -1;
        m->up = true;
        return evloop_start(&m->loop, err);
}

static void machine_stop(struct machine *m)
{
        if (m->loop_up)
                evloop_stop(&m->loop);
        if (m->up)
                devices_exit(&m->ctx);
        if (m->loop_up)
                evloop_destroy(&m->loop);
        if (m->mem_up)
                guest_mem_destroy(&m->mem);
        unlink(m->image);
}

#define MACHINE(m)                                                                         \
        struct machine m __attribute__((cleanup(machine_stop)));                           \
        do {                                                                               \
                cleanup_error cap_error_t _err = NULL;                                     \
                int _r = machine_start(&m, &_err);                                         \
                if (_r < 0)                                                                \
                        fprintf(stderr, "machine_start: %s\n", _err ? _err->msg : "?");    \
                CHECK(_r == 0);                                                            \
        } while (0)

static uint32_t rd32(struct machine *m, uint64_t off)
{
        uint8_t b[4] = { 0 };
        bus_dispatch(&m->mmio, BASE + off, b, 4, false);
        return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static void wr32(struct machine *m, uint64_t off, uint32_t v)
{
        uint8_t b[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24) };
        bus_dispatch(&m->mmio, BASE + off, b, 4, true);
}

#define FOK (VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK)

/* Reset, negotiate VERSION_1 only and set up queue 0 with its descriptor table at desc. */
static void driver_setup(struct machine *m, uint64_t desc)
{
        wr32(m, VIRTIO_MMIO_STATUS, 0);
        wr32(m, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
        wr32(m, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
        wr32(m, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        wr32(m, VIRTIO_MMIO_DRIVER_FEATURES, 1u << (VIRTIO_F_VERSION_1 - 32));
        wr32(m, VIRTIO_MMIO_STATUS, FOK);
        wr32(m, VIRTIO_MMIO_QUEUE_SEL, 0);
        wr32(m, VIRTIO_MMIO_QUEUE_NUM, QSIZE);
        wr32(m, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)desc);
        wr32(m, VIRTIO_MMIO_QUEUE_DESC_HIGH, (uint32_t)(desc >> 32));
        wr32(m, VIRTIO_MMIO_QUEUE_AVAIL_LOW, (uint32_t)AVAIL);
        wr32(m, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, 0);
        wr32(m, VIRTIO_MMIO_QUEUE_USED_LOW, (uint32_t)USED);
        wr32(m, VIRTIO_MMIO_QUEUE_USED_HIGH, 0);
        wr32(m, VIRTIO_MMIO_QUEUE_READY, 1);
        m->avail_idx = 0;
}

static uint8_t *gptr(struct machine *m, uint64_t gpa, uint64_t len)
{
        return guest_mem_ptr(&m->mem, gpa, len);
}

/* One request (header, len bytes at DATA, status), published and kicked. */
static void request(struct machine *m, uint32_t type, uint64_t sector, uint32_t len)
{
        struct virtio_blk_outhdr h = { .type = htole32(type), .sector = htole64(sector) };
        memcpy(gptr(m, HDR, 16), &h, 16);
        *gptr(m, STATUS, 1) = 0xff;
        bool in = type == VIRTIO_BLK_T_IN;
        struct vring_desc *d = (struct vring_desc *)gptr(m, DESC, QSIZE * sizeof(*d));
        d[0] = (struct vring_desc){ .addr = HDR, .len = 16, .flags = VRING_DESC_F_NEXT, .next = 1 };
        d[1] = (struct vring_desc){ .addr = DATA, .len = len, .flags = VRING_DESC_F_NEXT | (in ? VRING_DESC_F_WRITE : 0),
                                    .next = 2 };
        d[2] = (struct vring_desc){ .addr = STATUS, .len = 1, .flags = VRING_DESC_F_WRITE };
        struct vring_avail *a = (struct vring_avail *)gptr(m, AVAIL, 4 + 2 * QSIZE);
        a->ring[m->avail_idx % QSIZE] = 0;
        __atomic_store_n(&a->idx, ++m->avail_idx, __ATOMIC_RELEASE);
        wr32(m, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
}

static uint16_t used_idx(struct machine *m)
{
        struct vring_used *u = (struct vring_used *)gptr(m, USED, 4 + 8 * QSIZE);
        return __atomic_load_n(&u->idx, __ATOMIC_ACQUIRE);
}

static bool wait_used(struct machine *m, uint16_t n)
{
        for (int i = 0; i < 5000 && used_idx(m) != n; i++)
                usleep(1000);
        return used_idx(m) == n;
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
        MACHINE(m);
        wr32(&m, VIRTIO_MMIO_CONFIG + offsetof(struct virtio_blk_config, capacity), 0xffffffff);
        wr32(&m, VIRTIO_MMIO_CONFIG + offsetof(struct virtio_blk_config, capacity) + 4, 0x003fffff);
        driver_setup(&m, DESC);
        wr32(&m, VIRTIO_MMIO_STATUS, FOK | VIRTIO_CONFIG_S_DRIVER_OK);
        memset(gptr(&m, DATA, 4096), 0x5a, 4096);
        request(&m, VIRTIO_BLK_T_OUT, (1ULL << 40) / 512, 4096);
        CHECK(wait_used(&m, 1));
        CHECK(*gptr(&m, STATUS, 1) == VIRTIO_BLK_S_IOERR);
        CHECK(image_size(&m) == IMAGE_SIZE);
        request(&m, VIRTIO_BLK_T_IN, IMAGE_SIZE / 512, 512);
        CHECK(wait_used(&m, 2));
        CHECK(*gptr(&m, STATUS, 1) == VIRTIO_BLK_S_IOERR);
        /* The disk itself still works. */
        request(&m, VIRTIO_BLK_T_IN, IMAGE_SIZE / 512 - 1, 512);
        CHECK(wait_used(&m, 3));
        CHECK(*gptr(&m, STATUS, 1) == VIRTIO_BLK_S_OK);
        CHECK(!(rd32(&m, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET));
}

/* Lines of what fn wrote to stderr. */
static int stderr_lines(void (*fn)(struct machine *), struct machine *m)
{
        char path[] = "/tmp/capsule-hostile-log.XXXXXX";
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
                driver_setup(m, DESC + 8);
                if (!(rd32(m, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET))
                        return;
        }
}

TEST(device_failures_the_guest_repeats_are_not_logged_each_time)
{
        MACHINE(m);
        int lines = stderr_lines(fail_and_reset_storm, &m);
        CHECK(rd32(&m, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET);
        CHECK(lines >= 1 && lines <= 10);
        /* And the device still comes back after a reset. */
        driver_setup(&m, DESC);
        wr32(&m, VIRTIO_MMIO_STATUS, FOK | VIRTIO_CONFIG_S_DRIVER_OK);
        request(&m, VIRTIO_BLK_T_IN, 0, 512);
        CHECK(wait_used(&m, 1) && *gptr(&m, STATUS, 1) == VIRTIO_BLK_S_OK);
}
