#include "mmio_driver.h"

#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>

#include "vmm/x86/layout.h"

uint32_t mmio_rd32(struct bus *mmio, uint64_t off)
{
        uint8_t b[4] = { 0 };
        bus_dispatch(mmio, LAYOUT_MMIO_START + off, b, 4, false);
        return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

void mmio_wr(struct bus *mmio, uint64_t off, uint32_t v, uint32_t len)
{
        uint8_t b[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24) };
        bus_dispatch(mmio, LAYOUT_MMIO_START + off, b, len, true);
}

void mmio_wr32(struct bus *mmio, uint64_t off, uint32_t v)
{
        mmio_wr(mmio, off, v, 4);
}

uint64_t mmio_device_features(struct bus *mmio)
{
        mmio_wr32(mmio, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
        uint64_t hi = mmio_rd32(mmio, VIRTIO_MMIO_DEVICE_FEATURES);
        mmio_wr32(mmio, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
        return hi << 32 | mmio_rd32(mmio, VIRTIO_MMIO_DEVICE_FEATURES);
}

void mmio_driver_features(struct bus *mmio, uint64_t features)
{
        mmio_wr32(mmio, VIRTIO_MMIO_STATUS, 0);
        mmio_wr32(mmio, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
        mmio_wr32(mmio, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
        features |= 1ULL << VIRTIO_F_VERSION_1;
        mmio_wr32(mmio, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
        mmio_wr32(mmio, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)features);
        mmio_wr32(mmio, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        mmio_wr32(mmio, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(features >> 32));
        mmio_wr32(mmio, VIRTIO_MMIO_STATUS,
                  VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
}

void mmio_queue_setup(struct bus *mmio, unsigned int q, uint32_t size, uint64_t desc, uint64_t avail, uint64_t used)
{
        mmio_wr32(mmio, VIRTIO_MMIO_QUEUE_SEL, q);
        mmio_wr32(mmio, VIRTIO_MMIO_QUEUE_NUM, size);
        mmio_wr32(mmio, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)desc);
        mmio_wr32(mmio, VIRTIO_MMIO_QUEUE_DESC_HIGH, (uint32_t)(desc >> 32));
        mmio_wr32(mmio, VIRTIO_MMIO_QUEUE_AVAIL_LOW, (uint32_t)avail);
        mmio_wr32(mmio, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, (uint32_t)(avail >> 32));
        mmio_wr32(mmio, VIRTIO_MMIO_QUEUE_USED_LOW, (uint32_t)used);
        mmio_wr32(mmio, VIRTIO_MMIO_QUEUE_USED_HIGH, (uint32_t)(used >> 32));
        mmio_wr32(mmio, VIRTIO_MMIO_QUEUE_READY, 1);
}
