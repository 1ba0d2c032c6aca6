/* Host-side decompression of a bzImage payload (the compressed vmlinux), with
 * the compressors the kernel build offers and the host has libraries for. */
#ifndef CAPSULE_VMM_X86_DECOMPRESS_H
#define CAPSULE_VMM_X86_DECOMPRESS_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

enum compression {
        COMPRESSION_UNKNOWN, /* includes bzip2 and lzo, which capsule leaves to the guest */
        COMPRESSION_GZIP,
        COMPRESSION_XZ,
        COMPRESSION_LZMA,
        COMPRESSION_ZSTD,
        COMPRESSION_LZ4, /* the legacy frame format that `lz4 -l` writes */
};

/* Recognise the format by its magic bytes. */
enum compression compression_detect(const uint8_t *data, size_t len);
const char *compression_name(enum compression c);

/* Decompress one stream into a malloc'd buffer. size_hint is the expected output size
 * (0 if unknown); the output may not exceed max_out bytes. Trailing bytes after the end
 * of the stream (the kernel appends the decompressed size) are ignored. */
int decompress(const uint8_t *in, size_t len, size_t size_hint, size_t max_out, uint8_t **out, size_t *out_len,
               cap_error_t *err);

#endif
