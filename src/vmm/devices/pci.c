/* PCI host bridge: config mechanism #1, ECAM and the BAR window (see pci.h).
 * Config offsets, bus/slot/function numbers and access sizes all come from
 * the guest and are checked before they index anything. */
#include "vmm/devices/pci.h"

#include <pthread.h>
#include <string.h>

#include "common/util.h"
#include "vmm/device.h"
#include "vmm/vm.h"

#define CF8_ENABLE 0x80000000u
#define CF8_PORTS 8      /* 0xcf8-0xcfb address (0xcf9 reset control), 0xcfc-0xcff data */
#define CF9_OFFSET 1
#define CF9_SYS_RST 0x02
#define CF9_RST_CPU 0x04 /* setting it resets the machine */
#define CF9_FULL_RST 0x08

#define HOST_BRIDGE_VENDOR 0x8086 /* Intel */
#define HOST_BRIDGE_DEVICE 0x29c0 /* 82G33/P35 (Q35) DRAM controller */
#define CLASS_BRIDGE_HOST 0x0600

/* Writable bits of the command register: I/O, memory, bus master, parity, SERR, INTx disable. */
#define COMMAND_WMASK 0x0547u
#define MIN_BAR_SIZE 4096u

struct pci_host {
        pthread_mutex_t lock;
        /* Held across a header write and its bar_moved calls (taken before lock), so that the
         * calls of concurrent writes cannot pass each other. */
        pthread_mutex_t move_lock;
        struct vm_devices *ctx;
        uint32_t address;       /* 0xcf8 */
        uint8_t reset_control;  /* 0xcf9 */
        struct pci_function *slots[PCI_SLOTS];
        int n_functions;
        uint64_t next_bar;      /* bump allocator in the BAR window */
        struct pci_function bridge;
};

static struct pci_host host = {
        .lock = PTHREAD_MUTEX_INITIALIZER,
        .move_lock = PTHREAD_MUTEX_INITIALIZER,
        .next_bar = PCI_MMIO_START,
};

static uint32_t config_get32(const struct pci_function *fn, uint32_t off)
{
        return (uint32_t)fn->config[off] | (uint32_t)fn->config[off + 1] << 8 | (uint32_t)fn->config[off + 2] << 16 |
               (uint32_t)fn->config[off + 3] << 24;
}

static void config_put32(struct pci_function *fn, uint32_t off, uint32_t v)
{
        for (int i = 0; i < 4; i++)
                fn->config[off + i] = (uint8_t)(v >> (8 * i));
}

static uint16_t config_get16(const struct pci_function *fn, uint32_t off)
{
        return (uint16_t)(fn->config[off] | fn->config[off + 1] << 8);
}

static void config_put16(struct pci_function *fn, uint32_t off, uint16_t v)
{
        fn->config[off] = (uint8_t)v;
        fn->config[off + 1] = (uint8_t)(v >> 8);
}

static bool is_power_of_two(uint64_t v)
{
        return v && !(v & (v - 1));
}

/* The function at 00:slot.fnum, or NULL for an absent one (no multi-function devices). */
static struct pci_function *pci_lookup(unsigned int slot, unsigned int fnum)
{
        if (slot >= PCI_SLOTS || fnum != 0)
                return NULL;
        return host.slots[slot];
}

/* Header writes: only the command register, cache line size, latency timer, BARs and
 * interrupt line take values; everything else is read-only. */
static void header_write(struct pci_function *fn, uint32_t reg, const uint8_t *data, uint32_t len)
{
        uint32_t dword = reg & ~3u;
        uint32_t old = config_get32(fn, dword), val = old;
        for (uint32_t i = 0; i < len; i++) {
                unsigned int shift = 8 * ((reg & 3) + i);
                val = (val & ~(0xffu << shift)) | (uint32_t)data[i] << shift;
        }
        uint32_t wmask = 0;
        if (dword == PCI_COMMAND) {
                wmask = COMMAND_WMASK; /* status bits are write-one-to-clear and none is ever set */
        } else if (dword == 0x0c) {
                wmask = 0x0000ffff; /* cache line size, latency timer */
        } else if (dword == PCI_INTERRUPT_LINE) {
                wmask = 0x000000ff;
        } else if (dword >= PCI_BAR0 && dword < PCI_BAR0 + 4 * PCI_BARS) {
                uint64_t size = fn->bar_size[(dword - PCI_BAR0) / 4];
                /* Writing all ones reads back the size mask; the low flag bits (32-bit memory) stay 0. */
                wmask = size ? (uint32_t)~(size - 1) : 0;
        }
        config_put32(fn, dword, (old & ~wmask) | (val & wmask));
}

