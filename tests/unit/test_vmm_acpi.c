/* ACPI tables as the guest finds them: RSDP → XSDT → FADT (FACS, DSDT), MADT, MCFG,
 * all checksummed, with the fields Linux reads; and the AML the DSDT is made of. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "common/error.h"
#include "common/util.h"
#include "vmm/devices/pci.h"
#include "vmm/memory.h"
#include "vmm/x86/acpi.h"
#include "vmm/x86/aml.h"
#include "vmm/x86/layout.h"
#include "vmm/x86/mptable.h"

#define MIB (1ULL << 20)
#define cleanup_mem __attribute__((cleanup(guest_mem_destroy)))

static bool acpi_setup(struct guest_mem *gm, int ncpus, uint64_t *rsdp)
{
        cleanup_error cap_error_t err = NULL;

        if (guest_mem_init(gm, 64 * MIB, false, &err) < 0)
                return false;
        if (acpi_write(gm, ncpus, rsdp, &err) < 0) {
                fprintf(stderr, "acpi_write: %s\n", err->msg);
                return false;
        }
        return true;
}

static uint8_t sum_bytes(const void *p, size_t n)
{
        const uint8_t *b = p;
        uint8_t s = 0;

        for (size_t i = 0; i < n; i++)
                s += b[i];
        return s;
}

/* The table at gpa if its whole declared length is in RAM and its checksum is right. */
static const struct acpi_header *table_at(const struct guest_mem *gm, uint64_t gpa, const char *sig)
{
        const struct acpi_header *h = guest_mem_ptr(gm, gpa, sizeof(*h));

        if (h == NULL || memcmp(h->signature, sig, 4) != 0 || h->length < sizeof(*h) ||
            guest_mem_ptr(gm, gpa, h->length) == NULL || sum_bytes(h, h->length) != 0) {
                fprintf(stderr, "no valid %s table at 0x%llx\n", sig, (unsigned long long)gpa);
                return NULL;
        }
        return h;
}

static uint64_t xsdt_find(const struct guest_mem *gm, const struct acpi_header *xsdt, const char *sig)
{
        size_t n = (xsdt->length - sizeof(*xsdt)) / 8;

        for (size_t i = 0; i < n; i++) {
                uint64_t addr;
                const struct acpi_header *h;

                memcpy(&addr, (const uint8_t *)(xsdt + 1) + 8 * i, 8);
                h = guest_mem_ptr(gm, addr, sizeof(*h));
                if (h && memcmp(h->signature, sig, 4) == 0)
                        return addr;
        }
        return 0;
}

static uint32_t rd32(const void *p, size_t off)
{
        uint32_t v;

        memcpy(&v, (const uint8_t *)p + off, 4);
        return v;
}

static uint64_t rd64(const void *p, size_t off)
{
        uint64_t v;

        memcpy(&v, (const uint8_t *)p + off, 8);
        return v;
}

static uint16_t rd16(const void *p, size_t off)
{
        uint16_t v;

        memcpy(&v, (const uint8_t *)p + off, 2);
        return v;
}

TEST(rsdp_and_every_table_checksum)
{
        cleanup_mem struct guest_mem gm = { .memfd = -1 };
        const struct acpi_rsdp *rsdp;
        const struct acpi_header *xsdt, *fadt;
        uint64_t addr;
        static const char *const sigs[] = { "FACP", "APIC", "MCFG" };

        CHECK(acpi_setup(&gm, 2, &addr));
        CHECK(addr == LAYOUT_ACPI);
        CHECK(addr % 16 == 0); /* Linux scans 0xe0000-0xfffff on 16-byte boundaries */
        rsdp = guest_mem_ptr(&gm, addr, sizeof(*rsdp));
        CHECK(memcmp(rsdp->signature, "RSD PTR ", 8) == 0);
        CHECK(rsdp->revision == 2);
        CHECK(rsdp->length == 36);
        CHECK(sum_bytes(rsdp, 20) == 0);
        CHECK(sum_bytes(rsdp, 36) == 0);

        xsdt = table_at(&gm, rsdp->xsdt_address, "XSDT");
        CHECK(xsdt != NULL);
        CHECK((xsdt->length - sizeof(*xsdt)) / 8 == ARRAY_SIZE(sigs));
        for (size_t i = 0; i < ARRAY_SIZE(sigs); i++) {
                uint64_t t = xsdt_find(&gm, xsdt, sigs[i]);

                CHECK(t != 0);
                CHECK(table_at(&gm, t, sigs[i]) != NULL);
                CHECK(t >= LAYOUT_ACPI && t < LAYOUT_HIMEM);
        }
        fadt = table_at(&gm, xsdt_find(&gm, xsdt, "FACP"), "FACP");
        CHECK(fadt != NULL);
        /* DSDT through both the 32- and 64-bit pointers, which agree. */
        CHECK(rd32(fadt, 40) == rd64(fadt, 140));
        CHECK(table_at(&gm, rd64(fadt, 140), "DSDT") != NULL);
        {
                const uint8_t *facs = guest_mem_ptr(&gm, rd32(fadt, 36), 64);

                CHECK(facs != NULL && memcmp(facs, "FACS", 4) == 0);
                CHECK(rd32(facs, 4) == 64);
                CHECK(rd32(fadt, 36) % 64 == 0);
        }
}

