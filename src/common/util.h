/* Small helpers shared by every part: cleanup attributes, file I/O, strings. */
#ifndef CAPSULE_COMMON_UTIL_H
#define CAPSULE_COMMON_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

#include "common/error.h"

void cap_freep(void *p);
void cap_closep(int *fd);
void cap_fclosep(FILE **f);
void cap_strvfreep(char ***v);

#define cleanup_free __attribute__((cleanup(cap_freep)))
#define cleanup_close __attribute__((cleanup(cap_closep)))
#define cleanup_file __attribute__((cleanup(cap_fclosep)))
#define cleanup_strv __attribute__((cleanup(cap_strvfreep)))

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Hand ownership of a cleanup variable to the caller. */
#define steal_pointer(pp) ({ __typeof__(*(pp)) _p = *(pp); *(pp) = NULL; _p; })
#define steal_fd(fdp) ({ int _fd = *(fdp); *(fdp) = -1; _fd; })

void *xmalloc0(size_t size);
/* realloc that aborts on failure, like the other x* helpers. */
void *xrealloc(void *p, size_t size);
char *xstrdup(const char *s);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *xvasprintf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));

/* Read a whole file (at most max bytes, 0 = no limit) into a NUL-terminated buffer. */
int read_file(const char *path, char **out, size_t *len, size_t max, cap_error_t *err);
int read_file_at(int dirfd, const char *path, char **out, size_t *len, size_t max, cap_error_t *err);
/* Write data to an existing or new file (O_TRUNC). */
int write_file(const char *path, const void *data, size_t len, cap_error_t *err);
int write_file_at(int dirfd, const char *path, const void *data, size_t len, cap_error_t *err);
/* Write to a file atomically (temporary + rename). */
int write_file_atomic(const char *path, const void *data, size_t len, cap_error_t *err);

int mkdir_p(const char *path, mode_t mode, cap_error_t *err);
/* Remove a directory tree (does not cross mount points). */
int rm_rf(const char *path, cap_error_t *err);

int write_all(int fd, const void *buf, size_t len);
/* write_all() that never raises SIGPIPE on a socket whose peer has gone (EPIPE instead): the
 * CLI must report a vanished peer (a dead VM, a dead container init), not die of the signal. */
int send_all(int fd, const void *buf, size_t len);
ssize_t read_all(int fd, void *buf, size_t len);

size_t strv_len(char *const *v);
char **strv_dup(char *const *v);
/* Split s on any character of sep, skipping empty fields. */
char **strv_split(const char *s, const char *sep);
bool strv_contains(char *const *v, const char *s);

bool str_has_prefix(const char *s, const char *prefix);
/* Parse a non-negative or signed decimal integer; returns -1 on garbage or overflow. */
int parse_u64(const char *s, unsigned long long *out);
int parse_i64(const char *s, long long *out);

/* Close every fd >= from (after --preserve-fds are moved into place). */
void close_fds_from(int from);
int set_cloexec(int fd, bool on);

/* Send/receive one fd over a unix socket with SCM_RIGHTS. */
int send_fd(int sock, int fd, const void *data, size_t len);
int recv_fd(int sock, int *fd, void *data, size_t len);

/* CLOCK_MONOTONIC in milliseconds, for deadlines. */
long long now_ms(void);

/* Start time of pid from /proc/PID/stat (field 22), used to detect pid reuse. 0 if gone. */
unsigned long long proc_start_time(pid_t pid);
/* Our parent's pid as /proc shows it (field 4): unlike getppid(), it also names a parent
 * outside our pid namespace, as long as /proc is still the runtime's. 0 if unreadable. */
pid_t proc_self_parent(void);

#endif
