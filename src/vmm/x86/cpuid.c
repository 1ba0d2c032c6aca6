#include "vmm/x86/cpuid.h"

#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "common/util.h"

/* Leaf 1 features capsule does not offer: thermal and power management,
 * debug stores, MONITOR/MWAIT, nested VMX/SMX and the perf capabilities MSR. */
#define LEAF1_ECX_DROP ((1u << 2) | (1u << 3) | (1u << 4) | (1u << 5) | (1u << 6) | (1u << 7) | (1u << 8) | (1u << 14) | (1u << 15))
#define LEAF1_EDX_DROP ((1u << 21) | (1u << 22) | (1u << 29) | (1u << 31))
#define LEAF1_ECX_HYPERVISOR (1u << 31)
#define LEAF1_EDX_HTT (1u << 28)
/* Nested virtualization is offered on neither vendor: VMX is dropped from leaf 1, SVM from
 * 0x80000001 together with its feature leaf 0x8000000a. A guest hypervisor widens the attack
 * surface, and a 4-vCPU testbed guest that saw SVM once triple-faulted after its KVM initcalls. */
#define EXT1_ECX_SVM (1u << 2)
#define SVM_FEATURES_LEAF 0x8000000au

#define KVM_LEAF_SIGNATURE 0x40000000u
#define KVM_LEAF_FEATURES 0x40000001u
/* KVM paravirt features the guest may use: kvmclock, PV EOI/IPI/TLB flush/unhalt,
 * async page faults and steal time are all handled inside KVM. Not offered:
 * the obsolete MMU_OP and the ones needing VMM cooperation (hypercall exits,
 * migration control, extended MSI destination IDs without an IOMMU model). */
#define KVM_FEATURES_KEEP                                                                                   \
        ((1u << 0) /* CLOCKSOURCE */ | (1u << 1) /* NOP_IO_DELAY */ | (1u << 3) /* CLOCKSOURCE2 */ |       \
         (1u << 4) /* ASYNC_PF */ | (1u << 5) /* STEAL_TIME */ | (1u << 6) /* PV_EOI */ |                  \
         (1u << 7) /* PV_UNHALT */ | (1u << 9) /* PV_TLB_FLUSH */ | (1u << 10) /* ASYNC_PF_VMEXIT */ |     \
         (1u << 11) /* PV_SEND_IPI */ | (1u << 12) /* POLL_CONTROL */ | (1u << 13) /* PV_SCHED_YIELD */ |  \
         (1u << 14) /* ASYNC_PF_INT */ | (1u << 24) /* CLOCKSOURCE_STABLE_BIT */)

struct kvm_cpuid2 *cpuid_supported(int kvm_fd, cap_error_t *err)
{
        for (uint32_t n = 128; n <= 4096; n *= 2) {
                struct kvm_cpuid2 *c = xmalloc0(sizeof(*c) + n * sizeof(c->entries[0]));
                c->nent = n;
                if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0)
                        return c;
                int e = errno;
                free(c);
                if (e != E2BIG) {
                        cap_fail(err, e, "KVM_GET_SUPPORTED_CPUID");
                        return NULL;
                }
        }
        cap_fail(err, E2BIG, "KVM_GET_SUPPORTED_CPUID");
        return NULL;
}

struct kvm_cpuid_entry2 *cpuid_find(struct kvm_cpuid2 *cpuid, uint32_t function, uint32_t index)
{
        for (uint32_t i = 0; i < cpuid->nent; i++) {
                struct kvm_cpuid_entry2 *e = &cpuid->entries[i];
                if (e->function != function)
                        continue;
                if (!(e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) || e->index == index)
                        return e;
        }
        return NULL;
}

static bool vendor_is_amd(const struct kvm_cpuid_entry2 *leaf0)
{
        /* "AuthenticAMD" and "HygonGenuine" (EBX, EDX, ECX) */
        return leaf0 && ((leaf0->ebx == 0x68747541 && leaf0->edx == 0x69746e65 && leaf0->ecx == 0x444d4163) ||
                         (leaf0->ebx == 0x6f677948 && leaf0->edx == 0x6e65476e && leaf0->ecx == 0x656e6975));
}

/* Bits of the APIC ID that number the cores: ceil(log2(ncpus)). */
static uint32_t core_shift(int ncpus)
{
        uint32_t s = 0;
        while ((1u << s) < (uint32_t)ncpus)
                s++;
        return s;
}

static struct kvm_cpuid_entry2 *append(struct kvm_cpuid2 *c, uint32_t function, uint32_t index, uint32_t flags)
{
        struct kvm_cpuid_entry2 *e = &c->entries[c->nent++];
        memset(e, 0, sizeof(*e));
        e->function = function;
        e->index = index;
        e->flags = flags;
        return e;
}

