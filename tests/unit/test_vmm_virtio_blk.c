/* virtio-blk's request parser (src/vmm/virtio/blk_req.c): every request type, and
 * each way a chain can be malformed, over chains built by hand as the virtqueue
 * hands them over (readable buffers first). Then its io_uring backend
 * (src/vmm/virtio/blk_io.c) on an image file: each operation, short transfers,
 * O_DIRECT's unaligned requests, draining, and the errors that name the setting. */
#include <endian.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "common/util.h"
#include "vmm/virtio/blk.h"

#define CAPACITY 64 /* sectors */

static struct virtq_chain chain;
static uint8_t buf[8192];
static size_t buf_used;
static struct iovec iov[VIRTQ_MAX_SIZE];
static struct blk_req req;
static struct blk_limits lim;

static void setup(void)
{
        memset(&chain, 0, sizeof(chain));
        memset(buf, 0xaa, sizeof(buf));
        buf_used = 0;
        lim = (struct blk_limits){ .capacity = CAPACITY, .discard = true, .write_zeroes = true,
                                   .max_discard_sectors = 16, .max_write_zeroes_sectors = 16 };
}

/* Append a buffer of len bytes (from buf) to the chain; returns it. */
static uint8_t *add(size_t len, bool writable)
{
        uint8_t *p = buf + buf_used;
        buf_used += len;
        struct iovec *v = &chain.iov[chain.n_out + chain.n_in];
        v->iov_base = p;
        v->iov_len = len;
        if (writable) {
                chain.n_in++;
                chain.in_len += (uint32_t)len;
        } else {
                chain.n_out++;
                chain.out_len += (uint32_t)len;
        }
        return p;
}

static void put_hdr(uint8_t *p, uint32_t type, uint64_t sector)
{
        struct virtio_blk_outhdr h = { .type = htole32(type), .sector = htole64(sector) };
        memcpy(p, &h, sizeof(h));
}

static uint8_t *add_hdr(uint32_t type, uint64_t sector)
{
        uint8_t *p = add(sizeof(struct virtio_blk_outhdr), false);
        put_hdr(p, type, sector);
        return p;
}

static void add_range(uint64_t sector, uint32_t sectors, uint32_t flags)
{
        struct virtio_blk_discard_write_zeroes r = { .sector = htole64(sector), .num_sectors = htole32(sectors),
                                                     .flags = htole32(flags) };
        memcpy(add(sizeof(r), false), &r, sizeof(r));
}

static int parse(void)
{
        return blk_req_parse(&chain, &lim, iov, VIRTQ_MAX_SIZE, &req);
}

/* The status byte appended last, the request must be answered with status in it and nothing else. */
static bool status_added_and_answered(uint8_t status)
{
        const uint8_t *status_byte = add(1, true);
        return parse() == 0 && req.status == status && req.status_byte == status_byte && req.niov == 0 && req.len == 0;
}

TEST(read_two_buffers)
{
        setup();
        add_hdr(VIRTIO_BLK_T_IN, 3);
        uint8_t *a = add(512, true), *b = add(1024, true), *st = add(1, true);
        CHECK(parse() == 0);
        CHECK(req.status == VIRTIO_BLK_S_OK && req.op == BLK_OP_READ);
        CHECK(req.offset == 3 * 512 && req.len == 1536);
        CHECK(req.niov == 2 && req.iov == iov);
        CHECK(iov[0].iov_base == a && iov[0].iov_len == 512 && iov[1].iov_base == b && iov[1].iov_len == 1024);
        CHECK(req.status_byte == st);
}

TEST(read_status_shares_the_last_buffer)
{
        setup();
        add_hdr(VIRTIO_BLK_T_IN, 0);
        uint8_t *a = add(513, true);
        CHECK(parse() == 0 && req.status == VIRTIO_BLK_S_OK);
        CHECK(req.niov == 1 && iov[0].iov_base == a && iov[0].iov_len == 512 && req.len == 512);
        CHECK(req.status_byte == a + 512);
}

