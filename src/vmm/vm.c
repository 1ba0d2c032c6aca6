#include "vmm/vm.h"

#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "vmm/api.h"
#include "vmm/bus.h"
#include "vmm/cmdline.h"
#include "vmm/device.h"
#include "vmm/devices/acpi_pm.h"
#include "vmm/evloop.h"
#include "vmm/irq.h"
#include "vmm/kvm.h"
#include "vmm/memory.h"
#include "vmm/vcpu.h"
#include "vmm/x86/boot.h"

/* Below 4 GiB and clear of the PCI hole's devices: three pages of TSS for VMX
 * real-mode emulation and the identity page table page just below them. */
#define VM_TSS_ADDR 0xfffbd000ULL
#define VM_IDENTITY_MAP_ADDR 0xfffbc000ULL

struct vm {
        const struct vm_config *cfg;
        int kvm_fd, vm_fd;
        struct guest_mem mem;
        struct vm_irq irq;
        bool irq_ready;
        char *device_cmdline; /* the devices' additions to the kernel command line */
        struct bus pio, mmio;
        struct evloop loop;
        bool loop_ready, devices_ready;
        struct vm_devices devices;
        struct vcpu_env env;
        struct vcpu *vcpus;
        int n_vcpus; /* created so far */
        atomic_int running_vcpus;
        atomic_bool stopping;
        struct vcpu_pause pause;
        bool pause_ready;
        struct api *api; /* the control channel, NULL without --api-socket */

        pthread_mutex_t exit_lock; /* the first exit request wins */
        bool exit_requested;
        int exit_reason, exit_status;
        char *exit_msg;
        int exit_fd; /* eventfd the main thread sleeps on */

        /* The KVM calls that wait for SRCU grace periods (vm_slow_setup_start). */
        struct vm_slow_call {
                int (*call)(struct vm *vm, cap_error_t *err);
                struct vm *vm;
                pthread_t thread;
                bool started;
                cap_error_t err;
        } slow[2];

        int signal_fd;
        sigset_t old_mask;
        bool mask_changed;
        struct sigaction old_kick;
        bool kick_installed;
        struct sigaction old_pipe;
        bool pipe_ignored;
};

static int status_for(int reason, int status)
{
        switch (reason) {
        case VM_EXIT_POWEROFF:
                return 0;
        case VM_EXIT_REBOOT:
                return VM_STATUS_REBOOT;
        case VM_EXIT_PANIC:
                return VM_STATUS_PANIC;
        case VM_EXIT_TRIPLE_FAULT:
                return VM_STATUS_TRIPLE_FAULT;
        case VM_EXIT_HARD_STOP:
                return VM_STATUS_HARD_STOP;
        case VM_EXIT_DEBUG_PORT:
                return status & 0xff;
        case VM_EXIT_SIGNAL:
                return status;
        default:
                return 1;
        }
}

static void vm_exit(void *opaque, int reason, int status, const char *msg)
{
        struct vm *vm = opaque;
        pthread_mutex_lock(&vm->exit_lock);
        if (!vm->exit_requested) {
                vm->exit_requested = true;
                vm->exit_reason = reason;
                vm->exit_status = status_for(reason, status);
                if (msg)
                        vm->exit_msg = xstrdup(msg);
                uint64_t one = 1;
                while (write(vm->exit_fd, &one, sizeof(one)) < 0 && errno == EINTR)
                        ;
        }
        pthread_mutex_unlock(&vm->exit_lock);
}

static void vm_request_exit(void *opaque, int reason, int status)
{
        vm_exit(opaque, reason, status, NULL);
}

static void vm_fail(void *opaque, const char *msg)
{
        vm_exit(opaque, VM_EXIT_ERROR, 1, msg);
}

static void vm_vcpu_halted(void *opaque)
{
        struct vm *vm = opaque;
        if (atomic_fetch_sub(&vm->running_vcpus, 1) == 1)
                vm_exit(vm, VM_EXIT_POWEROFF, 0, "every vCPU halted");
}