/* One access that does not cross a dword boundary: reg + len <= PCI_CONFIG_SIZE, len 1/2/4. */
static void config_access(struct pci_function *fn, uint32_t reg, uint8_t *data, uint32_t len, bool is_write)
{
        if (reg >= PCI_DEVICE_CONFIG && fn->config_access) {
                fn->config_access(fn, reg, data, len, is_write);
        } else if (!is_write) {
                memcpy(data, &fn->config[reg], len);
        } else if (reg < PCI_DEVICE_CONFIG) {
                header_write(fn, reg, data, len);
        }
}

/* BAR b's address as the guest programmed it (PCI lock held). */
static uint64_t bar_base(const struct pci_function *fn, int b)
{
        return config_get32(fn, PCI_BAR0 + 4 * (uint32_t)b) & ~0xfu;
}

/* Where BAR b decodes (PCI lock held): see pci_bar_decoded(). */
static uint64_t bar_decoded(const struct pci_function *fn, int b)
{
        uint64_t size = fn->bar_size[b], base = bar_base(fn, b);

        if (!size || !(config_get16(fn, PCI_COMMAND) & PCI_COMMAND_MEMORY))
                return 0;
        return base >= PCI_MMIO_START && base < PCI_MMIO_END && size <= PCI_MMIO_END - base ? base : 0;
}

/* A config access from either mechanism, checked in full before use. A header write
 * that changes where a BAR decodes tells the function once the PCI lock is dropped. */
static void pci_config(unsigned int slot, unsigned int fnum, uint32_t reg, uint8_t *data, uint32_t len, bool is_write)
{
        bool ok = (len == 1 || len == 2 || len == 4) && (reg & 3) + len <= 4 && reg + len <= PCI_CONFIG_SIZE;
        bool header_write = is_write && reg < PCI_DEVICE_CONFIG;
        uint64_t before[PCI_BARS], after[PCI_BARS];

        if (header_write)
                pthread_mutex_lock(&host.move_lock);
        pthread_mutex_lock(&host.lock);
        struct pci_function *fn = ok ? pci_lookup(slot, fnum) : NULL;
        if (fn) {
                for (int b = 0; b < PCI_BARS; b++)
                        before[b] = bar_decoded(fn, b);
                config_access(fn, reg, data, len, is_write);
                for (int b = 0; b < PCI_BARS; b++)
                        after[b] = bar_decoded(fn, b);
        } else if (!is_write) {
                memset(data, 0xff, len);
        }
        pthread_mutex_unlock(&host.lock);
        if (fn && header_write && fn->bar_moved)
                for (int b = 0; b < PCI_BARS; b++)
                        if (before[b] != after[b])
                                fn->bar_moved(fn, b, before[b], after[b]);
        if (header_write)
                pthread_mutex_unlock(&host.move_lock);
}

static void pci_cf8_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
        (void)opaque;
        if (offset == 0 && len == 4) {
                pthread_mutex_lock(&host.lock);
                if (is_write)
                        host.address = (uint32_t)data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16 |
                                       (uint32_t)data[3] << 24;
                else
                        for (int i = 0; i < 4; i++)
                                data[i] = (uint8_t)(host.address >> (8 * i));
                pthread_mutex_unlock(&host.lock);
                return;
        }
        if (offset == CF9_OFFSET && len == 1) {
                bool reset = false;
                pthread_mutex_lock(&host.lock);
                if (is_write) {
                        reset = data[0] & CF9_RST_CPU;
                        host.reset_control = data[0] & (CF9_SYS_RST | CF9_FULL_RST);
                } else {
                        data[0] = host.reset_control;
                }
                pthread_mutex_unlock(&host.lock);
                if (reset)
                        host.ctx->request_exit(host.ctx->vm, VM_EXIT_REBOOT, VM_STATUS_REBOOT);
                return;
        }
        if (offset >= 4 && offset - 4 + len <= 4) {
                pthread_mutex_lock(&host.lock);
                uint32_t addr = host.address;
                pthread_mutex_unlock(&host.lock);
                if ((addr & CF8_ENABLE) && ((addr >> 16) & 0xff) == 0) {
                        pci_config((addr >> 11) & 0x1f, (addr >> 8) & 7, (addr & 0xfc) + (uint32_t)(offset - 4), data, len,
                                   is_write);
                        return;
                }
        }
        /* Other sizes and offsets of 0xcf8-0xcfb decode to nothing here; a disabled address reads as no device. */
        if (!is_write)
                memset(data, 0xff, len);
}

