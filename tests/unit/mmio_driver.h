/* A virtio-mmio driver's register steps, for the device unit tests: the device's window is the
 * first one (LAYOUT_MMIO_START) on the test machine's MMIO bus. */
#ifndef CAPSULE_TESTS_UNIT_MMIO_DRIVER_H
#define CAPSULE_TESTS_UNIT_MMIO_DRIVER_H

#include <stdint.h>

#include "vmm/bus.h"

uint32_t mmio_rd32(struct bus *mmio, uint64_t off);
void mmio_wr(struct bus *mmio, uint64_t off, uint32_t v, uint32_t len);
void mmio_wr32(struct bus *mmio, uint64_t off, uint32_t v);
uint64_t mmio_device_features(struct bus *mmio);
/* Linux's first steps: reset, ACKNOWLEDGE, DRIVER, features (VERSION_1 added), FEATURES_OK. */
void mmio_driver_features(struct bus *mmio, uint64_t features);
/* Queue q with size entries at desc, avail and used, then QUEUE_READY. */
void mmio_queue_setup(struct bus *mmio, unsigned int q, uint32_t size, uint64_t desc, uint64_t avail, uint64_t used);

#endif