TEST(read_last_sector_and_empty_read_at_the_end)
{
        setup();
        add_hdr(VIRTIO_BLK_T_IN, CAPACITY - 1);
        add(512, true);
        add(1, true);
        CHECK(parse() == 0 && req.status == VIRTIO_BLK_S_OK && req.offset == (CAPACITY - 1) * 512);
        setup();
        add_hdr(VIRTIO_BLK_T_IN, CAPACITY);
        add(1, true);
        CHECK(parse() == 0 && req.status == VIRTIO_BLK_S_OK && req.len == 0 && req.niov == 0);
}

TEST(read_past_the_end)
{
        setup();
        add_hdr(VIRTIO_BLK_T_IN, CAPACITY - 1);
        add(1024, true);
        CHECK(status_added_and_answered(VIRTIO_BLK_S_IOERR));
        setup();
        add_hdr(VIRTIO_BLK_T_IN, CAPACITY + 1);
        CHECK(status_added_and_answered(VIRTIO_BLK_S_IOERR));
}

TEST(read_sector_overflow)
{
        setup();
        lim.capacity = UINT64_MAX;
        add_hdr(VIRTIO_BLK_T_IN, UINT64_MAX - 1);
        add(1024, true);
        CHECK(status_added_and_answered(VIRTIO_BLK_S_IOERR));
        setup();
        add_hdr(VIRTIO_BLK_T_IN, UINT64_MAX);
        add(512, true);
        CHECK(status_added_and_answered(VIRTIO_BLK_S_IOERR));
}

TEST(read_not_whole_sectors)
{
        setup();
        add_hdr(VIRTIO_BLK_T_IN, 0);
        add(500, true);
        CHECK(status_added_and_answered(VIRTIO_BLK_S_IOERR));
}

TEST(read_with_readable_data)
{
        setup();
        add_hdr(VIRTIO_BLK_T_IN, 0);
        add(512, false);
        add(512, true);
        CHECK(status_added_and_answered(VIRTIO_BLK_S_IOERR));
}

TEST(read_too_many_buffers_for_the_array)
{
        setup();
        add_hdr(VIRTIO_BLK_T_IN, 0);
        add(512, true);
        add(512, true);
        uint8_t *st = add(1, true);
        CHECK(blk_req_parse(&chain, &lim, iov, 1, &req) == 0);
        CHECK(req.status == VIRTIO_BLK_S_IOERR && req.status_byte == st && req.niov == 0);
}

TEST(write_header_split_and_shared_with_data)
{
        setup();
        uint8_t *h1 = add(8, false), *h2 = add(520, false);
        uint8_t hdr[16];
        put_hdr(hdr, VIRTIO_BLK_T_OUT, 5);
        memcpy(h1, hdr, 8);
        memcpy(h2, hdr + 8, 8);
        uint8_t *d = add(512, false), *st = add(1, true);
        CHECK(parse() == 0 && req.status == VIRTIO_BLK_S_OK && req.op == BLK_OP_WRITE);
        CHECK(req.offset == 5 * 512 && req.len == 1024 && req.niov == 2);
        CHECK(iov[0].iov_base == h2 + 8 && iov[0].iov_len == 512 && iov[1].iov_base == d && iov[1].iov_len == 512);
        CHECK(req.status_byte == st);
}

TEST(write_readonly)
{
        setup();
        lim.readonly = true;
        add_hdr(VIRTIO_BLK_T_OUT, 0);
        add(512, false);
        CHECK(status_added_and_answered(VIRTIO_BLK_S_IOERR));
}

TEST(write_with_writable_data)
{
        setup();
        add_hdr(VIRTIO_BLK_T_OUT, 0);
        add(512, false);
        add(512, true);
        CHECK(status_added_and_answered(VIRTIO_BLK_S_IOERR));
}

