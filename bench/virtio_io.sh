#!/bin/sh
# Virtio I/O: capsule's virtio-blk and virtio-vsock against QEMU's, side by side in one run,
# inside the testbed (tests/testbed/run: QEMU TCG with nested KVM), where both VMMs boot the same
# guest kernel ($CAPSULE_KERNEL), the same initramfs (bench/mkbenchinitramfs: busybox, fio, the
# guest scripts bench/guest/*.sh and tests/guest/vsock_bench), the same image file, with the
# same vCPUs and memory and the same transport.
#
# usage: bench/virtio_io.sh    from the host (builds the initramfs, then enters the testbed);
#        RUNS=3 FIO_SECONDS=5 VSOCK_MIB=64 CPUS=1 MEMORY=512M DISK_MIB=256 TRANSPORT=pci by default;
#        DEVICES="blk vsock" by default: DEVICES=blk (or vsock) boots with that device alone;
#        CAPSULE_BIN=build/capsule by default: another build to compare (inside the repository,
#        which the testbed shares)
#
# Runs alternate: run i boots QEMU then capsule (i odd) or capsule then QEMU (i even), one boot
# per VMM and run with both devices (the guest measures the disk, then vsock), so that a change
# of the machine's load between runs hits both alike (nested TCG is noisy). Each row shows the medians of RUNS runs (min-max) and their ratio; higher
# is better on every row, so capsule/QEMU >= 1 means capsule is ahead. The rows:
#   - virtio-blk, fio in the guest on /dev/vda (io_uring, O_DIRECT, time-based): sequential read
#     and write in 1 MiB blocks at queue depth 4, 4 KiB random reads at queue depth 32.
#     QEMU: an iothread, aio=io_uring, virtio-blk-pci (virtio-blk-device over mmio).
#     capsule: --disk IMG (its io_uring back-end).
#     Both open the image with O_DIRECT when its file system allows it (QEMU cache=none,
#     capsule ,direct). The testbed's only writable file system is tmpfs, which has no O_DIRECT
#     before Linux 6.6 (and the testbed kernel has no loop or RAM disk): there both go through
#     the host page cache (QEMU cache=writeback, capsule without ,direct). The script says which.
#   - virtio-vsock throughput, VSOCK_MIB MiB each way, timed on the host by bench/vsock_host.py
#     until the last byte is in: QEMU with vhost-vsock (the kernel's AF_VSOCK), capsule with its
#     hybrid vsock (Unix sockets, no vhost).
# Every boot's console, stderr and results are left in build/bench-virtio-io/.
# A capsule device that is missing or fails is reported "not available" with the reason,
# never with a number.
set -eu

RUNS=${RUNS:-3}
FIO_SECONDS=${FIO_SECONDS:-5}
VSOCK_MIB=${VSOCK_MIB:-64}
CPUS=${CPUS:-1}
MEMORY=${MEMORY:-512M}
DISK_MIB=${DISK_MIB:-256}
TRANSPORT=${TRANSPORT:-pci}
DEVICES=${DEVICES:-blk vsock}
repo=$(cd "$(dirname "$0")/.." && pwd)

die() { echo "virtio_io: $*" >&2; exit 1; }
case $TRANSPORT in pci | mmio) ;; *) die "TRANSPORT must be pci or mmio, not '$TRANSPORT'" ;; esac
for dev in $DEVICES; do
        case $dev in blk | vsock) ;; *) die "DEVICES takes blk and vsock, not '$dev'" ;; esac
done