static int vm_irq_line(void *opaque, uint32_t gsi, int level)
{
        struct vm *vm = opaque;
        struct kvm_irq_level irq = { .irq = gsi, .level = (uint32_t)level };
        return ioctl(vm->vm_fd, KVM_IRQ_LINE, &irq);
}

static int vm_ioeventfd(void *opaque, int fd, uint64_t addr, uint32_t len, bool pio, bool assign, cap_error_t *err)
{
        struct vm *vm = opaque;
        return vm_irq_ioeventfd(&vm->irq, fd, addr, len, pio, NULL, assign, err);
}

static int vm_ioeventfd_match(void *opaque, int fd, uint64_t addr, uint32_t len, bool pio, uint64_t data, bool assign,
                              cap_error_t *err)
{
        struct vm *vm = opaque;
        return vm_irq_ioeventfd(&vm->irq, fd, addr, len, pio, &data, assign, err);
}

static int vm_irqfd(void *opaque, int fd, uint32_t gsi, bool assign, cap_error_t *err)
{
        struct vm *vm = opaque;
        return vm_irq_irqfd(&vm->irq, fd, gsi, assign, err);
}

static int vm_gsi_alloc(void *opaque, uint32_t *gsi, cap_error_t *err)
{
        struct vm *vm = opaque;
        return vm_irq_gsi_alloc(&vm->irq, gsi, err);
}

static int vm_msi_route(void *opaque, uint32_t gsi, uint64_t addr, uint32_t data, bool mask, cap_error_t *err)
{
        struct vm *vm = opaque;
        return vm_irq_msi_route(&vm->irq, gsi, addr, data, mask, err);
}

/* Devices announce themselves before the kernel is loaded (devices_init runs first). */
static void vm_cmdline_append(void *opaque, const char *text)
{
        struct vm *vm = opaque;
        cmdline_append(&vm->device_cmdline, text);
}

static void vm_signal_ready(void *opaque, uint32_t events)
{
        struct vm *vm = opaque;
        struct signalfd_siginfo si;
        (void)events;
        while (read(vm->signal_fd, &si, sizeof(si)) == sizeof(si))
                vm_exit(vm, VM_EXIT_SIGNAL, 128 + (int)si.ssi_signo, NULL);
}

/* The control channel's view of the VM (vmm/api.h); these run on the event loop. */
static bool vm_api_pause(void *opaque)
{
        struct vm *vm = opaque;
        return vcpu_pause(&vm->pause, vm->vcpus, vm->n_vcpus);
}

static bool vm_api_paused(void *opaque)
{
        struct vm *vm = opaque;
        return vcpu_paused(&vm->pause);
}

static void vm_api_resume(void *opaque)
{
        struct vm *vm = opaque;
        vcpu_resume(&vm->pause);
}

static void vm_api_power_button(void *opaque)
{
        (void)opaque;
        acpi_pm_power_button();
}

static void vm_api_hard_stop(void *opaque, unsigned int timeout_s)
{
        char msg[128];
        snprintf(msg, sizeof(msg), "the guest did not power off within %u s of the power button: stopped it", timeout_s);
        vm_exit(opaque, VM_EXIT_HARD_STOP, VM_STATUS_HARD_STOP, msg);
}

static int vm_open_api(struct vm *vm, cap_error_t *err)
{
        struct api_vm ops = {
                .vm = vm,
                .config = vm->cfg,
                .balloon = vm->devices.balloon,
                .n_vcpus = vm->cfg->cpus,
                .pause = vm_api_pause,
                .paused = vm_api_paused,
                .resume = vm_api_resume,
                .pause_fd = vm->pause.notify_fd,
                .power_button = vm_api_power_button,
                .hard_stop = vm_api_hard_stop,
        };
        return api_open(&vm->api, vm->cfg->api_socket, &vm->loop, &ops, err);
}

