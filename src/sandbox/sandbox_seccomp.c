/* The sandbox process's seccomp allow-list: the syscalls its threads make once the VM is built
 * (the event loop, the vCPUs, the virtio devices and their back-ends, the agent's relay), found
 * with strace -f on sandbox runs in the testbed. ioctl takes only the KVM, tap and terminal
 * requests they send, socket only Unix sockets, tgkill only this process, clone only threads;
 * kill, open and exec are not there at all. Anything else traps into a handler that says which
 * syscall in vmm.log (stderr) and kills the process with SIGSYS; a compromised VMM that replaces
 * the handler gains nothing, the syscall is still refused. */
#include "sandbox/sandbox_internal.h"

#include <linux/kvm.h>
#include <linux/if_tun.h>
#include <pthread.h>
#include <sched.h>
#include <termios.h>
#include <seccomp.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/util.h"

static const int allowed[] = {
        /* memory, threads, signals, time */
        SCMP_SYS(brk), SCMP_SYS(mmap), SCMP_SYS(munmap), SCMP_SYS(mprotect), SCMP_SYS(madvise), SCMP_SYS(mremap),
        SCMP_SYS(futex), SCMP_SYS(set_robust_list), SCMP_SYS(rseq), SCMP_SYS(sched_yield), SCMP_SYS(sched_getaffinity), SCMP_SYS(gettid),
        SCMP_SYS(getpid), SCMP_SYS(exit), SCMP_SYS(exit_group), SCMP_SYS(rt_sigaction), SCMP_SYS(rt_sigprocmask),
        SCMP_SYS(rt_sigreturn), SCMP_SYS(sigaltstack), SCMP_SYS(restart_syscall), SCMP_SYS(clock_gettime),
        SCMP_SYS(clock_nanosleep), SCMP_SYS(nanosleep), SCMP_SYS(timerfd_settime),
        /* virtio-rng's entropy */
        SCMP_SYS(getrandom),
        /* fds: the event loop, eventfds, sockets, the console and log files */
        SCMP_SYS(read), SCMP_SYS(write), SCMP_SYS(readv), SCMP_SYS(writev), SCMP_SYS(pread64), SCMP_SYS(pwrite64),
        SCMP_SYS(preadv), SCMP_SYS(pwritev), SCMP_SYS(close), SCMP_SYS(fcntl), SCMP_SYS(lseek), SCMP_SYS(fstat),
        SCMP_SYS(newfstatat), SCMP_SYS(dup), SCMP_SYS(poll), SCMP_SYS(ppoll), SCMP_SYS(epoll_wait), SCMP_SYS(epoll_pwait),
        SCMP_SYS(epoll_ctl), SCMP_SYS(eventfd2), SCMP_SYS(fallocate), SCMP_SYS(fdatasync), SCMP_SYS(fsync),
        SCMP_SYS(connect), SCMP_SYS(accept4), SCMP_SYS(shutdown), SCMP_SYS(sendmsg),
        SCMP_SYS(recvmsg), SCMP_SYS(sendto), SCMP_SYS(recvfrom), SCMP_SYS(getsockopt), SCMP_SYS(setsockopt),
        SCMP_SYS(io_uring_enter),
        /* the vsock device removes its socket at exit (which fails harmlessly in the jail's
         * read-only root) */
        SCMP_SYS(unlink),
        /* the helper processes (virtiofsd, passt), stopped through their pidfds and reaped; the
         * jailed uid's signal to virtiofsd (root) fails, and virtiofsd ends as its socket closes */
        SCMP_SYS(pidfd_send_signal), SCMP_SYS(wait4), SCMP_SYS(waitid),
};

/* A host relay: its stdio and agent connections (and new ones to the agent's socket, for a
 * resize), its terminal, its parent-death signal; nothing that opens, signals or executes. */