TEST(write_past_the_end_and_partial_sector)
{
        setup();
        add_hdr(VIRTIO_BLK_T_OUT, CAPACITY);
        add(512, false);
        CHECK(status_added_and_answered(VIRTIO_BLK_S_IOERR));
        setup();
        add_hdr(VIRTIO_BLK_T_OUT, 0);
        add(511, false);
        CHECK(status_added_and_answered(VIRTIO_BLK_S_IOERR));
}

TEST(flush)
{
        setup();
        add_hdr(VIRTIO_BLK_T_FLUSH, 0);
        uint8_t *st = add(1, true);
        CHECK(parse() == 0 && req.status == VIRTIO_BLK_S_OK && req.op == BLK_OP_FLUSH && req.status_byte == st);
        CHECK(req.niov == 0);
}

TEST(flush_on_a_readonly_disk)
{
        setup();
        lim.readonly = true;
        add_hdr(VIRTIO_BLK_T_FLUSH, 0);
        add(1, true);
        CHECK(parse() == 0 && req.status == VIRTIO_BLK_S_OK && req.op == BLK_OP_FLUSH);
}

TEST(get_id_sizes)
{
        static const uint32_t sizes[] = { 20, 64, 7 };
        for (unsigned int i = 0; i < 3; i++) {
                setup();
                add_hdr(VIRTIO_BLK_T_GET_ID, 0);
                uint8_t *id = add(sizes[i], true), *st = add(1, true);
                CHECK(parse() == 0 && req.status == VIRTIO_BLK_S_OK && req.op == BLK_OP_GET_ID);
                uint32_t want = sizes[i] < VIRTIO_BLK_ID_BYTES ? sizes[i] : VIRTIO_BLK_ID_BYTES;
                CHECK(req.len == want && req.niov == 1 && iov[0].iov_base == id && iov[0].iov_len == want);
                CHECK(req.status_byte == st);
        }
}

TEST(get_id_with_readable_data)
{
        setup();
        add_hdr(VIRTIO_BLK_T_GET_ID, 0);
        add(4, false);
        add(20, true);
        CHECK(status_added_and_answered(VIRTIO_BLK_S_IOERR));
}

TEST(discard)
{
        setup();
        add_hdr(VIRTIO_BLK_T_DISCARD, 0);
        add_range(8, 16, 0);
        uint8_t *st = add(1, true);
        CHECK(parse() == 0 && req.status == VIRTIO_BLK_S_OK && req.op == BLK_OP_DISCARD);
        CHECK(req.offset == 8 * 512 && req.len == 16 * 512 && !req.unmap && req.status_byte == st);
}

TEST(discard_flags_unsupported)
{
        static const uint32_t flags[] = { VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP, 2, 0x80000000 };
        for (unsigned int i = 0; i < 3; i++) {
                setup();
                add_hdr(VIRTIO_BLK_T_DISCARD, 0);
                add_range(0, 1, flags[i]);
                CHECK(status_added_and_answered(VIRTIO_BLK_S_UNSUPP));
        }
}

TEST(discard_not_negotiated_or_readonly)
{
        setup();
        lim.discard = false;
        add_hdr(VIRTIO_BLK_T_DISCARD, 0);
        add_range(0, 1, 0);
        CHECK(status_added_and_answered(VIRTIO_BLK_S_UNSUPP));
        setup();
        lim.readonly = true;
        add_hdr(VIRTIO_BLK_T_WRITE_ZEROES, 0);
        add_range(0, 1, 0);
        CHECK(status_added_and_answered(VIRTIO_BLK_S_UNSUPP));
}

TEST(discard_bad_ranges)
{
        /* sector, sectors: past the end, over the limit, overflowing */
        static const uint64_t cases[][2] = { { CAPACITY - 1, 2 }, { 0, 17 }, { UINT64_MAX, 1 }, { CAPACITY + 1, 0 } };
        for (unsigned int i = 0; i < 4; i++) {
                setup();
                add_hdr(VIRTIO_BLK_T_DISCARD, 0);
                add_range(cases[i][0], (uint32_t)cases[i][1], 0);
                CHECK(status_added_and_answered(VIRTIO_BLK_S_IOERR));
        }
}

