/* Table layouts from the ACPI 6.x specification, chapter 5.2. */
#include "vmm/x86/acpi.h"

#include <stddef.h>
#include <string.h>

#include "common/util.h"
#include "vmm/devices/pci.h"
#include "vmm/x86/aml.h"
#include "vmm/x86/layout.h"
#include "vmm/x86/mptable.h"

#define ACPI_OEM_ID "CAPSUL"
#define ACPI_OEM_TABLE_ID "CAPSULE "
#define ACPI_CREATOR_ID "CAPS"

struct acpi_gas {
        uint8_t space_id; /* 0 memory, 1 I/O */
        uint8_t bit_width;
        uint8_t bit_offset;
        uint8_t access_size; /* 1 byte, 2 word, 3 dword, 4 qword */
        uint64_t address;
} __attribute__((packed));

#define GAS_SYSTEM_IO 1
#define GAS_ACCESS_BYTE 1
#define GAS_ACCESS_WORD 2

struct acpi_facs {
        char signature[4];
        uint32_t length;
        uint32_t hardware_signature;
        uint32_t waking_vector;
        uint32_t global_lock;
        uint32_t flags;
        uint64_t x_waking_vector;
        uint8_t version;
        uint8_t reserved[3];
        uint32_t ospm_flags;
        uint8_t reserved2[24];
} __attribute__((packed));

struct acpi_fadt {
        struct acpi_header h;
        uint32_t firmware_ctrl;
        uint32_t dsdt;
        uint8_t reserved0;
        uint8_t preferred_pm_profile;
        uint16_t sci_int;
        uint32_t smi_cmd;
        uint8_t acpi_enable;
        uint8_t acpi_disable;
        uint8_t s4bios_req;
        uint8_t pstate_cnt;
        uint32_t pm1a_evt_blk;
        uint32_t pm1b_evt_blk;
        uint32_t pm1a_cnt_blk;
        uint32_t pm1b_cnt_blk;
        uint32_t pm2_cnt_blk;
        uint32_t pm_tmr_blk;
        uint32_t gpe0_blk;
        uint32_t gpe1_blk;
        uint8_t pm1_evt_len;
        uint8_t pm1_cnt_len;
        uint8_t pm2_cnt_len;
        uint8_t pm_tmr_len;
        uint8_t gpe0_blk_len;
        uint8_t gpe1_blk_len;
        uint8_t gpe1_base;
        uint8_t cst_cnt;
        uint16_t p_lvl2_lat;
        uint16_t p_lvl3_lat;
        uint16_t flush_size;
        uint16_t flush_stride;
        uint8_t duty_offset;
        uint8_t duty_width;
        uint8_t day_alrm;
        uint8_t mon_alrm;
        uint8_t century;
        uint16_t iapc_boot_arch;
        uint8_t reserved1;
        uint32_t flags;
        struct acpi_gas reset_reg;
        uint8_t reset_value;
        uint16_t arm_boot_arch;
        uint8_t minor_version;
        uint64_t x_firmware_ctrl;
        uint64_t x_dsdt;
        struct acpi_gas x_pm1a_evt_blk;
        struct acpi_gas x_pm1b_evt_blk;
        struct acpi_gas x_pm1a_cnt_blk;
        struct acpi_gas x_pm1b_cnt_blk;
        struct acpi_gas x_pm2_cnt_blk;
        struct acpi_gas x_pm_tmr_blk;
        struct acpi_gas x_gpe0_blk;
        struct acpi_gas x_gpe1_blk;
        struct acpi_gas sleep_control_reg;
        struct acpi_gas sleep_status_reg;
        uint64_t hypervisor_vendor_id;
} __attribute__((packed));

/* FADT flags */
#define FADT_WBINVD (1u << 0)
#define FADT_PROC_C1 (1u << 2)
#define FADT_SLP_BUTTON (1u << 5) /* no fixed-feature sleep button */
#define FADT_RESET_REG_SUP (1u << 10)
/* IA-PC boot architecture flags */
#define BOOT_ARCH_LEGACY_DEVICES (1u << 0)
#define BOOT_ARCH_8042 (1u << 1)
#define BOOT_ARCH_NO_VGA (1u << 2)