static const int relay_allowed[] = {
        SCMP_SYS(brk), SCMP_SYS(mmap), SCMP_SYS(munmap), SCMP_SYS(mprotect), SCMP_SYS(madvise), SCMP_SYS(mremap),
        SCMP_SYS(futex), SCMP_SYS(set_robust_list), SCMP_SYS(rseq), SCMP_SYS(gettid), SCMP_SYS(getpid), SCMP_SYS(getppid),
        SCMP_SYS(exit), SCMP_SYS(exit_group), SCMP_SYS(rt_sigaction), SCMP_SYS(rt_sigprocmask), SCMP_SYS(rt_sigreturn),
        SCMP_SYS(sigaltstack), SCMP_SYS(restart_syscall), SCMP_SYS(clock_gettime), SCMP_SYS(clock_nanosleep),
        SCMP_SYS(nanosleep), SCMP_SYS(read), SCMP_SYS(write), SCMP_SYS(readv), SCMP_SYS(writev), SCMP_SYS(close),
        SCMP_SYS(fcntl), SCMP_SYS(lseek), SCMP_SYS(fstat), SCMP_SYS(newfstatat), SCMP_SYS(poll), SCMP_SYS(ppoll),
        SCMP_SYS(signalfd4),
        SCMP_SYS(connect), SCMP_SYS(shutdown), SCMP_SYS(sendmsg), SCMP_SYS(recvmsg), SCMP_SYS(sendto),
        SCMP_SYS(recvfrom), SCMP_SYS(getsockopt), SCMP_SYS(setsockopt),
};

static const unsigned long relay_ioctls[] = { TIOCGWINSZ, TIOCSWINSZ, TCGETS, TCSETS };

/* KVM_REINJECT_CONTROL: the PIT's switch may still be under way on its own thread when the
 * filter lands (vm_pit_reinject_off); it reaches only this VM's PIT. */
static const unsigned long ioctls[] = {
        KVM_REINJECT_CONTROL, KVM_RUN, KVM_GET_REGS, KVM_GET_SREGS, KVM_IRQ_LINE, KVM_IRQ_LINE_STATUS, KVM_SET_GSI_ROUTING, KVM_IRQFD,
        KVM_IOEVENTFD, KVM_SIGNAL_MSI, TUNSETOFFLOAD, TUNSETVNETHDRSZ, TIOCGWINSZ, TIOCSWINSZ, TCGETS, FIONREAD,
};

/* Async-signal-safe: the one line, then SIGSYS again with its default action (SA_RESETHAND),
 * delivered at once (SA_NODEFER). */
static const char *sigsys_head; /* "capsule: the VMM was killed ... (syscall " */

static void sigsys_handler(int sig, siginfo_t *si, void *uc)
{
        (void)uc;
        char line[128], digits[12];
        size_t len = strlen(sigsys_head), n = 0;
        memcpy(line, sigsys_head, len);
        unsigned int nr = (unsigned int)si->si_syscall;
        do
                digits[n++] = (char)('0' + nr % 10);
        while ((nr /= 10) && n < sizeof(digits));
        while (n)
                line[len++] = digits[--n];
        line[len++] = ')';
        line[len++] = '\n';
        ssize_t w = write(STDERR_FILENO, line, len);
        (void)w;
        syscall(SYS_tgkill, getpid(), (pid_t)syscall(SYS_gettid), sig);
}

static void ctx_releasep(scmp_filter_ctx *ctx)
{
        if (*ctx)
                seccomp_release(*ctx);
}

struct profile {
        const int *allowed;
        size_t n_allowed;
        const unsigned long *ioctls;
        size_t n_ioctls;
        const char *head;
        bool threads; /* the VMM's: clone of threads, the filter on every thread */
};

