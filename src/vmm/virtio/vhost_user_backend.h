/* A vhost-user back-end process that capsule starts and stops itself (virtiofsd).
 *
 * capsule creates the listening socket in a private 0700 directory, connects to it and
 * removes the path and the directory at once: the back-end gets the listening socket
 * as fd 3 (virtiofsd --fd=3) and accepts the connection that is already queued, so
 * there is no waiting for a socket file to appear and nothing is left on disk even if
 * capsule is killed. The back-end dies with capsule (PR_SET_PDEATHSIG). */
#ifndef CAPSULE_VMM_VIRTIO_VHOST_USER_BACKEND_H
#define CAPSULE_VMM_VIRTIO_VHOST_USER_BACKEND_H

#include <stdbool.h>
#include <sys/types.h>

#include "common/error.h"

/* The fd number the back-end finds its listening socket at. */
#define VHOST_USER_BACKEND_LISTEN_FD 3

struct vhost_user_backend {
        pid_t pid;   /* 0: none */
        int pidfd;   /* readable once the process exited */
};

struct passwd;
/* In a child between fork and exec (async-signal-safe calls only): the default signal mask
 * and SIGPIPE; drop's user when given (before arming the parent-death signal, which a change
 * of user clears); death with parent, also when it died already; stdin from /dev/null and
 * stdout to stderr; fd as VHOST_USER_BACKEND_LISTEN_FD and nothing else of the VMM's open
 * (guest memory, KVM, other devices); then argv. Shared by virtiofsd and passt. */
void __attribute__((noreturn)) vhost_user_backend_child_exec(char *const argv[], int fd, pid_t parent,
                                                              const struct passwd *drop);

/* Start argv (argv[0] is the program's path) with the listening socket as fd 3;
 * *sock is the front-end's connected socket. */
int vhost_user_backend_start(struct vhost_user_backend *b, char *const argv[], int *sock, cap_error_t *err);
/* Whether the process has exited; *status is its wait status then (it is reaped). */
bool vhost_user_backend_exited(struct vhost_user_backend *b, int timeout_ms, int *status);
/* SIGTERM, a bounded wait, then SIGKILL; reaps it. */
void vhost_user_backend_stop(struct vhost_user_backend *b);
/* "exited with status N" / "was killed by signal N", for messages. */
const char *vhost_user_backend_describe(int status, char *buf, size_t len);

/* Connect to an already running back-end's socket (a user's socket=PATH). */
int vhost_user_connect(const char *path, int *sock, cap_error_t *err);

#endif
