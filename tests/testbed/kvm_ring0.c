/* Proves that /dev/kvm can run guest code at CPL0: a real-mode vCPU counts ECX
 * down from ITERATIONS, then writes MAGIC to PORT with `out dx, al` and halts.
 * Exits 0 and prints one "kvm_ring0: ok ..." line when KVM_RUN reports exactly
 * that port write with ECX at zero. (On a PVM host ring 0 is emulated, so this
 * is what the QEMU testbed is for.) */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MEM_SIZE 0x10000
#define CODE_ADDR 0x1000
#define ITERATIONS 1000000u
#define PORT 0x1234
#define MAGIC 42

static void die(const char *fmt, ...)
{
        va_list ap;
        int saved = errno;

        fputs("kvm_ring0: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fprintf(stderr, ": %s\n", strerror(saved));
        exit(1);
}

static void fail(const char *fmt, ...)
{
        va_list ap;

        fputs("kvm_ring0: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        exit(1);
}

static double now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(void)
{
        /* 16-bit code: mov ecx, ITERATIONS; 1: dec ecx; jnz 1b; mov al, MAGIC;
         * mov dx, PORT; out dx, al; hlt */
        const uint8_t code[] = {
                0x66, 0xb9, ITERATIONS & 0xff, (ITERATIONS >> 8) & 0xff,
                (ITERATIONS >> 16) & 0xff, ITERATIONS >> 24,
                0x66, 0x49,
                0x75, 0xfc,
                0xb0, MAGIC,
                0xba, PORT & 0xff, PORT >> 8,
                0xee,
                0xf4,
        };
        struct kvm_userspace_memory_region region;
        struct kvm_sregs sregs;
        struct kvm_regs regs;
        struct kvm_run *run;
        uint8_t *mem;
        int kvm, vm, vcpu, run_size;
        double start, elapsed;

        kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
        if (kvm < 0)
                die("open /dev/kvm");
        if (ioctl(kvm, KVM_GET_API_VERSION, 0) != KVM_API_VERSION)
                fail("unexpected KVM_GET_API_VERSION");
        vm = ioctl(kvm, KVM_CREATE_VM, 0);
        if (vm < 0)
                die("KVM_CREATE_VM");

        mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED)
                die("mmap guest memory");
        memcpy(mem + CODE_ADDR, code, sizeof(code));
        region = (struct kvm_userspace_memory_region){
                .slot = 0,
                .guest_phys_addr = 0,
                .memory_size = MEM_SIZE,
                .userspace_addr = (uintptr_t)mem,
        };
        if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
                die("KVM_SET_USER_MEMORY_REGION");

        vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
        if (vcpu < 0)
                die("KVM_CREATE_VCPU");
        run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
        if (run_size < (int)sizeof(*run))
                die("KVM_GET_VCPU_MMAP_SIZE");
        run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
        if (run == MAP_FAILED)
                die("mmap kvm_run");

        if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
                die("KVM_GET_SREGS");
        sregs.cs.base = 0;
        sregs.cs.selector = 0;
        if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0)
                die("KVM_SET_SREGS");
        memset(&regs, 0, sizeof(regs));
        regs.rip = CODE_ADDR;
        regs.rflags = 0x2;
        if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
                die("KVM_SET_REGS");

        start = now_ms();
        if (ioctl(vcpu, KVM_RUN, 0) < 0)
                die("KVM_RUN");
        elapsed = now_ms() - start;

        if (run->exit_reason != KVM_EXIT_IO)
                fail("exit reason %u, expected KVM_EXIT_IO (%u)", run->exit_reason, KVM_EXIT_IO);
        if (run->io.direction != KVM_EXIT_IO_OUT || run->io.port != PORT || run->io.size != 1 ||
            run->io.count != 1)
                fail("unexpected I/O exit: direction %u port 0x%x size %u count %u", run->io.direction,
                     run->io.port, run->io.size, run->io.count);
        if (((uint8_t *)run)[run->io.data_offset] != MAGIC)
                fail("port 0x%x got %u, expected %u", PORT, ((uint8_t *)run)[run->io.data_offset], MAGIC);
        if (ioctl(vcpu, KVM_GET_REGS, &regs) < 0)
                die("KVM_GET_REGS");
        if ((uint32_t)regs.rcx != 0)
                fail("ECX is %u after the loop, expected 0", (uint32_t)regs.rcx);

        printf("kvm_ring0: ok: out 0x%x <- %u after %u ring-0 iterations in %.1f ms\n", PORT, MAGIC,
               ITERATIONS, elapsed);
        return 0;
}
