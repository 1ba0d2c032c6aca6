#!/bin/sh
# Guest side of bench/virtio_io.sh (args: FIO_SECONDS HOSTPORT GUESTPORT MIB DEVICE...): for each
# DEVICE, blk then vsock, one measurement: bench_blk.sh (fio on /dev/vda), bench_vsock.sh
# (vsock_bench against bench/vsock_host.py). Their failures are reported, not fatal to the other.
secs=$1 host_port=$2 guest_port=$3 mib=$4
shift 4
rc=0
for dev; do
        case $dev in
        blk) sh /tests/bench_blk.sh 1 "$secs" || rc=1 ;;
        vsock) sh /tests/bench_vsock.sh "$host_port" "$guest_port" "$mib" 1 || rc=1 ;;
        *) echo "bench: $dev error: unknown device"; rc=1 ;;
        esac
done
exit $rc
