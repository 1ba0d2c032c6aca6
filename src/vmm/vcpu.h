/* One vCPU: its fd, the shared kvm_run page and the thread that runs KVM_RUN
 * and dispatches port and MMIO exits to the buses. */
#ifndef CAPSULE_VMM_VCPU_H
#define CAPSULE_VMM_VCPU_H

#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"
#include "vmm/bus.h"

struct vcpu;

/* Pausing (the control channel's pause/resume): vCPUs leave KVM_RUN and park on a condition
 * variable. Shared by every vCPU of a VM; all fields under lock. */
struct vcpu_pause {
        pthread_mutex_t lock;
        pthread_cond_t wake;  /* resume, or the VM stopping */
        atomic_bool paused;   /* requested: vCPUs park before their next KVM_RUN (read unlocked too) */
        bool stopping;        /* the VM is going away: parked vCPUs leave */
        int parked;           /* vCPU threads parked right now */
        int live;             /* vCPU threads that have not returned */
        int notify_fd;        /* eventfd, written when the last live vCPU parks */
};

int vcpu_pause_init(struct vcpu_pause *p, cap_error_t *err);
void vcpu_pause_destroy(struct vcpu_pause *p);
/* Ask every vCPU to park and kick it out of KVM_RUN. Returns true when all live vCPUs are
 * parked already; otherwise p->notify_fd becomes readable when they are (or call again). */
bool vcpu_pause(struct vcpu_pause *p, struct vcpu *vcpus, int n);
bool vcpu_paused(struct vcpu_pause *p);
void vcpu_resume(struct vcpu_pause *p);
/* Parked vCPUs leave for good (the VM stops). */
void vcpu_pause_release(struct vcpu_pause *p);

/* What a vCPU thread sees of its VM. */
struct vcpu_env {
        struct bus *pio, *mmio;
        atomic_bool *stopping;
        /* Stop the VM (reason and status as in vm.h); msg explains VM_EXIT_ERROR. */
        void (*exit)(void *vm, int reason, int status, const char *msg);
        /* The vCPU halted with nothing to wake it (no in-kernel irqchip would do that). */
        void (*halted)(void *vm);
        struct vcpu_pause *pause;
        void *vm;
};

/* KVM reports an instruction it could not emulate in guest user mode only where its own answer
 * (a #UD for the process) did not apply: e.g. it had to decode an intercepted instruction's
 * length because the CPU, or a nested hypervisor such as the testbed's TCG, gave no next rip.
 * As QEMU does, the vCPU then re-enters the guest, which runs the instruction again; a failure
 * in kernel mode, or the same one VCPU_EMULATION_RETRIES times in a row, stops the VM. */
#define VCPU_EMULATION_RETRIES 16
struct vcpu_emulation {
        unsigned long long rip; /* where the last failure was */
        unsigned repeats;       /* failures in a row there */
        unsigned reported;      /* warnings printed, bounded so a guest cannot fill the log */
};

/* Whether an emulation failure with these registers re-enters the guest. */
bool vcpu_emulation_retry(struct vcpu_emulation *e, const struct kvm_regs *regs, const struct kvm_sregs *sregs);

struct vcpu {
        int index;
        int fd;
        int stats_fd; /* vcpu_stats_open()'s, -1 without --debug */
        struct kvm_run *run;
        size_t run_size;
        pthread_t thread;
        bool started;
        const struct vcpu_env *env;
        struct vcpu_emulation emulation;
};

/* KVM_CREATE_VCPU and map its kvm_run (run_size from KVM_GET_VCPU_MMAP_SIZE). */
int vcpu_create(struct vcpu *v, int vm_fd, int index, size_t run_size, const struct vcpu_env *env, cap_error_t *err);
int vcpu_start(struct vcpu *v, cap_error_t *err);
/* Make the thread leave KVM_RUN now or never enter it again; *env->stopping must be set first. */
void vcpu_kick(struct vcpu *v);
void vcpu_join(struct vcpu *v);
void vcpu_destroy(struct vcpu *v);

/* vcpu_stats.c: KVM's counters of one vCPU, opened at creation only under --debug and logged
 * by vcpu_destroy(). */
int vcpu_stats_open(int vcpu_fd);
void vcpu_stats_log(int stats_fd, int index);

/* The kick signal (SIGUSR1) gets a no-op handler so it interrupts KVM_RUN without killing us. */
int vcpu_signals_init(struct sigaction *old, cap_error_t *err);
void vcpu_signals_restore(const struct sigaction *old);

#endif
