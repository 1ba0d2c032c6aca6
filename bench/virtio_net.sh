#!/bin/sh
# Virtio networking and memory: capsule's virtio-net (tap, passt, libslirp) and virtio-balloon's
# free page reporting against QEMU's, side by side in one run, inside the testbed
# (tests/testbed/run: QEMU TCG with nested KVM), where both VMMs boot the same guest kernel
# ($CAPSULE_KERNEL), the same initramfs (bench/mkbenchinitramfs iperf3 ethtool: busybox, iperf3,
# ethtool and the guest scripts bench/guest/*.sh), with the same vCPUs, memory and transport.
#
# usage: bench/virtio_net.sh    from the host (builds the initramfs, then enters the testbed);
#        RUNS=3 IPERF_SECONDS=5 CPUS=1 MEMORY=512M MEM_MIB=256 WAIT=10 TRANSPORT=pci by default;
#        CONFIGS="capsule-tap qemu-tap ..." boots only those (default: all of them, below)
#
# The configurations, one boot each per run (the guest measures both directions in one boot):
#   capsule-tap    --net tap=cbench0,mac=M
#   qemu-tap       -netdev tap,ifname=cbench0,vhost=off       (what capsule's ratio is against)
#   qemu-vhost     -netdev tap,ifname=cbench0,vhost=on        (a reference: capsule has no vhost)
#   capsule-passt  --net user,impl=passt,mac=M
#   qemu-passt     -netdev stream on the socket of a passt started for it
#   capsule-slirp  --net user,impl=slirp,mac=M
#   qemu-slirp     -netdev user                                (QEMU's libslirp)
#   capsule-mem    --balloon=free-page-reporting
#   qemu-mem       -device virtio-balloon-pci,free-page-reporting=on, RAM from a memfd as capsule's
# The tap cbench0 is made once (10.0.0.1/24, persistent, so both VMMs attach to the same device
# with the same MAC and the host's ARP entry stays right); the guest is 10.0.0.2. The user-mode
# guests take DHCP and reach the host's loopback through their gateway. An iperf3 server on the
# testbed, started afresh for each boot (a guest that died mid-test leaves the old one busy),
# serves it: the guest runs the client, IPERF_SECONDS each way (-R: the host sends).
# The memory boots write MEM_MIB MiB to a tmpfs in the guest, remove it and wait WAIT seconds;
# bench/vmm_rss.py samples the VMM's RSS meanwhile.
#
# Runs alternate the order of the boots (run i: the list above in order, i odd, or reversed),
# so that a change of the machine's load between runs hits both VMMs alike. Each row shows the
# medians of RUNS runs (min-max) and their ratio. Every boot's console, stderr and results are
# left in build/bench-virtio-net/. A boot that gives no numbers is booted once more (RETRIES=1):
# guests under the testbed's nested KVM sometimes crash with no sign of either VMM in it (README,
# Testbed); the failed attempt's files stay beside it as CONFIG-RUN.tryN.*. A configuration
# whose retries fail too is reported "not available" with its reason, never with a number, is not
# booted again, and makes the script exit 1 (qemu-vhost only when /dev/vhost-net exists).
set -eu

RUNS=${RUNS:-3}
IPERF_SECONDS=${IPERF_SECONDS:-5}
CPUS=${CPUS:-1}
MEMORY=${MEMORY:-512M}
MEM_MIB=${MEM_MIB:-256}
WAIT=${WAIT:-10}
TRANSPORT=${TRANSPORT:-pci}
RETRIES=${RETRIES:-1}
ALL="capsule-tap qemu-tap qemu-vhost capsule-passt qemu-passt capsule-slirp qemu-slirp capsule-mem qemu-mem"
CONFIGS=${CONFIGS:-$ALL}
repo=$(cd "$(dirname "$0")/.." && pwd)

