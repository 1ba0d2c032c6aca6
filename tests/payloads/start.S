/* Payload entry: the VMM starts every vCPU here in 64-bit ring 3 with
 * RDI = vCPU index, RSI = vCPU count and RSP = this vCPU's stack top. */
        .section .text.start, "ax"
        .globl _start
_start:
        xor %ebp, %ebp
        call payload_main
        /* The return value's low byte becomes capsule's exit status. */
        mov $0xf4, %dx
        outb %al, %dx
1:      pause
        jmp 1b

        .section .note.GNU-stack, "", @progbits
