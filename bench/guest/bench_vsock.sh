#!/bin/sh
# Guest side of bench/virtio_io.sh's vsock rows (args: HOSTPORT GUESTPORT MIB RUNS): the static
# tool vsock_bench (tests/guest/vsock_bench.c) streams MIB MiB to the host and back, RUNS times;
# the host side (bench/vsock_host.py) times it.
# virtio device id 19 (0x0013): the vsock device; /dev/vsock exists without one.
grep -qx 0x0013 /sys/bus/virtio/devices/*/device 2>/dev/null ||
        { echo "bench: vsock error: no virtio-vsock device"; exit 1; }
vsock_bench "$@" || { echo "bench: vsock error: vsock_bench failed"; exit 1; }
echo "bench: vsock done"
