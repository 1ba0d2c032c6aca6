#!/bin/busybox sh
# The virtio-pci transport as the guest sees it (tests/testbed/test_vm_virtio_pci.py):
# the virtio PCI functions and their drivers, the virtio devices on them, their lines in
# /proc/interrupts, and bytes from /dev/hwrng. One "guest: KEY VALUE..." line each.
mkdir -p /tmp
name() { [ -e "$1" ] && basename "$(readlink "$1")" || echo none; }

for d in /sys/bus/pci/devices/*; do
        [ "$(cat "$d/vendor")" = 0x1af4 ] || continue
        echo "guest: pci $(basename "$d") vendor=$(cat "$d/vendor") device=$(cat "$d/device")" \
                "revision=$(cat "$d/revision") class=$(cat "$d/class")" \
                "subsystem=$(cat "$d/subsystem_vendor"):$(cat "$d/subsystem_device") irq=$(cat "$d/irq")" \
                "driver=$(name "$d/driver") msi_irqs=$(ls "$d/msi_irqs" 2>/dev/null | wc -l)" \
                "resource0=$(head -n1 "$d/resource" | tr " " ,)"
done
for v in /sys/bus/virtio/devices/*; do
        [ -e "$v" ] || continue
        echo "guest: virtio $(basename "$v") device=$(cat "$v/device") vendor=$(cat "$v/vendor")" \
                "status=$(cat "$v/status") driver=$(name "$v/driver") parent=$(basename "$(dirname "$(readlink -f "$v")")")"
done
grep virtio /proc/interrupts | while read -r line; do
        echo "guest: irq $line"
done
echo "guest: hwrng_current=$(cat /sys/class/misc/hw_random/rng_current 2>&1)"
# A device that stops answering must not hang the boot: the read gives up after 60 s.
timeout 60 head -c 64 /dev/hwrng >/tmp/hwrng
bytes=$(od -An -v -tx1 </tmp/hwrng | tr -s ' \n' '\n' | grep -c .)
distinct=$(od -An -v -tx1 </tmp/hwrng | tr -s ' \n' '\n' | grep . | sort -u | wc -l)
echo "guest: hwrng_bytes=$bytes distinct=$distinct"