struct acpi_madt {
        struct acpi_header h;
        uint32_t lapic_address;
        uint32_t flags;
} __attribute__((packed));

#define MADT_PCAT_COMPAT 1 /* dual 8259s present (KVM's in-kernel PIC) */
enum { MADT_LAPIC = 0, MADT_IOAPIC = 1, MADT_ISO = 2, MADT_LAPIC_NMI = 4 };

struct madt_lapic {
        uint8_t type, length, uid, apic_id;
        uint32_t flags; /* 1: enabled */
} __attribute__((packed));

struct madt_ioapic {
        uint8_t type, length, id, reserved;
        uint32_t address;
        uint32_t gsi_base;
} __attribute__((packed));

struct madt_iso {
        uint8_t type, length, bus, source;
        uint32_t gsi;
        uint16_t flags;
} __attribute__((packed));

struct madt_lapic_nmi {
        uint8_t type, length, uid;
        uint16_t flags;
        uint8_t lint;
} __attribute__((packed));

#define MPS_ACTIVE_HIGH 0x1
#define MPS_LEVEL 0xc

struct acpi_mcfg {
        struct acpi_header h;
        uint64_t reserved;
        uint64_t base;
        uint16_t segment;
        uint8_t start_bus, end_bus;
        uint32_t reserved2;
} __attribute__((packed));

_Static_assert(sizeof(struct acpi_header) == 36, "ACPI header");
_Static_assert(sizeof(struct acpi_rsdp) == 36, "RSDP");
_Static_assert(sizeof(struct acpi_facs) == 64, "FACS");
_Static_assert(sizeof(struct acpi_fadt) == 276, "FADT");
_Static_assert(offsetof(struct acpi_fadt, iapc_boot_arch) == 109, "FADT IAPC_BOOT_ARCH");
_Static_assert(offsetof(struct acpi_fadt, x_dsdt) == 140, "FADT X_DSDT");
_Static_assert(sizeof(struct madt_iso) == 10, "MADT interrupt source override");
_Static_assert(sizeof(struct madt_lapic_nmi) == 6, "MADT local APIC NMI");
_Static_assert(sizeof(struct acpi_mcfg) == 60, "MCFG");

uint8_t table_checksum(const void *p, size_t n)
{
        const uint8_t *b = p;
        uint8_t sum = 0;

        for (size_t i = 0; i < n; i++)
                sum += b[i];
        return (uint8_t)-sum;
}

static void acpi_header_init(struct acpi_header *h, const char *sig, uint32_t length, uint8_t revision)
{
        memcpy(h->signature, sig, 4);
        h->length = length;
        h->revision = revision;
        memcpy(h->oem_id, ACPI_OEM_ID, 6);
        memcpy(h->oem_table_id, ACPI_OEM_TABLE_ID, 8);
        h->oem_revision = 1;
        memcpy(h->creator_id, ACPI_CREATOR_ID, 4);
        h->creator_revision = 1;
}

static void acpi_header_seal(struct acpi_header *h)
{
        h->checksum = 0;
        h->checksum = table_checksum(h, h->length);
}

/* The DSDT body: \_S5 and the devices under \_SB. */
/* Device(name) with _HID EISAID(hid); the caller adds the rest and closes it. */
static size_t dsdt_device_open(struct aml *a, const char *name, const char *hid)
{
        size_t dev = aml_device_open(a, name);

        aml_name(a, "_HID");
        aml_eisaid(a, hid);
        return dev;
}

/* Name(_CRS, ResourceTemplate() {...}); the caller adds the resources and closes it. */
static size_t dsdt_crs_open(struct aml *a)
{
        aml_name(a, "_CRS");
        return aml_restemplate_open(a);
}

/* Name(_PRT, Package() {...}): every slot's INTA-INTD to its IOAPIC input, as the host
 * bridge wires them (pci.h). The source is 0, so the last field is a GSI, which ACPI
 * takes as level-triggered, active low: what a PCI interrupt line is. */
