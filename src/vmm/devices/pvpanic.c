/* ISA pvpanic at PORT_PVPANIC: the guest's panic notifier writes here, and
 * the VM stops with VM_EXIT_PANIC instead of hanging in a dead kernel. */
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "common/log.h"
#include "vmm/device.h"
#include "vmm/vm.h"
#include "vmm/x86/layout.h"

#define PVPANIC_PANICKED 0x01
#define PVPANIC_CRASH_LOADED 0x02 /* a kdump kernel takes over: keep running */

static void pvpanic_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
        struct vm_devices *ctx = opaque;
        (void)offset;
        (void)len;
        if (!is_write) {
                data[0] = PVPANIC_PANICKED | PVPANIC_CRASH_LOADED; /* the bus keeps accesses to 1 byte */
                return;
        }
        if (data[0] & PVPANIC_PANICKED)
                ctx->request_exit(ctx->vm, VM_EXIT_PANIC, VM_STATUS_PANIC);
        else if (data[0] & PVPANIC_CRASH_LOADED)
                log_msg(LOG_INFO, "guest panicked, its crash kernel is running");
}

static int pvpanic_init(struct vm_devices *ctx, cap_error_t *err)
{
        return bus_register(ctx->pio, PORT_PVPANIC, 1, pvpanic_io, ctx, "pvpanic", err);
}

DEVICE_REGISTER(pvpanic, .name = "pvpanic", .init = pvpanic_init)