die() { echo "virtio_net: $*" >&2; exit 1; }
case $TRANSPORT in pci | mmio) ;; *) die "TRANSPORT must be pci or mmio, not '$TRANSPORT'" ;; esac
for c in $CONFIGS; do
        case " $ALL " in *" $c "*) ;; *) die "unknown configuration '$c' (one of: $ALL)" ;; esac
done

if [ -z "${TESTBED:-}" ]; then
        # On the host: assemble the initramfs here (the testbed reads the repository over 9p).
        BENCH_INITRD=$("$repo/bench/mkbenchinitramfs" iperf3 ethtool) || die "cannot assemble the initramfs"
        export BENCH_INITRD RUNS IPERF_SECONDS CPUS MEMORY MEM_MIB WAIT TRANSPORT CONFIGS
        echo "virtio_net: host load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
        rc=0
        TESTBED_ENV="BENCH_INITRD RUNS IPERF_SECONDS CPUS MEMORY MEM_MIB WAIT TRANSPORT CONFIGS" \
                TESTBED_TIMEOUT=${TESTBED_TIMEOUT:-3600} "$repo/tests/testbed/run" "bench/virtio_net.sh" || rc=$?
        echo "virtio_net: host load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
        exit $rc
fi

for tool in qemu-system-x86_64 python3 iperf3 passt ip ss; do
        command -v "$tool" >/dev/null || die "$tool is missing (scripts/install-deps)"
done
[ -w /dev/kvm ] || die "needs read-write /dev/kvm (run as root, or from the host: it enters the testbed)"
[ -w /dev/net/tun ] || die "needs /dev/net/tun for the tap"
[ -f "${CAPSULE_KERNEL:-}" ] || die "CAPSULE_KERNEL names no kernel"
[ -x "$repo/build/capsule" ] || die "$repo/build/capsule is missing: make -C $repo"
BENCH_INITRD=${BENCH_INITRD:-$("$repo/bench/mkbenchinitramfs" iperf3 ethtool)}

