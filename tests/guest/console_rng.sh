#!/bin/sh
# virtio-console's named port and virtio-rng as the guest sees them, for
# tests/testbed/test_virtio_console_rng.py; reports "guest: key=value" lines.
#   $1: the port's name ("-": no port). It is found by name in /sys/class/virtio-ports;
#       from the host's client comes a line and 256 KiB, answered with "pong LINE" and
#       256 KiB of our own; the host then says "bye".
# Then /dev/hwrng: 1 KiB, and the time 4 KiB more take by the guest's clock (the rate limit).
port=$1
blob=262144
mkdir -p /tmp

uptime_cs() { awk '{ printf "%d\n", $1 * 100 }' /proc/uptime; }

if [ "$port" != "-" ]; then
        dev=
        for d in /sys/class/virtio-ports/*; do
                [ "$(cat "$d/name" 2>/dev/null)" = "$port" ] && dev=/dev/${d##*/}
        done
        echo "guest: port_dev=$dev"
        [ -n "$dev" ] || exit 1
        # Reads end at once while the host has no client: open again until it has one.
        tries=0
        while :; do
                exec 3<>"$dev"
                read -r line <&3 && break
                exec 3<&-
                tries=$((tries + 1))
                [ $tries -lt 300 ] || exit 2
                sleep 0.2
        done
        echo "guest: port_line=$line"
        head -c $blob <&3 >/tmp/in
        echo "guest: port_in_bytes=$(wc -c </tmp/in)"
        echo "guest: port_in_md5=$(md5sum </tmp/in | cut -d' ' -f1)"
        dd if=/dev/urandom of=/tmp/out bs=4096 count=$((blob / 4096)) 2>/dev/null
        echo "guest: port_out_md5=$(md5sum </tmp/out | cut -d' ' -f1)"
        { echo "pong $line"; cat /tmp/out; } >&3
        read -r ack <&3
        echo "guest: port_ack=$ack"
        exec 3<&-
fi

echo "guest: rng_current=$(cat /sys/class/misc/hw_random/rng_current)"
dd if=/dev/hwrng of=/tmp/rnd bs=1024 count=1 2>/dev/null
echo "guest: hwrng_bytes=$(wc -c </tmp/rnd)"
echo "guest: hwrng_nonzero=$(tr -d '\000' </tmp/rnd | wc -c)"
t0=$(uptime_cs)
dd if=/dev/hwrng of=/tmp/rnd4 bs=4096 count=1 2>/dev/null
t1=$(uptime_cs)
echo "guest: hwrng_4k_bytes=$(wc -c </tmp/rnd4)"
echo "guest: hwrng_4k_cs=$((t1 - t0))"
