/* I/O buses: port I/O and MMIO address ranges dispatched to device handlers.
 * A vCPU thread calls bus_dispatch() for each KVM_EXIT_IO / KVM_EXIT_MMIO.
 * Accesses that hit no device read as all ones and are otherwise ignored. */
#ifndef CAPSULE_VMM_BUS_H
#define CAPSULE_VMM_BUS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"

/* offset is relative to the range's base; len is 1, 2, 4 or 8; data is little-endian. */
typedef void (*bus_handler_fn)(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write);

struct bus_range {
        uint64_t base, len;
        bus_handler_fn fn;
        void *opaque;
        const char *name;
};

struct bus {
        pthread_mutex_t lock; /* guards registration; dispatch is lock-free after the VM starts */
        struct bus_range ranges[64];
        int n;
};

enum bus_kind { BUS_PIO, BUS_MMIO };

void bus_init(struct bus *bus);
/* Fails if the range overlaps an existing one. */
int bus_register(struct bus *bus, uint64_t base, uint64_t len, bus_handler_fn fn, void *opaque, const char *name, cap_error_t *err);
/* Returns false when no device claims addr. Devices serialise their own state. */
bool bus_dispatch(struct bus *bus, uint64_t addr, uint8_t *data, uint32_t len, bool is_write);

#endif