tap=cbench0 ext=cbench-ext mac=52:54:00:12:34:56 port=5201
work=$(mktemp -d /tmp/capsule-net-bench.XXXXXX)
chmod 0711 "$work" # passt (as nobody) reaches its socket's directory below
logs=$repo/build/bench-virtio-net
rm -rf "$logs"
mkdir -p "$logs"
pids=""
made_tap="" made_ext=""
cleanup() {
        for p in $pids; do kill -TERM "$p" 2>/dev/null || :; done
        for p in $pids; do wait "$p" 2>/dev/null || :; done
        [ -z "$made_tap" ] || ip tuntap del dev "$tap" mode tap 2>/dev/null || :
        [ -z "$made_ext" ] || ip link del "$ext" 2>/dev/null || :
        rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Private copies on this machine's tmpfs: every boot reads them, and a rebuild during the run
# must not change what runs.
cp "$repo/build/capsule" "$work/capsule"
cp "$CAPSULE_KERNEL" "$work/vmlinux"
cp "$BENCH_INITRD" "$work/initrd"

ip link show "$tap" >/dev/null 2>&1 && die "$tap exists already (another run of this benchmark?)"
ip tuntap add dev "$tap" mode tap
made_tap=1
ip addr add 10.0.0.1/24 dev "$tap"
ip link set "$tap" up
# passt takes the guest's address and gateway from the host's default route, and the testbed
# has no network at all: a veth pair gives it one (nothing is sent there: the guest talks to its
# gateway, which passt maps to the host's loopback, as slirp maps 10.0.2.2).
if ! ip route show default | grep -q .; then
        ip link add "$ext" type veth peer name "$ext-peer"
        made_ext=1
        ip addr add 192.168.77.1/24 dev "$ext"
        ip link set "$ext" up
        ip link set "$ext-peer" up
        ip route add default via 192.168.77.254 dev "$ext"
fi
server_pid=""
# server LOG: a fresh iperf3 server for the next boot, its output in LOG.
server() {
        if [ -n "$server_pid" ]; then
                kill -TERM "$server_pid" 2>/dev/null || :
                wait "$server_pid" 2>/dev/null || :
        fi
        iperf3 -s -p "$port" --idle-timeout 120 >"$1" 2>&1 &
        server_pid=$!
        pids="$pids $server_pid"
        n=0
        while ! ss -Hltn "sport = :$port" | grep -q . && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
}

cmdline="console=ttyS0 quiet panic=-1"
# -cpu host,arch-capabilities=off: see vm_launch.sh. microvm: QEMU's lightest machine; pcie=on
# gives it the PCI host bridge the pci transport needs.
if [ "$TRANSPORT" = pci ]; then
        qemu_machine=microvm,pcie=on qemu_net=virtio-net-pci qemu_balloon=virtio-balloon-pci
else
        qemu_machine=microvm qemu_net=virtio-net-device qemu_balloon=virtio-balloon-device
fi

# boot CONFIG RUN: one boot; console in $logs/CONFIG-RUN.log, stderr in .err, exit status in
# .rc, the memory rows' samples in .json.
boot() {
        config=$1 run=$2 log=$logs/$1-$2
        echo "== run $run: $config ($(date -u +%H:%M:%S))"
        server "$log.iperf3-server.log"
        guest="guest_action=script:bench_net guest_args=tap,$IPERF_SECONDS,$port"
        netdev="" qemu_mem="" aux_pid=""
        case $config in
        capsule-tap) args="--net tap=$tap,mac=$mac" ;;
        capsule-passt) args="--net user,impl=passt,mac=$mac" ;;
        capsule-slirp) args="--net user,impl=slirp,mac=$mac" ;;
        capsule-mem) args="--balloon=free-page-reporting" ;;
        qemu-tap) netdev="tap,id=n0,ifname=$tap,script=no,downscript=no,vhost=off" ;;
        qemu-vhost) netdev="tap,id=n0,ifname=$tap,script=no,downscript=no,vhost=on" ;;
        qemu-slirp) netdev="user,id=n0" ;;
        qemu-passt)
                # passt, as root, becomes nobody before it binds its socket: a directory of its own.
                rm -rf "$work/passt"
                mkdir -m 0700 "$work/passt"
                chown nobody "$work/passt"
                # The options capsule gives its passt (net_passt.c), so that only the VMMs differ.
                passt -f -4 -a 10.0.2.15 -n 24 -g 10.0.2.2 --dns-forward 10.0.2.3 -m 1500 -s "$work/passt/sock" \
                        >"$log.passt.log" 2>&1 &
                aux_pid=$!
                pids="$pids $aux_pid"
                n=0
                while [ ! -S "$work/passt/sock" ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
                netdev="stream,id=n0,server=off,addr.type=unix,addr.path=$work/passt/sock"
                ;;
        qemu-mem)
                qemu_mem="-object memory-backend-memfd,id=ram,size=$MEMORY"
                args="-device $qemu_balloon,free-page-reporting=on"
                ;;
        esac
        case $config in
        *-passt | *-slirp) guest="guest_action=script:bench_net guest_args=user,$IPERF_SECONDS,$port" ;;
        *-mem) guest="guest_action=script:bench_mem guest_args=$MEM_MIB,2,$WAIT" ;;
        esac
        [ -z "$netdev" ] || args="-netdev $netdev -device $qemu_net,netdev=n0,mac=$mac"
        # shellcheck disable=SC2086 # $args, $qemu_mem: words without blanks inside ($work has none)
        case $config in
        qemu-*)
                machine=$qemu_machine
                [ -z "$qemu_mem" ] || machine=$machine,memory-backend=ram
                timeout -k 5 900 qemu-system-x86_64 -M "$machine" -accel kvm -cpu host,arch-capabilities=off \
                        -smp "$CPUS" -m "$MEMORY" -nodefaults -no-user-config -display none -no-reboot \
                        -kernel "$work/vmlinux" -initrd "$work/initrd" -serial stdio $qemu_mem $args \
                        -append "$cmdline $guest" </dev/null >"$log.log" 2>"$log.err" &
                ;;
        capsule-*)
                timeout -k 5 900 "$work/capsule" vm run --kernel "$work/vmlinux" --initrd "$work/initrd" \
                        --cpus "$CPUS" --memory "$MEMORY" --virtio-transport "$TRANSPORT" $args \
                        --cmdline "$cmdline $guest" </dev/null >"$log.log" 2>"$log.err" &
                ;;
        esac
        vmm_timeout=$!
        rss_pid=""
        case $config in
        *-mem)
                # The VMM is timeout(1)'s child.
                vmm=""
                n=0
                while [ -z "$vmm" ] && [ $n -lt 100 ] && kill -0 "$vmm_timeout" 2>/dev/null; do
                        vmm=$(cat "/proc/$vmm_timeout/task/$vmm_timeout/children" 2>/dev/null || :)
                        [ -n "$vmm" ] || sleep 0.05
                        n=$((n + 1))
                done
                if [ -n "$vmm" ]; then
                        # shellcheck disable=SC2086 # one pid
                        python3 "$repo/bench/vmm_rss.py" $vmm "$log.log" "$log.json" 2>"$log.rss.err" &
                        rss_pid=$!
                fi
                ;;
        esac
        rc=0
        wait "$vmm_timeout" || rc=$?
        echo "$rc" >"$log.rc"
        [ -z "$rss_pid" ] || wait "$rss_pid" || :
        if [ -n "$aux_pid" ]; then
                kill -TERM "$aux_pid" 2>/dev/null || :
                wait "$aux_pid" 2>/dev/null || :
        fi
}

