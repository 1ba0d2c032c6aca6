/* AML encoding per the ACPI specification, chapter 20 (AML grammar) and 6.4
 * (resource descriptors). */
#include "vmm/x86/aml.h"

#include <string.h>

#define AML_NAME_OP 0x08
#define AML_BYTE_PREFIX 0x0a
#define AML_WORD_PREFIX 0x0b
#define AML_DWORD_PREFIX 0x0c
#define AML_STRING_PREFIX 0x0d
#define AML_QWORD_PREFIX 0x0e
#define AML_SCOPE_OP 0x10
#define AML_BUFFER_OP 0x11
#define AML_PACKAGE_OP 0x12
#define AML_DUAL_NAME_PREFIX 0x2e
#define AML_MULTI_NAME_PREFIX 0x2f
#define AML_EXT_OP_PREFIX 0x5b
#define AML_DEVICE_OP 0x82
#define AML_ROOT_CHAR '\\'

/* Resource descriptor tags */
#define RES_IRQ_NOFLAGS 0x22 /* small item 0x04, 2 bytes */
#define RES_IO 0x47          /* small item 0x08, 7 bytes */
#define RES_END_TAG 0x79     /* small item 0x0f, 1 byte */
#define RES_MEM32_FIXED 0x86
#define RES_DWORD_ADDR 0x87
#define RES_WORD_ADDR 0x88

#define RES_TYPE_MEM 0
#define RES_TYPE_IO 1
#define RES_TYPE_BUS 2
/* Bridge windows: produced by the bridge, fixed minimum and maximum, positive decode. */
#define RES_GFLAGS_WINDOW 0x0c
#define RES_IO_ENTIRE_RANGE 0x03
#define RES_MEM_RW_UNCACHED 0x01

void aml_init(struct aml *a, uint8_t *buf, size_t cap)
{
        a->buf = buf;
        a->len = 0;
        a->cap = cap;
        a->overflow = false;
}

static bool aml_reserve(struct aml *a, size_t n)
{
        if (a->overflow || n > a->cap - a->len) {
                a->overflow = true;
                return false;
        }
        return true;
}

void aml_bytes(struct aml *a, const void *p, size_t n)
{
        if (!aml_reserve(a, n))
                return;
        memcpy(a->buf + a->len, p, n);
        a->len += n;
}

void aml_byte(struct aml *a, uint8_t b)
{
        aml_bytes(a, &b, 1);
}

void aml_le(struct aml *a, uint64_t v, int nbytes)
{
        for (int i = 0; i < nbytes; i++)
                aml_byte(a, (uint8_t)(v >> (8 * i)));
}

static void aml_insert(struct aml *a, size_t pos, const uint8_t *p, size_t n)
{
        if (!aml_reserve(a, n) || pos > a->len)
                return;
        memmove(a->buf + pos + n, a->buf + pos, a->len - pos);
        memcpy(a->buf + pos, p, n);
        a->len += n;
}

static void aml_nameseg(struct aml *a, const char *seg, size_t n)
{
        for (size_t i = 0; i < 4; i++)
                aml_byte(a, i < n ? (uint8_t)seg[i] : '_');
}

void aml_namestring(struct aml *a, const char *path)
{
        const char *segs[16];
        size_t lens[16];
        size_t nsegs = 0;

        if (*path == AML_ROOT_CHAR) {
                aml_byte(a, AML_ROOT_CHAR);
                path++;
        }
        while (*path && nsegs < 16) {
                size_t n = strcspn(path, ".");

                segs[nsegs] = path;
                lens[nsegs++] = n > 4 ? 4 : n;
                path += n;
                if (*path == '.')
                        path++;
        }
        if (nsegs == 0) {
                aml_byte(a, 0x00); /* NullName */
                return;
        }
        if (nsegs == 2)
                aml_byte(a, AML_DUAL_NAME_PREFIX);
        else if (nsegs > 2) {
                aml_byte(a, AML_MULTI_NAME_PREFIX);
                aml_byte(a, (uint8_t)nsegs);
        }
        for (size_t i = 0; i < nsegs; i++)
                aml_nameseg(a, segs[i], lens[i]);
}

void aml_integer(struct aml *a, uint64_t v)
{
        if (v == 0 || v == 1) {
                aml_byte(a, (uint8_t)v); /* ZeroOp, OneOp */
        } else if (v <= 0xff) {
                aml_byte(a, AML_BYTE_PREFIX);
                aml_le(a, v, 1);
        } else if (v <= 0xffff) {
                aml_byte(a, AML_WORD_PREFIX);
                aml_le(a, v, 2);
        } else if (v <= 0xffffffff) {
                aml_byte(a, AML_DWORD_PREFIX);
                aml_le(a, v, 4);
        } else {
                aml_byte(a, AML_QWORD_PREFIX);
                aml_le(a, v, 8);
        }
}

void aml_string(struct aml *a, const char *s)
{
        aml_byte(a, AML_STRING_PREFIX);
        aml_bytes(a, s, strlen(s) + 1);
}

static unsigned hexval(char c)
{
        if (c >= '0' && c <= '9')
                return (unsigned)(c - '0');
        if (c >= 'A' && c <= 'F')
                return (unsigned)(c - 'A' + 10);
        if (c >= 'a' && c <= 'f')
                return (unsigned)(c - 'a' + 10);
        return 0;
}