TEST(discard_segment_count_and_size)
{
        setup();
        add_hdr(VIRTIO_BLK_T_DISCARD, 0);
        add_range(0, 1, 0);
        add_range(2, 1, 0);
        CHECK(status_added_and_answered(VIRTIO_BLK_S_IOERR));
        setup();
        add_hdr(VIRTIO_BLK_T_DISCARD, 0);
        add(8, false);
        CHECK(status_added_and_answered(VIRTIO_BLK_S_IOERR));
        setup();
        add_hdr(VIRTIO_BLK_T_DISCARD, 0);
        add_range(0, 1, 0);
        add(4, true);
        CHECK(status_added_and_answered(VIRTIO_BLK_S_IOERR));
}

TEST(write_zeroes_unmap)
{
        setup();
        add_hdr(VIRTIO_BLK_T_WRITE_ZEROES, 0);
        add_range(CAPACITY - 16, 16, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP);
        add(1, true);
        CHECK(parse() == 0 && req.status == VIRTIO_BLK_S_OK && req.op == BLK_OP_WRITE_ZEROES && req.unmap);
        CHECK(req.offset == (CAPACITY - 16) * 512 && req.len == 16 * 512);
        setup();
        add_hdr(VIRTIO_BLK_T_WRITE_ZEROES, 0);
        add_range(0, 1, 2);
        CHECK(status_added_and_answered(VIRTIO_BLK_S_UNSUPP));
        setup();
        lim.write_zeroes = false;
        add_hdr(VIRTIO_BLK_T_WRITE_ZEROES, 0);
        add_range(0, 1, 0);
        CHECK(status_added_and_answered(VIRTIO_BLK_S_UNSUPP));
}

TEST(unknown_types_unsupported)
{
        static const uint32_t types[] = { 2, 3, 5, 14, 0x80000000, UINT32_MAX };
        for (unsigned int i = 0; i < 6; i++) {
                setup();
                add_hdr(types[i], 0);
                CHECK(status_added_and_answered(VIRTIO_BLK_S_UNSUPP));
        }
}

TEST(short_header)
{
        setup();
        add(8, false);
        CHECK(status_added_and_answered(VIRTIO_BLK_S_IOERR));
        setup();
        CHECK(status_added_and_answered(VIRTIO_BLK_S_IOERR));
}

TEST(no_status_byte)
{
        setup();
        add_hdr(VIRTIO_BLK_T_IN, 0);
        add(512, false);
        CHECK(parse() == -1);
        setup();
        CHECK(parse() == -1);
}

TEST(empty_writable_buffer_is_not_the_status)
{
        setup();
        add_hdr(VIRTIO_BLK_T_FLUSH, 0);
        uint8_t *st = add(1, true);
        add(0, true);
        CHECK(parse() == 0 && req.status_byte == st);
        setup();
        add_hdr(VIRTIO_BLK_T_FLUSH, 0);
        add(0, true);
        CHECK(parse() == -1);
}

TEST(header_read_once_into_the_request)
{
        /* The parsed request does not change when the guest rewrites the header after. */
        setup();
        uint8_t *h = add_hdr(VIRTIO_BLK_T_IN, 1);
        add(512, true);
        add(1, true);
        CHECK(parse() == 0 && req.op == BLK_OP_READ && req.offset == 512);
        put_hdr(h, VIRTIO_BLK_T_OUT, 9);
        CHECK(req.op == BLK_OP_READ && req.offset == 512);
}

/* ---- the io_uring backend ---- */

#define IMAGE_SIZE (1 << 20)

struct image {
        char path[64];
        struct blk_io io;
};

