/* Helpers for guest test payloads: freestanding code running in 64-bit ring 3
 * with IOPL 3, so port I/O works directly. */
#ifndef CAPSULE_PAYLOAD_H
#define CAPSULE_PAYLOAD_H

#include <stdint.h>

#define COM1 0x3f8
#define DEBUG_EXIT 0xf4

static inline void outb(uint16_t port, uint8_t v)
{
        __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
        uint8_t v;
        __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
        return v;
}

static inline void outl(uint16_t port, uint32_t v)
{
        __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint32_t inl(uint16_t port)
{
        uint32_t v;
        __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
        return v;
}

static inline void cpu_relax(void)
{
        __asm__ volatile("pause" ::: "memory");
}

/* Wait (bounded) for the transmit holding register, then send. */
static inline void putc_serial(char c)
{
        for (int i = 0; i < 100000 && !(inb(COM1 + 5) & 0x20); i++)
                cpu_relax();
        outb(COM1, (uint8_t)c);
}

static inline void puts_serial(const char *s)
{
        while (*s)
                putc_serial(*s++);
}

static inline void put_dec(uint64_t v)
{
        char buf[21];
        int i = sizeof(buf);
        buf[--i] = '\0';
        do {
                buf[--i] = (char)('0' + v % 10);
                v /= 10;
        } while (v);
        puts_serial(&buf[i]);
}

static inline void put_hex(uint64_t v, int digits)
{
        for (int i = digits - 1; i >= 0; i--)
                putc_serial("0123456789abcdef"[(v >> (i * 4)) & 0xf]);
}

/* End the VM now with this exit status. */
static inline __attribute__((noreturn)) void payload_exit(uint8_t status)
{
        outb(DEBUG_EXIT, status);
        for (;;)
                cpu_relax();
}

/* For vCPUs with nothing left to do while another one decides the exit status. */
static inline __attribute__((noreturn)) void payload_idle(void)
{
        for (;;)
                cpu_relax();
}

int payload_main(uint64_t index, uint64_t ncpus);

#endif