# result CONFIG RUN: whether that boot gave its numbers.
result() {
        case $1 in
        *-mem) grep -q '"after"' "$logs/$1-$2.json" 2>/dev/null ;;
        *) grep -q "^bench: net h2g mbps=" "$logs/$1-$2.log" ;;
        esac
}

echo "== virtio net and memory, capsule vs QEMU $(qemu-system-x86_64 --version | head -n 1 | awk '{ print $4 }'):" \
        "transport $TRANSPORT, $CPUS vCPU, $MEMORY, $RUNS runs, iperf3 $IPERF_SECONDS s each way," \
        "$MEM_MIB MiB written and freed, then $WAIT s idle"
echo "== testbed load average: $(cut -d' ' -f1-3 /proc/loadavg)"
skipped=""
if [ ! -e /dev/vhost-net ]; then
        case " $CONFIGS " in *" qemu-vhost "*) skipped="qemu-vhost" ;; esac
fi
failed=""
run=1
while [ "$run" -le "$RUNS" ]; do
        order=$CONFIGS
        [ $((run % 2)) = 1 ] || order=$(echo "$CONFIGS" | tr ' ' '\n' | sed '/^$/d' | tac | tr '\n' ' ')
        for config in $order; do
                case " $failed $skipped " in *" $config "*) continue ;; esac
                try=0
                boot "$config" "$run"
                while ! result "$config" "$run" && [ "$try" -lt "$RETRIES" ]; do
                        try=$((try + 1))
                        echo "== run $run: $config gave no numbers (exit $(cat "$logs/$config-$run.rc")): booting it again"
                        for f in "$logs/$config-$run".*; do
                                mv "$f" "$logs/$config-$run.try$try.${f#"$logs/$config-$run".}"
                        done
                        boot "$config" "$run"
                done
                result "$config" "$run" || failed="$failed $config"
        done
        run=$((run + 1))
done
echo "== testbed load average: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 "$repo/bench/virtio_net_report.py" "$logs" "$RUNS" "$CONFIGS" "$skipped"
