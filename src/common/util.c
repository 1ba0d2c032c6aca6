#include "common/util.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

void cap_freep(void *p)
{
        free(*(void **)p);
}

void cap_closep(int *fd)
{
        if (*fd >= 0)
                close(*fd);
        *fd = -1;
}

void cap_fclosep(FILE **f)
{
        if (*f)
                fclose(*f);
}

void cap_strvfreep(char ***v)
{
        if (!*v)
                return;
        for (char **p = *v; *p; p++)
                free(*p);
        free(*v);
        *v = NULL;
}

void *xmalloc0(size_t size)
{
        void *p = calloc(1, size ? size : 1);
        if (!p)
                abort();
        return p;
}

void *xrealloc(void *p, size_t size)
{
        void *q = realloc(p, size ? size : 1);
        if (!q)
                abort();
        return q;
}

char *xstrdup(const char *s)
{
        char *p = strdup(s ? s : "");
        if (!p)
                abort();
        return p;
}

char *xasprintf(const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        char *out = xvasprintf(fmt, ap);
        va_end(ap);
        return out;
}

char *xvasprintf(const char *fmt, va_list ap)
{
        char *out;
        if (vasprintf(&out, fmt, ap) < 0)
                abort();
        return out;
}

/* write() or, for send_all(), send() without SIGPIPE, which a file that is no socket refuses. */
static int put_all(int fd, const void *buf, size_t len, bool nosignal)
{
        const char *p = buf;
        while (len > 0) {
                ssize_t n = nosignal ? send(fd, p, len, MSG_NOSIGNAL) : write(fd, p, len);
                if (n < 0 && nosignal && errno == ENOTSOCK) {
                        nosignal = false;
                        continue;
                }
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -1;
                p += n;
                len -= (size_t)n;
        }
        return 0;
}

int write_all(int fd, const void *buf, size_t len)
{
        return put_all(fd, buf, len, false);
}

int send_all(int fd, const void *buf, size_t len)
{
        return put_all(fd, buf, len, true);
}

ssize_t read_all(int fd, void *buf, size_t len)
{
        char *p = buf;
        size_t done = 0;
        while (done < len) {
                ssize_t n = read(fd, p + done, len - done);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -1;
                if (n == 0)
                        break;
                done += (size_t)n;
        }
        return (ssize_t)done;
}

int read_file_at(int dirfd, const char *path, char **out, size_t *len, size_t max, cap_error_t *err)
{
        cleanup_close int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return cap_fail(err, errno, "open `%s`", path);
        size_t cap = 4096, used = 0;
        cleanup_free char *buf = xmalloc0(cap + 1);
        for (;;) {
                if (used == cap) {
                        if (max && cap >= max)
                                return cap_fail(err, EFBIG, "read `%s`", path);
                        cap *= 2;
                        char *nb = realloc(buf, cap + 1);
                        if (!nb)
                                return cap_fail(err, ENOMEM, "read `%s`", path);
                        buf = nb;
                }
                ssize_t n = read(fd, buf + used, cap - used);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return cap_fail(err, errno, "read `%s`", path);
                if (n == 0)
                        break;
                used += (size_t)n;
        }
        buf[used] = '\0';
        if (len)
                *len = used;
        *out = steal_pointer(&buf);
        return 0;
}

int read_file(const char *path, char **out, size_t *len, size_t max, cap_error_t *err)
{
        return read_file_at(AT_FDCWD, path, out, len, max, err);
}

