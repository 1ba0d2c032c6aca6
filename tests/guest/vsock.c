/* Guest side of the vsock tests (tests/testbed/test_virtio_vsock.py), static in the guest's /bin.
 *   vsock listen PORT               echo server: returns once listening, serves in the background
 *   vsock sink PORT                 background server: reads each connection to EOF, answers
 *                                   "<bytes> <crc32>\n" and closes
 *   vsock wait PORT                 accept one connection and read it to EOF
 *   vsock echo CID PORT BYTES SEED  send BYTES of the pattern, half-close, read the echo to EOF;
 *                                   prints "bytes=N crc=X" of what came back
 *   vsock send CID PORT BYTES SEED  send BYTES of the pattern, half-close, print "reply=<line>"
 *   vsock push CID PORT BYTES SEED  send BYTES of the pattern and close at once, lingering until
 *                                   the host side acknowledged the close (its RST): prints
 *                                   "pushed=N"; what happens to the bytes after is the VMM's
 *   vsock many CID PORT N BYTES     N echo connections at once (seeds 0..N-1), each checked
 *                                   against the pattern's crc: prints "ok=K of N"
 * A failed connect prints "error=<errno name>". The pattern (also in the test) is byte
 * j % 65521 of a block whose byte k is (k * 131 + seed * 7) % 251: a prime period, so a lost
 * or repeated packet shows in the checksum. */
#include <errno.h>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define BLOCK 65521

static uint32_t crc_table[256];

static void crc_init(void)
{
        for (uint32_t i = 0; i < 256; i++) {
                uint32_t c = i;
                for (int k = 0; k < 8; k++)
                        c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
                crc_table[i] = c;
        }
}

/* zlib's crc32: start with 0, feed the previous value back in. */
static uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n)
{
        crc = ~crc;
        while (n--)
                crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
        return ~crc;
}

static void pattern_block(uint8_t *block, unsigned long seed)
{
        for (unsigned long k = 0; k < BLOCK; k++)
                block[k] = (uint8_t)((k * 131 + seed * 7) % 251);
}

static const char *errno_name(int e)
{
        switch (e) {
        case ECONNRESET: return "ECONNRESET";
        case ECONNREFUSED: return "ECONNREFUSED";
        case ETIMEDOUT: return "ETIMEDOUT";
        case ENODEV: return "ENODEV";
        default: return strerror(e);
        }
}

static int vsock_connect(unsigned long cid, unsigned long port)
{
        int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_vm sa = { .svm_family = AF_VSOCK, .svm_cid = (unsigned int)cid, .svm_port = (unsigned int)port };
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                printf("error=%s\n", errno_name(errno));
                return -1;
        }
        return fd;
}

static int vsock_listen(unsigned long port)
{
        int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_vm sa = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = (unsigned int)port };
        if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 128) < 0) {
                printf("error=%s\n", errno_name(errno));
                return -1;
        }
        return fd;
}

/* Send bytes of the pattern and read back to EOF at the same time; got and crc: what came back. */
static int exchange(int fd, unsigned long bytes, unsigned long seed, unsigned long *got, uint32_t *crc)
{
        static uint8_t block[BLOCK], in[65536];
        pattern_block(block, seed);
        unsigned long sent = 0;
        *got = 0;
        *crc = 0;
        if (bytes == 0)
                shutdown(fd, SHUT_WR);
        fcntl(fd, F_SETFL, O_NONBLOCK);
        for (;;) {
                struct pollfd p = { .fd = fd, .events = POLLIN | (sent < bytes ? POLLOUT : 0) };
                if (poll(&p, 1, -1) < 0)
                        return -1;
                if (sent < bytes && (p.revents & POLLOUT)) {
                        size_t off = sent % BLOCK, n = BLOCK - off;
                        if (n > bytes - sent)
                                n = bytes - sent;
                        ssize_t w = write(fd, block + off, n);
                        if (w < 0 && errno != EAGAIN)
                                return -1;
                        if (w > 0 && (sent += (unsigned long)w) == bytes)
                                shutdown(fd, SHUT_WR);
                }
                if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
                        ssize_t r = read(fd, in, sizeof(in));
                        if (r < 0 && errno != EAGAIN)
                                return -1;
                        if (r == 0)
                                return sent == bytes ? 0 : -1;
                        if (r > 0) {
                                *crc = crc32_update(*crc, in, (size_t)r);
                                *got += (unsigned long)r;
                        }
                }
        }
}

static uint32_t pattern_crc(unsigned long bytes, unsigned long seed)
{
        static uint8_t block[BLOCK];
        pattern_block(block, seed);
        uint32_t crc = 0;
        for (unsigned long done = 0; done < bytes;) {
                size_t n = bytes - done < BLOCK ? bytes - done : BLOCK;
                crc = crc32_update(crc, block, n);
                done += n;
        }
        return crc;
}

