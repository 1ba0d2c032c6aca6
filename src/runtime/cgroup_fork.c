/* A process's way into the container's cgroup without the cost of a migration. Writing a pid
 * to cgroup.procs takes the threadgroup lock for writing, which waits for an RCU grace period
 * (5-30 ms per create, measured on a nested host). Two ways avoid it:
 * - a child created in the unified hierarchy's cgroup (clone3 CLONE_INTO_CGROUP), as crun does;
 * - on a v1 hierarchy, a single-threaded process moving its one thread through `tasks`. */
#include "runtime/cgroup.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/util.h"
#include "runtime/cgroup_internal.h"

/* A process's threads; 0 when /proc does not say. */
static size_t threads_of(pid_t pid)
{
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
        DIR *d = opendir(path);
        size_t n = 0;
        if (!d)
                return 0;
        for (struct dirent *e; (e = readdir(d));)
                if (e->d_name[0] != '.')
                        n++;
        closedir(d);
        return n;
}

int cgroup_enter(struct cgroup *cg, pid_t pid, cap_error_t *err)
{
        bool alone = threads_of(pid) == 1;
        char id[32];
        snprintf(id, sizeof(id), "%d", (int)pid);
        for (size_t i = 0; i < cg->n_hiers; i++) {
                const struct cgroup_hier *h = &cg->hiers[i];
                if (h->unified && cg->unified_entered)
                        continue;
                /* A single-threaded process's one thread has the pid for its id. */
                bool thread = alone && !h->unified;
                if (cgroup_write(h->path, thread ? "tasks" : "cgroup.procs", "linux.cgroupsPath", id, err) < 0)
                        return -1;
        }
        return 0;
}

/* clone3 into the cgroup dirfd, as fork() would be. glibc's fork() also has the kernel store
 * the child's thread id in the thread's descriptor (CLONE_CHILD_SETTID at the address the
 * thread gave set_tid_address, which PR_GET_TID_ADDRESS reads back) and registers the robust
 * futex list again; without both, pthread calls in the child would act on the parent's id. The
 * rest of fork()'s work (atfork handlers, stdio and malloc locks) is for threads that do not
 * exist here, which is why a caller with more than one thread gets -1, as does any missing step
 * (nothing was created then). */
static pid_t clone_into(int dirfd, unsigned long ns_flags)
{
        int *tid_address = NULL;
        void *robust_head = NULL;
        size_t robust_len = 0;
        if (threads_of(getpid()) != 1 || prctl(PR_GET_TID_ADDRESS, &tid_address) < 0 || tid_address == NULL ||
            syscall(SYS_get_robust_list, 0, &robust_head, &robust_len) < 0)
                return -1;
        struct clone_args args = {
                .flags = CLONE_INTO_CGROUP | CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | ns_flags,
                .child_tid = (uint64_t)(uintptr_t)tid_address,
                .exit_signal = SIGCHLD,
                .cgroup = (uint64_t)dirfd,
        };
        pid_t pid = (pid_t)syscall(SYS_clone3, &args, sizeof(args));
        if (pid == 0)
                syscall(SYS_set_robust_list, robust_head, robust_len);
        return pid;
}

pid_t cgroup_fork(struct cgroup *cg, unsigned long ns_flags)
{
        struct cgroup_hier *u = cg ? hier_unified(cg) : NULL;
        cleanup_close int dirfd = u ? open(u->path, O_PATH | O_DIRECTORY | O_CLOEXEC) : -1;
        if (cg)
                cg->unified_entered = dirfd >= 0;
        pid_t pid = dirfd >= 0 ? clone_into(dirfd, ns_flags) : -1;
        if (pid >= 0)
                return pid;
        /* No cgroup or unified hierarchy, a kernel without clone3's cgroup or PR_GET_TID_ADDRESS,
         * a seccomp filter that refuses clone3, or a cgroup that refuses the child: fork, and
         * cgroup_enter moves the child by cgroup.procs, which says what is wrong. With namespaces, the raw
         * syscall: the caller is single-threaded, so glibc's state stays as consistent as
         * fork() leaves it. */
        if (cg)
                cg->unified_entered = false;
        if (ns_flags)
                return (pid_t)syscall(SYS_clone, ns_flags | SIGCHLD, NULL, NULL, NULL, 0UL);
        return fork();
}