TEST(fadt_describes_legacy_fixed_hardware)
{
        cleanup_mem struct guest_mem gm = { .memfd = -1 };
        const struct acpi_rsdp *rsdp;
        const struct acpi_header *xsdt;
        const uint8_t *f;
        uint64_t addr;
        uint32_t flags;

        CHECK(acpi_setup(&gm, 1, &addr));
        rsdp = guest_mem_ptr(&gm, addr, sizeof(*rsdp));
        xsdt = table_at(&gm, rsdp->xsdt_address, "XSDT");
        CHECK(xsdt != NULL);
        f = (const uint8_t *)table_at(&gm, xsdt_find(&gm, xsdt, "FACP"), "FACP");
        CHECK(f != NULL);
        CHECK(((const struct acpi_header *)f)->length == 276);
        CHECK(((const struct acpi_header *)f)->revision >= 5);
        CHECK(rd16(f, 46) == IRQ_ACPI_SCI);
        CHECK(rd32(f, 48) == 0); /* no SMI_CMD: always in ACPI mode */
        CHECK(rd32(f, 56) == PORT_ACPI_PM1A_EVT);
        CHECK(rd32(f, 64) == PORT_ACPI_PM1A_CNT);
        CHECK(f[88] == 4 && f[89] == 2);
        CHECK(rd32(f, 76) == 0); /* no PM timer */
        flags = rd32(f, 112);
        CHECK(flags & (1u << 10));    /* RESET_REG_SUP */
        CHECK(!(flags & (1u << 20))); /* not HW_REDUCED_ACPI */
        CHECK(rd16(f, 109) & 2);      /* 8042 present */
        /* RESET_REG: system I/O, 8 bits, at the reset port; then RESET_VALUE. */
        CHECK(f[116] == 1 && f[117] == 8 && rd64(f, 120) == PORT_ACPI_RESET);
        CHECK(f[128] == ACPI_RESET_VALUE);
        /* X_PM1a_EVT_BLK and X_PM1a_CNT_BLK match the 32-bit blocks. */
        CHECK(f[148] == 1 && f[149] == 32 && rd64(f, 152) == PORT_ACPI_PM1A_EVT);
        CHECK(f[172] == 1 && f[173] == 16 && rd64(f, 176) == PORT_ACPI_PM1A_CNT);
}

static int madt_count(int ncpus, int *lapics, int *ioapics, int *isos, int *nmis)
{
        cleanup_mem struct guest_mem own = { .memfd = -1 };
        const struct acpi_rsdp *rsdp;
        const struct acpi_header *xsdt, *madt;
        const uint8_t *p, *end;
        uint64_t addr;
        int n = 0;

        *lapics = *ioapics = *isos = *nmis = 0;
        if (!acpi_setup(&own, ncpus, &addr))
                return -1;
        rsdp = guest_mem_ptr(&own, addr, sizeof(*rsdp));
        xsdt = table_at(&own, rsdp->xsdt_address, "XSDT");
        if (xsdt == NULL || (madt = table_at(&own, xsdt_find(&own, xsdt, "APIC"), "APIC")) == NULL)
                return -1;
        if (rd32(madt, 36) != LAYOUT_LAPIC || !(rd32(madt, 40) & 1))
                return -1;
        p = (const uint8_t *)madt + 44;
        end = (const uint8_t *)madt + madt->length;
        while (p < end) {
                if (p[1] < 2 || p + p[1] > end)
                        return -1;
                switch (p[0]) {
                case 0:
                        if (p[2] != *lapics || p[3] != *lapics || !(rd32(p, 4) & 1))
                                return -1;
                        (*lapics)++;
                        break;
                case 1:
                        if (p[2] != ncpus || rd32(p, 4) != LAYOUT_IOAPIC || rd32(p, 8) != 0)
                                return -1;
                        (*ioapics)++;
                        break;
                case 2:
                        /* The SCI: level-triggered, active high, on its own GSI. */
                        if (p[3] != IRQ_ACPI_SCI || rd32(p, 4) != IRQ_ACPI_SCI || rd16(p, 8) != 0xd)
                                return -1;
                        (*isos)++;
                        break;
                case 4:
                        if (p[2] != 0xff || p[5] != 1)
                                return -1;
                        (*nmis)++;
                        break;
                default:
                        return -1;
                }
                p += p[1];
                n++;
        }
        return p == end ? n : -1;
}

