/* Checked writes to procfs: a hostile image can make /proc (or a path below it) a
 * symlink into a volume, so that a write meant for the kernel lands in an ordinary file
 * (CVE-2019-16884, CVE-2023-28642) and the setting it carried silently never applies. */
#ifndef CAPSULE_RUNTIME_PROCFS_H
#define CAPSULE_RUNTIME_PROCFS_H

#include <stddef.h>

#include "common/error.h"

/* Write value to path, which must be a file on procfs; its last component is not followed.
 * The error names path; callers prefix the config field. */
int procfs_write(const char *path, const char *value, size_t len, cap_error_t *err);

#endif
