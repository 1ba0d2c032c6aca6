#include <cpuid.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "common/util.h"
#include "vmm/kvm.h"
#include "vmm/x86/boot.h"
#include "vmm/x86/cpuid.h"
#include "vmm/x86/layout.h"
#include "vmm/x86/ring3.h"

#define CR0_PE (1ULL << 0)
#define CR0_ET (1ULL << 4)
#define CR0_NE (1ULL << 5)
#define CR0_PG (1ULL << 31)
#define CR4_PAE (1ULL << 5)
#define CR4_OSFXSR (1ULL << 9)
#define CR4_OSXMMEXCPT (1ULL << 10)
#define EFER_LME (1ULL << 8)
#define EFER_LMA (1ULL << 10)

#define MSR_IA32_TSC 0x10
#define MSR_IA32_SYSENTER_CS 0x174
#define MSR_IA32_SYSENTER_ESP 0x175
#define MSR_IA32_SYSENTER_EIP 0x176
#define MSR_IA32_MISC_ENABLE 0x1a0
#define MSR_IA32_MISC_ENABLE_FAST_STRING (1ULL << 0)
#define MSR_MTRR_DEF_TYPE 0x2ff
#define MTRR_DEF_TYPE_ENABLE (1ULL << 11)
#define MTRR_TYPE_WB 6
#define MSR_STAR 0xc0000081
#define MSR_LSTAR 0xc0000082
#define MSR_CSTAR 0xc0000083
#define MSR_SYSCALL_MASK 0xc0000084
#define MSR_KERNEL_GS_BASE 0xc0000102

#define APIC_LVT_LINT0 0x350
#define APIC_LVT_LINT1 0x360
#define APIC_MODE_NMI 4
#define APIC_MODE_EXTINT 7

static int setup_cpuid(int kvm_fd, int vcpu_fd, int index, int ncpus, cap_error_t *err)
{
        cleanup_free struct kvm_cpuid2 *supported = cpuid_supported(kvm_fd, err);
        if (!supported)
                return -1;
        cleanup_free struct kvm_cpuid2 *cpuid = cpuid_for_vcpu(supported, index, ncpus);
        /* KVM emulates the TSC deadline timer in its LAPIC but leaves the bit out of the supported table. */
        struct kvm_cpuid_entry2 *leaf1 = cpuid_find(cpuid, 1, 0);
        if (leaf1 && kvm_cap(kvm_fd, KVM_CAP_TSC_DEADLINE_TIMER) > 0)
                leaf1->ecx |= 1u << 24;
        /* The brand string, as the host's, when KVM does not fill it in. */
        for (uint32_t leaf = 0x80000002; leaf <= 0x80000004; leaf++) {
                struct kvm_cpuid_entry2 *e = cpuid_find(cpuid, leaf, 0);
                if (e && !(e->eax | e->ebx | e->ecx | e->edx))
                        __get_cpuid(leaf, &e->eax, &e->ebx, &e->ecx, &e->edx);
        }
        if (ioctl(vcpu_fd, KVM_SET_CPUID2, cpuid) < 0)
                return cap_fail(err, errno, "vCPU %d: KVM_SET_CPUID2", index);
        return 0;
}

static int setup_msrs(int vcpu_fd, int index, cap_error_t *err)
{
        static const struct {
                uint32_t index;
                uint64_t data;
        } init[] = {
                { MSR_IA32_SYSENTER_CS, 0 },
                { MSR_IA32_SYSENTER_ESP, 0 },
                { MSR_IA32_SYSENTER_EIP, 0 },
                { MSR_STAR, 0 },
                { MSR_LSTAR, 0 },
                { MSR_CSTAR, 0 },
                { MSR_SYSCALL_MASK, 0 },
                { MSR_KERNEL_GS_BASE, 0 },
                { MSR_IA32_TSC, 0 },
                { MSR_IA32_MISC_ENABLE, MSR_IA32_MISC_ENABLE_FAST_STRING },
                { MSR_MTRR_DEF_TYPE, MTRR_DEF_TYPE_ENABLE | MTRR_TYPE_WB },
        };
        cleanup_free struct kvm_msrs *msrs = xmalloc0(sizeof(*msrs) + ARRAY_SIZE(init) * sizeof(msrs->entries[0]));
        msrs->nmsrs = ARRAY_SIZE(init);
        for (size_t i = 0; i < ARRAY_SIZE(init); i++) {
                msrs->entries[i].index = init[i].index;
                msrs->entries[i].data = init[i].data;
        }
        int n = ioctl(vcpu_fd, KVM_SET_MSRS, msrs);
        if (n < 0)
                return cap_fail(err, errno, "vCPU %d: KVM_SET_MSRS", index);
        if (n < (int)ARRAY_SIZE(init))
                return cap_fail(err, 0, "vCPU %d: KVM refused to set MSR %#x", index, init[n].index);
        return 0;
}

static uint32_t lvt_with_mode(const struct kvm_lapic_state *lapic, int reg, uint32_t mode)
{
        uint32_t v;
        memcpy(&v, &lapic->regs[reg], sizeof(v));
        return (v & ~0x700u) | (mode << 8);
}