/* A temporary image of IMAGE_SIZE bytes, each byte its offset's low 8 bits. */
static bool image_create(struct image *im, bool readonly, bool direct, cap_error_t *err)
{
        snprintf(im->path, sizeof(im->path), "/tmp/capsule-blk-test.XXXXXX");
        int fd = mkstemp(im->path);
        if (fd < 0)
                return false;
        static uint8_t pattern[IMAGE_SIZE];
        for (size_t i = 0; i < IMAGE_SIZE; i++)
                pattern[i] = (uint8_t)i;
        bool ok = write_all(fd, pattern, IMAGE_SIZE) == 0;
        close(fd);
        return ok && blk_io_open(&im->io, "disk[0]", im->path, readonly, direct, 8, err) == 0;
}

static void image_destroy(struct image *im)
{
        blk_io_close(&im->io);
        unlink(im->path);
}

struct outcome {
        int n;
        uint8_t status;
        struct blk_inflight *r;
};

static void on_done(struct blk_inflight *r, uint8_t status, void *opaque)
{
        struct outcome *o = opaque;
        o->n++;
        o->status = status;
        o->r = r;
}

/* Wait (at most 5 s) until n requests finished; returns how many did. */
static int wait_done(struct blk_io *io, struct outcome *o, int n)
{
        while (o->n < n) {
                struct pollfd p = { .fd = io->event_fd, .events = POLLIN };
                if (poll(&p, 1, 5000) != 1)
                        break;
                blk_io_complete(io, on_done, o);
        }
        return o->n;
}

/* Run one request on the image: its status, or -1 if it did not finish. */
static int run(struct blk_io *io, struct blk_inflight *r)
{
        struct outcome o = { 0 };
        if (blk_io_start(io, r) < 0)
                return -1;
        blk_io_submit(io);
        if (wait_done(io, &o, 1) != 1 || o.r != r)
                return -1;
        return o.status;
}

static struct blk_inflight rw(enum blk_op op, uint64_t offset, struct iovec *v, unsigned int n)
{
        uint64_t len = 0;
        for (unsigned int i = 0; i < n; i++)
                len += v[i].iov_len;
        return (struct blk_inflight){ .req = { .op = op, .offset = offset, .len = len, .iov = v, .niov = n } };
}

static bool file_bytes(const char *path, uint64_t offset, void *out, size_t len)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        bool ok = fd >= 0 && pread(fd, out, len, (off_t)offset) == (ssize_t)len;
        if (fd >= 0)
                close(fd);
        return ok;
}

static bool all(const uint8_t *p, size_t len, uint8_t v)
{
        for (size_t i = 0; i < len; i++)
                if (p[i] != v)
                        return false;
        return true;
}

TEST(io_open_missing_names_the_setting)
{
        struct blk_io io;
        cleanup_error cap_error_t err = NULL;
        CHECK(blk_io_open(&io, "disk[2]", "/nonexistent/x.img", false, false, 8, &err) < 0);
        CHECK_STR(err->msg, "disk[2]: cannot open /nonexistent/x.img: No such file or directory");
        CHECK(io.fd == -1 && io.event_fd == -1 && !io.ring_ready);
}

TEST(io_open_directory)
{
        struct blk_io io;
        cleanup_error cap_error_t err = NULL;
        CHECK(blk_io_open(&io, "disk[0]", "/tmp", true, false, 8, &err) < 0);
        CHECK_STR(err->msg, "disk[0]: /tmp is not a regular file or a block device");
}

TEST(io_image_locked_by_another_disk)
{
        struct image im;
        cleanup_error cap_error_t err = NULL;
        CHECK(image_create(&im, false, false, &err));
        struct blk_io second;
        CHECK(blk_io_open(&second, "disk[1]", im.path, true, false, 8, &err) < 0);
        CHECK(strstr(err->msg, "disk[1]: ") == err->msg && strstr(err->msg, "is in use by another VM or program"));
        image_destroy(&im);
        struct image ro;
        cap_error_free(&err);
        CHECK(image_create(&ro, true, false, &err));
        CHECK(blk_io_open(&second, "disk[1]", ro.path, true, false, 8, &err) == 0);
        blk_io_close(&second);
        image_destroy(&ro);
}