static void pci_ecam_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
        (void)opaque;
        /* The window holds bus 0 only: bits 19:15 slot, 14:12 function, 11:0 register. */
        unsigned int slot = (unsigned int)(offset >> 15) & 0x1f, fnum = (unsigned int)(offset >> 12) & 7;
        uint32_t reg = (uint32_t)(offset & 0xfff);
        if (offset >= LAYOUT_ECAM_SIZE) {
                if (!is_write)
                        memset(data, 0xff, len);
                return;
        }
        if (len == 8 && !(reg & 7)) {
                /* A 64-bit access is two dword accesses, low first. */
                pci_config(slot, fnum, reg, data, 4, is_write);
                pci_config(slot, fnum, reg + 4, data + 4, 4, is_write);
                return;
        }
        pci_config(slot, fnum, reg, data, len, is_write);
}

/* Accesses in the BAR window go to the BAR that decodes them, if memory decoding is on. */
static void pci_mmio_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
        (void)opaque;
        uint64_t addr = PCI_MMIO_START + offset;
        struct pci_function *hit = NULL;
        int hit_bar = 0;
        uint64_t hit_off = 0;
        pthread_mutex_lock(&host.lock);
        for (unsigned int s = 0; s < PCI_SLOTS && !hit; s++) {
                struct pci_function *fn = host.slots[s];
                if (!fn || !(config_get16(fn, PCI_COMMAND) & PCI_COMMAND_MEMORY))
                        continue;
                for (int b = 0; b < PCI_BARS; b++) {
                        uint64_t size = fn->bar_size[b];
                        uint64_t base = bar_base(fn, b);
                        if (size && addr >= base && addr - base < size && len <= size - (addr - base)) {
                                hit = fn;
                                hit_bar = b;
                                hit_off = addr - base;
                                break;
                        }
                }
        }
        pthread_mutex_unlock(&host.lock);
        if (hit)
                hit->bar_access(hit, hit_bar, hit_off, data, len, is_write);
        else if (!is_write)
                memset(data, 0xff, len);
}

static int pci_place_bars(struct pci_function *fn, cap_error_t *err)
{
        uint64_t next = host.next_bar;
        for (int b = 0; b < PCI_BARS; b++) {
                uint64_t size = fn->bar_size[b];
                if (!size) {
                        config_put32(fn, PCI_BAR0 + 4 * (uint32_t)b, 0);
                        continue;
                }
                if (!is_power_of_two(size) || size < MIN_BAR_SIZE)
                        return cap_fail(err, 0, "PCI BAR%d: size %#llx is not a power of two of at least 4 KiB", b,
                                        (unsigned long long)size);
                if (!fn->bar_access)
                        return cap_fail(err, 0, "PCI BAR%d: no bar_access callback", b);
                uint64_t base = (next + size - 1) & ~(size - 1);
                if (base < next || base > PCI_MMIO_END || size > PCI_MMIO_END - base)
                        return cap_fail(err, ENOSPC, "PCI BAR%d of %#llx bytes: the BAR window is full", b,
                                        (unsigned long long)size);
                config_put32(fn, PCI_BAR0 + 4 * (uint32_t)b, (uint32_t)base);
                next = base + size;
        }
        host.next_bar = next;
        return 0;
}

