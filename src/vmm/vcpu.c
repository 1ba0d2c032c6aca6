#include "vmm/vcpu.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/util.h"
#include "vmm/vm.h"

#define VCPU_KICK_SIGNAL SIGUSR1

int vcpu_create(struct vcpu *v, int vm_fd, int index, size_t run_size, const struct vcpu_env *env, cap_error_t *err)
{
        memset(v, 0, sizeof(*v));
        v->index = index;
        v->env = env;
        v->fd = ioctl(vm_fd, KVM_CREATE_VCPU, (unsigned long)index);
        if (v->fd < 0)
                return cap_fail(err, errno, "KVM_CREATE_VCPU %d", index);
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
                vcpu_fail(v, "vCPU %d: KVM internal error, suberror %u (%s) at rip %#llx", v->index, run->internal.suberror,
                          internal_error_name(run->internal.suberror), vcpu_rip(v));
                return false;
        case KVM_EXIT_FAIL_ENTRY:
                vcpu_fail(v, "vCPU %d: KVM could not enter the guest, hardware reason %#llx", v->index,
                          (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
                return false;
        default:
                vcpu_fail(v, "vCPU %d: unhandled KVM exit reason %u at rip %#llx", v->index, run->exit_reason, vcpu_rip(v));
                return false;
        }
}

static void *vcpu_thread(void *arg)
{
        struct vcpu *v = arg;
        sigset_t kick;
        sigemptyset(&kick);
        sigaddset(&kick, VCPU_KICK_SIGNAL);
        pthread_sigmask(SIG_UNBLOCK, &kick, NULL);

        while (!atomic_load(v->env->stopping)) {
                if (ioctl(v->fd, KVM_RUN, 0) < 0) {
                        if (errno == EINTR || errno == EAGAIN)
                                continue;
                        vcpu_fail(v, "vCPU %d: KVM_RUN: %s", v->index, strerror(errno));
                        break;
                }
                if (!handle_exit(v))
                        break;
        }
        return NULL;
}

int vcpu_start(struct vcpu *v, cap_error_t *err)
{
        char name[16];
        int r = pthread_create(&v->thread, NULL, vcpu_thread, v);
        if (r != 0)
                return cap_fail(err, r, "vCPU %d: pthread_create", v->index);
        snprintf(name, sizeof(name), "vcpu%d", v->index);
        pthread_setname_np(v->thread, name);
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
