/* The world the device tests bring devices up in: port and MMIO buses, an event loop, guest
 * memory, a vm_config and the vm_devices context. Its KVM hooks accept everything and do
 * nothing (ctx.vm is NULL): a test points the ones it watches at its own fakes, and sets cfg,
 * between machine_base_init() and machine_base_start(). gsi_alloc and msi_route stay NULL:
 * only the PCI transport calls them, and its tests fake them. The unit tests start a machine
 * once; the fuzz targets (tests/fuzz) start and stop theirs for every input, keeping its
 * memory and event loop. */
#ifndef CAPSULE_TESTS_UNIT_MACHINE_H
#define CAPSULE_TESTS_UNIT_MACHINE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "check.h"
#include "common/error.h"
#include "vmm/bus.h"
#include "vmm/device.h"
#include "vmm/evloop.h"
#include "vmm/memory.h"
#include "vmm/vm.h"

struct machine_base {
        struct bus pio, mmio;
        struct evloop loop;
        struct guest_mem mem;
        struct vm_config cfg;
        struct vm_devices ctx;
        bool loop_up, mem_up, bus_up, up;
};

/* Zeroes b, then the event loop, mem_size bytes of guest memory and the context. */
int machine_base_init(struct machine_base *b, uint64_t mem_size, cap_error_t *err);
/* Fresh buses and devices_init() with b->cfg; with run, the event loop's thread as well. */
int machine_base_start(struct machine_base *b, bool run, cap_error_t *err);
/* Stops the event loop if it runs (whoever started it), then the devices; frees the buses. */
void machine_base_stop(struct machine_base *b);
/* machine_base_stop(), then undoes what machine_base_init() did. */
void machine_base_destroy(struct machine_base *b);

/* A vCPU's port or MMIO access of len bytes (at most 8), little-endian. */
uint64_t io_in(struct bus *bus, uint64_t addr, uint32_t len);
void io_out(struct bus *bus, uint64_t addr, uint32_t len, uint64_t v);

/* Declare struct `type` m, cleaned up by stop(&m), and bring it up with start(&m, args...,
 * &err): the test fails there, saying why, unless that returned 0. */
#define MACHINE_UP(type, m, start, stop, ...)                                              \
        struct type m __attribute__((cleanup(stop)));                                      \
        do {                                                                               \
                cleanup_error cap_error_t _err = NULL;                                     \
                int _r = start(&m, ##__VA_ARGS__, &_err);                                  \
                if (_r < 0)                                                                \
                        fprintf(stderr, #start ": %s\n", _err ? _err->msg : "?");          \
                CHECK(_r == 0);                                                            \
        } while (0)

#endif
