#ifndef CAPSULE_CLI_EXE_SEAL_H
#define CAPSULE_CLI_EXE_SEAL_H

#include <stdbool.h>

#include "common/error.h"

/* Whether this process runs from a copy of capsule that nothing can write. */
bool exe_sealed(void);
/* Put the installed binary's directory in the environment (SANDBOX_EXE_DIR_ENV), where a VM
 * container's default kernel and initrd are: a sealed copy's /proc/self/exe is no longer that
 * file. */
void exe_dir_export(void);
/* Execute argv again from such a copy (root: the state root, for the overlay). Returns only on
 * failure. */
int exe_reexec_sealed(const char *root, char **argv, cap_error_t *err);

#endif
