#include "vmm/x86/e820.h"

#include "vmm/x86/layout.h"

static void e820_add(struct e820_map *map, uint64_t addr, uint64_t size, uint32_t type)
{
        if (size == 0 || map->n >= E820_MAP_MAX)
                return;
        map->r[map->n++] = (struct e820_range){ .addr = addr, .size = size, .type = type };
}

void e820_build(const struct guest_mem *mem, struct e820_map *map)
{
        uint64_t low_end = guest_mem_low_end(mem);

        map->n = 0;
        e820_add(map, 0, LAYOUT_EBDA, E820_TYPE_RAM);
        e820_add(map, LAYOUT_EBDA, LAYOUT_HIMEM - LAYOUT_EBDA, E820_TYPE_RESERVED);
        if (low_end > LAYOUT_HIMEM)
                e820_add(map, LAYOUT_HIMEM, low_end - LAYOUT_HIMEM, E820_TYPE_RAM);
        e820_add(map, LAYOUT_ECAM, LAYOUT_ECAM_SIZE, E820_TYPE_RESERVED);
        for (int i = 0; i < mem->n_regions; i++)
                if (mem->regions[i].gpa >= GUEST_PCI_HOLE_END)
                        e820_add(map, mem->regions[i].gpa, mem->regions[i].size, E820_TYPE_RAM);
}
