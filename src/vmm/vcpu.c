#include "vmm/vcpu.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "vmm/vm.h"

#define VCPU_KICK_SIGNAL SIGUSR1

int vcpu_create(struct vcpu *v, int vm_fd, int index, size_t run_size, const struct vcpu_env *env, cap_error_t *err)
{
        memset(v, 0, sizeof(*v));
        v->index = index;
        v->env = env;
        v->stats_fd = -1;
        v->fd = ioctl(vm_fd, KVM_CREATE_VCPU, (unsigned long)index);
        if (v->fd < 0)
                return cap_fail(err, errno, "KVM_CREATE_VCPU %d", index);
        v->stats_fd = vcpu_stats_open(v->fd);
        void *run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
        if (run == MAP_FAILED)
                return cap_fail(err, errno, "vCPU %d: mmap of kvm_run", index);
        v->run = run;
        v->run_size = run_size;
        return 0;
}

static void vcpu_fail(struct vcpu *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void vcpu_fail(struct vcpu *v, const char *fmt, ...)
{
        char msg[256];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        v->env->exit(v->env->vm, VM_EXIT_ERROR, 1, msg);
}

static unsigned long long vcpu_rip(struct vcpu *v)
{
        struct kvm_regs regs;
        return ioctl(v->fd, KVM_GET_REGS, &regs) == 0 ? regs.rip : 0;
}

/* The state a triple fault leaves behind: where the guest was and which tables it used. */
static void vcpu_describe(struct vcpu *v, char *buf, size_t len)
{
        struct kvm_regs regs;
        struct kvm_sregs sregs;
        if (ioctl(v->fd, KVM_GET_REGS, &regs) < 0 || ioctl(v->fd, KVM_GET_SREGS, &sregs) < 0) {
                snprintf(buf, len, "vCPU %d: triple fault", v->index);
                return;
        }
        snprintf(buf, len,
                 "vCPU %d: triple fault at rip %#llx rsp %#llx (cs %#x cr0 %#llx cr2 %#llx cr3 %#llx cr4 %#llx efer %#llx "
                 "idt %#llx+%#x)",
                 v->index, regs.rip, regs.rsp, sregs.cs.selector, sregs.cr0, sregs.cr2, sregs.cr3, sregs.cr4, sregs.efer,
                 sregs.idt.base, sregs.idt.limit);
}

static const char *internal_error_name(uint32_t suberror)
{
        switch (suberror) {
        case KVM_INTERNAL_ERROR_EMULATION:
                return "emulation failure";
        case KVM_INTERNAL_ERROR_SIMUL_EX:
                return "exception while delivering an exception";
        case KVM_INTERNAL_ERROR_DELIVERY_EV:
                return "exit while delivering an event";
        case KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON:
                return "unexpected exit reason";
        default:
                return "unknown";
        }
}

bool vcpu_emulation_retry(struct vcpu_emulation *e, const struct kvm_regs *regs, const struct kvm_sregs *sregs)
{
        bool user_mode = (sregs->cr0 & 1) && (sregs->cs.selector & 3) == 3; /* CR0.PE, CPL 3 */
        if (!user_mode)
                return false;
        if (e->repeats == 0 || e->rip != regs->rip) {
                e->rip = regs->rip;
                e->repeats = 0;
        }
        return ++e->repeats <= VCPU_EMULATION_RETRIES;
}

#define VCPU_EMULATION_REPORTS 4

static bool handle_internal_error(struct vcpu *v)
{
        struct kvm_run *run = v->run;
        struct kvm_regs regs;
        struct kvm_sregs sregs;
        bool regs_ok = ioctl(v->fd, KVM_GET_REGS, &regs) == 0 && ioctl(v->fd, KVM_GET_SREGS, &sregs) == 0;
        if (regs_ok && run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION &&
            vcpu_emulation_retry(&v->emulation, &regs, &sregs)) {
                if (v->emulation.reported < VCPU_EMULATION_REPORTS) {
                        v->emulation.reported++;
                        log_warning("vCPU %d: KVM could not emulate a user-mode instruction at rip %#llx; running it again%s",
                                    v->index, regs.rip,
                                    v->emulation.reported == VCPU_EMULATION_REPORTS ? " (further ones are not reported)" : "");
                }
                return true;
        }
        vcpu_fail(v, "vCPU %d: KVM internal error, suberror %u (%s) at rip %#llx", v->index, run->internal.suberror,
                  internal_error_name(run->internal.suberror), regs_ok ? regs.rip : 0ULL);
        return false;
}

static void handle_io(struct vcpu *v)
{
        struct kvm_run *run = v->run;
        uint8_t *data = (uint8_t *)run + run->io.data_offset;
        bool out = run->io.direction == KVM_EXIT_IO_OUT;
        /* String instructions (rep outsb/insb) arrive as count items of size bytes. */
        for (uint32_t i = 0; i < run->io.count; i++)
                bus_dispatch(v->env->pio, run->io.port, data + (size_t)i * run->io.size, run->io.size, out);
}

/* Returns false when the vCPU must stop running. */
static bool handle_exit(struct vcpu *v)
{
        struct kvm_run *run = v->run;
        const struct vcpu_env *env = v->env;
        if (run->exit_reason != KVM_EXIT_INTERNAL_ERROR)
                v->emulation.repeats = 0;
        switch (run->exit_reason) {
        case KVM_EXIT_IO:
                handle_io(v);
                return true;
        case KVM_EXIT_MMIO:
                bus_dispatch(env->mmio, run->mmio.phys_addr, run->mmio.data, run->mmio.len, run->mmio.is_write);
                return true;
        case KVM_EXIT_INTR:
                return true;
        case KVM_EXIT_HLT:
                env->halted(env->vm);
                return false;
        case KVM_EXIT_SHUTDOWN: {
                char msg[256];
                vcpu_describe(v, msg, sizeof(msg));
                env->exit(env->vm, VM_EXIT_TRIPLE_FAULT, VM_STATUS_TRIPLE_FAULT, msg);
                return false;
        }
        case KVM_EXIT_SYSTEM_EVENT:
                switch (run->system_event.type) {
                case KVM_SYSTEM_EVENT_SHUTDOWN:
                        env->exit(env->vm, VM_EXIT_POWEROFF, 0, NULL);
                        break;
                case KVM_SYSTEM_EVENT_RESET:
                        env->exit(env->vm, VM_EXIT_REBOOT, VM_STATUS_REBOOT, NULL);
                        break;
                case KVM_SYSTEM_EVENT_CRASH:
                        env->exit(env->vm, VM_EXIT_PANIC, VM_STATUS_PANIC, NULL);
                        break;
                default:
                        vcpu_fail(v, "vCPU %d: unknown KVM system event %u", v->index, run->system_event.type);
                        break;
                }
                return false;
        case KVM_EXIT_INTERNAL_ERROR:
                return handle_internal_error(v);
        case KVM_EXIT_FAIL_ENTRY:
                vcpu_fail(v, "vCPU %d: KVM could not enter the guest, hardware reason %#llx", v->index,
                          (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
                return false;
        default:
                vcpu_fail(v, "vCPU %d: unhandled KVM exit reason %u at rip %#llx", v->index, run->exit_reason, vcpu_rip(v));
                return false;
        }
}

/* Called with p->lock held. */
static void vcpu_pause_check_parked(struct vcpu_pause *p)
{
        uint64_t one = 1;
        if (p->paused && p->parked == p->live)
                while (write(p->notify_fd, &one, sizeof(one)) < 0 && errno == EINTR)
                        ;
}

/* A kick leaves immediate_exit set; clear it so the next KVM_RUN runs, unless the VM is
 * stopping (its kick must keep the vCPU out). Under the lock, so a pause's kick, which sets
 * it under the same lock, is never lost. */
static void vcpu_rearm(struct vcpu *v)
{
        struct vcpu_pause *p = v->env->pause;
        pthread_mutex_lock(&p->lock);
        if (!p->stopping)
                v->run->immediate_exit = 0;
        pthread_mutex_unlock(&p->lock);
}

static void vcpu_park(struct vcpu *v)
{
        struct vcpu_pause *p = v->env->pause;
        pthread_mutex_lock(&p->lock);
        if (p->paused && !p->stopping) {
                p->parked++;
                vcpu_pause_check_parked(p);
                while (p->paused && !p->stopping)
                        pthread_cond_wait(&p->wake, &p->lock);
                p->parked--;
        }
        if (!p->stopping)
                v->run->immediate_exit = 0;
        pthread_mutex_unlock(&p->lock);
}

static void vcpu_loop(struct vcpu *v)
{
        while (!atomic_load(v->env->stopping)) {
                if (atomic_load(&v->env->pause->paused)) {
                        vcpu_park(v);
                        continue;
                }
                if (ioctl(v->fd, KVM_RUN, 0) < 0) {
                        if (errno == EINTR || errno == EAGAIN) {
                                vcpu_rearm(v);
                                continue;
                        }
                        vcpu_fail(v, "vCPU %d: KVM_RUN: %s", v->index, strerror(errno));
                        return;
                }
                if (!handle_exit(v))
                        return;
        }
}

static void *vcpu_thread(void *arg)
{
        struct vcpu *v = arg;
        struct vcpu_pause *p = v->env->pause;
        /* Named from inside: naming another thread opens /proc, which a confined VMM may not. */
        char name[16];
        snprintf(name, sizeof(name), "vcpu%d", v->index);
        pthread_setname_np(pthread_self(), name);
        sigset_t kick;
        sigemptyset(&kick);
        sigaddset(&kick, VCPU_KICK_SIGNAL);
        pthread_sigmask(SIG_UNBLOCK, &kick, NULL);

        vcpu_loop(v);
        /* A vCPU that is gone no longer holds up a pause. */
        pthread_mutex_lock(&p->lock);
        p->live--;
        vcpu_pause_check_parked(p);
        pthread_mutex_unlock(&p->lock);
        return NULL;
}

int vcpu_pause_init(struct vcpu_pause *p, cap_error_t *err)
{
        memset(p, 0, sizeof(*p));
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->wake, NULL);
        p->notify_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (p->notify_fd < 0)
                return cap_fail(err, errno, "eventfd");
        return 0;
}

void vcpu_pause_destroy(struct vcpu_pause *p)
{
        if (p->notify_fd >= 0)
                close(p->notify_fd);
        p->notify_fd = -1;
        pthread_cond_destroy(&p->wake);
        pthread_mutex_destroy(&p->lock);
}

bool vcpu_pause(struct vcpu_pause *p, struct vcpu *vcpus, int n)
{
        pthread_mutex_lock(&p->lock);
        if (!p->paused && !p->stopping) {
                atomic_store(&p->paused, true);
                for (int i = 0; i < n; i++)
                        vcpu_kick(&vcpus[i]);
        }
        bool all = p->paused && p->parked == p->live;
        pthread_mutex_unlock(&p->lock);
        return all;
}

bool vcpu_paused(struct vcpu_pause *p)
{
        pthread_mutex_lock(&p->lock);
        bool all = p->paused && p->parked == p->live;
        pthread_mutex_unlock(&p->lock);
        return all;
}

void vcpu_resume(struct vcpu_pause *p)
{
        pthread_mutex_lock(&p->lock);
        atomic_store(&p->paused, false);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->lock);
}

void vcpu_pause_release(struct vcpu_pause *p)
{
        pthread_mutex_lock(&p->lock);
        p->stopping = true;
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->lock);
}

