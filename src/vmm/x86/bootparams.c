#include "vmm/x86/bootparams.h"

#include <string.h>

#include "common/util.h"
#include "vmm/x86/layout.h"

#define LOADER_TYPE_UNDEFINED 0xff
#define BOOT_FLAG_MAGIC 0xaa55
#define SYNTH_PROTOCOL_VERSION 0x020f
#define SYNTH_KERNEL_ALIGNMENT 0x1000000
#define SYNTH_INITRD_ADDR_MAX 0x7fffffff
/* End of the setup heap relative to the real-mode segment, as boot loaders usually set it. */
#define HEAP_END_PTR 0xfe00

_Static_assert(sizeof(struct boot_params) == 4096, "zero page");
_Static_assert(offsetof(struct boot_params, e820_entries) == 0x1e8, "e820 count");
_Static_assert(offsetof(struct boot_params, e820_table) == 0x2d0, "e820 table");
_Static_assert(offsetof(struct boot_params, hdr) + offsetof(struct setup_header, cmd_line_ptr) == 0x228,
               "cmd_line_ptr");
_Static_assert(sizeof(struct hvm_start_info) == 56, "hvm_start_info");

int bootparams_write(struct guest_mem *mem, const struct setup_header *hdr, size_t hdr_len,
                     const struct boot_args *args, cap_error_t *err)
{
        cleanup_free struct boot_params *bp = xmalloc0(sizeof(*bp));
        struct setup_header *h = &bp->hdr;

        if (hdr != NULL) {
                memcpy(h, hdr, hdr_len < sizeof(*h) ? hdr_len : sizeof(*h));
        } else {
                h->boot_flag = BOOT_FLAG_MAGIC;
                h->header = 0x53726448; /* "HdrS" */
                h->version = SYNTH_PROTOCOL_VERSION;
                h->kernel_alignment = SYNTH_KERNEL_ALIGNMENT;
                h->initrd_addr_max = SYNTH_INITRD_ADDR_MAX;
                h->cmdline_size = VMLINUX_CMDLINE_SIZE - 1;
        }
        h->type_of_loader = LOADER_TYPE_UNDEFINED;
        h->loadflags |= LOADED_HIGH | CAN_USE_HEAP;
        h->heap_end_ptr = HEAP_END_PTR;
        h->cmd_line_ptr = (uint32_t)args->cmdline_addr;
        bp->ext_cmd_line_ptr = (uint32_t)(args->cmdline_addr >> 32);
        h->ramdisk_image = (uint32_t)args->initrd_addr;
        h->ramdisk_size = (uint32_t)args->initrd_size;
        bp->ext_ramdisk_image = (uint32_t)(args->initrd_addr >> 32);
        bp->ext_ramdisk_size = (uint32_t)(args->initrd_size >> 32);
        bp->acpi_rsdp_addr = args->rsdp_addr;

        for (int i = 0; i < args->e820->n && i < E820_MAX_ENTRIES_ZEROPAGE; i++) {
                bp->e820_table[i].addr = args->e820->r[i].addr;
                bp->e820_table[i].size = args->e820->r[i].size;
                bp->e820_table[i].type = args->e820->r[i].type;
        }
        bp->e820_entries = (uint8_t)args->e820->n;

        if (guest_mem_write(mem, LAYOUT_ZERO_PAGE, bp, sizeof(*bp)) < 0)
                return cap_fail(err, 0, "zero page at 0x%llx does not fit in guest RAM", LAYOUT_ZERO_PAGE);
        return 0;
}

int pvh_start_info_write(struct guest_mem *mem, const struct boot_args *args, cap_error_t *err)
{
        struct hvm_start_info si = {
                .magic = HVM_START_MAGIC,
                .version = HVM_START_VERSION,
                .cmdline_paddr = args->cmdline_addr,
                .rsdp_paddr = args->rsdp_addr,
                .memmap_paddr = LAYOUT_PVH_START_INFO + PVH_MEMMAP_OFFSET,
                .memmap_entries = (uint32_t)args->e820->n,
        };
        struct hvm_memmap_table_entry map[E820_MAP_MAX];

        if (args->initrd_size) {
                struct hvm_modlist_entry mod = { .paddr = args->initrd_addr, .size = args->initrd_size };

                si.nr_modules = 1;
                si.modlist_paddr = LAYOUT_PVH_START_INFO + PVH_MODLIST_OFFSET;
                if (guest_mem_write(mem, si.modlist_paddr, &mod, sizeof(mod)) < 0)
                        return cap_fail(err, 0, "PVH module list does not fit in guest RAM");
        }
        for (int i = 0; i < args->e820->n; i++)
                map[i] = (struct hvm_memmap_table_entry){
                        .addr = args->e820->r[i].addr,
                        .size = args->e820->r[i].size,
                        .type = args->e820->r[i].type,
                };
        if (guest_mem_write(mem, si.memmap_paddr, map, sizeof(map[0]) * (size_t)args->e820->n) < 0 ||
            guest_mem_write(mem, LAYOUT_PVH_START_INFO, &si, sizeof(si)) < 0)
                return cap_fail(err, 0, "PVH start_info at 0x%llx does not fit in guest RAM", LAYOUT_PVH_START_INFO);
        return 0;
}
