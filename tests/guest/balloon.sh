#!/bin/sh
# virtio-balloon as the guest sees it, for tests/testbed/test_virtio_balloon.py; reports
# "guest: key=value" lines.
#   $1: MiB for memhog to take and free ("0": none)
#   $2: seconds to stay idle afterwards, printing MemTotal and MemAvailable every second
#       (the host inflates and deflates the balloon meanwhile)
mib=$1
idle=$2
meminfo() { awk -v k="$1:" '$1 == k { print $2 }' /proc/meminfo; }

echo "guest: balloon_features=$(cat /sys/bus/virtio/drivers/virtio_balloon/virtio*/features 2>/dev/null)"
echo "guest: phase=boot"
if [ "$mib" != 0 ]; then
        memhog "$mib" 3 || exit 1
fi
i=0
while [ $i -lt "$idle" ]; do
        echo "guest: mem t=$i total_kb=$(meminfo MemTotal) avail_kb=$(meminfo MemAvailable)"
        sleep 1
        i=$((i + 1))
done
echo "guest: phase=done"
