/* Shared by the control channel's command files (api_cmd.c, api_balloon.c) only. */
#ifndef CAPSULE_VMM_API_INTERNAL_H
#define CAPSULE_VMM_API_INTERNAL_H

#include <jansson.h>

#include "vmm/api.h"

/* {"ok": true}, to add the answer's fields to. */
json_t *api_ok(void);
/* The answer's line (compact, ASCII); takes the reference. */
char *api_dump(json_t *j);

/* Commands: arg is the checked argument (size in bytes, timeout in seconds, or 0). */
void api_balloon(const struct api_vm *vm, json_int_t size, struct api_reply *r);
void api_balloon_stats(const struct api_vm *vm, json_int_t arg, struct api_reply *r);

#endif