/* Leaf 0xb / 0x1f: an SMT level with one thread per core, then a core level with every vCPU. */
static void add_topology_leaf(struct kvm_cpuid2 *c, uint32_t function, uint32_t apic_id, int ncpus)
{
        struct kvm_cpuid_entry2 *smt = append(c, function, 0, KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
        smt->eax = 0;
        smt->ebx = 1;
        smt->ecx = (1u << 8) | 0;
        smt->edx = apic_id;
        struct kvm_cpuid_entry2 *core = append(c, function, 1, KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
        core->eax = core_shift(ncpus);
        core->ebx = (uint32_t)ncpus;
        core->ecx = (2u << 8) | 1;
        core->edx = apic_id;
        struct kvm_cpuid_entry2 *end = append(c, function, 2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
        end->ecx = 2;
        end->edx = apic_id;
}

struct kvm_cpuid2 *cpuid_for_vcpu(const struct kvm_cpuid2 *supported, int index, int ncpus)
{
        /* Room for the regenerated leaves 0xb, 0x1f (3 subleaves each) and the two KVM leaves. */
        uint32_t cap = supported->nent + 8;
        struct kvm_cpuid2 *c = xmalloc0(sizeof(*c) + cap * sizeof(c->entries[0]));
        uint32_t apic_id = (uint32_t)index;
        bool has_0xb = false, has_0x1f = false;
        uint32_t kvm_features = 0;

        for (uint32_t i = 0; i < supported->nent; i++) {
                const struct kvm_cpuid_entry2 *e = &supported->entries[i];
                if (e->function == 0xb) {
                        has_0xb = true;
                        continue;
                }
                if (e->function == 0x1f) {
                        has_0x1f = true;
                        continue;
                }
                if (e->function == KVM_LEAF_FEATURES)
                        kvm_features = e->eax;
                if ((e->function & 0xffff0000u) == KVM_LEAF_SIGNATURE || e->function == SVM_FEATURES_LEAF)
                        continue;
                c->entries[c->nent++] = *e;
        }

        struct kvm_cpuid_entry2 *leaf0 = cpuid_find(c, 0, 0);
        uint32_t max_basic = leaf0 ? leaf0->eax : 0;
        bool amd = vendor_is_amd(leaf0);
        uint32_t shift = core_shift(ncpus);

        for (uint32_t i = 0; i < c->nent; i++) {
                struct kvm_cpuid_entry2 *e = &c->entries[i];
                switch (e->function) {
                case 1:
                        e->ebx &= 0x0000ffffu;
                        e->ebx |= apic_id << 24 | (1u << shift) << 16;
                        if ((e->ebx & 0xff00) == 0)
                                e->ebx |= 8u << 8; /* CLFLUSH line size: 64 bytes */
                        e->ecx = (e->ecx & ~LEAF1_ECX_DROP) | LEAF1_ECX_HYPERVISOR;
                        e->edx &= ~(LEAF1_EDX_DROP | LEAF1_EDX_HTT);
                        if (ncpus > 1)
                                e->edx |= LEAF1_EDX_HTT;
                        break;
                case 4:
                        if ((e->eax & 0x1f) == 0)
                                break; /* no more caches */
                        e->eax &= ~0xffffc000u;
                        e->eax |= ((uint32_t)(ncpus - 1) & 0x3f) << 26;
                        /* L1 and L2 belong to one core, L3 is shared by the socket. */
                        if (((e->eax >> 5) & 7) >= 3)
                                e->eax |= ((uint32_t)(ncpus - 1) & 0xfff) << 14;
                        break;
                case 0xa: /* no virtual PMU */
                        e->eax = e->ebx = e->ecx = e->edx = 0;
                        break;
                case 0x80000001:
                        e->ecx &= ~EXT1_ECX_SVM;
                        if (amd) {
                                e->ecx &= ~(1u << 1);
                                if (ncpus > 1)
                                        e->ecx |= 1u << 1; /* CmpLegacy */
                        }
                        break;
                case 0x80000008:
                        if (amd)
                                e->ecx = (e->ecx & ~0xf0ffu) | (shift << 12) | ((uint32_t)(ncpus - 1) & 0xff);
                        break;
                case 0x8000001e:
                        if (amd) {
                                e->eax = apic_id;
                                e->ebx = apic_id & 0xff; /* core id, one thread per core */
                                e->ecx = 0;              /* node 0, one node */
                        }
                        break;
                }
        }

        if (has_0xb && max_basic >= 0xb)
                add_topology_leaf(c, 0xb, apic_id, ncpus);
        if (has_0x1f && max_basic >= 0x1f)
                add_topology_leaf(c, 0x1f, apic_id, ncpus);

        struct kvm_cpuid_entry2 *sig = append(c, KVM_LEAF_SIGNATURE, 0, 0);
        sig->eax = KVM_LEAF_FEATURES;
        memcpy(&sig->ebx, "KVMK", 4);
        memcpy(&sig->ecx, "VMKV", 4);
        memcpy(&sig->edx, "M\0\0\0", 4);
        struct kvm_cpuid_entry2 *feat = append(c, KVM_LEAF_FEATURES, 0, 0);
        feat->eax = kvm_features & KVM_FEATURES_KEEP;
        return c;
}
