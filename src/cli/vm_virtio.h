/* The virtio settings of `capsule vm run`, shared by its flags and its JSON config:
 * each takes the same text in both ("disk": ["a.img,ro"] is --disk a.img,ro). */
#ifndef CAPSULE_CLI_VM_VIRTIO_H
#define CAPSULE_CLI_VM_VIRTIO_H

#include "common/error.h"
#include "vmm/vm.h"

/* key: the setting's name (disk, console-port, vsock, rng, balloon, share, net,
 * virtio-transport, console-device); text: its value; base_dir: relative paths are taken from there (NULL:
 * the current directory); origin: "--disk" or "vm.json: disk[1]" for errors.
 * Returns 1 when key is not a virtio setting, 0 when set, -1 on error. */
int vm_virtio_setting(struct vm_config *cfg, const char *key, const char *text, const char *base_dir,
                      const char *origin, cap_error_t *err);

#endif
