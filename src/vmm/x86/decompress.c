#include "vmm/x86/decompress.h"

#include <lz4.h>
#include <lzma.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "common/util.h"

#define LZ4_LEGACY_MAGIC 0x184c2102U
#define LZ4_LEGACY_BLOCK (8U << 20) /* each legacy block decompresses to at most 8 MiB */

enum compression compression_detect(const uint8_t *p, size_t len)
{
        if (len >= 2 && p[0] == 0x1f && (p[1] == 0x8b || p[1] == 0x9e))
                return COMPRESSION_GZIP;
        if (len >= 6 && memcmp(p, "\xfd" "7zXZ\0", 6) == 0)
                return COMPRESSION_XZ;
        if (len >= 3 && memcmp(p, "\x5d\x00\x00", 3) == 0)
                return COMPRESSION_LZMA;
        if (len >= 4 && memcmp(p, "\x28\xb5\x2f\xfd", 4) == 0)
                return COMPRESSION_ZSTD;
        if (len >= 4 && memcmp(p, "\x02\x21\x4c\x18", 4) == 0)
                return COMPRESSION_LZ4;
        return COMPRESSION_UNKNOWN;
}

const char *compression_name(enum compression c)
{
        switch (c) {
        case COMPRESSION_GZIP:
                return "gzip";
        case COMPRESSION_XZ:
                return "xz";
        case COMPRESSION_LZMA:
                return "lzma";
        case COMPRESSION_ZSTD:
                return "zstd";
        case COMPRESSION_LZ4:
                return "lz4";
        case COMPRESSION_UNKNOWN:
                break;
        }
        return "unknown";
}

struct outbuf {
        uint8_t *p;
        size_t len, cap, max;
};

/* Make room for at least want more bytes (or as many as max allows); false at the limit. */
static bool outbuf_grow(struct outbuf *o, size_t want)
{
        size_t cap = o->cap ? o->cap : 1 << 20;
        uint8_t *p;

        if (o->len == o->max)
                return false;
        while (cap - o->len < want && cap < o->max)
                cap = cap > o->max / 2 ? o->max : cap * 2;
        if (cap > o->max)
                cap = o->max;
        if (cap == o->cap)
                return cap > o->len;
        p = realloc(o->p, cap);
        if (p == NULL)
                return false;
        o->p = p;
        o->cap = cap;
        return true;
}

static int inflate_gzip(const uint8_t *in, size_t len, struct outbuf *o, cap_error_t *err)
{
        z_stream zs = { 0 };
        int ret;

        if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK)
                return cap_fail(err, 0, "gzip: cannot initialise zlib");
        zs.next_in = (Bytef *)in;
        zs.avail_in = len > UINT32_MAX ? UINT32_MAX : (uInt)len;
        do {
                if (o->len == o->cap && !outbuf_grow(o, 1)) {
                        inflateEnd(&zs);
                        return cap_fail(err, 0, "gzip: output exceeds %zu MiB", o->max >> 20);
                }
                zs.next_out = o->p + o->len;
                zs.avail_out = (uInt)(o->cap - o->len > UINT32_MAX ? UINT32_MAX : o->cap - o->len);
                ret = inflate(&zs, Z_NO_FLUSH);
                o->len = (size_t)(zs.next_out - o->p);
        } while (ret == Z_OK || (ret == Z_BUF_ERROR && zs.avail_out == 0));
        inflateEnd(&zs);
        if (ret != Z_STREAM_END)
                return cap_fail(err, 0, "gzip data is corrupt or truncated (%s)", zs.msg ? zs.msg : zError(ret));
        return 0;
}

/* The stream header says how much memory its decoder needs (the LZMA dictionary, the
 * zstd window), up to 4 GiB: a dictionary larger than the whole output buys nothing,
 * so the decoders get what the output limit allows and a little for their state. */
#define DECODER_OVERHEAD (16ULL << 20)

static int decode_lzma(const uint8_t *in, size_t len, struct outbuf *o, bool xz, cap_error_t *err)
{
        lzma_stream s = LZMA_STREAM_INIT;
        uint64_t memlimit = (uint64_t)o->max + DECODER_OVERHEAD;
        lzma_ret ret;

        ret = xz ? lzma_stream_decoder(&s, memlimit, 0) : lzma_alone_decoder(&s, memlimit);
        if (ret != LZMA_OK)
                return cap_fail(err, 0, "%s: cannot initialise liblzma (%d)", xz ? "xz" : "lzma", ret);
        s.next_in = in;
        s.avail_in = len;
        do {
                if (o->len == o->cap && !outbuf_grow(o, 1)) {
                        lzma_end(&s);
                        return cap_fail(err, 0, "%s: output exceeds %zu MiB", xz ? "xz" : "lzma", o->max >> 20);
                }
                s.next_out = o->p + o->len;
                s.avail_out = o->cap - o->len;
                ret = lzma_code(&s, LZMA_FINISH);
                o->len = (size_t)(s.next_out - o->p);
        } while (ret == LZMA_OK || (ret == LZMA_BUF_ERROR && s.avail_out == 0));
        lzma_end(&s);
        if (ret == LZMA_MEMLIMIT_ERROR)
                return cap_fail(err, 0, "%s: decoding needs more than %llu MiB of memory", xz ? "xz" : "lzma",
                                (unsigned long long)(memlimit >> 20));
        if (ret != LZMA_STREAM_END)
                return cap_fail(err, 0, "%s data is corrupt or truncated (liblzma error %d)", xz ? "xz" : "lzma", ret);
        return 0;
}

