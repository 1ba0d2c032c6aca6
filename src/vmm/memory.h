/* Guest physical memory: one memfd (so vhost-user and snapshots can share it),
 * mapped once in the VMM and registered with KVM as slots laid around the
 * 32-bit PCI hole. Every guest address a device or loader touches goes through
 * guest_mem_ptr(), which bounds-checks it: guest data is hostile. */
#ifndef CAPSULE_VMM_MEMORY_H
#define CAPSULE_VMM_MEMORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

/* The 32-bit PCI hole: [3 GiB, 4 GiB) holds no RAM (ECAM, IOAPIC, LAPIC, MMIO BARs). */
#define GUEST_PCI_HOLE_START 0xC0000000ULL
#define GUEST_PCI_HOLE_END 0x100000000ULL

struct guest_region {
        uint64_t gpa;    /* guest physical start */
        uint64_t size;
        uint8_t *host;   /* where it is mapped in the VMM */
        uint64_t offset; /* offset in the memfd */
};

struct guest_mem {
        int memfd;
        uint8_t *base; /* one mapping of the whole memfd */
        uint64_t size; /* total RAM bytes */
        bool hugepages;
        struct guest_region regions[2];
        int n_regions;
};

/* Create size bytes of RAM (size is rounded up to 2 MiB with hugepages). */
int guest_mem_init(struct guest_mem *gm, uint64_t size, bool hugepages, cap_error_t *err);
/* Register the regions as KVM memory slots 0..n-1. */
int guest_mem_register(struct guest_mem *gm, int vm_fd, cap_error_t *err);
void guest_mem_destroy(struct guest_mem *gm);

/* Host pointer for [gpa, gpa+len) if the whole range is RAM inside one region, else NULL. */
void *guest_mem_ptr(const struct guest_mem *gm, uint64_t gpa, uint64_t len);
/* Copy helpers that fail (return -1) instead of touching memory outside the guest. */
int guest_mem_read(const struct guest_mem *gm, uint64_t gpa, void *buf, uint64_t len);
int guest_mem_write(const struct guest_mem *gm, uint64_t gpa, const void *buf, uint64_t len);
/* guest_mem_write for bulk loads (the kernel image): through the memfd, not the mapping. */
int guest_mem_fill(const struct guest_mem *gm, uint64_t gpa, const void *src, uint64_t len);
/* Copy len bytes of file fd, from offset off, to guest RAM at gpa: through the memfd, without
 * mapping the file. Fails if the range is not RAM or the file is shorter. */
int guest_mem_load_file(const struct guest_mem *gm, uint64_t gpa, int fd, uint64_t off, uint64_t len,
                        cap_error_t *err);
/* Bytes of RAM below the PCI hole (the e820 "low" RAM end). */
uint64_t guest_mem_low_end(const struct guest_mem *gm);

#endif