if [ -z "${TESTBED:-}" ]; then
        # On the host: assemble the initramfs here (the testbed reads the repository over 9p).
        BENCH_INITRD=$("$repo/bench/mkbenchinitramfs") || die "cannot assemble the initramfs"
        export BENCH_INITRD RUNS FIO_SECONDS VSOCK_MIB CPUS MEMORY DISK_MIB TRANSPORT DEVICES
        echo "virtio_io: host load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
        rc=0
        TESTBED_ENV="BENCH_INITRD RUNS FIO_SECONDS VSOCK_MIB CPUS MEMORY DISK_MIB TRANSPORT DEVICES" \
                TESTBED_TIMEOUT=${TESTBED_TIMEOUT:-1800} "$repo/tests/testbed/run" "bench/virtio_io.sh" || rc=$?
        echo "virtio_io: host load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
        exit $rc
fi

for tool in qemu-system-x86_64 python3; do
        command -v "$tool" >/dev/null || die "$tool is missing (scripts/install-deps)"
done
[ -w /dev/kvm ] || die "needs read-write /dev/kvm (run as root, or from the host: it enters the testbed)"
[ -w /dev/vhost-vsock ] || die "needs /dev/vhost-vsock for QEMU's vhost-vsock (CONFIG_VHOST_VSOCK)"
[ -f "${CAPSULE_KERNEL:-}" ] || die "CAPSULE_KERNEL names no kernel"
CAPSULE_BIN=${CAPSULE_BIN:-$repo/build/capsule}
[ -x "$CAPSULE_BIN" ] || die "$CAPSULE_BIN is missing: make -C $repo"
BENCH_INITRD=${BENCH_INITRD:-$("$repo/bench/mkbenchinitramfs")}