TEST(madt_has_one_local_apic_per_vcpu)
{
        int lapics, ioapics, isos, nmis;

        CHECK(madt_count(1, &lapics, &ioapics, &isos, &nmis) == 1 + 3);
        CHECK(lapics == 1 && ioapics == 1 && isos == 1 && nmis == 1);
        CHECK(madt_count(8, &lapics, &ioapics, &isos, &nmis) == 8 + 3);
        CHECK(lapics == 8);
        CHECK(madt_count(X86_MAX_CPUS, &lapics, &ioapics, &isos, &nmis) == X86_MAX_CPUS + 3);
}

TEST(too_many_vcpus_are_refused)
{
        cleanup_mem struct guest_mem gm = { .memfd = -1 };
        cleanup_error cap_error_t err = NULL;
        uint64_t addr;

        CHECK(guest_mem_init(&gm, 64 * MIB, false, &err) == 0);
        CHECK(acpi_write(&gm, X86_MAX_CPUS + 1, &addr, &err) < 0);
        CHECK(err != NULL && strstr(err->msg, "--cpus") != NULL);
}

TEST(mcfg_points_at_the_ecam)
{
        cleanup_mem struct guest_mem gm = { .memfd = -1 };
        const struct acpi_rsdp *rsdp;
        const struct acpi_header *xsdt, *mcfg;
        uint64_t addr;

        CHECK(acpi_setup(&gm, 1, &addr));
        rsdp = guest_mem_ptr(&gm, addr, sizeof(*rsdp));
        xsdt = table_at(&gm, rsdp->xsdt_address, "XSDT");
        CHECK(xsdt != NULL);
        mcfg = table_at(&gm, xsdt_find(&gm, xsdt, "MCFG"), "MCFG");
        CHECK(mcfg != NULL);
        CHECK(mcfg->length == 44 + 16);
        CHECK(rd64(mcfg, 44) == LAYOUT_ECAM);
        CHECK(rd16(mcfg, 52) == 0);
        CHECK(((const uint8_t *)mcfg)[54] == 0 && ((const uint8_t *)mcfg)[55] == 0);
}

/* ---- the DSDT's AML ---- */

static const uint8_t *find_bytes(const uint8_t *hay, size_t n, const void *needle, size_t m)
{
        for (size_t i = 0; i + m <= n; i++)
                if (memcmp(hay + i, needle, m) == 0)
                        return hay + i;
        return NULL;
}

/* The DSDT that the FADT points at, through the RSDP and the XSDT. */
static const struct acpi_header *dsdt_find(const struct guest_mem *gm, uint64_t rsdp_addr)
{
        const struct acpi_rsdp *rsdp = guest_mem_ptr(gm, rsdp_addr, sizeof(*rsdp));
        const struct acpi_header *xsdt, *fadt;

        xsdt = table_at(gm, rsdp->xsdt_address, "XSDT");
        if (xsdt == NULL)
                return NULL;
        fadt = table_at(gm, xsdt_find(gm, xsdt, "FACP"), "FACP");
        return fadt ? table_at(gm, rd64(fadt, 140), "DSDT") : NULL;
}

