#ifndef CAPSULE_CLI_EXE_SEAL_H
#define CAPSULE_CLI_EXE_SEAL_H

#include <stdbool.h>

#include "common/error.h"

/* Whether this process runs from a copy of capsule that nothing can write. */
bool exe_sealed(void);
/* Execute argv again from such a copy (root: the state root, for the overlay). Returns only on
 * failure. */
int exe_reexec_sealed(const char *root, char **argv, cap_error_t *err);

#endif
