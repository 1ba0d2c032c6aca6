/* PCI host bridge, bus 0 only. Configuration mechanism #1 (0xcf8 address,
 * 0xcfc-0xcff data) and ECAM at LAYOUT_ECAM reach the same functions; 00:00.0
 * is the host bridge itself. Devices (virtio-pci) register one function per
 * slot with its config header already filled in; the host owns the writable
 * header fields (command, BARs, interrupt line), places each memory BAR in
 * [PCI_MMIO_START, PCI_MMIO_END) and routes accesses inside a BAR to the
 * function's bar_access callback while memory decoding is enabled. */
#ifndef CAPSULE_VMM_DEVICES_PCI_H
#define CAPSULE_VMM_DEVICES_PCI_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "vmm/x86/layout.h"

#define PCI_SLOTS 32
#define PCI_BARS 6
/* Extended config space: ECAM reaches all of it, mechanism #1 the first 256 bytes. */
#define PCI_CONFIG_SIZE 4096
/* Offsets from here on are the device's own (capabilities), see config_access. */
#define PCI_DEVICE_CONFIG 0x40

/* The BAR window, the upper part of the device MMIO area (the DSDT's _CRS for bus 0). */
#define PCI_MMIO_START (LAYOUT_MMIO_START + 0x10000000ULL)
#define PCI_MMIO_END LAYOUT_ECAM
/* INTx: pin P (1 = INTA) of slot S is GSI PCI_INTX_GSI_BASE + (S + P - 1) % 8,
 * an IOAPIC input (level, active low); the host writes it to the interrupt line register. */
#define PCI_INTX_GSI_BASE 16

/* Standard header offsets */
#define PCI_VENDOR_ID 0x00
#define PCI_DEVICE_ID 0x02
#define PCI_COMMAND 0x04
#define PCI_STATUS 0x06
#define PCI_REVISION_ID 0x08
#define PCI_CLASS_PROG 0x09
#define PCI_CLASS_DEVICE 0x0a /* subclass at 0x0a, base class at 0x0b */
#define PCI_HEADER_TYPE 0x0e
#define PCI_BAR0 0x10
#define PCI_SUBSYSTEM_VENDOR_ID 0x2c
#define PCI_SUBSYSTEM_ID 0x2e
#define PCI_CAPABILITY_LIST 0x34
#define PCI_INTERRUPT_LINE 0x3c
#define PCI_INTERRUPT_PIN 0x3d

#define PCI_COMMAND_MEMORY 0x0002
#define PCI_STATUS_CAP_LIST 0x0010

struct pci_function;

/* An access at offset inside BAR bar (len 1, 2, 4 or 8, little-endian).
 * Called without the PCI lock, possibly from several vCPU threads at once. */
typedef void (*pci_bar_fn)(struct pci_function *fn, int bar, uint64_t offset, uint8_t *data, uint32_t len, bool is_write);
/* An access to the device's own config space (offset >= PCI_DEVICE_CONFIG, len 1, 2
 * or 4, never crossing a dword, offset + len <= PCI_CONFIG_SIZE). Called with the
 * PCI lock held: it may read and update fn->config but must not call pci_*(). */
typedef void (*pci_config_fn)(struct pci_function *fn, uint32_t offset, uint8_t *data, uint32_t len, bool is_write);
/* The address BAR bar decodes at changed from old_addr to new_addr (0: not decoding:
 * memory decoding off, or the BAR outside the BAR window), after a write to the BAR or
 * the command register. Called without the PCI lock (it may call pci_*()), one call at
 * a time across the whole bus and in the order of the writes, so a device can move its
 * ioeventfds along. */
typedef void (*pci_bar_moved_fn)(struct pci_function *fn, int bar, uint64_t old_addr, uint64_t new_addr);

struct pci_function {
        /* Filled by the owner before registering: vendor/device ids, class, header type 0,
         * subsystem ids, capability list and pointer, interrupt pin (0: no INTx). */
        uint8_t config[PCI_CONFIG_SIZE];
        /* 32-bit non-prefetchable memory BARs: 0 (unused) or a power of two >= 4 KiB. */
        uint64_t bar_size[PCI_BARS];
        pci_bar_fn bar_access;       /* required when a BAR is used */
        pci_config_fn config_access; /* NULL: the device's config reads from config[], writes are ignored */
        pci_bar_moved_fn bar_moved;  /* optional */
        void *opaque;
        /* Filled by pci_register_function(): */
        unsigned int slot;
        uint32_t gsi; /* the INTx GSI, when config[PCI_INTERRUPT_PIN] is set */
};

/* Put fn at 00:slot.0 (slot -1: the first free one; slot 0 is the host bridge).
 * Assigns the BAR addresses and the INTx GSI. fn must stay valid until unregistered. */
int pci_register_function(int slot, struct pci_function *fn, cap_error_t *err);
void pci_unregister_function(struct pci_function *fn);
/* The function at 00:slot.0, or NULL: for the ACPI tables (DSDT devices and _PRT). */
const struct pci_function *pci_get_function(unsigned int slot);
/* The guest-physical address BAR bar currently decodes at (as the guest last programmed it). */
uint64_t pci_bar_address(const struct pci_function *fn, int bar);
/* Where BAR bar's accesses reach the function now: its address while memory decoding is on
 * and the BAR lies in the BAR window, else 0 (what bar_moved reports). */
uint64_t pci_bar_decoded(const struct pci_function *fn, int bar);

#endif
