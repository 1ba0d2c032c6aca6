/* Host decompression of the bzImage payload (gzip, xz, lzma, zstd, lz4): the ELF inside is
 * booted directly when asked, the bzImage's own decompressor otherwise. */
#include <asm/bootparam.h>
#include <lz4.h>
#include <lzma.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "boot_image.h"
#include "check.h"
#include "common/util.h"
#include "vmm/x86/boot.h"
#include "vmm/x86/decompress.h"
#include "vmm/x86/layout.h"

static uint8_t *append_size(uint8_t *c, size_t *clen, size_t raw_len)
{
        uint32_t v = (uint32_t)raw_len;

        c = realloc(c, *clen + 4);
        memcpy(c + *clen, &v, 4);
        *clen += 4;
        return c;
}

static uint8_t *compress_gzip(const uint8_t *in, size_t len, size_t *out_len)
{
        z_stream zs = { 0 };
        uLong bound;
        uint8_t *out;

        if (deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
                return NULL;
        bound = deflateBound(&zs, len);
        out = xmalloc0(bound);
        zs.next_in = (Bytef *)in;
        zs.avail_in = (uInt)len;
        zs.next_out = out;
        zs.avail_out = (uInt)bound;
        deflate(&zs, Z_FINISH);
        *out_len = zs.total_out;
        deflateEnd(&zs);
        return out;
}

static uint8_t *compress_xz(const uint8_t *in, size_t len, size_t *out_len, bool legacy_lzma)
{
        size_t cap = len + len / 2 + 4096;
        uint8_t *out = xmalloc0(cap);
        lzma_options_lzma opt;
        lzma_stream s = LZMA_STREAM_INIT;

        *out_len = 0;
        if (!legacy_lzma) {
                if (lzma_easy_buffer_encode(6, LZMA_CHECK_CRC32, NULL, in, len, out, out_len, cap) != LZMA_OK) {
                        free(out);
                        return NULL;
                }
                return out;
        }
        lzma_lzma_preset(&opt, 6);
        if (lzma_alone_encoder(&s, &opt) != LZMA_OK) {
                free(out);
                return NULL;
        }
        s.next_in = in;
        s.avail_in = len;
        s.next_out = out;
        s.avail_out = cap;
        while (lzma_code(&s, LZMA_FINISH) == LZMA_OK)
                ;
        *out_len = s.total_out;
        lzma_end(&s);
        return out;
}

static uint8_t *compress_zstd(const uint8_t *in, size_t len, size_t *out_len)
{
        size_t cap = ZSTD_compressBound(len);
        uint8_t *out = xmalloc0(cap);

        *out_len = ZSTD_compress(out, cap, in, len, 19);
        if (ZSTD_isError(*out_len)) {
                free(out);
                return NULL;
        }
        return out;
}

/* The legacy frame `lz4 -l` writes: magic, then <le32 size, block> pairs. */
static uint8_t *compress_lz4_legacy(const uint8_t *in, size_t len, size_t *out_len)
{
        uint8_t *out = xmalloc0(8 + (size_t)LZ4_compressBound((int)len));
        uint32_t magic = 0x184c2102, n;

        memcpy(out, &magic, 4);
        n = (uint32_t)LZ4_compress_default((const char *)in, (char *)out + 8, (int)len, LZ4_compressBound((int)len));
        memcpy(out + 4, &n, 4);
        *out_len = 8 + n;
        return out;
}

/* in compressed as the format compression_name() calls name; NULL on failure. */
static uint8_t *compress_as(const char *name, const uint8_t *in, size_t len, size_t *out_len)
{
        if (strcmp(name, "gzip") == 0)
                return compress_gzip(in, len, out_len);
        if (strcmp(name, "xz") == 0 || strcmp(name, "lzma") == 0)
                return compress_xz(in, len, out_len, strcmp(name, "lzma") == 0);
        if (strcmp(name, "zstd") == 0)
                return compress_zstd(in, len, out_len);
        return compress_lz4_legacy(in, len, out_len);
}

/* A bzImage around payload (len bytes) loaded into gm (256 MiB) with bzimage_decompress how. */
static bool payload_loaded(struct guest_mem *gm, const uint8_t *payload, size_t len, enum vm_bzimage_decompress how,
                           struct boot_info *boot)
{
        cleanup_tmp char *path = NULL;
        struct bz_opts o = bz_default;

        o.payload = payload;
        o.payload_len = len;
        path = write_bzimage(&o);
        return path != NULL && kernel_loaded(gm, path, NULL, 256 * MIB, how, boot);
}

static void check_decompressed_boot(const char *name, uint8_t *compressed, size_t clen, size_t raw_len, bool pvh)
{
        cleanup_mem struct guest_mem gm = { .memfd = -1 };
        cleanup_free uint8_t *payload = append_size(compressed, &clen, raw_len);
        struct boot_info boot = { 0 };

        fprintf(stderr, "payload: %s, %zu -> %zu bytes\n", name, raw_len, clen);
        CHECK(compression_detect(payload, clen) != COMPRESSION_UNKNOWN);
        CHECK_STR(compression_name(compression_detect(payload, clen)), name);
        CHECK(payload_loaded(&gm, payload, clen, VM_BZIMAGE_DECOMPRESS_HOST, &boot));
        /* The ELF inside was booted, not the bzImage's decompressor at +0x200. */
        if (pvh) {
                CHECK(boot.mode == BOOT_PVH);
                CHECK(boot.entry == pvh_opts.pvh_entry);
        } else {
                CHECK(boot.mode == BOOT_LINUX64);
                CHECK(boot.entry == KERNEL_PADDR + 0x100);
                /* The zero page still carries the bzImage's own setup header. */
                CHECK(zero_page(&gm)->hdr.setup_sects == BZ_SETUP_SECTS);
                CHECK(zero_page(&gm)->hdr.pref_address == KERNEL_PADDR);
        }
        CHECK(guest_has_pattern(&gm, KERNEL_PADDR, 0x3000));
}

/* The kernel (PVH or not) compressed as name says, in a bzImage that capsule decompresses. */
static void check_format(const char *name, bool pvh)
{
        cleanup_free uint8_t *elf = NULL;
        size_t len, clen;
        uint8_t *c;

        elf = build_elf(pvh ? &pvh_opts : &vmlinux_opts, &len);
        c = compress_as(name, elf, len, &clen);
        CHECK(c != NULL);
        check_decompressed_boot(name, c, clen, len, pvh);
}

TEST(bzimage_gzip_payload_is_decompressed_on_the_host)
{
        check_format("gzip", false);
}

TEST(bzimage_xz_payload_is_decompressed_on_the_host)
{
        check_format("xz", true);
}

TEST(bzimage_lzma_payload_is_decompressed_on_the_host)
{
        check_format("lzma", false);
}

TEST(bzimage_zstd_payload_is_decompressed_on_the_host)
{
        check_format("zstd", true);
}

TEST(bzimage_lz4_payload_is_decompressed_on_the_host)
{
        check_format("lz4", false);
}

TEST(bzimage_corrupt_payload_falls_back_to_bzimage_entry)
{
        cleanup_mem struct guest_mem gm = { .memfd = -1 };
        cleanup_free uint8_t *elf = NULL;
        cleanup_free uint8_t *gz = NULL;
        struct boot_info boot = { 0 };
        size_t len, clen;

        elf = build_elf(&pvh_opts, &len);
        gz = compress_gzip(elf, len, &clen);
        CHECK(gz != NULL);
        gz[clen / 2] ^= 0xff; /* the gzip CRC or the stream breaks */
        CHECK(payload_loaded(&gm, gz, clen, VM_BZIMAGE_DECOMPRESS_HOST, &boot));
        CHECK(boot.mode == BOOT_LINUX64);
        CHECK(boot.entry == KERNEL_PADDR + 0x200);
        CHECK(guest_has_pattern(&gm, KERNEL_PADDR, BZ_PAYLOAD_OFFSET));
}

TEST(bzimage_payload_is_left_to_the_guest_by_default)
{
        cleanup_mem struct guest_mem gm = { .memfd = -1 };
        cleanup_free uint8_t *elf = NULL;
        cleanup_free uint8_t *payload = NULL;
        struct boot_info boot = { 0 };
        size_t len, clen;
        uint8_t *gz;

        /* A payload capsule could decompress (and boot through PVH) is still the guest's to decompress. */
        elf = build_elf(&pvh_opts, &len);
        gz = compress_gzip(elf, len, &clen);
        CHECK(gz != NULL);
        payload = append_size(gz, &clen, len);
        CHECK(boot_config(NULL, 256 * MIB).bzimage_decompress == VM_BZIMAGE_DECOMPRESS_GUEST);
        CHECK(payload_loaded(&gm, payload, clen, VM_BZIMAGE_DECOMPRESS_GUEST, &boot));
        CHECK(boot.mode == BOOT_LINUX64);
        CHECK(boot.entry == KERNEL_PADDR + 0x200);
        CHECK(boot.arg == LAYOUT_ZERO_PAGE);
        CHECK(guest_has_pattern(&gm, KERNEL_PADDR, BZ_PAYLOAD_OFFSET));
        CHECK(memcmp(guest_mem_ptr(&gm, KERNEL_PADDR + BZ_PAYLOAD_OFFSET, clen), payload, clen) == 0);
}

/* decompress() of len bytes of in (raw_len expected, at most limit) fails saying needle. */
static bool decompress_fails(const uint8_t *in, size_t len, size_t raw_len, size_t limit, const char *needle)
{
        cleanup_error cap_error_t err = NULL;
        cleanup_free uint8_t *out = NULL;
        size_t out_len;

        return decompress(in, len, raw_len, limit, &out, &out_len, &err) < 0 && err_has(err, needle);
}

TEST(decompress_rejects_truncated_streams)
{
        cleanup_error cap_error_t err = NULL;
        cleanup_free uint8_t *elf = NULL;
        cleanup_free uint8_t *xz = NULL;
        cleanup_free uint8_t *zs = NULL;
        cleanup_free uint8_t *out = NULL;
        size_t len, clen, zlen, out_len;

        elf = build_elf(&vmlinux_opts, &len);
        xz = compress_xz(elf, len, &clen, false);
        zs = compress_zstd(elf, len, &zlen);
        CHECK(xz != NULL && zs != NULL);
        CHECK(decompress_fails(xz, clen / 2, 0, 64 * MIB, "xz"));
        CHECK(decompress_fails(zs, zlen / 2, 0, 64 * MIB, "zstd"));
        /* A limit smaller than the output stops the decompressor. */
        CHECK(decompress_fails(xz, clen, 0, 4096, "exceeds"));
        CHECK(decompress(xz, clen, len, 64 * MIB, &out, &out_len, &err) == 0);
        CHECK(out_len == len && memcmp(out, elf, len) == 0);
}
