/* The debug exit port: a byte the guest writes to PORT_DEBUG_EXIT ends the VM
 * with that byte as capsule's exit status (test payloads report results so).
 * Only on request (vm run --debug-exit): any other guest could otherwise make
 * capsule report whatever status it likes. */
#include "vmm/device.h"
#include "vmm/vm.h"
#include "vmm/x86/layout.h"

static void debug_exit_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
        struct vm_devices *ctx = opaque;
        (void)offset;
        (void)len;
        if (is_write)
                ctx->request_exit(ctx->vm, VM_EXIT_DEBUG_PORT, data[0]);
        else
                data[0] = 0xff;
}

static int debug_exit_init(struct vm_devices *ctx, cap_error_t *err)
{
        if (!ctx->config || !ctx->config->debug_exit)
                return 0;
        return bus_register(ctx->pio, PORT_DEBUG_EXIT, 1, debug_exit_io, ctx, "debug exit", err);
}

DEVICE_REGISTER(debug_exit, DEVICE_ORDER_PLATFORM, .name = "debug_exit", .init = debug_exit_init)
