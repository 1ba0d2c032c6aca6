/* Device registration, kvmtool style: each device file ends with
 * DEVICE_REGISTER(ident, order, .name, .init[, .exit]), so there is no central
 * table. devices_init() calls every init in ascending .order (ties by name, never
 * by link order) and devices_exit() undoes them in reverse; a device sees only the
 * struct vm_devices context (buses, guest memory, interrupts and the event loop). */
#ifndef CAPSULE_VMM_DEVICE_H
#define CAPSULE_VMM_DEVICE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "vmm/bus.h"
#include "vmm/evloop.h"
#include "vmm/memory.h"

struct vm_config;
struct virtio_dev;
struct balloon;

/* Init order: a device comes after everything it uses (virtio devices need the core,
 * which needs the PCI host for the PCI transport). */
enum device_order {
        DEVICE_ORDER_PLATFORM = 100, /* legacy devices: serial, i8042, rtc, ACPI PM, ... */
        DEVICE_ORDER_BUS = 200,      /* the PCI host bridge */
        DEVICE_ORDER_VIRTIO_CORE = 300,
        DEVICE_ORDER_VIRTIO = 400,   /* virtio devices */
};

struct vm_devices {
        struct bus *pio, *mmio;
        struct guest_mem *mem;
        struct evloop *loop;
        const struct vm_config *config;
        /* Raise/lower a GSI through the in-kernel irqchip (KVM_IRQ_LINE). */
        int (*irq_line)(void *vm, uint32_t gsi, int level);
        /* KVM plumbing for virtio (src/vmm/irq.c), all returning 0 or -1 with err filled:
         * - ioeventfd: the guest's write of any value to [addr, addr+len) in port or MMIO space
         *   signals fd inside KVM, with no exit to user space (assign false removes it);
         * - ioeventfd_match: the same, only for writes of exactly len bytes equal to data (one
         *   register shared by several queues: virtio-mmio's QueueNotify);
         * - irqfd: a write to fd raises gsi (edge) inside KVM (assign false removes it);
         * - gsi_alloc: a free GSI above the IOAPIC's pins, for an MSI route;
         * - msi_route: point gsi at an MSI message (address, data); masked routes are simply
         *   not installed (msi_route with mask true). The routing table keeps the IOAPIC and
         *   PIC pins as KVM's default table has them. */
        int (*ioeventfd)(void *vm, int fd, uint64_t addr, uint32_t len, bool pio, bool assign, cap_error_t *err);
        int (*ioeventfd_match)(void *vm, int fd, uint64_t addr, uint32_t len, bool pio, uint64_t data, bool assign,
                               cap_error_t *err);
        int (*irqfd)(void *vm, int fd, uint32_t gsi, bool assign, cap_error_t *err);
        int (*gsi_alloc)(void *vm, uint32_t *gsi, cap_error_t *err);
        int (*msi_route)(void *vm, uint32_t gsi, uint64_t addr, uint32_t data, bool mask, cap_error_t *err);
        /* The kernel command line's additions from devices (virtio_mmio.device=...): append
         * " text" before the kernel is loaded. */
        void (*cmdline_append)(void *vm, const char *text);
        /* Ask the VM to stop with an exit reason (see vm.h) and status. */
        void (*request_exit)(void *vm, int reason, int status);
        /* Stop the VM as failed (status 1), msg saying why: for a device whose failure comes
         * after the VM started (another thread than the one that asked). */
        void (*fail)(void *vm, const char *msg);
        void *vm;
        /* The virtio core's instance list (src/vmm/virtio/virtio.c). */
        struct virtio_dev *virtio_devs;
        /* The VM's virtio-balloon (vmm/virtio/balloon.h), for the control channel; NULL: none. */
        struct balloon *balloon;
};

struct device_ops {
        const char *name;
        int order; /* enum device_order */
        int (*init)(struct vm_devices *ctx, cap_error_t *err);
        /* Optional: once the process is confined (vm_config.ready) and just before the vCPUs
         * run; the work a device may do beside the guest's boot (virtio-fs's handshake). */
        int (*start)(struct vm_devices *ctx, cap_error_t *err);
        void (*exit)(struct vm_devices *ctx); /* optional: restore host state (e.g. the terminal) */
};

void device_register(const struct device_ops *ops);
int devices_init(struct vm_devices *ctx, cap_error_t *err);
int devices_start(struct vm_devices *ctx, cap_error_t *err);
void devices_exit(struct vm_devices *ctx);

/* order (an enum device_order) comes first and is not optional: a registration without
 * one does not compile. */
#define DEVICE_REGISTER(ident, init_order, ...)                                            \
        static const struct device_ops device_ops_##ident = { .order = (init_order), __VA_ARGS__ }; \
        __attribute__((constructor)) static void device_register_##ident(void)             \
        {                                                                                  \
                device_register(&device_ops_##ident);                                      \
        }

#endif
