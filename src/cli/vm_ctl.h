/* `capsule vm ctl SOCKET COMMAND [ARG]`: the human front-end of a running VM's control
 * channel (--api-socket; the protocol is in src/vmm/api.h). */
#ifndef CAPSULE_CLI_VM_CTL_H
#define CAPSULE_CLI_VM_CTL_H

#include <stdint.h>

#include "common/error.h"

/* argv[0] is "ctl". Returns the exit status, or -1 with *err set (also for {"ok": false}). */
int vm_ctl_main(int argc, char **argv, cap_error_t *err);

/* "512M", "1G", "268435456": bytes, K/M/G/T binary suffixes (src/cli/vm.c); -1 on garbage. */
int vm_parse_size(const char *s, uint64_t *out);

#endif
