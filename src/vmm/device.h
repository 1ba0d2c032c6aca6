/* Device registration, kvmtool style: each device file ends with
 * DEVICE_REGISTER(name, init), so there is no central table. vm_create() calls
 * every init in registration order; a device sees only the struct vm_devices
 * context (buses, guest memory, interrupt lines and the event loop). */
#ifndef CAPSULE_VMM_DEVICE_H
#define CAPSULE_VMM_DEVICE_H

#include <stdint.h>

#include "common/error.h"
#include "vmm/bus.h"
#include "vmm/evloop.h"
#include "vmm/memory.h"

struct vm_config;

struct vm_devices {
        struct bus *pio, *mmio;
        struct guest_mem *mem;
        struct evloop *loop;
        const struct vm_config *config;
        /* Raise/lower a GSI through the in-kernel irqchip (KVM_IRQ_LINE). */
        int (*irq_line)(void *vm, uint32_t gsi, int level);
        /* Ask the VM to stop with an exit reason (see vm.h) and status. */
        void (*request_exit)(void *vm, int reason, int status);
        void *vm;
};

struct device_ops {
        const char *name;
        int (*init)(struct vm_devices *ctx, cap_error_t *err);
        void (*exit)(struct vm_devices *ctx); /* optional: restore host state (e.g. the terminal) */
};

void device_register(const struct device_ops *ops);
int devices_init(struct vm_devices *ctx, cap_error_t *err);
void devices_exit(struct vm_devices *ctx);

#define DEVICE_REGISTER(ident, ...)                                                        \
        static const struct device_ops device_ops_##ident = { __VA_ARGS__ };               \
        __attribute__((constructor)) static void device_register_##ident(void)             \
        {                                                                                  \
                device_register(&device_ops_##ident);                                      \
        }

#endif