TEST(dsdt_parses)
{
        cleanup_mem struct guest_mem gm = { .memfd = -1 };
        const struct acpi_header *dsdt;
        const uint8_t *aml, *p;
        size_t n, used;
        uint32_t len;
        uint64_t addr;

        CHECK(acpi_setup(&gm, 2, &addr));
        dsdt = dsdt_find(&gm, addr);
        CHECK(dsdt != NULL);
        CHECK(dsdt->revision == 2);
        aml = (const uint8_t *)(dsdt + 1);
        n = dsdt->length - sizeof(*dsdt);

        /* Name(\_S5_, Package(4) { 5, 5, 0, 0 }) */
        CHECK(n > 12);
        CHECK(aml[0] == 0x08 && memcmp(aml + 1, "\\_S5_", 5) == 0);
        CHECK(aml[6] == 0x12);
        used = aml_pkglength_decode(aml + 7, n - 7, &len);
        CHECK(used == 1);
        CHECK(aml[8] == 4);                                     /* NumElements */
        CHECK(aml[9] == 0x0a && aml[10] == ACPI_S5_SLP_TYP);    /* SLP_TYPa as a byte */
        p = aml + 7 + len;                                      /* end of the package */

        /* Scope(\_SB_) whose PkgLength covers the rest of the table exactly. */
        CHECK(p[0] == 0x10);
        used = aml_pkglength_decode(p + 1, n - (size_t)(p + 1 - aml), &len);
        CHECK(used > 0);
        CHECK(p + 1 + len == aml + n);
        CHECK(memcmp(p + 1 + used, "\\_SB_", 5) == 0);

        /* Devices (ExtOpPrefix DeviceOp) with the expected names and ids. */
        static const char *const devices[] = { "PCI0", "MRES", "COM1", "RTC_", "KBD_", "PEVT" };
        for (size_t i = 0; i < ARRAY_SIZE(devices); i++) {
                const uint8_t *d = find_bytes(aml, n, devices[i], 4);

                CHECK(d != NULL);
                /* DeviceOp, then a 1-byte PkgLength, or a 2-byte one for a device over 63 bytes */
                CHECK((d[-3] == 0x5b && d[-2] == 0x82 && d[-1] >> 6 == 0) ||
                      (d[-4] == 0x5b && d[-3] == 0x82 && d[-2] >> 6 == 1));
        }
        CHECK(find_bytes(aml, n, "\x0c\x41\xd0\x0a\x08", 5) != NULL); /* EISAID("PNP0A08") */
        CHECK(find_bytes(aml, n, "\x0c\x41\xd0\x0a\x03", 5) != NULL); /* EISAID("PNP0A03") */
        CHECK(find_bytes(aml, n, "\x0c\x41\xd0\x05\x01", 5) != NULL); /* EISAID("PNP0501") */
        CHECK(find_bytes(aml, n, "QEMU0001", 9) != NULL);
        /* COM1: IO(Decode16, 0x3f8, 0x3f8, 1, 8) and IRQNoFlags() {4} */
        CHECK(find_bytes(aml, n, "\x47\x01\xf8\x03\xf8\x03\x01\x08\x22\x10\x00", 11) != NULL);
        /* pvpanic: IO(Decode16, 0x505, 0x505, 1, 1) */
        CHECK(find_bytes(aml, n, "\x47\x01\x05\x05\x05\x05\x01\x01", 8) != NULL);
}

/* An AML integer at *p (Zero, One, Byte/Word/DWord/QWord const): advances *p, false if none. */
static bool aml_int_take(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
        static const int sizes[] = { [0x0a] = 1, [0x0b] = 2, [0x0c] = 4, [0x0e] = 8 };
        uint8_t op;
        int size;

        if (*p >= end)
                return false;
        op = **p;
        if (op == 0x00 || op == 0x01) {
                *v = op;
                *p += 1;
                return true;
        }
        size = op < ARRAY_SIZE(sizes) ? sizes[op] : 0;
        if (size == 0 || end - *p < 1 + size)
                return false;
        *v = 0;
        for (int i = size; i > 0; i--)
                *v = *v << 8 | (*p)[i];
        *p += 1 + size;
        return true;
}

/* _PRT under PCI0: every slot's four pins go to GSI 16 + (slot + pin) % 8, the host
 * bridge's INTx wiring, so that Linux routes INTx without the MP table. */
