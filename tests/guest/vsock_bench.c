/* vsock_bench: the guest side of bench/virtio_io.sh's vsock rows (bench/vsock_host.py is the
 * host side). usage: vsock_bench HOSTPORT GUESTPORT MIB RUNS
 *
 * Listens on GUESTPORT first, then RUNS times: connects to the host (CID 2) on HOSTPORT, sends
 * MIB MiB and waits for the host's one-byte acknowledgement (guest to host); then accepts one
 * connection on GUESTPORT, reads MIB MiB and acknowledges them with one byte (host to guest).
 * The host times both; the acknowledgement makes the timed span end when the last byte has
 * arrived, without relying on half-closed connections. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#define CHUNK (256 * 1024)
#define CONNECT_TRIES 300 /* 100 ms apart: the host listens before the VM starts */

static char buf[CHUNK];

static void die(const char *what)
{
        fprintf(stderr, "vsock_bench: %s: %s\n", what, strerror(errno));
        exit(1);
}

static unsigned long parse(const char *s, const char *name)
{
        char *end;
        errno = 0;
        unsigned long v = strtoul(s, &end, 10);
        if (errno || *s == '\0' || *end != '\0' || v == 0 || v > 1UL << 20) {
                fprintf(stderr, "vsock_bench: bad %s '%s'\n", name, s);
                exit(2);
        }
        return v;
}

static void write_all(int fd, const char *p, size_t len)
{
        while (len > 0) {
                ssize_t n = write(fd, p, len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        die("write");
                }
                p += n;
                len -= (size_t)n;
        }
}

static void read_exactly(int fd, uint64_t len)
{
        while (len > 0) {
                ssize_t n = read(fd, buf, len < CHUNK ? len : CHUNK);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        die("read");
                if (n == 0) {
                        fprintf(stderr, "vsock_bench: connection closed with %llu bytes to go\n",
                                (unsigned long long)len);
                        exit(1);
                }
                len -= (uint64_t)n;
        }
}

static int connect_host(unsigned int port)
{
        struct sockaddr_vm addr = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_HOST, .svm_port = port };
        struct timespec pause = { .tv_sec = 0, .tv_nsec = 100 * 1000 * 1000 };
        for (int i = 0;; i++) {
                int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0)
                        die("socket");
                if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0)
                        return fd;
                if (i == CONNECT_TRIES || (errno != ECONNRESET && errno != ECONNREFUSED))
                        die("connect to the host");
                close(fd);
                nanosleep(&pause, NULL);
        }
}

int main(int argc, char **argv)
{
        if (argc != 5) {
                fprintf(stderr, "usage: vsock_bench HOSTPORT GUESTPORT MIB RUNS\n");
                return 2;
        }
        unsigned int host_port = (unsigned int)parse(argv[1], "HOSTPORT");
        unsigned int guest_port = (unsigned int)parse(argv[2], "GUESTPORT");
        uint64_t bytes = (uint64_t)parse(argv[3], "MIB") << 20;
        unsigned long runs = parse(argv[4], "RUNS");
        memset(buf, 0x5a, sizeof(buf));

        int lfd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (lfd < 0)
                die("socket");
        struct sockaddr_vm addr = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = guest_port };
        if (bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(lfd, 1) < 0)
                die("listen");

        for (unsigned long run = 1; run <= runs; run++) {
                int fd = connect_host(host_port);
                for (uint64_t left = bytes; left > 0; left -= left < CHUNK ? left : CHUNK)
                        write_all(fd, buf, left < CHUNK ? left : CHUNK);
                read_exactly(fd, 1);
                close(fd);

                fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
                if (fd < 0)
                        die("accept");
                read_exactly(fd, bytes);
                write_all(fd, "k", 1);
                /* The host closes once it has the acknowledgement: wait for that, or the guest
                 * could power off with the byte still on its way. */
                shutdown(fd, SHUT_WR);
                while (read(fd, buf, sizeof(buf)) > 0)
                        ;
                close(fd);
                printf("vsock_bench: run %lu done\n", run);
                fflush(stdout);
        }
        close(lfd);
        return 0;
}