TEST(io_read_write_roundtrip)
{
        struct image im;
        cleanup_error cap_error_t err = NULL;
        CHECK(image_create(&im, false, false, &err));
        CHECK(im.io.size == IMAGE_SIZE && im.io.buffered_fd == -1);
        uint8_t a[512], b[1024];
        memset(a, 0x11, sizeof(a));
        memset(b, 0x22, sizeof(b));
        struct iovec v[2] = { { a, sizeof(a) }, { b, sizeof(b) } };
        struct blk_inflight r = rw(BLK_OP_WRITE, 8192, v, 2);
        CHECK(run(&im.io, &r) == VIRTIO_BLK_S_OK);
        uint8_t got[1536];
        CHECK(file_bytes(im.path, 8192, got, sizeof(got)));
        CHECK(all(got, 512, 0x11) && all(got + 512, 1024, 0x22));
        uint8_t back[1536] = { 0 };
        struct iovec rv[3] = { { back, 100 }, { back + 100, 1000 }, { back + 1100, 436 } };
        r = rw(BLK_OP_READ, 8192, rv, 3);
        CHECK(run(&im.io, &r) == VIRTIO_BLK_S_OK);
        CHECK(memcmp(back, got, sizeof(got)) == 0);
        r = (struct blk_inflight){ .req = { .op = BLK_OP_FLUSH } };
        CHECK(run(&im.io, &r) == VIRTIO_BLK_S_OK);
        image_destroy(&im);
}

TEST(io_short_read_resubmits_then_fails_at_the_end)
{
        /* The image shrinks under the disk: the read gets what is left, tries again for
         * the rest, finds the end and fails. */
        struct image im;
        cleanup_error cap_error_t err = NULL;
        CHECK(image_create(&im, false, false, &err));
        CHECK(truncate(im.path, 4096 + 512) == 0);
        uint8_t buf[1024];
        memset(buf, 0, sizeof(buf));
        struct iovec v = { buf, sizeof(buf) };
        struct blk_inflight r = rw(BLK_OP_READ, 4096, &v, 1);
        CHECK(run(&im.io, &r) == VIRTIO_BLK_S_IOERR);
        CHECK(r.done == 512);
        CHECK(buf[0] == 0 && buf[511] == 0xff);
        image_destroy(&im);
}

TEST(io_discard_and_write_zeroes_read_back_zeros)
{
        struct image im;
        cleanup_error cap_error_t err = NULL;
        CHECK(image_create(&im, false, false, &err));
        if (!im.io.can_punch) {
                image_destroy(&im);
                SKIP("/tmp's file system does not punch holes");
        }
        struct blk_inflight r = { .req = { .op = BLK_OP_DISCARD, .offset = 65536, .len = 65536 } };
        CHECK(run(&im.io, &r) == VIRTIO_BLK_S_OK);
        r = (struct blk_inflight){ .req = { .op = BLK_OP_WRITE_ZEROES, .offset = 4096, .len = 1024 } };
        CHECK(run(&im.io, &r) == VIRTIO_BLK_S_OK);
        r = (struct blk_inflight){ .req = { .op = BLK_OP_WRITE_ZEROES, .offset = 8192, .len = 512, .unmap = true } };
        CHECK(run(&im.io, &r) == VIRTIO_BLK_S_OK && r.punch);
        static uint8_t got[65536];
        CHECK(file_bytes(im.path, 65536, got, sizeof(got)) && all(got, sizeof(got), 0));
        CHECK(file_bytes(im.path, 4096, got, 1025) && all(got, 1024, 0) && got[1024] == 0);
        CHECK(file_bytes(im.path, 4096 + 1024, got, 1) && got[0] == 0);
        CHECK(file_bytes(im.path, 4095, got, 1) && got[0] == 0xff);
        CHECK(file_bytes(im.path, 8192, got, 513) && all(got, 512, 0) && got[512] == 0);
        struct stat st;
        CHECK(stat(im.path, &st) == 0 && st.st_size == IMAGE_SIZE);
        image_destroy(&im);
}

