/* The fuzz targets' input cursor: take() hands out the fuzzer's bytes in order and says
 * when they ran out, so a target reads its whole scenario from one buffer. And fuzz_die(),
 * for a set-up step that failed (no input's doing). */
#ifndef CAPSULE_FUZZ_INPUT_H
#define CAPSULE_FUZZ_INPUT_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct input {
        const uint8_t *p;
        size_t left;
};

static inline bool take(struct input *in, void *out, size_t n)
{
        if (in->left < n)
                return false;
        memcpy(out, in->p, n);
        in->p += n;
        in->left -= n;
        return true;
}

static inline void fuzz_die(const char *what, cap_error_t *err)
{
        fprintf(stderr, "%s: %s: %s\n", program_invocation_short_name, what, err && *err ? (*err)->msg : "failed");
        exit(1);
}

#endif