static int vm_create_kvm(struct vm *vm, cap_error_t *err)
{
        vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
        if (vm->vm_fd < 0)
                return cap_fail(err, errno, "KVM_CREATE_VM");
        if (ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, (unsigned long)VM_TSS_ADDR) < 0)
                return cap_fail(err, errno, "KVM_SET_TSS_ADDR");
        uint64_t idmap = VM_IDENTITY_MAP_ADDR;
        if (ioctl(vm->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0)
                return cap_fail(err, errno, "KVM_SET_IDENTITY_MAP_ADDR");
        if (ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
                return cap_fail(err, errno, "KVM_CREATE_IRQCHIP");
        int r = vm_irq_init(&vm->irq, vm->vm_fd, kvm_cap(vm->kvm_fd, KVM_CAP_IRQ_ROUTING), err);
        vm->irq_ready = true;
        if (r < 0)
                return -1;
        /* The PIT is there for Linux (timer calibration, the timer check); payloads never touch
         * ports 0x40-0x43 or 0x61. Without one a launch also skips the PIT's share of KVM's
         * SRCU waits: turning reinjection off (vm_pit_reinject_off: two irq SRCU grace periods,
         * 0.1-16 ms here) and unregistering its I/O devices in teardown. */
        if (vm->cfg->payload)
                return 0;
        /* The dummy speaker port (0x61) keeps the kernel's PIT calibration happy. */
        struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
        if (ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0)
                return cap_fail(err, errno, "KVM_CREATE_PIT2");
        return 0;
}

static int vm_register_memory(struct vm *vm, cap_error_t *err)
{
        return guest_mem_register(&vm->mem, vm->vm_fd, err);
}

/* No lost-tick reinjection: guests keep time with kvm-clock/TSC, not by counting PIT ticks.
 * KVM turns it off once either way, waiting for two irq SRCU grace periods (7-16 ms here):
 * here, or in teardown when the PIT is freed. Here it runs beside the boot, and nothing waits
 * for it but teardown. It holds the PIT's lock while it waits, so a guest's PIT access in that
 * time waits too; Linux reads the PIT, if at all, long after its first milliseconds. */
static int vm_pit_reinject_off(struct vm *vm, cap_error_t *err)
{
        struct kvm_reinject_control reinject = { .pit_reinject = 0 };
        if (vm->cfg->payload)
                return 0;
        if (ioctl(vm->vm_fd, KVM_REINJECT_CONTROL, &reinject) < 0)
                return cap_fail(err, errno, "KVM_REINJECT_CONTROL");
        return 0;
}

static void *vm_slow_call_main(void *opaque)
{
        struct vm_slow_call *c = opaque;
        c->call(c->vm, &c->err);
        return NULL;
}

/* KVM calls that wait for grace periods of different SRCUs, not for the CPU (measured on PVM:
 * 7 ms for the memory slot, 7-16 ms for the PIT), so each runs on a thread of its own beside
 * the devices' set-up and the kernel's loading, which need neither. After vm_setup_signals:
 * the threads inherit the blocked signals. The memory slot comes first: the vCPUs wait for it
 * (vm_slow_call_join), the PIT's switch only teardown does. */
static void vm_slow_setup_start(struct vm *vm)
{
        int (*calls[])(struct vm *, cap_error_t *) = { vm_register_memory, vm_pit_reinject_off };
        for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++) {
                struct vm_slow_call *c = &vm->slow[i];
                *c = (struct vm_slow_call){ .call = calls[i], .vm = vm };
                if (pthread_create(&c->thread, NULL, vm_slow_call_main, c) == 0)
                        c->started = true;
                else
                        vm_slow_call_main(c);
        }
}

/* Joins one call's thread and hands over its failure. */
static int vm_slow_call_join(struct vm_slow_call *c, cap_error_t *err)
{
        if (c->started)
                pthread_join(c->thread, NULL);
        c->started = false;
        if (!c->err)
                return 0;
        *err = c->err;
        c->err = NULL;
        return -1;
}

