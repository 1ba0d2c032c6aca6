#!/bin/sh
# Guest side of bench/virtio_net.sh's throughput rows (args: MODE SECONDS PORT): configures eth0,
# then iperf3 against the host's server on PORT for SECONDS each way, the guest sending (g2h)
# then the host sending (-R, h2g), both on a connection the guest opens. MODE tap: the static
# 10.0.0.2/24, the host's tap has 10.0.0.1; MODE user: DHCP from the back-end (slirp, passt),
# the server is the gateway it announces (which both map to the host's loopback). Prints
#   bench: net g2h mbps=N   and   bench: net h2g mbps=N
# or "bench: net error: ..." and exits 1.
mode=$1 secs=$2 port=$3
fail() { echo "bench: net error: $*"; exit 1; }
# virtio device id 1: the network card.
grep -qx 0x0001 /sys/bus/virtio/devices/*/device 2>/dev/null || fail "no virtio-net device"
[ -d /sys/class/net/eth0 ] || fail "no eth0"
ip link set lo up
ip link set eth0 up
case $mode in
tap)
        ip addr add 10.0.0.2/24 dev eth0 || fail "cannot set eth0's address"
        server=10.0.0.1
        ;;
user)
        cat >/tmp/udhcpc.sh <<'DHCP'
#!/bin/sh
# busybox udhcpc's hook: apply the lease (address, MTU, default route) and note the gateway.
case $1 in
bound | renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        [ -z "$mtu" ] || ip link set "$interface" mtu "$mtu"
        for r in $router; do
                ip route add default via "$r" dev "$interface"
                echo "$r" >/tmp/gateway
                break
        done
        ;;
esac
DHCP
        chmod 0755 /tmp/udhcpc.sh
        udhcpc -i eth0 -s /tmp/udhcpc.sh -n -q -t 10 -T 1 >/tmp/udhcpc.log 2>&1 ||
                fail "no DHCP lease: $(tail -n 1 /tmp/udhcpc.log)"
        [ -s /tmp/gateway ] || fail "the DHCP lease has no router"
        server=$(cat /tmp/gateway)
        ;;
*) fail "unknown mode '$mode'" ;;
esac
# How the driver set the card up, to compare the two VMMs' devices in the logs.
echo "bench: net eth0 $(ip -o -4 addr show dev eth0 | awk '{ print $4 }') mtu=$(cat /sys/class/net/eth0/mtu)" \
        "server=$server queues=$(find /sys/class/net/eth0/queues -name "rx-*" | wc -l)" \
        "offloads: $(ethtool -k eth0 2>/dev/null | grep -E '^(tx-checksumming|tcp-segmentation-offload|generic-receive-offload):' |
                tr -d ' ' | tr '\n' ' ')"
# run WAY [-R]: one iperf3 client run; the receiver's summary line carries the rate.
run() {
        way=$1
        shift
        n=0
        # The first connection may race the link coming up (ARP, a back-end still starting).
        until iperf3 -c "$server" -p "$port" -t "$secs" -f m "$@" >/tmp/iperf.out 2>&1; do
                n=$((n + 1))
                [ $n -lt 3 ] || fail "iperf3 $way failed: $(tail -n 1 /tmp/iperf.out)"
                sleep 1
        done
        mbps=$(awk '/receiver$/ { for (i = 1; i < NF; i++) if ($(i + 1) == "Mbits/sec") print $i }' /tmp/iperf.out)
        [ -n "$mbps" ] || fail "iperf3 $way printed no receiver rate: $(tail -n 1 /tmp/iperf.out)"
        # The summary (retransmissions, the sender's rate) stays in the log, for comparing VMMs.
        grep -E 'sender$|receiver$' /tmp/iperf.out | sed "s/^/bench: net $way iperf3: /"
        echo "bench: net $way mbps=$mbps"
}
run g2h
run h2g -R
echo "bench: net interrupts: $(grep virtio /proc/interrupts | awk '{ print $2, $NF }' | tr '\n' ' ')"
