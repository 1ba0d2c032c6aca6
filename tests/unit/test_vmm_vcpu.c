#include <string.h>

#include "check.h"
#include "vmm/vcpu.h"

static void mode(struct kvm_sregs *s, unsigned long long cr0, unsigned short cs)
{
        memset(s, 0, sizeof(*s));
        s->cr0 = cr0;
        s->cs.selector = cs;
}

TEST(kernel_mode_failure_stops_the_vm)
{
        struct vcpu_emulation e = { 0 };
        struct kvm_regs regs = { .rip = 0xffffffff81000000ULL };
        struct kvm_sregs s;
        mode(&s, 0x80050033, 0x10);
        CHECK(!vcpu_emulation_retry(&e, &regs, &s));
}

TEST(real_mode_failure_stops_the_vm)
{
        struct vcpu_emulation e = { 0 };
        struct kvm_regs regs = { .rip = 0x7c00 };
        struct kvm_sregs s;
        mode(&s, 0x10, 0x3); /* CR0.PE clear: the selector's low bits are no privilege level */
        CHECK(!vcpu_emulation_retry(&e, &regs, &s));
}

TEST(user_mode_failure_is_retried_a_bounded_number_of_times)
{
        struct vcpu_emulation e = { 0 };
        struct kvm_regs regs = { .rip = 0x41037f };
        struct kvm_sregs s;
        mode(&s, 0x80050033, 0x33);
        for (int i = 0; i < VCPU_EMULATION_RETRIES; i++)
                CHECK(vcpu_emulation_retry(&e, &regs, &s));
        CHECK(!vcpu_emulation_retry(&e, &regs, &s));
}

TEST(another_rip_or_another_exit_starts_the_count_again)
{
        struct vcpu_emulation e = { 0 };
        struct kvm_regs regs = { .rip = 0x401000 };
        struct kvm_sregs s;
        mode(&s, 0x80050033, 0x2b | 3);
        for (int i = 0; i < VCPU_EMULATION_RETRIES; i++)
                CHECK(vcpu_emulation_retry(&e, &regs, &s));
        regs.rip = 0x402000;
        CHECK(vcpu_emulation_retry(&e, &regs, &s));
        CHECK(e.repeats == 1);
        for (int i = 1; i < VCPU_EMULATION_RETRIES; i++)
                CHECK(vcpu_emulation_retry(&e, &regs, &s));
        e.repeats = 0; /* what the vCPU loop does when the guest made progress: any other exit */
        CHECK(vcpu_emulation_retry(&e, &regs, &s));
}
