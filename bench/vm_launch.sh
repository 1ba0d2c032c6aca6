#!/bin/sh
# VMM launch time and memory overhead: capsule against QEMU (Debian's qemu-system-x86, -M microvm),
# side by side in one run.
#
# usage (root): bench/vm_launch.sh      RUNS=50 WARMUP=5 MEMORY=256M CAPSULE=build/capsule by default
#
# (a) Launch: wall time of the whole process, from its start to the guest's first instruction and
#     back out, for a guest that exits at once (bench/alternate.py: alternating rounds, each in an
#     order rotated from the last, so that a drift of the machine falls on both alike; medians and
#     the ratio qemu/capsule). Every run must succeed (exit 0): a failed run fails the benchmark
#     instead of being timed.
#     capsule runs build/payloads/quit.elf (64-bit ring 3, exits with 0 through port 0xf4,
#     enabled with --debug-exit). QEMU runs a 64 KiB firmware image (-bios) whose reset vector
#     loads an empty IDT and executes int3: a triple fault, which with -no-reboot ends QEMU with 0.
#     No firmware at all, so nothing precedes the guest's first instruction but QEMU itself. Both
#     VMs get the same KVM objects (in-kernel irqchip and no PIT: capsule creates none for
#     payloads, QEMU's microvm gets pit=off; one vCPU, MEMORY of RAM) and no console. On a PVM
#     host guest ring 0 is emulated, which costs QEMU's guest 2 emulated instructions and
#     capsule's ring-3 payload none: negligible either way.
# (b) Memory overhead: RSS of the VMM process minus the guest RAM actually touched (the Rss of the
#     guest RAM mapping in /proc/PID/smaps), with the guest parked: capsule runs
#     build/payloads/spin.elf, QEMU a reset vector doing `cli; hlt`. QEMU's RAM is a
#     memory-backend-memfd so it can be told apart like capsule's memfd. PSS (shared library pages
#     split among their users) is shown beside RSS.
set -eu

RUNS=${RUNS:-50}
WARMUP=${WARMUP:-5}
MEMORY=${MEMORY:-256M}
repo=$(cd "$(dirname "$0")/.." && pwd)
CAPSULE=$(realpath "${CAPSULE:-$repo/build/capsule}")
PAYLOADS=$repo/build/payloads

die() { echo "vm_launch: $*" >&2; exit 1; }
for tool in qemu-system-x86_64 python3; do
        command -v "$tool" >/dev/null || die "$tool is missing (scripts/install-deps)"
done
[ -x "$CAPSULE" ] || die "$CAPSULE is missing: make -C $repo"
for p in quit spin; do
        [ -f "$PAYLOADS/$p.elf" ] || die "$PAYLOADS/$p.elf is missing: make -C $repo"
done
[ -w /dev/kvm ] || die "needs read-write /dev/kvm (run as root)"