static int vm_load(struct vm *vm, struct boot_info *boot, cap_error_t *err)
{
        if (vm->cfg->payload)
                return x86_load_payload(&vm->mem, vm->cfg, boot, err);
        return x86_load_linux(&vm->mem, vm->cfg, vm->device_cmdline, boot, err);
}

static int vm_create_vcpus(struct vm *vm, const struct boot_info *boot, cap_error_t *err)
{
        int max = kvm_cap(vm->kvm_fd, KVM_CAP_MAX_VCPUS);
        if (max <= 0)
                max = kvm_cap(vm->kvm_fd, KVM_CAP_NR_VCPUS);
        if (vm->cfg->cpus > max)
                return cap_fail(err, 0, "--cpus: %d vCPUs requested, KVM allows at most %d", vm->cfg->cpus, max);
        int run_size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
        if (run_size < (int)sizeof(struct kvm_run))
                return cap_fail(err, errno, "KVM_GET_VCPU_MMAP_SIZE");
        vm->vcpus = xmalloc0((size_t)vm->cfg->cpus * sizeof(*vm->vcpus));
        for (int i = 0; i < vm->cfg->cpus; i++) {
                struct vcpu *v = &vm->vcpus[i];
                int r = vcpu_create(v, vm->vm_fd, i, (size_t)run_size, &vm->env, err);
                if (v->fd >= 0)
                        vm->n_vcpus = i + 1;
                if (r < 0 || x86_setup_vcpu(vm->kvm_fd, v->fd, i, vm->cfg->cpus, boot, err) < 0)
                        return -1;
        }
        return 0;
}

/* SIGINT/SIGTERM, and SIGQUIT/SIGHUP from a console terminal (Ctrl-\, hangup), become an
 * orderly stop through a signalfd on the event loop, so the terminal is always restored;
 * every thread created afterwards inherits the blocked mask. SIGPIPE is ignored: a console
 * reader that went away costs the guest its output (EPIPE), not the VMM its life. */
static int vm_setup_signals(struct vm *vm, cap_error_t *err)
{
        struct sigaction ign = { .sa_handler = SIG_IGN };
        if (sigaction(SIGPIPE, &ign, &vm->old_pipe) < 0)
                return cap_fail(err, errno, "sigaction SIGPIPE");
        vm->pipe_ignored = true;
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGQUIT);
        sigaddset(&set, SIGHUP);
        if (pthread_sigmask(SIG_BLOCK, &set, &vm->old_mask) != 0)
                return cap_fail(err, errno, "pthread_sigmask");
        vm->mask_changed = true;
        vm->signal_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
        if (vm->signal_fd < 0)
                return cap_fail(err, errno, "signalfd");
        if (evloop_add(&vm->loop, vm->signal_fd, EPOLLIN, vm_signal_ready, vm, err) < 0)
                return -1;
        if (vcpu_signals_init(&vm->old_kick, err) < 0)
                return -1;
        vm->kick_installed = true;
        return 0;
}

static int vm_start(struct vm *vm, cap_error_t *err)
{
        /* Before the event loop serves the control channel: a pause counts every vCPU. */
        pthread_mutex_lock(&vm->pause.lock);
        vm->pause.live = vm->n_vcpus;
        pthread_mutex_unlock(&vm->pause.lock);
        if (evloop_start(&vm->loop, err) < 0 || devices_start(&vm->devices, err) < 0)
                return -1;
        atomic_store(&vm->running_vcpus, vm->n_vcpus);
        for (int i = 0; i < vm->n_vcpus; i++)
                if (vcpu_start(&vm->vcpus[i], err) < 0)
                        return -1;
        if (vm->cfg->started)
                vm->cfg->started(vm->cfg->started_arg);
        return 0;
}

