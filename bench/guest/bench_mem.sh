#!/bin/sh
# Guest side of bench/virtio_net.sh's memory rows (args: MIB HOLD WAIT): idle, then MIB MiB written
# to a tmpfs file (so that many guest pages are touched), then the file removed (the pages go back
# to the guest's free lists, from where free page reporting hands them to the VMM), then idle again.
# Each step prints a line the host watches, and holds HOLD seconds for the host to sample the
# VMM's RSS; the last idle period lasts WAIT seconds. Lines:
#   bench: mem idle | touched | freeing (before the removal) | freed (after it) | done
# or "bench: mem error: ..." and exits 1.
mib=$1 hold=$2 wait=$3
fail() { echo "bench: mem error: $*"; exit 1; }
# virtio device id 5: the balloon.
grep -qx 0x0005 /sys/bus/virtio/devices/*/device 2>/dev/null || fail "no virtio-balloon device"
mkdir -p /tmp/mem
mount -t tmpfs -o size=$((mib + 16))m tmpfs /tmp/mem || fail "cannot mount a tmpfs"
sync
echo 3 >/proc/sys/vm/drop_caches
echo "bench: mem idle memfree_kb=$(awk '$1 == "MemFree:" { print $2 }' /proc/meminfo)"
sleep "$hold"
dd if=/dev/zero of=/tmp/mem/blob bs=1M count="$mib" 2>/tmp/dd.err || fail "dd: $(tail -n 1 /tmp/dd.err)"
echo "bench: mem touched memfree_kb=$(awk '$1 == "MemFree:" { print $2 }' /proc/meminfo)"
sleep "$hold"
echo "bench: mem freeing"
rm /tmp/mem/blob
echo "bench: mem freed memfree_kb=$(awk '$1 == "MemFree:" { print $2 }' /proc/meminfo)"
sleep "$wait"
echo "bench: mem done"
