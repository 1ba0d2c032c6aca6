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

/* What a vCPU thread sees of its VM. */
struct vcpu_env {
        struct bus *pio, *mmio;
        atomic_bool *stopping;
        /* Stop the VM (reason and status as in vm.h); msg explains VM_EXIT_ERROR. */
        void (*exit)(void *vm, int reason, int status, const char *msg);
        /* The vCPU halted with nothing to wake it (no in-kernel irqchip would do that). */
        void (*halted)(void *vm);
        void *vm;
};

struct vcpu {
        int index;
        int fd;
        struct kvm_run *run;
        size_t run_size;
        pthread_t thread;
        bool started;
        const struct vcpu_env *env;
};

/* KVM_CREATE_VCPU and map its kvm_run (run_size from KVM_GET_VCPU_MMAP_SIZE). */
int vcpu_create(struct vcpu *v, int vm_fd, int index, size_t run_size, const struct vcpu_env *env, cap_error_t *err);
int vcpu_start(struct vcpu *v, cap_error_t *err);
/* Make the thread leave KVM_RUN now or never enter it again; *env->stopping must be set first. */
void vcpu_kick(struct vcpu *v);
void vcpu_join(struct vcpu *v);
void vcpu_destroy(struct vcpu *v);

/* The kick signal (SIGUSR1) gets a no-op handler so it interrupts KVM_RUN without killing us. */
int vcpu_signals_init(struct sigaction *old, cap_error_t *err);
void vcpu_signals_restore(const struct sigaction *old);

#endif