TEST(dsdt_prt_routes_every_slot_and_pin)
{
        cleanup_mem struct guest_mem gm = { .memfd = -1 };
        const struct acpi_header *dsdt;
        const uint8_t *aml, *end, *p, *pci0, *entry_end;
        uint32_t len;
        uint64_t addr, v[4];
        size_t used, n;

        CHECK(acpi_setup(&gm, 1, &addr));
        dsdt = dsdt_find(&gm, addr);
        CHECK(dsdt != NULL);
        aml = (const uint8_t *)(dsdt + 1);
        end = (const uint8_t *)dsdt + dsdt->length;
        pci0 = find_bytes(aml, (size_t)(end - aml), "PCI0", 4);
        CHECK(pci0 != NULL);
        /* NameOp "_PRT" PackageOp PkgLength NumElements */
        p = find_bytes(aml, (size_t)(end - aml), "\x08_PRT\x12", 6);
        CHECK(p != NULL && p > pci0);
        p += 6;
        used = aml_pkglength_decode(p, (size_t)(end - p), &len);
        CHECK(used > 0 && len <= (size_t)(end - p));
        end = p + len;
        p += used;
        CHECK(*p++ == PCI_SLOTS * 4);
        for (n = 0; n < PCI_SLOTS * 4; n++) {
                CHECK(p < end && *p++ == 0x12);
                used = aml_pkglength_decode(p, (size_t)(end - p), &len);
                CHECK(used > 0 && len <= (size_t)(end - p));
                entry_end = p + len;
                p += used;
                CHECK(*p++ == 4);
                for (int i = 0; i < 4; i++)
                        CHECK(aml_int_take(&p, entry_end, &v[i]));
                CHECK(p == entry_end);
                uint64_t slot = n / 4, pin = n % 4;
                CHECK(v[0] == (slot << 16 | 0xffff));
                CHECK(v[1] == pin);
                CHECK(v[2] == 0);
                CHECK(v[3] == PCI_INTX_GSI_BASE + (slot + pin) % 8);
        }
        CHECK(p == end);
}

TEST(aml_pkglength_encodings)
{
        static uint8_t buf[0x12000];
        struct aml a;
        size_t mark, used, content;
        uint32_t len;

        /* 1-, 2- and 3-byte PkgLengths: the value counts the length bytes themselves. */
        static const size_t contents[] = { 10, 62, 63, 100, 4093, 4094, 0x10000 };
        for (size_t i = 0; i < ARRAY_SIZE(contents); i++) {
                aml_init(&a, buf, sizeof(buf));
                mark = aml_scope_open(&a, "\\");
                while (a.len - mark < contents[i])
                        aml_byte(&a, 0xa3); /* NoopOp */
                content = a.len - mark;
                aml_close(&a, mark);
                CHECK(!a.overflow);
                used = aml_pkglength_decode(buf + 1, a.len - 1, &len);
                CHECK(used == (content + 1 <= 63 ? 1 : content + 2 <= 0xfff ? 2 : 3));
                CHECK(len == content + used);
                CHECK(1 + len == a.len);
        }
        aml_init(&a, buf, 4);
        aml_name(&a, "_HID");
        CHECK(a.overflow);
}

TEST(aml_integers_names_and_eisaid)
{
        uint8_t buf[64];
        struct aml a;

        aml_init(&a, buf, sizeof(buf));
        aml_integer(&a, 0);
        aml_integer(&a, 1);
        aml_integer(&a, 0x42);
        aml_integer(&a, 0x1234);
        aml_integer(&a, 0x12345678);
        aml_integer(&a, 0x100000000ULL);
        CHECK(a.len == 1 + 1 + 2 + 3 + 5 + 9);
        CHECK(memcmp(buf, "\x00\x01\x0a\x42\x0b\x34\x12\x0c\x78\x56\x34\x12\x0e\x00\x00\x00\x00\x01", 18) == 0);

        aml_init(&a, buf, sizeof(buf));
        aml_eisaid(&a, "PNP0A03");
        CHECK(a.len == 5 && memcmp(buf, "\x0c\x41\xd0\x0a\x03", 5) == 0); /* 0x030AD041 */

        aml_init(&a, buf, sizeof(buf));
        aml_namestring(&a, "\\_SB.PCI0");
        CHECK(a.len == 10 && memcmp(buf, "\\\x2e_SB_PCI0", 10) == 0);
        aml_init(&a, buf, sizeof(buf));
        aml_namestring(&a, "A.B.C");
        CHECK(a.len == 14 && memcmp(buf, "\x2f\x03" "A___B___C___", 14) == 0);
}

TEST(aml_resource_template_has_size_and_end_tag)
{
        uint8_t buf[64];
        struct aml a;
        size_t mark;

        aml_init(&a, buf, sizeof(buf));
        mark = aml_restemplate_open(&a);
        aml_res_io(&a, 0x70, 2);
        aml_res_irq(&a, 8);
        aml_restemplate_close(&a, mark);
        /* BufferOp, PkgLength, BufferSize (ByteConst 13), 8 + 3 descriptor bytes, end tag */
        CHECK(a.len == 1 + 1 + 2 + 13);
        CHECK(buf[0] == 0x11 && buf[1] == 16 && buf[2] == 0x0a && buf[3] == 13);
        CHECK(memcmp(buf + 4, "\x47\x01\x70\x00\x70\x00\x01\x02\x22\x00\x01\x79\x00", 13) == 0);
}
