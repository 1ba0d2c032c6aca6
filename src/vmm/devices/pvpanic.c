/* ISA pvpanic at PORT_PVPANIC: the guest's panic notifier writes here, and
 * the VM stops with VM_EXIT_PANIC instead of hanging in a dead kernel. */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "common/error.h"
#include "common/log.h"
#include "vmm/device.h"
#include "vmm/vm.h"
#include "vmm/x86/layout.h"

#define PVPANIC_PANICKED 0x01
#define PVPANIC_CRASH_LOADED 0x02 /* a kdump kernel takes over: keep running */

/* A guest can write the port in a loop: one notice a second at most, with the count of the others. */
static struct {
        pthread_mutex_t lock;
        bool logged;
        struct timespec last;
        unsigned long suppressed;
} notices = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void pvpanic_crash_loaded(void)
{
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        pthread_mutex_lock(&notices.lock);
        bool quiet = notices.logged && (now.tv_sec - notices.last.tv_sec) * 1000000000L + now.tv_nsec -
                                                       notices.last.tv_nsec < 1000000000L;
        unsigned long suppressed = notices.suppressed;
        if (quiet) {
                notices.suppressed++;
        } else {
                notices.logged = true;
                notices.last = now;
                notices.suppressed = 0;
        }
        pthread_mutex_unlock(&notices.lock);
        if (quiet)
                return;
        if (suppressed)
                log_msg(LOG_INFO, "guest panicked, its crash kernel is running (%lu more such notices suppressed)",
                        suppressed);
        else
                log_msg(LOG_INFO, "guest panicked, its crash kernel is running");
}

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
                pvpanic_crash_loaded();
}

static int pvpanic_init(struct vm_devices *ctx, cap_error_t *err)
{
        pthread_mutex_lock(&notices.lock);
        notices.logged = false;
        notices.suppressed = 0;
        pthread_mutex_unlock(&notices.lock);
        return bus_register(ctx->pio, PORT_PVPANIC, 1, pvpanic_io, ctx, "pvpanic", err);
}

DEVICE_REGISTER(pvpanic, DEVICE_ORDER_PLATFORM, .name = "pvpanic", .init = pvpanic_init)
