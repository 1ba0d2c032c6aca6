#include "vmm/x86/mptable.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "vmm/x86/acpi.h"
#include "vmm/x86/layout.h"

#define MP_SPEC_REV 4 /* 1.4 */
#define APIC_VERSION 0x14
#define IOAPIC_VERSION 0x11
#define MP_ISA_IRQS 16

enum { MP_PROCESSOR, MP_BUS, MP_IOAPIC, MP_IOINTR, MP_LINTR };
enum { MP_INT, MP_NMI, MP_SMI, MP_EXTINT };
#define MP_CPU_ENABLED 0x1
#define MP_CPU_BSP 0x2
#define MP_IRQ_ACTIVE_HIGH 0x1
#define MP_IRQ_LEVEL 0xc
#define MP_ALL_LAPICS 0xff

struct mpf {
        char signature[4]; /* "_MP_" */
        uint32_t config;   /* physical address of the configuration table */
        uint8_t length;    /* in 16-byte units */
        uint8_t spec_rev;
        uint8_t checksum;
        uint8_t feature[5];
} __attribute__((packed));

struct mpc_header {
        char signature[4]; /* "PCMP" */
        uint16_t length;
        uint8_t spec_rev;
        uint8_t checksum;
        char oem[8];
        char product[12];
        uint32_t oem_table;
        uint16_t oem_size;
        uint16_t count;
        uint32_t lapic;
        uint16_t ext_length;
        uint8_t ext_checksum;
        uint8_t reserved;
} __attribute__((packed));

struct mpc_cpu {
        uint8_t type;
        uint8_t apic_id;
        uint8_t apic_ver;
        uint8_t flags;
        uint32_t signature;
        uint32_t features;
        uint32_t reserved[2];
} __attribute__((packed));

struct mpc_bus {
        uint8_t type;
        uint8_t id;
        char bus_type[6];
} __attribute__((packed));

struct mpc_ioapic {
        uint8_t type;
        uint8_t id;
        uint8_t version;
        uint8_t flags;
        uint32_t addr;
} __attribute__((packed));

struct mpc_intr {
        uint8_t type;
        uint8_t irq_type;
        uint16_t flags;
        uint8_t src_bus;
        uint8_t src_irq;
        uint8_t dst_apic;
        uint8_t dst_pin;
} __attribute__((packed));

_Static_assert(sizeof(struct mpf) == 16, "MP floating pointer");
_Static_assert(sizeof(struct mpc_header) == 44, "MP config header");
_Static_assert(sizeof(struct mpc_cpu) == 20, "MP processor entry");


size_t mptable_size(int ncpus)
{
        return sizeof(struct mpf) + sizeof(struct mpc_header) + (size_t)ncpus * sizeof(struct mpc_cpu) +
               sizeof(struct mpc_bus) + sizeof(struct mpc_ioapic) + (MP_ISA_IRQS + 2) * sizeof(struct mpc_intr);
}

int mptable_write(struct guest_mem *mem, int ncpus, cap_error_t *err)
{
        size_t size = mptable_size(ncpus);
        cleanup_free uint8_t *buf = NULL;
        struct mpf *mpf;
        struct mpc_header *hdr;
        uint8_t *p;
        uint8_t ioapic_id = (uint8_t)ncpus;
        uint16_t count = 0;

        if (ncpus < 1 || ncpus > X86_MAX_CPUS)
                return cap_fail(err, 0, "--cpus %d: the MP table describes 1 to %d vCPUs", ncpus, X86_MAX_CPUS);
        /* The floating pointer must be in the EBDA's first KiB (where Linux scans); the
         * configuration table may run on into the reserved area below the ACPI tables. */
        if (LAYOUT_EBDA + size > LAYOUT_ACPI)
                return cap_fail(err, 0, "MP table for %d vCPUs does not fit below 0x%llx", ncpus, LAYOUT_ACPI);
        buf = xmalloc0(size);
        mpf = (struct mpf *)buf;
        hdr = (struct mpc_header *)(mpf + 1);
        p = (uint8_t *)(hdr + 1);

        for (int i = 0; i < ncpus; i++) {
                struct mpc_cpu *c = (struct mpc_cpu *)p;

                c->type = MP_PROCESSOR;
                c->apic_id = (uint8_t)i;
                c->apic_ver = APIC_VERSION;
                c->flags = MP_CPU_ENABLED | (i == 0 ? MP_CPU_BSP : 0);
                c->signature = 0x600; /* family 6: only informative, CPUID is authoritative */
                c->features = 0x201;  /* FPU, APIC */
                p += sizeof(*c);
                count++;
        }
        {
                struct mpc_bus *b = (struct mpc_bus *)p;

                b->type = MP_BUS;
                b->id = 0;
                memcpy(b->bus_type, "ISA   ", 6);
                p += sizeof(*b);
                count++;
        }
        {
                struct mpc_ioapic *io = (struct mpc_ioapic *)p;

                io->type = MP_IOAPIC;
                io->id = ioapic_id;
                io->version = IOAPIC_VERSION;
                io->flags = 1; /* enabled */
                io->addr = (uint32_t)LAYOUT_IOAPIC;
                p += sizeof(*io);
                count++;
        }
        for (int irq = 0; irq < MP_ISA_IRQS; irq++) {
                struct mpc_intr *in = (struct mpc_intr *)p;

                in->type = MP_IOINTR;
                in->irq_type = MP_INT;
                /* ISA defaults (edge, active high) except the SCI, which is level, as in the MADT. */
                in->flags = irq == IRQ_ACPI_SCI ? MP_IRQ_LEVEL | MP_IRQ_ACTIVE_HIGH : 0;
                in->src_bus = 0;
                in->src_irq = (uint8_t)irq;
                in->dst_apic = ioapic_id;
                in->dst_pin = (uint8_t)irq;
                p += sizeof(*in);
                count++;
        }
        for (int lint = 0; lint < 2; lint++) {
                struct mpc_intr *in = (struct mpc_intr *)p;

                in->type = MP_LINTR;
                in->irq_type = lint == 0 ? MP_EXTINT : MP_NMI;
                in->dst_apic = MP_ALL_LAPICS;
                in->dst_pin = (uint8_t)lint;
                p += sizeof(*in);
                count++;
        }

        memcpy(hdr->signature, "PCMP", 4);
        hdr->length = (uint16_t)(size - sizeof(*mpf));
        hdr->spec_rev = MP_SPEC_REV;
        memcpy(hdr->oem, "CAPSULE ", 8);
        memcpy(hdr->product, "MICROVM     ", 12);
        hdr->count = count;
        hdr->lapic = (uint32_t)LAYOUT_LAPIC;
        hdr->checksum = table_checksum(hdr, hdr->length);

        memcpy(mpf->signature, "_MP_", 4);
        mpf->config = (uint32_t)(LAYOUT_EBDA + sizeof(*mpf));
        mpf->length = 1;
        mpf->spec_rev = MP_SPEC_REV;
        mpf->checksum = table_checksum(mpf, sizeof(*mpf));

        if (guest_mem_write(mem, LAYOUT_EBDA, buf, size) < 0)
                return cap_fail(err, 0, "MP table at 0x%llx does not fit in guest RAM", LAYOUT_EBDA);
        return 0;
}