work=$(mktemp -d /tmp/capsule-virtio-bench.XXXXXX)
logs=$repo/build/bench-virtio-io
rm -rf "$logs"
mkdir -p "$logs"
pids=""
cleanup() {
        for p in $pids; do kill -TERM "$p" 2>/dev/null || :; done
        for p in $pids; do wait "$p" 2>/dev/null || :; done
        rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Private copies on this machine's tmpfs: every boot reads them, and a rebuild during the run
# must not change what runs.
cp "$CAPSULE_BIN" "$work/capsule"
cp "$CAPSULE_KERNEL" "$work/vmlinux"
cp "$BENCH_INITRD" "$work/initrd"
img=$work/disk.img
dd if=/dev/zero of="$img" bs=1M count="$DISK_MIB" status=none # every block allocated, as on a real disk

if python3 -c 'import os, sys; os.close(os.open(sys.argv[1], os.O_RDWR | os.O_DIRECT))' "$img" 2>/dev/null; then
        level="O_DIRECT on both (QEMU cache=none, capsule ,direct)"
        qemu_cache=none capsule_direct=,direct
else
        level="host page cache on both: $(df --output=fstype "$img" | tail -n 1) has no O_DIRECT (QEMU cache=writeback, capsule without ,direct)"
        qemu_cache=writeback capsule_direct=
fi

cid=3 host_port=5201 guest_port=5202
vsock_sock=$work/vsock.sock
cmdline="console=ttyS0 quiet panic=-1"

# -cpu host,arch-capabilities=off: see vm_launch.sh. microvm: QEMU's lightest machine; pcie=on
# gives it the PCI host bridge the pci transport needs.
if [ "$TRANSPORT" = pci ]; then
        qemu_machine=microvm,pcie=on qemu_blk=virtio-blk-pci qemu_vsock=vhost-vsock-pci
else
        qemu_machine=microvm qemu_blk=virtio-blk-device qemu_vsock=vhost-vsock-device
fi
qemu() {
        # shellcheck disable=SC2086
        timeout -k 5 900 qemu-system-x86_64 -M "$qemu_machine" -accel kvm -cpu host,arch-capabilities=off \
                -smp "$CPUS" -m "$MEMORY" -nodefaults -no-user-config -display none -no-reboot \
                -kernel "$work/vmlinux" -initrd "$work/initrd" -serial stdio "$@" </dev/null
}
capsule() {
        timeout -k 5 900 "$work/capsule" vm run --kernel "$work/vmlinux" --initrd "$work/initrd" \
                --cpus "$CPUS" --memory "$MEMORY" --virtio-transport "$TRANSPORT" "$@" </dev/null
}

# boot VMM RUN DEVICE...: one boot of VMM with DEVICEs (blk, vsock), whose guest measures each
# once; console in $logs/VMM-RUN.log, stderr in .err, exit status in .rc, the devices in .devs,
# the host side's vsock results in .json.
boot() {
        vmm=$1 run=$2 log=$logs/$1-$2
        shift 2
        echo "== run $run: $vmm: $* ($(date -u +%H:%M:%S))"
        echo "$*" >"$log.devs"
        args="" host_pid=""
        for dev; do
                case $vmm-$dev in
                qemu-blk) args="$args -object iothread,id=io0
                        -drive file=$img,if=none,id=d0,format=raw,aio=io_uring,cache=$qemu_cache
                        -device $qemu_blk,drive=d0,iothread=io0" ;;
                qemu-vsock) args="$args -device $qemu_vsock,guest-cid=$cid" ;;
                capsule-blk) args="$args --disk $img$capsule_direct" ;;
                capsule-vsock) args="$args --vsock $cid,socket=$vsock_sock" ;;
                esac
                if [ "$dev" = vsock ]; then
                        if [ "$vmm" = qemu ]; then addr=$cid; else addr=$vsock_sock; fi
                        python3 "$repo/bench/vsock_host.py" "$vmm" "$addr" "$host_port" "$guest_port" \
                                "$VSOCK_MIB" 1 "$log.json" 2>"$log.host.err" &
                        host_pid=$!
                        pids="$pids $host_pid"
                fi
        done
        guest="guest_action=script:bench_io guest_args=$FIO_SECONDS,$host_port,$guest_port,$VSOCK_MIB,$(echo "$@" | tr ' ' ,)"
        rc=0
        # shellcheck disable=SC2086 # $args: words without blanks inside ($work has none)
        case $vmm in
        qemu) qemu $args -append "$cmdline $guest" >"$log.log" 2>"$log.err" || rc=$? ;;
        capsule) capsule $args --cmdline "$cmdline $guest" >"$log.log" 2>"$log.err" || rc=$? ;;
        esac
        echo "$rc" >"$log.rc"
        if [ -n "$host_pid" ]; then
                # The host side writes its results right after the guest's last byte; one still
                # waiting once the guest is gone without finishing would wait for nothing.
                n=0
                while grep -q "^bench: vsock done" "$log.log" && kill -0 "$host_pid" 2>/dev/null && [ $n -lt 100 ]; do
                        sleep 0.2
                        n=$((n + 1))
                done
                kill -TERM "$host_pid" 2>/dev/null || :
                wait "$host_pid" 2>/dev/null || :
                pids=""
        fi
}

echo "== virtio I/O, capsule vs QEMU $(qemu-system-x86_64 --version | head -n 1 | awk '{ print $4 }'):" \
        "transport $TRANSPORT, $CPUS vCPU, $MEMORY, $RUNS runs, fio $FIO_SECONDS s per job, vsock $VSOCK_MIB MiB" \
        "per run and way, a $DISK_MIB MiB image on $(df --output=fstype "$img" | tail -n 1), devices: $DEVICES"
echo "== level: $level"
# A device that gave no result in a run is left out of that VMM's later boots: its row says why.
failed=""
run=1
while [ "$run" -le "$RUNS" ]; do
        if [ $((run % 2)) = 1 ]; then order="qemu capsule"; else order="capsule qemu"; fi
        for vmm in $order; do
                devs=""
                for dev in $DEVICES; do
                        case " $failed " in *" $vmm-$dev "*) ;; *) devs="$devs $dev" ;; esac
                done
                [ -n "$devs" ] || continue
                # shellcheck disable=SC2086
                boot "$vmm" "$run" $devs
                for dev in $devs; do
                        case $dev in
                        blk) grep -q "^bench: blk randread " "$logs/$vmm-$run.log" ;;
                        vsock) grep -q '"h2g"' "$logs/$vmm-$run.json" 2>/dev/null ;;
                        esac || failed="$failed $vmm-$dev"
                done
        done
        run=$((run + 1))