void aml_eisaid(struct aml *a, const char *id)
{
        /* Three letters in 5 bits each, then four hex digits; stored big-endian. */
        uint32_t v = ((uint32_t)(id[0] - '@') & 0x1f) << 26 | ((uint32_t)(id[1] - '@') & 0x1f) << 21 |
                     ((uint32_t)(id[2] - '@') & 0x1f) << 16 | hexval(id[3]) << 12 | hexval(id[4]) << 8 |
                     hexval(id[5]) << 4 | hexval(id[6]);

        aml_byte(a, AML_DWORD_PREFIX);
        aml_le(a, __builtin_bswap32(v), 4);
}

void aml_name(struct aml *a, const char *path)
{
        aml_byte(a, AML_NAME_OP);
        aml_namestring(a, path);
}

size_t aml_scope_open(struct aml *a, const char *path)
{
        size_t mark;

        aml_byte(a, AML_SCOPE_OP);
        mark = a->len;
        aml_namestring(a, path);
        return mark;
}

size_t aml_device_open(struct aml *a, const char *path)
{
        size_t mark;

        aml_byte(a, AML_EXT_OP_PREFIX);
        aml_byte(a, AML_DEVICE_OP);
        mark = a->len;
        aml_namestring(a, path);
        return mark;
}

size_t aml_package_open(struct aml *a, uint8_t nelems)
{
        size_t mark;

        aml_byte(a, AML_PACKAGE_OP);
        mark = a->len;
        aml_byte(a, nelems);
        return mark;
}

void aml_close(struct aml *a, size_t mark)
{
        uint8_t enc[4];
        size_t content, n;
        uint32_t len;

        if (a->overflow || mark > a->len)
                return;
        content = a->len - mark;
        /* The encoded length counts the PkgLength bytes themselves. */
        if (content + 1 <= 0x3f)
                n = 1;
        else if (content + 2 <= 0xfff)
                n = 2;
        else if (content + 3 <= 0xfffff)
                n = 3;
        else
                n = 4;
        len = (uint32_t)(content + n);
        if (n == 1) {
                enc[0] = (uint8_t)len;
        } else {
                enc[0] = (uint8_t)(((n - 1) << 6) | (len & 0x0f));
                for (size_t i = 1; i < n; i++)
                        enc[i] = (uint8_t)(len >> (4 + 8 * (i - 1)));
        }
        aml_insert(a, mark, enc, n);
}

size_t aml_pkglength_decode(const uint8_t *p, size_t avail, uint32_t *len)
{
        size_t follow;

        if (avail < 1)
                return 0;
        follow = p[0] >> 6;
        if (follow == 0) {
                *len = p[0] & 0x3f;
                return 1;
        }
        if (avail < follow + 1 || (p[0] & 0x30))
                return 0;
        *len = p[0] & 0x0f;
        for (size_t i = 1; i <= follow; i++)
                *len |= (uint32_t)p[i] << (4 + 8 * (i - 1));
        return follow + 1;
}

size_t aml_restemplate_open(struct aml *a)
{
        aml_byte(a, AML_BUFFER_OP);
        return a->len;
}

void aml_restemplate_close(struct aml *a, size_t mark)
{
        uint8_t sizebuf[9];
        struct aml size;

        if (a->overflow || mark > a->len)
                return;
        aml_byte(a, RES_END_TAG);
        aml_byte(a, 0); /* checksum 0: "treat as correct" */
        aml_init(&size, sizebuf, sizeof(sizebuf));
        aml_integer(&size, a->len - mark);
        aml_insert(a, mark, size.buf, size.len);
        aml_close(a, mark);
}

void aml_res_io(struct aml *a, uint16_t base, uint8_t len)
{
        aml_byte(a, RES_IO);
        aml_byte(a, 0x01); /* decodes 16-bit addresses */
        aml_le(a, base, 2);
        aml_le(a, base, 2);
        aml_byte(a, 1); /* alignment */
        aml_byte(a, len);
}

void aml_res_irq(struct aml *a, uint8_t irq)
{
        aml_byte(a, RES_IRQ_NOFLAGS);
        aml_le(a, 1u << irq, 2);
}

void aml_res_mem32_fixed(struct aml *a, uint32_t base, uint32_t len)
{
        aml_byte(a, RES_MEM32_FIXED);
        aml_le(a, 9, 2);
        aml_byte(a, 0x01); /* read-write */
        aml_le(a, base, 4);
        aml_le(a, len, 4);
}

/* Word (size 2) or DWord (size 4) address space descriptor: five size-byte
 * fields after three flag bytes. */
static void aml_res_addr(struct aml *a, uint8_t desc, int size, uint8_t type, uint8_t tflags, uint32_t min, uint32_t max)
{
        aml_byte(a, desc);
        aml_le(a, 3 + 5 * size, 2);
        aml_byte(a, type);
        aml_byte(a, RES_GFLAGS_WINDOW);
        aml_byte(a, tflags);
        aml_le(a, 0, size); /* granularity */
        aml_le(a, min, size);
        aml_le(a, max, size);
        aml_le(a, 0, size); /* translation offset */
        aml_le(a, (uint64_t)max - min + 1, size);
}

void aml_res_word_bus(struct aml *a, uint16_t min, uint16_t max)
{
        aml_res_addr(a, RES_WORD_ADDR, 2, RES_TYPE_BUS, 0, min, max);
}

void aml_res_word_io(struct aml *a, uint16_t min, uint16_t max)
{
        aml_res_addr(a, RES_WORD_ADDR, 2, RES_TYPE_IO, RES_IO_ENTIRE_RANGE, min, max);
}

void aml_res_dword_mem(struct aml *a, uint32_t min, uint32_t max)
{
        aml_res_addr(a, RES_DWORD_ADDR, 4, RES_TYPE_MEM, RES_MEM_RW_UNCACHED, min, max);
}
