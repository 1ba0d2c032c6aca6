/* TCP for the network tests' guest (tests/guest/net.sh), whose busybox nc cannot say when a
 * transfer is complete:
 *   nettcp send ADDR PORT FILE     connect, send FILE, close our side, wait for the peer's close
 *   nettcp recv ADDR PORT FILE     connect, write everything received until the peer closes to FILE
 *   nettcp wait PORT SECONDS       accept one connection on PORT within SECONDS
 * Exit status 0 on success, 1 with a message on stderr otherwise. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CONNECT_TRIES 30 /* a second apart: the host's server may still be starting */

static int fail(const char *what)
{
        fprintf(stderr, "nettcp: %s: %s\n", what, strerror(errno));
        return 1;
}

static int connect_to(const char *addr, const char *port)
{
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port)) };
        if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
                errno = EINVAL;
                return -1;
        }
        for (int i = 0; i < CONNECT_TRIES; i++) {
                int fd = socket(AF_INET, SOCK_STREAM, 0);
                if (fd < 0)
                        return -1;
                if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
                        return fd;
                close(fd);
                sleep(1);
        }
        return -1;
}

static int copy(int from, int to)
{
        static char buf[1 << 16];
        for (;;) {
                ssize_t n = read(from, buf, sizeof(buf));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return (int)n;
                for (ssize_t off = 0; off < n;) {
                        ssize_t w = write(to, buf + off, (size_t)(n - off));
                        if (w < 0 && errno != EINTR)
                                return -1;
                        off += w > 0 ? w : 0;
                }
        }
}

static int cmd_send(const char *addr, const char *port, const char *path)
{
        int file = open(path, O_RDONLY);
        if (file < 0)
                return fail(path);
        int fd = connect_to(addr, port);
        if (fd < 0)
                return fail("connect");
        if (copy(file, fd) < 0)
                return fail("send");
        shutdown(fd, SHUT_WR);
        char c;
        /* The peer closes once it has everything. */
        if (read(fd, &c, 1) != 0)
                return fail("waiting for the peer to close");
        return 0;
}

static int cmd_recv(const char *addr, const char *port, const char *path)
{
        int file = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (file < 0)
                return fail(path);
        int fd = connect_to(addr, port);
        if (fd < 0)
                return fail("connect");
        if (copy(fd, file) < 0)
                return fail("receive");
        return close(file) < 0 ? fail("close") : 0;
}

static int cmd_wait(const char *port, const char *seconds)
{
        int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port)) };
        if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
            bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 1) < 0)
                return fail("listen");
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (poll(&p, 1, atoi(seconds) * 1000) != 1) {
                errno = ETIMEDOUT;
                return fail("accept");
        }
        return accept(fd, NULL, NULL) < 0 ? fail("accept") : 0;
}

int main(int argc, char **argv)
{
        if (argc == 5 && strcmp(argv[1], "send") == 0)
                return cmd_send(argv[2], argv[3], argv[4]);
        if (argc == 5 && strcmp(argv[1], "recv") == 0)
                return cmd_recv(argv[2], argv[3], argv[4]);
        if (argc == 4 && strcmp(argv[1], "wait") == 0)
                return cmd_wait(argv[2], argv[3]);
        fprintf(stderr, "usage: nettcp send|recv ADDR PORT FILE | nettcp wait PORT SECONDS\n");
        return 2;
}
