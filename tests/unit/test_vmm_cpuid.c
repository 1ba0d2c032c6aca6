#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "common/util.h"
#include "vmm/x86/cpuid.h"

/* A synthetic KVM_GET_SUPPORTED_CPUID table of an Intel host. */
static struct kvm_cpuid2 *synthetic(void)
{
        static const struct kvm_cpuid_entry2 entries[] = {
                { .function = 0, .eax = 0x1f, .ebx = 0x756e6547, .edx = 0x49656e69, .ecx = 0x6c65746e },
                { .function = 1, .eax = 0x906ea, .ebx = 0x00020800, .ecx = 0xfffa3203 | (1u << 5) | (1u << 3), .edx = 0xffffffff },
                { .function = 4, .index = 0, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .eax = 0x1c004121 },
                { .function = 4, .index = 1, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .eax = 0x1c004122 },
                { .function = 4, .index = 2, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .eax = 0x1c004143 },
                { .function = 4, .index = 3, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .eax = 0x1c03c163 },
                { .function = 4, .index = 4, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .eax = 0 },
                { .function = 0xa, .eax = 0x07300404, .ebx = 0, .edx = 0x603 },
                { .function = 0xb, .index = 0, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .eax = 1, .ebx = 2, .ecx = 0x100, .edx = 7 },
                { .function = 0xb, .index = 1, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .eax = 4, .ebx = 16, .ecx = 0x201, .edx = 7 },
                { .function = 0x1f, .index = 0, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .eax = 1, .ebx = 2, .ecx = 0x100, .edx = 7 },
                { .function = 0x40000000, .eax = 0x40000001, .ebx = 0x4b4d564b, .ecx = 0x564b4d56, .edx = 0x4d },
                { .function = 0x40000001, .eax = 0x01007afb, .edx = 1 },
                { .function = 0x40000010, .eax = 123 },
                { .function = 0x80000000, .eax = 0x80000008 },
        };
        struct kvm_cpuid2 *c = xmalloc0(sizeof(*c) + sizeof(entries));
        c->nent = ARRAY_SIZE(entries);
        memcpy(c->entries, entries, sizeof(entries));
        return c;
}

static int count(struct kvm_cpuid2 *c, uint32_t function)
{
        int n = 0;
        for (uint32_t i = 0; i < c->nent; i++)
                n += c->entries[i].function == function;
        return n;
}

TEST(leaf1_apic_id_and_flags)
{
        cleanup_free struct kvm_cpuid2 *sup = synthetic();
        cleanup_free struct kvm_cpuid2 *c = cpuid_for_vcpu(sup, 2, 4);
        struct kvm_cpuid_entry2 *e = cpuid_find(c, 1, 0);
        CHECK(e);
        CHECK(e->ebx >> 24 == 2);               /* initial APIC id = index */
        CHECK(((e->ebx >> 16) & 0xff) == 4);    /* logical processors */
        CHECK(((e->ebx >> 8) & 0xff) == 8);     /* CLFLUSH size kept */
        CHECK(e->ecx & (1u << 31));             /* hypervisor */
        CHECK(!(e->ecx & (1u << 5)));           /* no VMX */
        CHECK(!(e->ecx & (1u << 3)));           /* no MONITOR */
        CHECK(e->edx & (1u << 28));             /* HTT with several vCPUs */
        CHECK(!(e->edx & (1u << 22)));          /* no ACPI thermal */
        cleanup_free struct kvm_cpuid2 *one = cpuid_for_vcpu(sup, 0, 1);
        e = cpuid_find(one, 1, 0);
        CHECK(e && e->ebx >> 24 == 0 && !(e->edx & (1u << 28)));
        CHECK(((e->ebx >> 16) & 0xff) == 1);
        cleanup_free struct kvm_cpuid2 *three = cpuid_for_vcpu(sup, 1, 3);
        e = cpuid_find(three, 1, 0);
        CHECK(e && ((e->ebx >> 16) & 0xff) == 4); /* addressable IDs: a power of two */
}

TEST(topology_leaf_0xb)
{
        cleanup_free struct kvm_cpuid2 *sup = synthetic();
        cleanup_free struct kvm_cpuid2 *c = cpuid_for_vcpu(sup, 3, 4);
        CHECK(count(c, 0xb) == 3);
        struct kvm_cpuid_entry2 *smt = cpuid_find(c, 0xb, 0), *core = cpuid_find(c, 0xb, 1), *end = cpuid_find(c, 0xb, 2);
        CHECK(smt && core && end);
        CHECK(smt->eax == 0 && smt->ebx == 1 && ((smt->ecx >> 8) & 0xff) == 1 && smt->edx == 3);
        CHECK(core->eax == 2 && core->ebx == 4 && ((core->ecx >> 8) & 0xff) == 2 && (core->ecx & 0xff) == 1 && core->edx == 3);
        CHECK(end->ebx == 0 && ((end->ecx >> 8) & 0xff) == 0 && end->edx == 3);
        CHECK(count(c, 0x1f) == 3);
        core = cpuid_find(c, 0x1f, 1);
        CHECK(core && core->ebx == 4 && core->edx == 3);
        cleanup_free struct kvm_cpuid2 *five = cpuid_for_vcpu(sup, 4, 5);
        core = cpuid_find(five, 0xb, 1);
        CHECK(core && core->eax == 3 && core->ebx == 5 && core->edx == 4);
}