static void zstd_freep(ZSTD_DCtx **d)
{
        ZSTD_freeDCtx(*d);
}

/* The window log limit: zstd's default (27, the window of level 22) or more, to cover
 * max bytes, within what zstd accepts. */
static int zstd_window_log_max(size_t max)
{
        int top = ZSTD_dParam_getBounds(ZSTD_d_windowLogMax).upperBound;
        int log = 27;

        while (log < top && ((size_t)1 << log) < max)
                log++;
        return log;
}

static int decode_zstd(const uint8_t *in, size_t len, struct outbuf *o, cap_error_t *err)
{
        __attribute__((cleanup(zstd_freep))) ZSTD_DCtx *d = ZSTD_createDCtx();
        ZSTD_inBuffer ib = { in, len, 0 };
        size_t ret;

        if (d == NULL)
                return cap_fail(err, 0, "zstd: cannot create a decompression context");
        /* The kernel compresses with --ultra -22; a frame header may ask for a window of up
         * to 2 GiB, of which no more than the output may fill is any use. */
        ZSTD_DCtx_setParameter(d, ZSTD_d_windowLogMax, zstd_window_log_max(o->max));
        do {
                ZSTD_outBuffer ob;

                if (o->len == o->cap && !outbuf_grow(o, 1))
                        return cap_fail(err, 0, "zstd: output exceeds %zu MiB", o->max >> 20);
                ob = (ZSTD_outBuffer){ o->p, o->cap, o->len };
                ret = ZSTD_decompressStream(d, &ob, &ib);
                o->len = ob.pos;
                if (ZSTD_isError(ret))
                        return cap_fail(err, 0, "zstd data is corrupt (%s)", ZSTD_getErrorName(ret));
                if (ret != 0 && ib.pos == ib.size && ob.pos < ob.size)
                        return cap_fail(err, 0, "zstd data is truncated");
        } while (ret != 0);
        return 0;
}

static int decode_lz4(const uint8_t *in, size_t len, struct outbuf *o, cap_error_t *err)
{
        size_t off = 4;

        /* Blocks of <le32 compressed size, data>; the kernel's size trailer follows the last one. */
        while (len - off >= 4 + 1) {
                uint32_t csize;
                int n;

                memcpy(&csize, in + off, 4);
                off += 4;
                if (csize == LZ4_LEGACY_MAGIC)
                        continue;
                if (csize > len - off || csize > (uint32_t)LZ4_compressBound(LZ4_LEGACY_BLOCK))
                        return cap_fail(err, 0, "lz4 data is corrupt or truncated (block of %u bytes)", csize);
                outbuf_grow(o, LZ4_LEGACY_BLOCK);
                if (o->cap == o->len)
                        return cap_fail(err, 0, "lz4: output exceeds %zu MiB", o->max >> 20);
                n = LZ4_decompress_safe((const char *)in + off, (char *)o->p + o->len, (int)csize,
                                        (int)(o->cap - o->len > LZ4_LEGACY_BLOCK ? LZ4_LEGACY_BLOCK : o->cap - o->len));
                if (n < 0)
                        return cap_fail(err, 0, "lz4 data is corrupt");
                o->len += (size_t)n;
                off += csize;
        }
        if (o->len == 0)
                return cap_fail(err, 0, "lz4 data is empty or truncated");
        return 0;
}

int decompress(const uint8_t *in, size_t len, size_t size_hint, size_t max_out, uint8_t **out, size_t *out_len,
               cap_error_t *err)
{
        struct outbuf o = { .max = max_out };
        enum compression c = compression_detect(in, len);
        int ret;

        if (c == COMPRESSION_UNKNOWN)
                return cap_fail(err, 0, "unknown compression format");
        if (size_hint > 0 && size_hint <= max_out && !outbuf_grow(&o, size_hint)) {
                free(o.p);
                return cap_fail(err, ENOMEM, "cannot allocate %zu MiB for decompression", size_hint >> 20);
        }
        switch (c) {
        case COMPRESSION_GZIP:
                ret = inflate_gzip(in, len, &o, err);
                break;
        case COMPRESSION_XZ:
        case COMPRESSION_LZMA:
                ret = decode_lzma(in, len, &o, c == COMPRESSION_XZ, err);
                break;
        case COMPRESSION_ZSTD:
                ret = decode_zstd(in, len, &o, err);
                break;
        default:
                ret = decode_lz4(in, len, &o, err);
                break;
        }
        if (ret < 0) {
                free(o.p);
                return ret;
        }
        *out = o.p;
        *out_len = o.len;
        return 0;
}
