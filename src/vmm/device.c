#include "vmm/device.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct device_ops *registry[64];
static int n_registered;
static bool sorted;
/* How many devices (in init order) devices_init() brought up, so a failed init
 * and devices_exit() undo exactly those. */
static int n_active;

void device_register(const struct device_ops *ops)
{
        /* Constructors cannot report errors; both are bugs in the build. */
        if (ops->order <= 0) {
                fprintf(stderr, "capsule: device %s registered without an init order\n", ops->name);
                abort();
        }
        if (n_registered == (int)(sizeof(registry) / sizeof(registry[0]))) {
                fprintf(stderr, "capsule: too many devices registered (%s)\n", ops->name);
                abort();
        }
        registry[n_registered++] = ops;
        sorted = false;
}

static int device_cmp(const void *a, const void *b)
{
        const struct device_ops *x = *(const struct device_ops *const *)a, *y = *(const struct device_ops *const *)b;
        if (x->order != y->order)
                return x->order < y->order ? -1 : 1;
        return strcmp(x->name, y->name);
}

int devices_init(struct vm_devices *ctx, cap_error_t *err)
{
        if (!sorted) {
                qsort(registry, (size_t)n_registered, sizeof(registry[0]), device_cmp);
                sorted = true;
        }
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

int devices_start(struct vm_devices *ctx, cap_error_t *err)
{
        for (int i = 0; i < n_active; i++)
                if (registry[i]->start && registry[i]->start(ctx, err) < 0)
                        return cap_error_prefix(err, "device %s", registry[i]->name);
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