TEST(io_readonly_disk_does_not_punch)
{
        struct image im;
        cleanup_error cap_error_t err = NULL;
        CHECK(image_create(&im, true, false, &err));
        CHECK(!im.io.can_punch);
        CHECK((fcntl(im.io.fd, F_GETFL) & O_ACCMODE) == O_RDONLY);
        image_destroy(&im);
}

TEST(io_direct_aligned_and_unaligned)
{
        struct image im;
        cleanup_error cap_error_t err = NULL;
        if (!image_create(&im, false, true, &err)) {
                bool unsupported = err && err->errnum == EINVAL;
                unlink(im.path);
                if (unsupported)
                        SKIP("/tmp's file system has no O_DIRECT");
                CHECK(false);
        }
        CHECK(im.io.buffered_fd >= 0 && (fcntl(im.io.fd, F_GETFL) & O_DIRECT));
        CHECK(im.io.offset_align >= 512 && im.io.offset_align <= 4096);
        void *aligned;
        CHECK(posix_memalign(&aligned, 4096, 8192) == 0);
        memset(aligned, 0x33, 4096);
        struct iovec v = { aligned, 4096 };
        struct blk_inflight r = rw(BLK_OP_WRITE, 4096, &v, 1);
        CHECK(run(&im.io, &r) == VIRTIO_BLK_S_OK && !r.buffered);
        /* One byte off the alignment: through the page cache, same data. */
        uint8_t *odd = (uint8_t *)aligned + 4096 + 1;
        memset(odd, 0, 2048);
        v = (struct iovec){ odd, 2048 };
        r = rw(BLK_OP_READ, 4096, &v, 1);
        CHECK(run(&im.io, &r) == VIRTIO_BLK_S_OK && r.buffered);
        CHECK(all(odd, 2048, 0x33));
        free(aligned);
        image_destroy(&im);
}

TEST(io_drain_waits_for_everything)
{
        struct image im;
        cleanup_error cap_error_t err = NULL;
        CHECK(image_create(&im, false, false, &err));
        static uint8_t bufs[8][4096];
        struct iovec v[8];
        struct blk_inflight r[8];
        for (int i = 0; i < 8; i++) {
                v[i] = (struct iovec){ bufs[i], sizeof(bufs[i]) };
                r[i] = rw(BLK_OP_READ, (uint64_t)i * 65536, &v[i], 1);
                CHECK(blk_io_start(&im.io, &r[i]) == 0);
        }
        blk_io_submit(&im.io);
        blk_io_drain(&im.io);
        CHECK(im.io.in_kernel == 0);
        struct outcome o = { 0 };
        blk_io_complete(&im.io, on_done, &o);
        CHECK(o.n == 0);
        /* The ring still serves requests afterwards. */
        struct blk_inflight again = rw(BLK_OP_READ, 0, &v[0], 1);
        CHECK(run(&im.io, &again) == VIRTIO_BLK_S_OK && bufs[0][1] == 1);
        image_destroy(&im);
}

TEST(io_several_in_flight)
{
        struct image im;
        cleanup_error cap_error_t err = NULL;
        CHECK(image_create(&im, false, false, &err));
        static uint8_t bufs[8][4096];
        struct iovec v[8];
        struct blk_inflight r[8];
        for (int i = 0; i < 8; i++) {
                v[i] = (struct iovec){ bufs[i], sizeof(bufs[i]) };
                r[i] = rw(BLK_OP_READ, (uint64_t)i * 4096 + 512 * (uint64_t)i, &v[i], 1);
                CHECK(blk_io_start(&im.io, &r[i]) == 0);
        }
        blk_io_submit(&im.io);
        CHECK(im.io.in_kernel == 8);
        struct outcome o = { 0 };
        CHECK(wait_done(&im.io, &o, 8) == 8);
        for (int i = 0; i < 8; i++)
                CHECK(bufs[i][0] == (uint8_t)(512 * i) && bufs[i][4095] == (uint8_t)(512 * i + 4095));
        image_destroy(&im);
}
