/* A small AML (ACPI Machine Language) writer for the DSDT: names, scopes,
 * devices, packages, integers, strings, EISA ids and resource templates.
 * It writes into a caller-provided buffer and records overflow instead of
 * failing at each call, so a table is built straight-line and checked once. */
#ifndef CAPSULE_VMM_X86_AML_H
#define CAPSULE_VMM_X86_AML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct aml {
        uint8_t *buf;
        size_t len, cap;
        bool overflow;
};

void aml_init(struct aml *a, uint8_t *buf, size_t cap);
void aml_byte(struct aml *a, uint8_t b);
void aml_bytes(struct aml *a, const void *p, size_t n);
void aml_le(struct aml *a, uint64_t v, int nbytes);

/* A NameString: optional leading '\', segments of up to 4 characters separated by '.'
 * (short segments are padded with '_'). */
void aml_namestring(struct aml *a, const char *path);
/* The shortest integer encoding (ZeroOp, OneOp, Byte/Word/DWord/QWord prefix). */
void aml_integer(struct aml *a, uint64_t v);
void aml_string(struct aml *a, const char *s);
/* EISAID("PNP0A08") as its compressed 32-bit integer. */
void aml_eisaid(struct aml *a, const char *id);
/* Name(path, ...): the caller appends the value. */
void aml_name(struct aml *a, const char *path);

/* Objects that carry a PkgLength: open returns a mark, close inserts the length. */
size_t aml_scope_open(struct aml *a, const char *path);
size_t aml_device_open(struct aml *a, const char *path);
size_t aml_package_open(struct aml *a, uint8_t nelems);
void aml_close(struct aml *a, size_t mark);

/* ResourceTemplate(): open, add descriptors, close (adds the end tag and the buffer size). */
size_t aml_restemplate_open(struct aml *a);
void aml_restemplate_close(struct aml *a, size_t mark);
void aml_res_io(struct aml *a, uint16_t base, uint8_t len);
void aml_res_irq(struct aml *a, uint8_t irq);
void aml_res_mem32_fixed(struct aml *a, uint32_t base, uint32_t len);
void aml_res_word_bus(struct aml *a, uint16_t min, uint16_t max);
void aml_res_word_io(struct aml *a, uint16_t min, uint16_t max);
void aml_res_dword_mem(struct aml *a, uint32_t min, uint32_t max);

/* Decode a PkgLength at p (at most avail bytes): returns the number of bytes it
 * occupies and stores the length it encodes, or returns 0 if malformed. */
size_t aml_pkglength_decode(const uint8_t *p, size_t avail, uint32_t *len);

#endif