static void dsdt_prt(struct aml *a)
{
        size_t prt, entry;

        aml_name(a, "_PRT");
        prt = aml_package_open(a, PCI_SLOTS * 4);
        for (unsigned int slot = 0; slot < PCI_SLOTS; slot++) {
                for (unsigned int pin = 0; pin < 4; pin++) {
                        entry = aml_package_open(a, 4);
                        aml_integer(a, (uint64_t)slot << 16 | 0xffff); /* any function of the slot */
                        aml_integer(a, pin);                           /* 0: INTA */
                        aml_integer(a, 0);
                        aml_integer(a, PCI_INTX_GSI_BASE + (slot + pin) % 8);
                        aml_close(a, entry);
                }
        }
        aml_close(a, prt);
}

static void dsdt_build(struct aml *a)
{
        size_t sb, dev, pkg, res;

        aml_name(a, "\\_S5");
        pkg = aml_package_open(a, 4);
        aml_integer(a, ACPI_S5_SLP_TYP); /* SLP_TYPa */
        aml_integer(a, ACPI_S5_SLP_TYP); /* SLP_TYPb */
        aml_integer(a, 0);
        aml_integer(a, 0);
        aml_close(a, pkg);

        sb = aml_scope_open(a, "\\_SB");

        dev = dsdt_device_open(a, "PCI0", "PNP0A08");
        aml_name(a, "_CID");
        aml_eisaid(a, "PNP0A03");
        aml_name(a, "_SEG");
        aml_integer(a, 0);
        aml_name(a, "_BBN");
        aml_integer(a, 0);
        aml_name(a, "_UID");
        aml_integer(a, 0);
        res = dsdt_crs_open(a);
        aml_res_word_bus(a, 0, 0);
        aml_res_io(a, PORT_PCI_CONFIG, 8);
        aml_res_word_io(a, 0x0000, PORT_PCI_CONFIG - 1);
        aml_res_word_io(a, 0x0d00, 0xffff);
        aml_res_dword_mem(a, (uint32_t)LAYOUT_MMIO_START, (uint32_t)(LAYOUT_ECAM - 1));
        aml_restemplate_close(a, res);
        dsdt_prt(a);
        aml_close(a, dev);

        /* Linux also looks for MMCONFIG among motherboard resources. */
        dev = dsdt_device_open(a, "MRES", "PNP0C02");
        aml_name(a, "_UID");
        aml_integer(a, 0);
        res = dsdt_crs_open(a);
        aml_res_mem32_fixed(a, (uint32_t)LAYOUT_ECAM, (uint32_t)LAYOUT_ECAM_SIZE);
        aml_restemplate_close(a, res);
        aml_close(a, dev);

        dev = dsdt_device_open(a, "COM1", "PNP0501");
        aml_name(a, "_UID");
        aml_integer(a, 1);
        res = dsdt_crs_open(a);
        aml_res_io(a, PORT_COM1, 8);
        aml_res_irq(a, IRQ_COM1);
        aml_restemplate_close(a, res);
        aml_close(a, dev);

        dev = dsdt_device_open(a, "RTC", "PNP0B00");
        res = dsdt_crs_open(a);
        aml_res_io(a, PORT_RTC, 2);
        aml_res_irq(a, IRQ_RTC);
        aml_restemplate_close(a, res);
        aml_close(a, dev);

        dev = dsdt_device_open(a, "KBD", "PNP0303");
        res = dsdt_crs_open(a);
        aml_res_io(a, PORT_I8042_DATA, 1);
        aml_res_io(a, PORT_I8042_CMD, 1);
        aml_res_irq(a, IRQ_I8042);
        aml_restemplate_close(a, res);
        aml_close(a, dev);

        dev = aml_device_open(a, "PEVT");
        aml_name(a, "_HID");
        aml_string(a, "QEMU0001");
        res = dsdt_crs_open(a);
        aml_res_io(a, PORT_PVPANIC, 1);
        aml_restemplate_close(a, res);
        aml_close(a, dev);

        aml_close(a, sb);
}

static struct acpi_gas gas_io(uint16_t port, uint8_t bytes, uint8_t access)
{
        return (struct acpi_gas){
                .space_id = GAS_SYSTEM_IO,
                .bit_width = (uint8_t)(8 * bytes),
                .access_size = access,
                .address = port,
        };
}

