/* The x86 machine capsule presents: guest-physical layout and I/O ports.
 * Shared by the boot code, the ACPI/MP tables and the devices. */
#ifndef CAPSULE_VMM_X86_LAYOUT_H
#define CAPSULE_VMM_X86_LAYOUT_H

/* Low memory */
#define LAYOUT_GDT 0x500ULL
#define LAYOUT_IDT 0x520ULL
#define LAYOUT_PVH_START_INFO 0x6000ULL
#define LAYOUT_ZERO_PAGE 0x7000ULL
#define LAYOUT_PML4 0x9000ULL      /* page tables: PML4, PDPT, PDs follow */
#define LAYOUT_CMDLINE 0x20000ULL
#define LAYOUT_CMDLINE_MAX 0x10000ULL
#define LAYOUT_BOOT_STACK 0x8ff0ULL
#define LAYOUT_EBDA 0x9fc00ULL     /* MP table */
#define LAYOUT_ACPI 0xe0000ULL     /* RSDP and tables (the BIOS area the kernel scans) */
#define LAYOUT_HIMEM 0x100000ULL   /* kernel load address */

/* The 32-bit hole */
#define LAYOUT_MMIO_START 0xC0000000ULL /* device MMIO (virtio-mmio, PCI BARs) */
#define LAYOUT_ECAM 0xE0000000ULL       /* PCI express config space, bus 0 */
#define LAYOUT_ECAM_SIZE 0x100000ULL
#define LAYOUT_IOAPIC 0xFEC00000ULL
#define LAYOUT_LAPIC 0xFEE00000ULL

/* I/O ports and IRQs */
#define PORT_I8042_DATA 0x60
#define PORT_I8042_CMD 0x64
#define IRQ_I8042 1
#define PORT_RTC 0x70 /* index 0x70, data 0x71 */
#define IRQ_RTC 8
#define PORT_DEBUG_EXIT 0xf4 /* a byte written here becomes capsule's exit status */
#define PORT_COM1 0x3f8
#define IRQ_COM1 4
#define PORT_PVPANIC 0x505
#define PORT_ACPI_PM1A_EVT 0x600 /* 4 bytes: status, enable */
#define PORT_ACPI_PM1A_CNT 0x604 /* 2 bytes: SLP_TYP | SLP_EN */
#define PORT_ACPI_RESET 0x608    /* FADT reset register */
#define ACPI_RESET_VALUE 0x1
#define ACPI_S5_SLP_TYP 5
#define IRQ_ACPI_SCI 9
#define PORT_PCI_CONFIG 0xcf8 /* 0xcf8 address, 0xcfc-0xcff data */

#endif
