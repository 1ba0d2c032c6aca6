/* Block-device requests busybox cannot make, for tests/guest/blk.sh:
 *   blktool zeroout DEV OFFSET LEN     BLKZEROOUT (virtio-blk's WRITE_ZEROES)
 *   blktool direct DEV OFFSET LEN SHIFT BYTE
 *       write LEN bytes of BYTE at OFFSET with O_DIRECT from a buffer SHIFT bytes
 *       past a page boundary, read them back the same way and compare: with SHIFT
 *       512 the host sees buffers that O_DIRECT there may refuse.
 * Prints "ok" or the failing step and exits non-zero. */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static int fail(const char *what)
{
        printf("%s: %s\n", what, strerror(errno));
        return 1;
}

static int zeroout(const char *dev, uint64_t offset, uint64_t len)
{
        int fd = open(dev, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
                return fail("open");
        uint64_t range[2] = { offset, len };
        if (ioctl(fd, BLKZEROOUT, range) < 0)
                return fail("BLKZEROOUT");
        close(fd);
        printf("ok\n");
        return 0;
}

static int direct(const char *dev, uint64_t offset, size_t len, size_t shift, int byte)
{
        uint8_t *mem;
        if (posix_memalign((void **)&mem, 4096, len + shift + 4096) != 0)
                return fail("posix_memalign");
        uint8_t *buf = mem + shift;
        int fd = open(dev, O_RDWR | O_DIRECT | O_CLOEXEC);
        if (fd < 0)
                return fail("open");
        memset(buf, byte, len);
        if (pwrite(fd, buf, len, (off_t)offset) != (ssize_t)len)
                return fail("pwrite");
        memset(buf, ~byte, len);
        if (pread(fd, buf, len, (off_t)offset) != (ssize_t)len)
                return fail("pread");
        for (size_t i = 0; i < len; i++)
                if (buf[i] != (uint8_t)byte) {
                        printf("byte %zu reads back %#x\n", i, buf[i]);
                        return 1;
                }
        close(fd);
        printf("ok\n");
        return 0;
}

int main(int argc, char **argv)
{
        if (argc == 5 && strcmp(argv[1], "zeroout") == 0)
                return zeroout(argv[2], strtoull(argv[3], NULL, 0), strtoull(argv[4], NULL, 0));
        if (argc == 7 && strcmp(argv[1], "direct") == 0)
                return direct(argv[2], strtoull(argv[3], NULL, 0), strtoull(argv[4], NULL, 0),
                              strtoull(argv[5], NULL, 0), (int)strtol(argv[6], NULL, 0));
        fprintf(stderr, "usage: blktool zeroout DEV OFFSET LEN | direct DEV OFFSET LEN SHIFT BYTE\n");
        return 2;
}
