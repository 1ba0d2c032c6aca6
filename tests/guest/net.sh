# Guest side of tests/testbed/test_virtio_net.py (run by /init as guest_action=script:net,
# guest_args=MODE[,MIB]). eth0 gets 10.0.0.2/24; the host's end of the tap is 10.0.0.1.
#   basic: ping the host, report the offloads, send MIB MiB of random data to the host's sink
#          (port 5001) and receive the host's file (port 5002), with their MD5s; then wait for
#          the host's own checks (a connection to port 5003)
#   mq:    report the queue pairs, run iperf3 streams both ways from both vCPUs (the host's
#          servers on ports 5201 and 5202), report the per-queue counters
#   hold:  bring eth0 up and wait to be killed
mode=${1:-basic}
mib=${2:-32}

# The guest kernel has no POSIX timers, so busybox ping sends one echo and never times out
# (both need alarm()): each ping is one echo under busybox timeout (which sleeps).
ping1() { timeout 3 ping -c 1 "$@" >/dev/null 2>&1; }

ip link set lo up
ip link set eth0 up || exit 1
echo "guest: mac=$(cat /sys/class/net/eth0/address)"
echo "guest: driver=$(ethtool -i eth0 | awk '$1 == "driver:" { print $2 }')"
if [ "$mode" = hold ]; then
        echo "guest: net hold"
        exec sleep 600
fi
ip addr add 10.0.0.2/24 dev eth0 || exit 1
# The host configures its side once capsule has created the tap.
i=0
until ping1 10.0.0.1; do
        i=$((i + 1))
        [ $i -lt 120 ] || { echo "guest: host unreachable"; exit 1; }
done
echo "guest: net ready"
n=0
for size in 56 1400 1472 56 1400; do
        ping1 -s $size 10.0.0.1 && n=$((n + 1))
done
echo "guest: ping $n of 5"
ethtool -k eth0 | awk -F': ' '/^(tx-checksumming|rx-checksumming|scatter-gather|tcp-segmentation-offload|generic-receive-offload):/ {
        split($2, v, " "); print "guest: offload " $1 "=" v[1] }'

case "$mode" in
basic)
        dd if=/dev/urandom of=/tmp/g2h bs=1M count="$mib" 2>/dev/null
        echo "guest: g2h_md5=$(md5sum </tmp/g2h | cut -d' ' -f1)"
        start=$(date +%s)
        nettcp send 10.0.0.1 5001 /tmp/g2h
        echo "guest: g2h_rc=$? seconds=$(($(date +%s) - start))"
        rm -f /tmp/g2h
        start=$(date +%s)
        nettcp recv 10.0.0.1 5002 /tmp/h2g
        echo "guest: h2g_rc=$? seconds=$(($(date +%s) - start))"
        echo "guest: h2g_md5=$(md5sum </tmp/h2g | cut -d' ' -f1) bytes=$(wc -c </tmp/h2g)"
        rm -f /tmp/h2g
        echo "guest: waiting for the host"
        nettcp wait 5003 120
        echo "guest: host_done_rc=$?"
        ;;
mq)
        echo "guest: combined=$(ethtool -l eth0 | awk '$1 == "Combined:" { n = $2 } END { print n }')"
        # One client per vCPU (the driver maps vCPU N to tx queue N), several streams each,
        # sending and then receiving (-R: the tap spreads the host's flows over its queues).
        for dir in "" -R; do
                taskset -c 0 iperf3 -c 10.0.0.1 -p 5201 -t 4 -P 3 $dir >/tmp/iperf0 2>&1 &
                p0=$!
                taskset -c 1 iperf3 -c 10.0.0.1 -p 5202 -t 4 -P 3 $dir >/tmp/iperf1 2>&1
                r1=$?
                wait $p0
                r0=$?
                echo "guest: iperf${dir:- } rc=$r0,$r1 $(grep -h 'SUM.*receiver' /tmp/iperf0 /tmp/iperf1 | awk '{ printf "%s%s ", $(NF-2), $(NF-1) }')"
        done
        ethtool -S eth0 | awk -F': ' '/^ *(rx|tx)_queue_[0-9]+_packets:/ { gsub(/ /, "", $1); print "guest: stat " $1 "=" $2 }'
        ;;
esac