static void fadt_fill(struct acpi_fadt *f, uint64_t facs, uint64_t dsdt)
{
        acpi_header_init(&f->h, "FACP", sizeof(*f), 6);
        f->firmware_ctrl = (uint32_t)facs;
        f->dsdt = (uint32_t)dsdt;
        f->sci_int = IRQ_ACPI_SCI;
        /* SMI_CMD 0: the machine is always in ACPI mode. */
        f->pm1a_evt_blk = PORT_ACPI_PM1A_EVT;
        f->pm1a_cnt_blk = PORT_ACPI_PM1A_CNT;
        f->pm1_evt_len = 4;
        f->pm1_cnt_len = 2;
        f->iapc_boot_arch = BOOT_ARCH_LEGACY_DEVICES | BOOT_ARCH_8042 | BOOT_ARCH_NO_VGA;
        /* PWR_BUTTON clear: the fixed-feature power button (PM1 PWRBTN_STS) exists, for `vm ctl stop`. */
        f->flags = FADT_WBINVD | FADT_PROC_C1 | FADT_SLP_BUTTON | FADT_RESET_REG_SUP;
        f->reset_reg = gas_io(PORT_ACPI_RESET, 1, GAS_ACCESS_BYTE);
        f->reset_value = ACPI_RESET_VALUE;
        f->x_dsdt = dsdt;
        /* The 64-bit forms must agree with the 32-bit ones, or ACPICA warns and picks one. */
        f->x_pm1a_evt_blk = gas_io(PORT_ACPI_PM1A_EVT, 4, GAS_ACCESS_WORD);
        f->x_pm1a_cnt_blk = gas_io(PORT_ACPI_PM1A_CNT, 2, GAS_ACCESS_WORD);
        memcpy(&f->hypervisor_vendor_id, "CAPSULE ", 8);
}

static size_t madt_fill(uint8_t *p, int ncpus)
{
        struct acpi_madt *m = (struct acpi_madt *)p;
        size_t off = sizeof(*m);

        m->lapic_address = (uint32_t)LAYOUT_LAPIC;
        m->flags = MADT_PCAT_COMPAT;
        for (int i = 0; i < ncpus; i++) {
                struct madt_lapic *l = (struct madt_lapic *)(p + off);

                *l = (struct madt_lapic){ .type = MADT_LAPIC, .length = sizeof(*l), .uid = (uint8_t)i,
                                          .apic_id = (uint8_t)i, .flags = 1 };
                off += sizeof(*l);
        }
        {
                struct madt_ioapic *io = (struct madt_ioapic *)(p + off);

                *io = (struct madt_ioapic){ .type = MADT_IOAPIC, .length = sizeof(*io), .id = (uint8_t)ncpus,
                                            .address = (uint32_t)LAYOUT_IOAPIC, .gsi_base = 0 };
                off += sizeof(*io);
        }
        {
                /* ISA IRQs map 1:1 to GSIs (KVM's default routing); only the SCI needs an
                 * override, to say it is level-triggered and active high. */
                struct madt_iso *iso = (struct madt_iso *)(p + off);

                *iso = (struct madt_iso){ .type = MADT_ISO, .length = sizeof(*iso), .bus = 0,
                                          .source = IRQ_ACPI_SCI, .gsi = IRQ_ACPI_SCI,
                                          .flags = MPS_LEVEL | MPS_ACTIVE_HIGH };
                off += sizeof(*iso);
        }
        {
                struct madt_lapic_nmi *nmi = (struct madt_lapic_nmi *)(p + off);

                *nmi = (struct madt_lapic_nmi){ .type = MADT_LAPIC_NMI, .length = sizeof(*nmi), .uid = 0xff,
                                                .flags = 0, .lint = 1 };
                off += sizeof(*nmi);
        }
        acpi_header_init(&m->h, "APIC", (uint32_t)off, 4);
        acpi_header_seal(&m->h);
        return off;
}

static size_t align_up(size_t v, size_t a)
{
        return (v + a - 1) & ~(a - 1);
}

