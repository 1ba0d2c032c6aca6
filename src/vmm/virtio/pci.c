/* TEMPORARY, until branch v-pci lands the virtio-pci transport: refuses every device,
 * so that the core links. The coordinator drops this commit when merging v-pci. */
#include "vmm/virtio/transport.h"

static int pci_refuse(struct virtio_dev *dev, cap_error_t *err)
{
        (void)dev;
        return cap_fail(err, 0, "virtio-pci: not available yet");
}

static void pci_remove(struct virtio_dev *dev)
{
        (void)dev;
}

static void pci_interrupt(struct virtio_dev *dev, int q)
{
        (void)dev;
        (void)q;
}

const struct virtio_transport virtio_pci_transport = {
        .name = "pci",
        .add = pci_refuse,
        .remove = pci_remove,
        .interrupt = pci_interrupt,
};
