/* The legacy PC devices' test machine (test_vmm_devices*.c): every registered device brought
 * up on a machine_base with 64 MiB of guest memory, a console file that held stale bytes, and
 * fake interrupt lines and exit requests that remember what the devices asked for. */
#ifndef CAPSULE_TESTS_UNIT_PC_MACHINE_H
#define CAPSULE_TESTS_UNIT_PC_MACHINE_H

#include <stdint.h>

#include "machine.h"
#include "vmm/x86/layout.h"

#define NO_EXIT (-1)
#define COM(r) (PORT_COM1 + (r))

struct fake_vm {
        int level[32];       /* last level per GSI */
        int irq_calls[32];   /* irq_line calls per GSI */
        int exit_reason, exit_status, exit_calls;
};

struct machine {
        struct machine_base b;
        struct fake_vm vm;
        char console[64];
};

int machine_start(struct machine *m, enum vm_console console, cap_error_t *err);
void machine_stop(struct machine *m);
#define MACHINE(m, console) MACHINE_UP(machine, m, machine_start, machine_stop, console)

uint8_t inb(struct machine *m, uint16_t port);
void outb(struct machine *m, uint16_t port, uint8_t v);
/* Select PCI config register reg of slot:fn through port 0xcf8. */
void cf8(struct machine *m, unsigned int slot, unsigned int fn, unsigned int reg);
uint8_t cmos_read(struct machine *m, uint8_t index);
/* path's contents (free them), or NULL. */
char *slurp(const char *path);

#endif