int acpi_write(struct guest_mem *mem, int ncpus, uint64_t *rsdp_addr, cap_error_t *err)
{
        cleanup_free uint8_t *buf = NULL;
        struct acpi_rsdp *rsdp;
        struct acpi_facs *facs;
        struct acpi_header *dsdt, *xsdt;
        struct acpi_fadt *fadt;
        struct acpi_mcfg *mcfg;
        struct aml a;
        size_t off_facs, off_dsdt, off_fadt, off_madt, off_mcfg, off_xsdt, end;

        if (ncpus < 1 || ncpus > X86_MAX_CPUS)
                return cap_fail(err, 0, "--cpus %d: the ACPI tables describe 1 to %d vCPUs", ncpus, X86_MAX_CPUS);
        buf = xmalloc0(ACPI_AREA_SIZE);

        off_facs = 64; /* the FACS must be 64-byte aligned */
        facs = (struct acpi_facs *)(buf + off_facs);
        memcpy(facs->signature, "FACS", 4);
        facs->length = sizeof(*facs);
        facs->version = 2;

        off_dsdt = off_facs + sizeof(*facs);
        dsdt = (struct acpi_header *)(buf + off_dsdt);
        aml_init(&a, buf + off_dsdt + sizeof(*dsdt), ACPI_AREA_SIZE / 2);
        dsdt_build(&a);
        if (a.overflow)
                return cap_fail(err, 0, "DSDT does not fit in %d bytes", ACPI_AREA_SIZE / 2);
        /* Revision 2: integers are 64-bit. */
        acpi_header_init(dsdt, "DSDT", (uint32_t)(sizeof(*dsdt) + a.len), 2);
        acpi_header_seal(dsdt);

        off_fadt = align_up(off_dsdt + dsdt->length, 16);
        fadt = (struct acpi_fadt *)(buf + off_fadt);
        fadt_fill(fadt, LAYOUT_ACPI + off_facs, LAYOUT_ACPI + off_dsdt);
        acpi_header_seal(&fadt->h);

        off_madt = align_up(off_fadt + sizeof(*fadt), 16);
        off_mcfg = align_up(off_madt + madt_fill(buf + off_madt, ncpus), 16);

        mcfg = (struct acpi_mcfg *)(buf + off_mcfg);
        acpi_header_init(&mcfg->h, "MCFG", sizeof(*mcfg), 1);
        mcfg->base = LAYOUT_ECAM;
        mcfg->segment = 0;
        mcfg->start_bus = 0;
        mcfg->end_bus = (uint8_t)(LAYOUT_ECAM_SIZE / (1 << 20) - 1); /* 1 MiB of config space per bus */
        acpi_header_seal(&mcfg->h);

        const uint64_t xsdt_entries[] = { LAYOUT_ACPI + off_fadt, LAYOUT_ACPI + off_madt, LAYOUT_ACPI + off_mcfg };

        off_xsdt = align_up(off_mcfg + sizeof(*mcfg), 16);
        xsdt = (struct acpi_header *)(buf + off_xsdt);
        acpi_header_init(xsdt, "XSDT", sizeof(*xsdt) + sizeof(xsdt_entries), 1);
        /* The 64-bit entries follow the 36-byte header: unaligned. */
        memcpy(xsdt + 1, xsdt_entries, sizeof(xsdt_entries));
        acpi_header_seal(xsdt);
        end = off_xsdt + xsdt->length;

        rsdp = (struct acpi_rsdp *)buf;
        memcpy(rsdp->signature, "RSD PTR ", 8);
        memcpy(rsdp->oem_id, ACPI_OEM_ID, 6);
        rsdp->revision = 2;
        rsdp->length = sizeof(*rsdp);
        rsdp->xsdt_address = LAYOUT_ACPI + off_xsdt;
        rsdp->checksum = table_checksum(rsdp, 20);
        rsdp->extended_checksum = table_checksum(rsdp, sizeof(*rsdp));

        if (guest_mem_write(mem, LAYOUT_ACPI, buf, end) < 0)
                return cap_fail(err, 0, "ACPI tables at 0x%llx do not fit in guest RAM", LAYOUT_ACPI);
        *rsdp_addr = LAYOUT_ACPI;
        return 0;
}