static void vm_wait(struct vm *vm)
{
        uint64_t n;
        while (read(vm->exit_fd, &n, sizeof(n)) < 0 && errno == EINTR)
                ;
}

/* Stop every thread, then undo everything vm_run() set up, in reverse. Safe on a partly built VM. */
static void vm_destroy(struct vm *vm)
{
        atomic_store(&vm->stopping, true);
        for (size_t i = 0; i < sizeof(vm->slow) / sizeof(vm->slow[0]); i++) {
                cleanup_error cap_error_t slow_err = NULL;
                if (vm_slow_call_join(&vm->slow[i], &slow_err) < 0)
                        log_warning("%s", slow_err->msg);
        }
        if (vm->pause_ready)
                vcpu_pause_release(&vm->pause);
        for (int i = 0; i < vm->n_vcpus; i++)
                vcpu_kick(&vm->vcpus[i]);
        for (int i = 0; i < vm->n_vcpus; i++)
                vcpu_join(&vm->vcpus[i]);
        if (vm->loop_ready)
                evloop_stop(&vm->loop);
        api_close(vm->api);
        if (vm->devices_ready)
                devices_exit(&vm->devices);
        for (int i = 0; i < vm->n_vcpus; i++)
                vcpu_destroy(&vm->vcpus[i]);
        free(vm->vcpus);
        if (vm->loop_ready)
                evloop_destroy(&vm->loop);
        if (vm->kick_installed)
                vcpu_signals_restore(&vm->old_kick);
        if (vm->signal_fd >= 0) {
                /* Consume signals that arrived while stopping, so unblocking them does not kill us. */
                struct signalfd_siginfo si;
                while (read(vm->signal_fd, &si, sizeof(si)) == sizeof(si))
                        ;
                close(vm->signal_fd);
        }
        if (vm->mask_changed)
                pthread_sigmask(SIG_SETMASK, &vm->old_mask, NULL);
        if (vm->pipe_ignored)
                sigaction(SIGPIPE, &vm->old_pipe, NULL);
        guest_mem_destroy(&vm->mem);
        if (vm->irq_ready)
                vm_irq_destroy(&vm->irq);
        free(vm->device_cmdline);
        if (vm->vm_fd >= 0)
                close(vm->vm_fd);
        if (vm->kvm_fd >= 0)
                close(vm->kvm_fd);
        if (vm->exit_fd >= 0)
                close(vm->exit_fd);
        if (vm->pause_ready)
                vcpu_pause_destroy(&vm->pause);
        pthread_mutex_destroy(&vm->exit_lock);
}

static int vm_setup(struct vm *vm, cap_error_t *err)
{
        struct boot_info boot = { 0 };
        if (!vm->cfg->payload && kvm_flavour() == KVM_FLAVOUR_PVM)
                return cap_fail(err, 0, KVM_PVM_KERNEL_REFUSAL);
        vm->kvm_fd = kvm_open(NULL, err);
        if (vm->kvm_fd < 0)
                return -1;
        vm->exit_fd = eventfd(0, EFD_CLOEXEC);
        if (vm->exit_fd < 0)
                return cap_fail(err, errno, "eventfd");
        vm->pause_ready = true;
        if (vcpu_pause_init(&vm->pause, err) < 0)
                return -1;
        if (vm_create_kvm(vm, err) < 0)
                return -1;
        if (guest_mem_init(&vm->mem, vm->cfg->memory, vm->cfg->hugepages, err) < 0)
                return -1;
        if (evloop_init(&vm->loop, err) < 0) {
                evloop_destroy(&vm->loop);
                return -1;
        }
        vm->loop_ready = true;
        /* Before the devices: from the moment the console's terminal is raw, a signal must stop us in order. */
        if (vm_setup_signals(vm, err) < 0)
                return -1;
        vm_slow_setup_start(vm);
        if (devices_init(&vm->devices, err) < 0)
                return -1;
        vm->devices_ready = true;
        if (vm_load(vm, &boot, err) < 0 || vm_slow_call_join(&vm->slow[0], err) < 0 || vm_create_vcpus(vm, &boot, err) < 0)
                return -1;
        if (vm->cfg->api_socket && vm_open_api(vm, err) < 0)
                return -1;
        if (vm->cfg->ready && vm->cfg->ready(vm->cfg->ready_arg, err) < 0)
                return -1;
        return vm_start(vm, err);
}

