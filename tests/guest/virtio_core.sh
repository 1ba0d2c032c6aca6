#!/bin/sh
# The virtio core as the guest sees it, over either transport: every virtio device with
# its id, driver and status, the interrupt lines they took, a read through each one
# (/dev/vd* and /dev/hwrng), then, with "rebind", every device unbound from its driver
# and bound again (a reset and a second setup) and read once more. Lines start with
# "virtio: " for tests/testbed/test_vm_virtio_core.py.
devices() {
        for d in /sys/bus/virtio/devices/*; do
                [ -e "$d" ] || continue
                drv=$(basename "$(readlink "$d/driver" 2>/dev/null)" 2>/dev/null)
                echo "virtio: $1 $(basename "$d") id=$(cat "$d/device") driver=${drv:-none} status=$(cat "$d/status")"
        done
}
reads() {
        for b in /dev/vd?; do
                [ -e "$b" ] || continue
                n=$(timeout 20 dd if="$b" bs=512 count=1 2>/dev/null | wc -c)
                echo "virtio: $1 read $(basename "$b") bytes=$n"
        done
        if [ -e /dev/hwrng ]; then
                n=$(timeout 20 dd if=/dev/hwrng bs=64 count=1 2>/dev/null | wc -c)
                echo "virtio: $1 read hwrng bytes=$n"
        fi
}
irqs() {
        grep -i virtio /proc/interrupts | while read -r line; do echo "virtio: $1 irq $line"; done
}
devices first
reads first
irqs first
if [ "${1:-}" = rebind ]; then
        for d in /sys/bus/virtio/devices/*; do
                drv=$(readlink "$d/driver" 2>/dev/null) || continue
                drv=/sys/bus/virtio/drivers/$(basename "$drv")
                echo "$(basename "$d")" >"$drv/unbind"
                echo "$(basename "$d")" >"$drv/bind"
        done
        devices again
        reads again
        irqs again
fi
