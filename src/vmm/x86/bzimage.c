/* Field meanings from Documentation/x86/boot.rst (the Linux x86 boot protocol). */
#include "vmm/x86/bzimage.h"

#include <string.h>

#include "vmm/x86/layout.h"

#define BOOT_PROTOCOL_MIN 0x0206
#define BOOT_PROTOCOL_XLOADFLAGS 0x020c

bool bzimage_detect(const uint8_t *data, size_t size)
{
        uint32_t magic;

        if (size < 0x206)
                return false;
        memcpy(&magic, data + 0x202, 4);
        return magic == SETUP_HDRS_MAGIC;
}

int bzimage_parse(const uint8_t *data, size_t size, struct bzimage *bz, cap_error_t *err)
{
        size_t setup_sects, pm_offset, hdr_end;
        struct setup_header *h = &bz->hdr;

        memset(bz, 0, sizeof(*bz));
        if (!bzimage_detect(data, size))
                return cap_fail(err, 0, "not a bzImage (no HdrS signature)");
        /* The 2-byte jump at 0x200 skips exactly the header: it ends at 0x202 + its offset. */
        hdr_end = 0x202 + data[0x201];
        if (hdr_end > size)
                return cap_fail(err, 0, "truncated bzImage: the setup header ends past the file");
        bz->hdr_len = hdr_end - SETUP_HEADER_OFFSET;
        if (bz->hdr_len > sizeof(*h))
                bz->hdr_len = sizeof(*h);
        memcpy(h, data + SETUP_HEADER_OFFSET, bz->hdr_len);

        if (h->version < BOOT_PROTOCOL_MIN)
                return cap_fail(err, 0, "bzImage boot protocol %u.%02u is too old (2.06 or later is needed)",
                                h->version >> 8, h->version & 0xff);
        if (h->version < BOOT_PROTOCOL_XLOADFLAGS || !(h->xloadflags & XLF_KERNEL_64))
                return cap_fail(err, 0, "bzImage has no 64-bit entry point (XLF_KERNEL_64 is not set)");

        setup_sects = h->setup_sects ? h->setup_sects : 4;
        pm_offset = (setup_sects + 1) * 512;
        if (pm_offset >= size)
                return cap_fail(err, 0, "truncated bzImage: no protected-mode kernel after %zu setup sectors",
                                setup_sects);
        bz->kernel = data + pm_offset;
        bz->kernel_offset = pm_offset;
        bz->kernel_size = size - pm_offset;
        if (h->payload_length && h->payload_offset <= bz->kernel_size &&
            h->payload_length <= bz->kernel_size - h->payload_offset) {
                bz->payload = bz->kernel + h->payload_offset;
                bz->payload_size = h->payload_length;
        }
        return 0;
}

void bzimage_place(const struct bzimage *bz, uint64_t *load, uint64_t *end)
{
        const struct setup_header *h = &bz->hdr;
        uint64_t align = h->kernel_alignment;
        uint64_t addr = h->pref_address >= LAYOUT_HIMEM ? h->pref_address : LAYOUT_HIMEM;
        uint64_t need = h->init_size > bz->kernel_size ? h->init_size : bz->kernel_size;

        /* A relocatable kernel runs from any kernel_alignment boundary; a fixed one
         * decompresses to pref_address wherever it is loaded, so load it there too.
         * Near the top of the address space neither may wrap around to 0: the end then
         * saturates, and the caller's check that the kernel fits in RAM rejects it. */
        if (h->relocatable_kernel && align && (align & (align - 1)) == 0 && addr <= UINT64_MAX - (align - 1))
                addr = (addr + align - 1) & ~(align - 1);
        *load = addr;
        *end = need > UINT64_MAX - addr ? UINT64_MAX : addr + need;
}

int bzimage_load(struct guest_mem *mem, const struct bzimage *bz, uint64_t load, int fd, cap_error_t *err)
{
        if (guest_mem_ptr(mem, load, bz->kernel_size) == NULL)
                return cap_fail(err, 0, "bzImage kernel (%zu bytes at 0x%llx) does not fit in guest RAM",
                                bz->kernel_size, (unsigned long long)load);
        if (fd < 0)
                return guest_mem_write(mem, load, bz->kernel, bz->kernel_size);
        if (guest_mem_load_file(mem, load, fd, bz->kernel_offset, bz->kernel_size, err) < 0)
                return cap_error_prefix(err, "bzImage kernel");
        return 0;
}

size_t bzimage_payload_size_hint(const struct bzimage *bz)
{
        uint32_t v;

        if (bz->payload == NULL || bz->payload_size < 4)
                return 0;
        memcpy(&v, bz->payload + bz->payload_size - 4, 4);
        return v;
}
