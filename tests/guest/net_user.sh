#!/bin/busybox sh
# Guest side of tests/testbed/test_virtio_net_user.py (guest_action=script:net_user,
# guest_args=HOSTPORT,GUESTPORT[,IPERF_SECONDS]): DHCP on eth0, a name through the DNS the
# DHCP server named, a TCP exchange with the test's server on the host's loopback (the
# gateway, 10.0.2.2, is the host for both passt and slirp), then a one-shot server on
# GUESTPORT for the host's forward; with IPERF_SECONDS, iperf3 to the host both ways.
# One "guest: net_user KEY VALUE" line per result.
hostport=$1 guestport=$2 iperf=${3:-0}
gw=10.0.2.2
mkdir -p /tmp /etc
say() { echo "guest: net_user $*"; }

cat >/tmp/dhcp.sh <<'EOS'
#!/bin/busybox sh
case "$1" in
bound | renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
        for r in $router; do ip route add default via "$r" dev "$interface"; break; done
        : >/etc/resolv.conf
        for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
        ;;
esac
EOS
chmod +x /tmp/dhcp.sh

ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -n -q -t 10 -T 2 -s /tmp/dhcp.sh >/tmp/udhcpc.log 2>&1
say "ip $(ip -4 -o addr show eth0 | awk '{ print $4 }')"
say "route $(ip route | awk '$1 == "default" { print $3 }')"
say "dns_server $(awk '$1 == "nameserver" { print $2; exit }' /etc/resolv.conf)"
counters() { say "counters $1 $(awk '$1 == "eth0:" { print "rx_packets=" $3, "tx_packets=" $11 }' /proc/net/dev)"; }
counters dhcp
# The test's DNS responder answers capsule.test with 192.0.2.77 (a slow testbed may need a retry).
for try in 1 2 3; do
        dns=$(timeout 60 nslookup capsule.test 2>&1 | grep -o '192\.0\.2\.[0-9]*' | head -n1)
        [ -n "$dns" ] && break
done
say "dns $dns"
counters dns
# stdin stays open a while: a connection the guest half-closes first never gets the host's FIN
# from Debian's passt (README), and nc would wait for it until the timeout.
say "tcp_out $({ echo hello-from-guest; sleep 10; } | timeout 120 nc -w 60 "$gw" "$hostport" 2>&1 | head -n1)"
counters tcp_out

# The server reads the client's line before it answers (the host's client speaks first).
printf '#!/bin/busybox sh\nread -r line\necho "guest-token-%s $line"\n' "$guestport" >/tmp/token.sh
chmod +x /tmp/token.sh
timeout 120 nc -l -p "$guestport" -e /tmp/token.sh &
server=$!
# Listening once the socket is in /proc (a slow guest may take seconds to get there).
hex=$(printf '%04X' "$guestport")
for i in $(seq 100); do
        grep -q ":$hex 0\{8,32\}:0000 0A" /proc/net/tcp /proc/net/tcp6 2>/dev/null && break
        sleep 0.2
done
say "listening $guestport"
wait "$server" && say "hostfwd served"
counters hostfwd

if [ "$iperf" -gt 0 ] && command -v iperf3 >/dev/null; then
        rate() { awk '/receiver/ { for (i = 1; i < NF; i++) if ($(i + 1) == "Mbits/sec") r = $i } END { print r + 0 }'; }
        say "iperf g2h $(iperf3 -c "$gw" -t "$iperf" -f m 2>&1 | rate) Mbit/s"
        say "iperf h2g $(iperf3 -c "$gw" -t "$iperf" -f m -R 2>&1 | rate) Mbit/s"
fi