int write_file_at(int dirfd, const char *path, const void *data, size_t len, cap_error_t *err)
{
        cleanup_close int fd = openat(dirfd, path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
                return cap_fail(err, errno, "open `%s`", path);
        if (write_all(fd, data, len) < 0)
                return cap_fail(err, errno, "write `%s`", path);
        return 0;
}

int write_file(const char *path, const void *data, size_t len, cap_error_t *err)
{
        return write_file_at(AT_FDCWD, path, data, len, err);
}

int write_file_atomic(const char *path, const void *data, size_t len, cap_error_t *err)
{
        cleanup_free char *tmp = xasprintf("%s.tmp.%d", path, (int)getpid());
        if (write_file(tmp, data, len, err) < 0)
                return -1;
        if (rename(tmp, path) < 0) {
                int e = errno;
                unlink(tmp);
                return cap_fail(err, e, "rename `%s`", path);
        }
        return 0;
}

int mkdir_p(const char *path, mode_t mode, cap_error_t *err)
{
        cleanup_free char *p = xstrdup(path);
        for (char *s = p + 1; *s; s++) {
                if (*s != '/')
                        continue;
                *s = '\0';
                if (mkdir(p, mode) < 0 && errno != EEXIST)
                        return cap_fail(err, errno, "mkdir `%s`", p);
                *s = '/';
        }
        if (mkdir(p, mode) < 0 && errno != EEXIST)
                return cap_fail(err, errno, "mkdir `%s`", p);
        return 0;
}

static int rm_rf_at(int parent, const char *name, dev_t dev, cap_error_t *err)
{
        struct stat st;
        if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return errno == ENOENT ? 0 : cap_fail(err, errno, "stat `%s`", name);
        if (S_ISDIR(st.st_mode) && st.st_dev == dev) {
                int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
                if (fd < 0)
                        return cap_fail(err, errno, "open `%s`", name);
                DIR *d = fdopendir(fd);
                if (!d) {
                        close(fd);
                        return cap_fail(err, errno, "opendir `%s`", name);
                }
                struct dirent *de;
                int ret = 0;
                while ((de = readdir(d))) {
                        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                                continue;
                        if (rm_rf_at(dirfd(d), de->d_name, dev, err) < 0) {
                                ret = -1;
                                break;
                        }
                }
                closedir(d);
                if (ret < 0)
                        return ret;
                if (unlinkat(parent, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
                        return cap_fail(err, errno, "rmdir `%s`", name);
                return 0;
        }
        if (unlinkat(parent, name, 0) < 0 && errno != ENOENT)
                return cap_fail(err, errno, "unlink `%s`", name);
        return 0;
}

int rm_rf(const char *path, cap_error_t *err)
{
        struct stat st;
        if (lstat(path, &st) < 0)
                return errno == ENOENT ? 0 : cap_fail(err, errno, "stat `%s`", path);
        return rm_rf_at(AT_FDCWD, path, st.st_dev, err);
}

size_t strv_len(char *const *v)
{
        size_t n = 0;
        while (v && v[n])
                n++;
        return n;
}

char **strv_dup(char *const *v)
{
        size_t n = strv_len(v);
        char **out = xmalloc0((n + 1) * sizeof(char *));
        for (size_t i = 0; i < n; i++)
                out[i] = xstrdup(v[i]);
        return out;
}

char **strv_split(const char *s, const char *sep)
{
        size_t n = 0;
        char **out = xmalloc0((strlen(s) + 2) * sizeof(char *));
        const char *p = s;
        while (*p) {
                size_t k = strcspn(p, sep);
                if (k > 0)
                        out[n++] = strndup(p, k);
                p += k;
                if (*p)
                        p++;
        }
        return out;
}

bool strv_contains(char *const *v, const char *s)
{
        for (size_t i = 0; v && v[i]; i++)
                if (strcmp(v[i], s) == 0)
                        return true;
        return false;
}

bool str_has_prefix(const char *s, const char *prefix)
{
        return strncmp(s, prefix, strlen(prefix)) == 0;
}

int parse_u64(const char *s, unsigned long long *out)
{
        char *end;
        if (!s || !*s || *s == '-')
                return -1;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno || *end)
                return -1;
        *out = v;
        return 0;
}

int parse_i64(const char *s, long long *out)
{
        char *end;
        if (!s || !*s)
                return -1;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (errno || *end)
                return -1;
        *out = v;
        return 0;
}

void close_fds_from(int from)
{
        if (syscall(SYS_close_range, from, ~0U, 0) == 0)
                return;
        long max = sysconf(_SC_OPEN_MAX);
        for (long fd = from; fd < max; fd++)
                close((int)fd);
}

int set_cloexec(int fd, bool on)
{
        int flags = fcntl(fd, F_GETFD);
        if (flags < 0)
                return -1;
        flags = on ? flags | FD_CLOEXEC : flags & ~FD_CLOEXEC;
        return fcntl(fd, F_SETFD, flags);
}

int send_fd(int sock, int fd, const void *data, size_t len)
{
        char dummy = 0;
        struct iovec iov = { .iov_base = (void *)(data ? data : &dummy), .iov_len = data ? len : 1 };
        union {
                char buf[CMSG_SPACE(sizeof(int))];
                struct cmsghdr align;
        } u;
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
        if (fd >= 0) {
                memset(&u, 0, sizeof(u));
                msg.msg_control = u.buf;
                msg.msg_controllen = sizeof(u.buf);
                struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int));
                memcpy(CMSG_DATA(c), &fd, sizeof(int));
        }
        ssize_t n;
        do
                n = sendmsg(sock, &msg, MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        return n < 0 ? -1 : 0;
}

int recv_fd(int sock, int *fd, void *data, size_t len)
{
        char dummy;
        struct iovec iov = { .iov_base = data ? data : &dummy, .iov_len = data ? len : 1 };
        union {
                char buf[CMSG_SPACE(sizeof(int))];
                struct cmsghdr align;
        } u;
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
        ssize_t n;
        *fd = -1;
        do
                n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
        while (n < 0 && errno == EINTR);
        if (n <= 0)
                return -1;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
                        memcpy(fd, CMSG_DATA(c), sizeof(int));
        return (int)n;
}

/* Field (numbered from 1, as in proc(5), >= 3) of a /proc/PID/stat file; 0 if unreadable. */
static unsigned long long proc_stat_field(const char *path, int want)
{
        char buf[1024];
        cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return 0;
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        if (n <= 0)
                return 0;
        buf[n] = '\0';
        /* comm may contain spaces and parentheses: fields start after the last ')' */
        char *p = strrchr(buf, ')');
        if (!p)
                return 0;
        p += 2; /* field 3 (state) */
        for (int field = 3; field < want && p; field++) {
                p = strchr(p, ' ');
                if (p)
                        p++;
        }
        return p ? strtoull(p, NULL, 10) : 0;
}

unsigned long long proc_start_time(pid_t pid)
{
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        return proc_stat_field(path, 22);
}

pid_t proc_self_parent(void)
{
        return (pid_t)proc_stat_field("/proc/self/stat", 4);
}

long long now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