/* The rules into *ctx; 0 or -errno. */
static int profile_build(const struct profile *p, scmp_filter_ctx *out)
{
        __attribute__((cleanup(ctx_releasep))) scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_TRAP);
        if (!ctx)
                return -ENOMEM;
        int r = p->threads ? seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1) : 0;
        for (size_t i = 0; r == 0 && i < p->n_allowed; i++)
                r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, p->allowed[i], 0);
        /* The request number is 32 bits in the kernel: the upper half of the register is ignored. */
        for (size_t i = 0; r == 0 && i < p->n_ioctls; i++)
                r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
                                     SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffUL, p->ioctls[i]));
        /* Unix sockets only: the agent's (the relay, the vsock device); the jail's network
         * namespace is empty anyway. */
        if (r == 0)
                r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1, SCMP_A0(SCMP_CMP_EQ, AF_UNIX));
        /* Threads only (pthread_create); clone3's flags are out of the filter's reach, and glibc
         * falls back to clone on ENOSYS. */
        if (r == 0 && p->threads)
                r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1, SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
        if (r == 0)
                r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
        /* Signals to this process only (the vCPU kicks, the handler below); the helpers are
         * stopped through their pidfds, so kill is not needed. */
        if (r == 0)
                r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 1,
                                     SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffUL, (scmp_datum_t)getpid()));
        /* A relay clears its parent-death signal once create has succeeded (the VMM's relay
         * thread, and a member's relay, which sets it too); each vCPU thread names itself. */
        if (r == 0)
                r = p->threads ? seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 2, SCMP_A0(SCMP_CMP_EQ, PR_SET_PDEATHSIG),
                                                  SCMP_A1(SCMP_CMP_EQ, 0))
                               : seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1, SCMP_A0(SCMP_CMP_EQ, PR_SET_PDEATHSIG));
        if (r == 0 && p->threads)
                r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1, SCMP_A0(SCMP_CMP_EQ, PR_SET_NAME));
        if (r == 0)
                *out = steal_pointer(&ctx);
        return r;
}

static int profile_attach(const struct profile *p, scmp_filter_ctx ctx, cap_error_t *err)
{
        int r;
        sigsys_head = p->head;
        struct sigaction sa = { .sa_sigaction = sigsys_handler, .sa_flags = SA_SIGINFO | SA_RESETHAND | SA_NODEFER };
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGSYS, &sa, NULL) < 0)
                return cap_fail(err, errno, "jail: sigaction SIGSYS");
        if ((r = seccomp_load(ctx)) < 0)
                return cap_fail(err, -r, "jail: load the seccomp filter");
        return 0;
}

static int profile_load(const struct profile *p, cap_error_t *err)
{
        __attribute__((cleanup(ctx_releasep))) scmp_filter_ctx ctx = NULL;
        int r = profile_build(p, &ctx);
        if (r < 0)
                return cap_fail(err, -r, "jail: build the seccomp filter");
        return profile_attach(p, ctx, err);
}

static const struct profile vmm_profile = { allowed, ARRAY_SIZE(allowed), ioctls, ARRAY_SIZE(ioctls),
                                            SANDBOX_LOG_PREFIX SANDBOX_SECCOMP_DEATH "(syscall ", true };

static void *filter_build_main(void *arg)
{
        struct sandbox_filter *f = arg;
        scmp_filter_ctx ctx = NULL;
        f->rc = profile_build(&vmm_profile, &ctx);
        f->ctx = ctx;
        return NULL;
}

void sandbox_seccomp_prepare(struct sandbox_filter *f)
{
        *f = (struct sandbox_filter){ .rc = 0 };
        f->started = pthread_create(&f->thread, NULL, filter_build_main, f) == 0;
}

int sandbox_seccomp_load(struct sandbox_filter *f, cap_error_t *err)
{
        if (f == NULL || !f->started)
                return profile_load(&vmm_profile, err);
        pthread_join(f->thread, NULL);
        f->started = false;
        __attribute__((cleanup(ctx_releasep))) scmp_filter_ctx ctx = steal_pointer(&f->ctx);
        if (f->rc < 0)
                return cap_fail(err, -f->rc, "jail: build the seccomp filter");
        return profile_attach(&vmm_profile, ctx, err);
}

int sandbox_seccomp_relay_load(cap_error_t *err)
{
        static const struct profile relay = { relay_allowed, ARRAY_SIZE(relay_allowed), relay_ioctls,
                                              ARRAY_SIZE(relay_ioctls), SANDBOX_LOG_PREFIX SANDBOX_SECCOMP_RELAY_DEATH "(syscall ",
                                              false };
        return profile_load(&relay, err);
}
