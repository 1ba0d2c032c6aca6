/* The sandbox process's confinement (src/sandbox/sandbox_jail.c), entered by a forked child as
 * root: afterwards it still reaches the agent's socket by its path and nothing else of the host's
 * files, cannot write its root, holds no capability, cannot gain one, runs as a uid and gid of
 * its own (SANDBOX_ID_BASE + its pid, no groups) it cannot leave, and is in namespaces of its
 * own. The host's view is untouched. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/fsuid.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "common/util.h"
#include "sandbox/sandbox_internal.h"

static bool same_ns(const char *ns, pid_t pid)
{
        char a[64], b[64], pa[64], pb[64];
        snprintf(pa, sizeof(pa), "/proc/self/ns/%s", ns);
        snprintf(pb, sizeof(pb), "/proc/%d/ns/%s", (int)pid, ns);
        ssize_t na = readlink(pa, a, sizeof(a) - 1), nb = readlink(pb, b, sizeof(b) - 1);
        return na > 0 && na == nb && memcmp(a, b, (size_t)na) == 0;
}

/* In the jailed child: one word per check, written to fd. */
static __attribute__((noreturn)) void jailed(int fd, const char *dir, const char *sock)
{
        cap_error_t err = NULL;
        if (sandbox_jail_enter(dir, sock, &err) < 0) {
                dprintf(fd, "enter: %s", err->msg);
                _exit(1);
        }
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        dprintf(fd, "connect %d|", connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0);
        dprintf(fd, "passwd %d|", open("/etc/passwd", O_RDONLY | O_CLOEXEC) < 0 && errno == ENOENT);
        dprintf(fd, "proc %d|", access("/proc/self", F_OK) < 0);
        dprintf(fd, "write %d|", mkdir("/x", 0700) < 0 && errno == EROFS);
        cap_t caps = cap_get_proc(), none = cap_init();
        dprintf(fd, "caps %d|", caps && none && cap_compare(caps, none) == 0);
        dprintf(fd, "bounding %d|", prctl(PR_CAPBSET_READ, CAP_SYS_ADMIN) == 0);
        dprintf(fd, "nnp %d|", prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1);
        uid_t id = SANDBOX_ID_BASE + (uid_t)getpid(), u[3];
        gid_t g[3];
        bool ids = getresuid(&u[0], &u[1], &u[2]) == 0 && getresgid(&g[0], &g[1], &g[2]) == 0;
        for (int i = 0; i < 3; i++)
                ids = ids && u[i] == id && g[i] == id;
        dprintf(fd, "ids %d|", ids && setfsuid((uid_t)-1) == (int)id && setfsgid((gid_t)-1) == (int)id);
        dprintf(fd, "groups %d|", getgroups(0, NULL) == 0);
        dprintf(fd, "root %d", setresuid(0, 0, 0) < 0 && errno == EPERM && setresgid(0, 0, 0) < 0 && errno == EPERM);
        /* Stay until the parent has compared the namespaces. */
        char c;
        close(fd);
        ssize_t n = read(STDIN_FILENO, &c, 1);
        _exit(n < 0);
}

TEST(jail_shows_only_the_agent_socket_and_drops_every_privilege)
{
        if (geteuid() != 0)
                SKIP("needs root (namespaces, mounts, pivot_root)");
        char dir[] = "/tmp/capsule-jail-XXXXXX";
        CHECK(mkdtemp(dir));
        cleanup_free char *sock = xasprintf("%s/agent.sock", dir), *jail = xasprintf("%s/" SANDBOX_JAIL, dir);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
        cleanup_close int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CHECK(bind(listener, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(listener, 4) == 0);
        int out[2], hold[2];
        CHECK(pipe(out) == 0 && pipe(hold) == 0);
        pid_t pid = fork();
        if (pid == 0) {
                close(out[0]);
                close(hold[1]);
                dup2(hold[0], STDIN_FILENO);
                jailed(out[1], dir, sock);
        }
        close(out[1]);
        close(hold[0]);
        char report[512];
        ssize_t n = read_all(out[0], report, sizeof(report) - 1);
        report[n > 0 ? n : 0] = '\0';
        close(out[0]);
        bool fresh = !same_ns("mnt", pid) && !same_ns("net", pid) && !same_ns("ipc", pid) && !same_ns("uts", pid) &&
                     !same_ns("cgroup", pid);
        close(hold[1]);
        int status;
        waitpid(pid, &status, 0);
        CHECK_STR(report, "connect 1|passwd 1|proc 1|write 1|caps 1|bounding 1|nnp 1|ids 1|groups 1|root 1");
        CHECK(fresh);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        /* On the host the mount point is an empty directory: the tmpfs was the child's. */
        struct stat st;
        CHECK(stat(jail, &st) == 0 && S_ISDIR(st.st_mode) && rmdir(jail) == 0);
        /* The socket is the jailed uid's, which connecting takes. */
        CHECK(stat(sock, &st) == 0 && st.st_uid == SANDBOX_ID_BASE + (uid_t)pid && st.st_gid == SANDBOX_ID_BASE + (gid_t)pid);
        CHECK(unlink(sock) == 0 && rmdir(dir) == 0);
}