static void serve_echo(int c)
{
        static uint8_t buf[65536];
        for (;;) {
                ssize_t r = read(c, buf, sizeof(buf));
                if (r <= 0)
                        break;
                for (ssize_t off = 0; off < r;) {
                        ssize_t w = write(c, buf + off, (size_t)(r - off));
                        if (w <= 0)
                                return;
                        off += w;
                }
        }
}

static void serve_sink(int c)
{
        static uint8_t buf[65536];
        unsigned long total = 0;
        uint32_t crc = 0;
        for (ssize_t r; (r = read(c, buf, sizeof(buf))) > 0;) {
                crc = crc32_update(crc, buf, (size_t)r);
                total += (unsigned long)r;
        }
        dprintf(c, "%lu %08x\n", total, crc);
}

/* Return in the parent once listening; the child serves each connection in a child of its own. */
static int serve(unsigned long port, void (*fn)(int))
{
        int l = vsock_listen(port);
        if (l < 0)
                return 1;
        if (fork() != 0)
                return 0;
        signal(SIGCHLD, SIG_IGN);
        for (;;) {
                int c = accept(l, NULL, NULL);
                if (c < 0)
                        continue;
                if (fork() == 0) {
                        fn(c);
                        _exit(0);
                }
                close(c);
        }
}

static int do_many(unsigned long cid, unsigned long port, unsigned long n, unsigned long bytes)
{
        for (unsigned long i = 0; i < n; i++) {
                if (fork() != 0)
                        continue;
                int fd = vsock_connect(cid, port);
                unsigned long got;
                uint32_t crc;
                if (fd < 0 || exchange(fd, bytes, i, &got, &crc) < 0 || got != bytes || crc != pattern_crc(bytes, i))
                        _exit(1);
                _exit(0);
        }
        unsigned long ok = 0;
        for (int st; wait(&st) > 0;)
                ok += WIFEXITED(st) && WEXITSTATUS(st) == 0;
        printf("ok=%lu of %lu\n", ok, n);
        return ok == n ? 0 : 1;
}

static unsigned long num(const char *s)
{
        return strtoul(s, NULL, 0);
}

int main(int argc, char **argv)
{
        setvbuf(stdout, NULL, _IONBF, 0);
        crc_init();
        const char *mode = argc > 1 ? argv[1] : "";
        if (argc == 3 && strcmp(mode, "listen") == 0)
                return serve(num(argv[2]), serve_echo);
        if (argc == 3 && strcmp(mode, "sink") == 0)
                return serve(num(argv[2]), serve_sink);
        if (argc == 3 && strcmp(mode, "wait") == 0) {
                int l = vsock_listen(num(argv[2]));
                int c = l < 0 ? -1 : accept(l, NULL, NULL);
                char b[64];
                while (c >= 0 && read(c, b, sizeof(b)) > 0)
                        ;
                return c < 0;
        }
        if (argc == 6 && strcmp(mode, "many") == 0)
                return do_many(num(argv[2]), num(argv[3]), num(argv[4]), num(argv[5]));
        bool push = strcmp(mode, "push") == 0;
        if (argc == 6 && (strcmp(mode, "echo") == 0 || strcmp(mode, "send") == 0 || push)) {
                int fd = vsock_connect(num(argv[2]), num(argv[3]));
                if (fd < 0)
                        return 1;
                unsigned long got;
                uint32_t crc;
                if (strcmp(mode, "echo") == 0) {
                        if (exchange(fd, num(argv[4]), num(argv[5]), &got, &crc) < 0) {
                                printf("error=%s\n", errno_name(errno));
                                return 1;
                        }
                        printf("bytes=%lu crc=%08x\n", got, crc);
                        return 0;
                }
                static uint8_t block[BLOCK];
                pattern_block(block, num(argv[5]));
                unsigned long bytes = num(argv[4]);
                for (unsigned long sent = 0; sent < bytes;) {
                        size_t off = sent % BLOCK, n = BLOCK - off;
                        if (n > bytes - sent)
                                n = bytes - sent;
                        ssize_t w = write(fd, block + off, n);
                        if (w <= 0) {
                                printf("error=%s\n", errno_name(errno));
                                return 1;
                        }
                        sent += (unsigned long)w;
                }
                if (push) {
                        /* Linux's vsock closes in the background unless asked to linger: without
                         * it, its last packets may still be in the guest when the VM powers off. */
                        struct linger lg = { .l_onoff = 1, .l_linger = 30 };
                        if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) < 0 || close(fd) < 0) {
                                printf("error=%s\n", errno_name(errno));
                                return 1;
                        }
                        printf("pushed=%lu\n", bytes);
                        return 0;
                }
                shutdown(fd, SHUT_WR);
                char line[64];
                ssize_t r = read(fd, line, sizeof(line) - 1);
                line[r > 0 ? r : 0] = '\0';
                line[strcspn(line, "\n")] = '\0';
                printf("reply=%s\n", line);
                return r > 0 ? 0 : 1;
        }
        fprintf(stderr, "usage: vsock listen|sink|wait PORT | echo|send|push CID PORT BYTES SEED | many CID PORT N BYTES\n");
        return 2;
}