work=$(mktemp -d /tmp/capsule-vm-bench.XXXXXX)
pids=""
cleanup() {
        for p in $pids; do kill -TERM "$p" 2>/dev/null || :; done
        for p in $pids; do wait "$p" 2>/dev/null || :; done
        rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A private copy: a rebuild of build/capsule during the run must not make runs fail.
cp "$CAPSULE" "$work/capsule"

# QEMU's guests: 64 KiB firmware images (QEMU wants a multiple of 64 KiB) filled with hlt, with
# the code in the last 16 bytes, where the reset vector 0xfffffff0 lands, and an empty IDT
# descriptor (limit 0, base 0) at offset 0xff00.
python3 - "$work" <<'PY'
import sys
code = {"exit.bin": bytes([0x2e, 0x0f, 0x01, 0x1e, 0x00, 0xff, 0xcc]),  # lidt cs:[0xff00]; int3: triple fault
        "spin.bin": bytes([0xfa, 0xf4, 0xeb, 0xfd])}                    # cli; hlt; jmp $-1
for name, c in code.items():
    img = bytearray(b"\xf4" * 65536)
    img[0xff00:0xff06] = bytes(6)
    img[0xfff0:0xfff0 + len(c)] = c
    open(f"{sys.argv[1]}/{name}", "wb").write(img)
PY

# arch-capabilities=off: some KVMs (PVM here) report IA32_ARCH_CAPABILITIES bits that they then refuse to
# have written back, and QEMU aborts ("failed to set MSR 0x10a"). capsule does not write that MSR.
qemu_base="qemu-system-x86_64 -accel kvm -cpu host,arch-capabilities=off -smp 1 -m $MEMORY -nodefaults -no-user-config -display none"
# pit=off: capsule creates no PIT for payloads, so neither does QEMU (QEMU 7.2 accepts it).
qemu_machine="microvm,x-option-roms=off,isa-serial=off,rtc=off,acpi=off,pit=off,auto-kernel-cmdline=off"
capsule_launch="$work/capsule vm run --payload $PAYLOADS/quit.elf --debug-exit --memory $MEMORY --console none"
qemu_launch="$qemu_base -M $qemu_machine -no-reboot -bios $work/exit.bin"

# Each must really run its guest and exit 0: capsule with its payload's status, QEMU on the triple
# fault's reset (-no-reboot; without it QEMU would reset forever).
rc=0; $capsule_launch || rc=$?
[ "$rc" = 0 ] || die "capsule's launch payload exited $rc, not 0"
rc=0; $qemu_launch || rc=$?
[ "$rc" = 0 ] || die "QEMU's launch guest exited $rc, not 0"

echo "== (a) launch: process start -> first guest instruction -> exit ($RUNS runs, $MEMORY guest)"
"$repo/bench/alternate.py" "$RUNS" "$WARMUP" 0 "$work/launch.json" \
        "capsule=$capsule_launch" "qemu=$qemu_launch" || die "a launch failed"
python3 - "$work/launch.json" <<'PY'
import json, statistics, sys
res = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
for name, r in res.items():
    print(f"  {name:8} median {statistics.median(r['times']) * 1e3:7.2f} ms   min {min(r['times']) * 1e3:7.2f} ms   "
          f"user {statistics.mean(r['user']) * 1e3:5.2f} ms  sys {statistics.mean(r['system']) * 1e3:5.2f} ms (means)")
c, q = statistics.median(res["capsule"]["times"]), statistics.median(res["qemu"]["times"])
print(f"  qemu/capsule (medians): {q / c:.2f}x   capsule target < 10 ms: "
      f"{'met' if c < 0.010 else 'MISSED'}")
PY

# Prints "RSS PSS GUEST_RSS GUEST_PSS" (KiB) of PID, the guest RAM being the mapping named $2.
measure() {
        python3 - "$1" "$2" <<'PY'
import sys
pid, name = sys.argv[1], sys.argv[2]
def kib(line):
    return int(line.split()[1])
total = {}
for line in open(f"/proc/{pid}/smaps_rollup"):
    if line.startswith(("Rss:", "Pss:")):
        total[line.split(":")[0]] = kib(line)
guest = {"Rss": 0, "Pss": 0}
in_guest = False
for line in open(f"/proc/{pid}/smaps"):
    fields = line.split()
    if "-" in fields[0] and ":" not in fields[0]:  # a mapping's header line
        in_guest = name in line
    elif in_guest and fields[0] in ("Rss:", "Pss:"):
        guest[fields[0][:-1]] += kib(line)
print(total["Rss"], total["Pss"], guest["Rss"], guest["Pss"])
PY
}

# Waits until the guest is parked: capsule's payload says "spinning"; QEMU's halts after two
# instructions, so its process only needs to have settled into sleeping.
parked() {
        case $1 in
        capsule) grep -q spinning "$work/spin.log" 2>/dev/null ;;
        qemu) [ "$(awk '/^State:/ { print $2 }' "/proc/$2/status" 2>/dev/null)" = S ] ;;
        esac
}

echo "== (b) memory: VMM RSS minus guest RAM touched, guest parked ($MEMORY guest)"
for vmm in capsule qemu; do
        case $vmm in
        capsule)
                "$work/capsule" vm run --payload "$PAYLOADS/spin.elf" --memory "$MEMORY" \
                        --console "file:$work/spin.log" 2>"$work/$vmm.err" &
                ram=memfd:capsule-guest-ram ;;
        qemu)
                # shellcheck disable=SC2086
                $qemu_base -object "memory-backend-memfd,id=ram,size=$MEMORY" \
                        -M "$qemu_machine,memory-backend=ram" -bios "$work/spin.bin" 2>"$work/$vmm.err" &
                ram=memfd:ram ;;
        esac
        pid=$!
        pids="$pids $pid"
        n=0
        until parked "$vmm" "$pid"; do
                n=$((n + 1))
                [ $n -lt 100 ] || die "$vmm's guest did not park within 10 s"
                kill -0 "$pid" 2>/dev/null || { cat "$work/$vmm.err" >&2; die "$vmm exited early"; }
                sleep 0.1
        done
        sleep 0.5  # let the VMM finish whatever follows the guest's start
        set -- $(measure "$pid" "$ram")
        awk -v vmm="$vmm" -v rss="$1" -v pss="$2" -v grss="$3" -v gpss="$4" 'BEGIN {
                printf "  %-8s RSS %6.2f MiB - guest %5.2f MiB = overhead %5.2f MiB   (PSS: %5.2f MiB)%s\n",
                        vmm, rss / 1024, grss / 1024, (rss - grss) / 1024, (pss - gpss) / 1024,
                        vmm == "capsule" ? ((rss - grss) < 5 * 1024 ? "   target < 5 MiB: met" : "   target < 5 MiB: MISSED") : ""
        }'
        kill -TERM "$pid"
        wait "$pid" 2>/dev/null || :
        pids=""
done