TEST(topology_leaf_4)
{
        cleanup_free struct kvm_cpuid2 *sup = synthetic();
        cleanup_free struct kvm_cpuid2 *c = cpuid_for_vcpu(sup, 0, 4);
        struct kvm_cpuid_entry2 *l1 = cpuid_find(c, 4, 0), *l3 = cpuid_find(c, 4, 3), *none = cpuid_find(c, 4, 4);
        CHECK(l1 && l3 && none);
        CHECK(l1->eax >> 26 == 3);                   /* cores per package - 1 */
        CHECK(((l1->eax >> 14) & 0xfff) == 0);      /* L1: one thread */
        CHECK((l1->eax & 0x3fff) == (0x1c004121 & 0x3fff));
        CHECK(l3->eax >> 26 == 3 && ((l3->eax >> 14) & 0xfff) == 3); /* L3 shared by all */
        CHECK(none->eax == 0);
}

TEST(hypervisor_leaves)
{
        cleanup_free struct kvm_cpuid2 *sup = synthetic();
        cleanup_free struct kvm_cpuid2 *c = cpuid_for_vcpu(sup, 0, 2);
        struct kvm_cpuid_entry2 *sig = cpuid_find(c, 0x40000000, 0), *feat = cpuid_find(c, 0x40000001, 0);
        CHECK(sig && feat);
        CHECK(sig->eax == 0x40000001);
        char name[13] = { 0 };
        memcpy(name, &sig->ebx, 4);
        memcpy(name + 4, &sig->ecx, 4);
        memcpy(name + 8, &sig->edx, 4);
        CHECK(memcmp(name, "KVMKVMKVM\0\0\0", 12) == 0);
        CHECK(feat->eax & (1u << 3));   /* CLOCKSOURCE2 as reported */
        CHECK(feat->eax & (1u << 24));  /* stable bit as reported */
        CHECK(!(feat->eax & (1u << 2))); /* obsolete MMU_OP never offered */
        CHECK(!(feat->eax & (1u << 8))); /* not reported, not offered */
        CHECK(feat->edx == 0);           /* no realtime hint */
        CHECK(count(c, 0x40000000) == 1 && count(c, 0x40000001) == 1 && count(c, 0x40000010) == 0);
        /* KVM reporting no kvmclock: none offered. */
        sup->entries[12].eax = 0;
        cleanup_free struct kvm_cpuid2 *bare = cpuid_for_vcpu(sup, 0, 2);
        feat = cpuid_find(bare, 0x40000001, 0);
        CHECK(feat && feat->eax == 0);
}

TEST(no_pmu_and_other_leaves_kept)
{
        cleanup_free struct kvm_cpuid2 *sup = synthetic();
        cleanup_free struct kvm_cpuid2 *c = cpuid_for_vcpu(sup, 0, 1);
        struct kvm_cpuid_entry2 *pmu = cpuid_find(c, 0xa, 0);
        CHECK(pmu && pmu->eax == 0 && pmu->edx == 0);
        struct kvm_cpuid_entry2 *ext = cpuid_find(c, 0x80000000, 0);
        CHECK(ext && ext->eax == 0x80000008);
        CHECK(cpuid_find(c, 0, 0) && cpuid_find(c, 0, 0)->eax == 0x1f);
}

TEST(no_topology_leaf_when_host_lacks_it)
{
        cleanup_free struct kvm_cpuid2 *sup = synthetic();
        sup->entries[0].eax = 0xd; /* max basic leaf below 0x1f */
        cleanup_free struct kvm_cpuid2 *c = cpuid_for_vcpu(sup, 0, 2);
        CHECK(count(c, 0x1f) == 0);
        CHECK(count(c, 0xb) == 3);
}

/* An AMD host with nested SVM: the guest sees neither SVM nor its feature leaf. */
TEST(no_nested_svm)
{
        static const struct kvm_cpuid_entry2 entries[] = {
                { .function = 0, .eax = 0x10, .ebx = 0x68747541, .edx = 0x69746e65, .ecx = 0x444d4163 },
                { .function = 1, .eax = 0x830f10, .ecx = 0x80202001 },
                { .function = 0x80000000, .eax = 0x8000001e },
                { .function = 0x80000001, .ecx = 0x75c237ff, .edx = 0x2fd3fbff },
                { .function = 0x8000000a, .eax = 1, .ebx = 0x8000, .edx = 0x1b6bf },
        };
        cleanup_free struct kvm_cpuid2 *sup = xmalloc0(sizeof(*sup) + sizeof(entries));
        sup->nent = ARRAY_SIZE(entries);
        memcpy(sup->entries, entries, sizeof(entries));
        cleanup_free struct kvm_cpuid2 *c = cpuid_for_vcpu(sup, 0, 2);
        struct kvm_cpuid_entry2 *ext = cpuid_find(c, 0x80000001, 0);
        CHECK(ext && !(ext->ecx & (1u << 2)));
        CHECK(ext->ecx & (1u << 1));             /* CmpLegacy with two vCPUs */
        CHECK((ext->ecx | (1u << 2)) == 0x75c237ff); /* nothing else changed */
        CHECK(count(c, 0x8000000a) == 0);
}