int vm_run(const struct vm_config *cfg, int *status, cap_error_t *err)
{
        struct vm vm = { .cfg = cfg, .kvm_fd = -1, .vm_fd = -1, .exit_fd = -1, .signal_fd = -1 };
        vm.mem.memfd = -1;
        pthread_mutex_init(&vm.exit_lock, NULL);
        bus_init(&vm.pio);
        bus_init(&vm.mmio);
        vm.devices = (struct vm_devices){
                .pio = &vm.pio,
                .mmio = &vm.mmio,
                .mem = &vm.mem,
                .loop = &vm.loop,
                .config = cfg,
                .irq_line = vm_irq_line,
                .ioeventfd = vm_ioeventfd,
                .ioeventfd_match = vm_ioeventfd_match,
                .irqfd = vm_irqfd,
                .gsi_alloc = vm_gsi_alloc,
                .msi_route = vm_msi_route,
                .cmdline_append = vm_cmdline_append,
                .request_exit = vm_request_exit,
                .fail = vm_fail,
                .vm = &vm,
        };
        vm.env = (struct vcpu_env){
                .pio = &vm.pio,
                .mmio = &vm.mmio,
                .stopping = &vm.stopping,
                .exit = vm_exit,
                .halted = vm_vcpu_halted,
                .pause = &vm.pause,
                .vm = &vm,
        };

        int r = vm_setup(&vm, err);
        if (r == 0)
                vm_wait(&vm);
        /* Threads are joined before the exit state is read. */
        vm_destroy(&vm);
        cleanup_free char *msg = vm.exit_msg;
        if (r < 0)
                return -1;
        *status = vm.exit_status;
        if (vm.exit_reason == VM_EXIT_ERROR)
                return cap_fail(err, 0, "%s", msg ? msg : "the VM failed");
        if (vm.exit_reason == VM_EXIT_TRIPLE_FAULT)
                log_warning("the guest triple-faulted: %s", msg);
        if (vm.exit_reason == VM_EXIT_HARD_STOP)
                log_warning("%s", msg);
        return 0;
}

void vm_config_free(struct vm_config *cfg)
{
        if (!cfg)
                return;
        free(cfg->kernel);
        free(cfg->initrd);
        free(cfg->cmdline);
        free(cfg->payload);
        free(cfg->console_path);
        for (int i = 0; i < cfg->n_disks; i++) {
                free(cfg->disks[i].path);
                free(cfg->disks[i].serial);
        }
        free(cfg->disks);
        for (int i = 0; i < cfg->n_console_ports; i++) {
                free(cfg->console_ports[i].name);
                free(cfg->console_ports[i].socket);
        }
        free(cfg->console_ports);
        free(cfg->vsock_socket);
        for (int i = 0; i < cfg->n_shares; i++) {
                free(cfg->shares[i].dir);
                free(cfg->shares[i].tag);
                free(cfg->shares[i].socket);
        }
        free(cfg->shares);
        for (int i = 0; i < cfg->n_nets; i++) {
                free(cfg->nets[i].ifname);
                free(cfg->nets[i].netns);
                for (int j = 0; j < cfg->nets[i].n_forwards; j++)
                        free(cfg->nets[i].forwards[j].host_addr);
                free(cfg->nets[i].forwards);
        }
        free(cfg->nets);
        free(cfg->api_socket);
        memset(cfg, 0, sizeof(*cfg));
}