done

python3 - "$logs" "$RUNS" "$VSOCK_MIB" <<'PY'
import json, re, statistics, sys
logs, runs, vsock_mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ROWS = [("seq read 1M qd4 (MiB/s)", "blk", "seqread", "bw"),
        ("seq write 1M qd4 (MiB/s)", "blk", "seqwrite", "bw"),
        ("rand read 4K qd32 (IOPS)", "blk", "randread", "iops"),
        ("vsock guest->host (MiB/s)", "vsock", "g2h", None),
        ("vsock host->guest (MiB/s)", "vsock", "h2g", None)]

def read(name):
    try:
        with open(f"{logs}/{name}") as f:
            return f.read()
    except FileNotFoundError:
        return None

def why_not(base, dev):
    """Why a boot gave no number: the guest's error, else the VMM's last word, else its status."""
    log = read(f"{base}.log") or ""
    err = [l for l in log.splitlines() if l.startswith(f"bench: {dev} error: ")]
    if err:
        return err[0][len(f"bench: {dev} error: "):]
    rc = (read(f"{base}.rc") or "?").strip()
    lines = [l.strip() for l in ((read(f"{base}.err") or "") + (read(f"{base}.host.err") or "")).splitlines()
             if l.strip()]
    if lines:
        return f"exit {rc}: {lines[-1]}"
    return f"exit {rc}, no result"

def sample(vmm, dev, job, what, run):
    """One run's value, or a string saying why there is none."""
    base = f"{vmm}-{run}"
    if dev not in (read(f"{base}.devs") or "").split():
        return None
    if dev == "blk":
        m = re.search(rf"^bench: blk {job} \d+ bw_kib=(\d+) iops=(\d+)", read(f"{base}.log") or "", re.M)
        v = (int(m.group(1)) / 1024 if what == "bw" else int(m.group(2))) if m else 0
    else:
        try:
            v = vsock_mib / json.loads(read(f"{base}.json") or "")[job][0]
        except (ValueError, KeyError, IndexError):
            v = 0
    return v if v > 0 else f"run {run}: {why_not(base, dev)}"

print()
print("| row | capsule | QEMU | capsule/QEMU | per run | runs |")
print("|---|--:|--:|--:|--:|--:|")
notes = []
for name, dev, job, what in ROWS:
    cells, meds, per_run = [], {}, {}
    for vmm, label in (("capsule", "capsule"), ("qemu", "QEMU")):
        vals = [sample(vmm, dev, job, what, run) for run in range(1, runs + 1)]
        vals = [v for v in vals if v is not None]  # None: not booted (DEVICES) or not again after a failure
        if not vals:
            cells.append(f"{label}: not measured")
            continue
        bad = [v for v in vals if isinstance(v, str)]
        if bad:
            cells.append(f"{label}: not available")
            notes.append(f"{name}, {label}: {bad[0]}")
        else:
            meds[vmm], per_run[vmm] = statistics.median(vals), vals
            cells.append(f"{meds[vmm]:.1f} ({min(vals):.1f}-{max(vals):.1f})")
    ratio, paired = "-", "-"
    if len(meds) == 2:
        ratio = f"**{meds['capsule'] / meds['qemu']:.2f}**"
        # The two boots of a run ran back to back, under about the same load.
        paired = f"{statistics.median(c / q for c, q in zip(per_run['capsule'], per_run['qemu'])):.2f}"
    print(f"| {name} | {cells[0]} | {cells[1]} | {ratio} | {paired} | {runs} |")
print()
print("medians (min-max) of the runs and their ratio; per run: the median of the runs' own ratios;")
print("higher is better on every row; logs in build/bench-virtio-io/")
for n in notes:
    print(f"not available: {n}")
PY
