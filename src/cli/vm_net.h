/* The --net setting of `capsule vm run` (and "net" in its JSON config). */
#ifndef CAPSULE_CLI_VM_NET_H
#define CAPSULE_CLI_VM_NET_H

#include "common/error.h"
#include "vmm/vm.h"

/* Adds the NIC text describes to cfg->nets; errors start with origin ("--net",
 * "vm.json: net[1]"). base_dir: where a relative netns= path is taken from (NULL: here). */
int vm_net_setting(struct vm_config *cfg, const char *text, const char *base_dir, const char *origin, cap_error_t *err);

#endif
