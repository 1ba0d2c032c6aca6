#include "vmm/device.h"

#include <stdio.h>
#include <stdlib.h>

static const struct device_ops *registry[64];
static int n_registered;
/* How many devices (in registration order) devices_init() brought up, so a
 * failed init and devices_exit() undo exactly those. */
static int n_active;

void device_register(const struct device_ops *ops)
{
        if (n_registered == (int)(sizeof(registry) / sizeof(registry[0]))) {
                /* Constructors cannot report errors; a build with more devices than slots is a bug. */
                fprintf(stderr, "capsule: too many devices registered (%s)\n", ops->name);
                abort();
        }
        registry[n_registered++] = ops;
}

int devices_init(struct vm_devices *ctx, cap_error_t *err)
{
        n_active = 0;
        for (int i = 0; i < n_registered; i++) {
                if (registry[i]->init(ctx, err) < 0) {
                        cap_error_prefix(err, "device %s", registry[i]->name);
                        devices_exit(ctx);
                        return -1;
                }
                n_active = i + 1;
        }
        return 0;
}

void devices_exit(struct vm_devices *ctx)
{
        while (n_active > 0) {
                const struct device_ops *ops = registry[--n_active];
                if (ops->exit)
                        ops->exit(ctx);
        }
}