int vcpu_start(struct vcpu *v, cap_error_t *err)
{
        int r = pthread_create(&v->thread, NULL, vcpu_thread, v);
        if (r != 0)
                return cap_fail(err, r, "vCPU %d: pthread_create", v->index);
        v->started = true;
        return 0;
}

void vcpu_kick(struct vcpu *v)
{
        if (!v->started)
                return;
        /* immediate_exit covers the window between the stopping check and KVM_RUN. */
        v->run->immediate_exit = 1;
        pthread_kill(v->thread, VCPU_KICK_SIGNAL);
}

void vcpu_join(struct vcpu *v)
{
        if (!v->started)
                return;
        pthread_join(v->thread, NULL);
        v->started = false;
}

void vcpu_destroy(struct vcpu *v)
{
        vcpu_stats_log(v->stats_fd, v->index);
        cap_closep(&v->stats_fd);
        if (v->run)
                munmap(v->run, v->run_size);
        if (v->fd >= 0)
                close(v->fd);
        v->run = NULL;
        v->fd = -1;
}

static void kick_handler(int sig)
{
        (void)sig;
}

int vcpu_signals_init(struct sigaction *old, cap_error_t *err)
{
        struct sigaction sa = { .sa_handler = kick_handler };
        sigemptyset(&sa.sa_mask);
        if (sigaction(VCPU_KICK_SIGNAL, &sa, old) < 0)
                return cap_fail(err, errno, "sigaction SIGUSR1");
        return 0;
}

void vcpu_signals_restore(const struct sigaction *old)
{
        sigaction(VCPU_KICK_SIGNAL, old, NULL);
}