static int setup_lapic(int vcpu_fd, int index, cap_error_t *err)
{
        struct kvm_lapic_state lapic;
        if (ioctl(vcpu_fd, KVM_GET_LAPIC, &lapic) < 0)
                return cap_fail(err, errno, "vCPU %d: KVM_GET_LAPIC", index);
        /* As a PC: LINT0 takes the PIC's ExtINT, LINT1 the NMI. */
        uint32_t lint0 = lvt_with_mode(&lapic, APIC_LVT_LINT0, APIC_MODE_EXTINT);
        uint32_t lint1 = lvt_with_mode(&lapic, APIC_LVT_LINT1, APIC_MODE_NMI);
        memcpy(&lapic.regs[APIC_LVT_LINT0], &lint0, sizeof(lint0));
        memcpy(&lapic.regs[APIC_LVT_LINT1], &lint1, sizeof(lint1));
        if (ioctl(vcpu_fd, KVM_SET_LAPIC, &lapic) < 0)
                return cap_fail(err, errno, "vCPU %d: KVM_SET_LAPIC", index);
        return 0;
}

static int setup_fpu(int vcpu_fd, int index, cap_error_t *err)
{
        struct kvm_fpu fpu = { .fcw = 0x37f, .mxcsr = 0x1f80 };
        if (ioctl(vcpu_fd, KVM_SET_FPU, &fpu) < 0)
                return cap_fail(err, errno, "vCPU %d: KVM_SET_FPU", index);
        return 0;
}

static struct kvm_segment flat_segment(uint16_t selector, uint8_t type, uint8_t dpl, bool long_code)
{
        return (struct kvm_segment){
                .base = 0,
                .limit = 0xffffffff,
                .selector = selector,
                .type = type,
                .present = 1,
                .dpl = dpl,
                .db = long_code ? 0 : 1,
                .s = 1,
                .l = long_code ? 1 : 0,
                .g = 1,
        };
}

static void set_data_segments(struct kvm_sregs *s, struct kvm_segment data)
{
        s->ds = s->es = s->fs = s->gs = s->ss = data;
}

static int setup_sregs(int vcpu_fd, int index, const struct boot_info *boot, cap_error_t *err)
{
        struct kvm_sregs s;
        if (ioctl(vcpu_fd, KVM_GET_SREGS, &s) < 0)
                return cap_fail(err, errno, "vCPU %d: KVM_GET_SREGS", index);
        /* The GDT is written by the loader and ends where the IDT slot starts;
         * no IDT: an early exception triple-faults. */
        s.gdt.base = LAYOUT_GDT;
        s.gdt.limit = LAYOUT_IDT - LAYOUT_GDT - 1;
        s.idt.base = LAYOUT_IDT;
        s.idt.limit = 0;
        switch (boot->mode) {
        case BOOT_LINUX64:
                s.cs = flat_segment(0x10, 0xb, 0, true);
                set_data_segments(&s, flat_segment(0x18, 0x3, 0, false));
                s.cr0 = CR0_PE | CR0_ET | CR0_PG;
                s.cr3 = LAYOUT_PML4;
                s.cr4 = CR4_PAE;
                s.efer = EFER_LME | EFER_LMA;
                break;
        case BOOT_PVH:
                s.cs = flat_segment(0x10, 0xb, 0, false);
                set_data_segments(&s, flat_segment(0x18, 0x3, 0, false));
                s.cr0 = CR0_PE | CR0_ET;
                s.cr3 = 0;
                s.cr4 = 0;
                s.efer = 0;
                break;
        case BOOT_RING3:
                s.cs = flat_segment(RING3_CS, 0xb, 3, true);
                set_data_segments(&s, flat_segment(RING3_DS, 0x3, 3, false));
                s.cr0 = CR0_PE | CR0_ET | CR0_NE | CR0_PG;
                s.cr3 = LAYOUT_PML4;
                s.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
                s.efer = EFER_LME | EFER_LMA;
                break;
        }
        if (ioctl(vcpu_fd, KVM_SET_SREGS, &s) < 0)
                return cap_fail(err, errno, "vCPU %d: KVM_SET_SREGS", index);
        return 0;
}

static int setup_regs(int vcpu_fd, int index, int ncpus, const struct boot_info *boot, cap_error_t *err)
{
        struct kvm_regs r = { .rflags = 0x2, .rip = boot->entry };
        switch (boot->mode) {
        case BOOT_LINUX64:
                r.rsi = boot->arg;
                r.rsp = r.rbp = LAYOUT_BOOT_STACK;
                break;
        case BOOT_PVH:
                r.rbx = boot->arg;
                break;
        case BOOT_RING3:
                r.rflags = RING3_RFLAGS;
                r.rdi = (uint64_t)index;
                r.rsi = (uint64_t)ncpus;
                r.rsp = boot->stack_top - (uint64_t)index * RING3_STACK_SIZE;
                break;
        }
        if (ioctl(vcpu_fd, KVM_SET_REGS, &r) < 0)
                return cap_fail(err, errno, "vCPU %d: KVM_SET_REGS", index);
        return 0;
}

int x86_setup_vcpu(int kvm_fd, int vcpu_fd, int index, int ncpus, const struct boot_info *boot, cap_error_t *err)
{
        if (setup_cpuid(kvm_fd, vcpu_fd, index, ncpus, err) < 0 || setup_msrs(vcpu_fd, index, err) < 0 ||
            setup_lapic(vcpu_fd, index, err) < 0 || setup_fpu(vcpu_fd, index, err) < 0 ||
            setup_sregs(vcpu_fd, index, boot, err) < 0 || setup_regs(vcpu_fd, index, ncpus, boot, err) < 0)
                return -1;
        /* A Linux guest wakes its APs with INIT/SIPI; every payload vCPU starts at once. */
        if (boot->mode == BOOT_RING3 && index > 0) {
                struct kvm_mp_state mp = { .mp_state = KVM_MP_STATE_RUNNABLE };
                if (ioctl(vcpu_fd, KVM_SET_MP_STATE, &mp) < 0)
                        return cap_fail(err, errno, "vCPU %d: KVM_SET_MP_STATE", index);
        }
        return 0;
}
