/* OCI hooks: each runs with the container state JSON on stdin, its own
 * args and env, and is killed when its timeout expires. */
#ifndef CAPSULE_RUNTIME_HOOKS_H
#define CAPSULE_RUNTIME_HOOKS_H

#include "common/error.h"
#include "runtime/spec.h"

/* Run every hook of the list in order; the first failure stops and is reported
 * as "hooks.<name>[i] (<path>): ...". */
int hooks_run(const struct spec_hook_list *list, const char *name, const char *state_json, cap_error_t *err);

#endif