static int pci_insert(int slot, struct pci_function *fn, cap_error_t *err)
{
        if (slot < 0) {
                for (slot = 1; slot < PCI_SLOTS && host.slots[slot]; slot++)
                        ;
                if (slot == PCI_SLOTS)
                        return cap_fail(err, ENOSPC, "PCI: all %d slots of bus 0 are taken", PCI_SLOTS);
        } else if (slot >= PCI_SLOTS) {
                return cap_fail(err, EINVAL, "PCI slot %d: bus 0 has slots 0-%d", slot, PCI_SLOTS - 1);
        } else if (host.slots[slot]) {
                return cap_fail(err, EBUSY, "PCI slot %d: already taken", slot);
        }
        uint8_t pin = fn->config[PCI_INTERRUPT_PIN];
        if (pin > 4)
                return cap_fail(err, EINVAL, "PCI slot %d: interrupt pin %u is not INTA-INTD", slot, pin);
        if (pci_place_bars(fn, err) < 0)
                return -1;
        fn->slot = (unsigned int)slot;
        fn->gsi = 0;
        if (pin) {
                fn->gsi = PCI_INTX_GSI_BASE + ((unsigned int)slot + pin - 1u) % 8;
                fn->config[PCI_INTERRUPT_LINE] = (uint8_t)fn->gsi;
        }
        host.slots[slot] = fn;
        host.n_functions++;
        return 0;
}

int pci_register_function(int slot, struct pci_function *fn, cap_error_t *err)
{
        if (slot == 0)
                return cap_fail(err, EBUSY, "PCI slot 0: reserved for the host bridge");
        pthread_mutex_lock(&host.lock);
        int r = pci_insert(slot, fn, err);
        pthread_mutex_unlock(&host.lock);
        return r;
}

void pci_unregister_function(struct pci_function *fn)
{
        pthread_mutex_lock(&host.lock);
        if (fn->slot < PCI_SLOTS && host.slots[fn->slot] == fn) {
                host.slots[fn->slot] = NULL;
                /* BAR space is reused once the bus is empty (between VMs in one process). */
                if (--host.n_functions == 0)
                        host.next_bar = PCI_MMIO_START;
        }
        pthread_mutex_unlock(&host.lock);
}

const struct pci_function *pci_get_function(unsigned int slot)
{
        pthread_mutex_lock(&host.lock);
        const struct pci_function *fn = pci_lookup(slot, 0);
        pthread_mutex_unlock(&host.lock);
        return fn;
}

uint64_t pci_bar_address(const struct pci_function *fn, int bar)
{
        if (bar < 0 || bar >= PCI_BARS || !fn->bar_size[bar])
                return 0;
        pthread_mutex_lock(&host.lock);
        uint64_t addr = bar_base(fn, bar);
        pthread_mutex_unlock(&host.lock);
        return addr;
}

uint64_t pci_bar_decoded(const struct pci_function *fn, int bar)
{
        if (bar < 0 || bar >= PCI_BARS)
                return 0;
        pthread_mutex_lock(&host.lock);
        uint64_t addr = bar_decoded(fn, bar);
        pthread_mutex_unlock(&host.lock);
        return addr;
}

static void pci_exit(struct vm_devices *ctx)
{
        (void)ctx;
        pci_unregister_function(&host.bridge);
        pthread_mutex_lock(&host.lock);
        host.address = 0;
        host.reset_control = 0;
        pthread_mutex_unlock(&host.lock);
}

static int pci_init(struct vm_devices *ctx, cap_error_t *err)
{
        struct pci_function *br = &host.bridge;
        memset(br, 0, sizeof(*br));
        config_put16(br, PCI_VENDOR_ID, HOST_BRIDGE_VENDOR);
        config_put16(br, PCI_DEVICE_ID, HOST_BRIDGE_DEVICE);
        config_put16(br, PCI_CLASS_DEVICE, CLASS_BRIDGE_HOST);

        pthread_mutex_lock(&host.lock);
        host.ctx = ctx;
        host.address = 0;
        host.reset_control = 0;
        int r = pci_insert(0, br, err);
        pthread_mutex_unlock(&host.lock);
        if (r < 0)
                return -1;
        if (bus_register(ctx->pio, PORT_PCI_CONFIG, CF8_PORTS, pci_cf8_io, &host, "pci config", err) < 0 ||
            bus_register(ctx->mmio, LAYOUT_ECAM, LAYOUT_ECAM_SIZE, pci_ecam_io, &host, "pci ecam", err) < 0 ||
            bus_register(ctx->mmio, PCI_MMIO_START, PCI_MMIO_END - PCI_MMIO_START, pci_mmio_io, &host, "pci bars", err) < 0) {
                pci_exit(ctx);
                return -1;
        }
        return 0;
}

DEVICE_REGISTER(pci, DEVICE_ORDER_BUS, .name = "pci", .init = pci_init, .exit = pci_exit)
