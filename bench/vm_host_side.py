#!/usr/bin/env python3
"""The host side of a VM container's start, measured on this host: what capsule does from the
exec of `capsule-vm create` to its vCPUs' start (the phases cli, state and vmm of
bench/vm_container.py; target: under 20 ms together), beside a whole plain `create` of capsule
and of its peers, in one run.

bench/vm_container.py measures the whole start in the testbed, whose TCG emulates every host-side
instruction (a plain `capsule run` takes 0.4-1.4 s there, 17-20 ms here), so its host-side
figures cannot judge the 20 ms target. This script runs the same steps here, natively.

On a hardware KVM host every step runs as it is. On a PVM host (/dev/kvm from kvm_pvm) capsule
refuses VM containers, since a stock kernel cannot boot there; the host side needs no guest, so
the script re-runs itself in a private mount namespace whose /sys/module shows kvm_amd instead of
kvm_pvm. capsule then does everything it does on hardware up to the vCPUs' start (KVM's VM and
memory, the kernel and initrd loaded, the devices, virtiofsd, the jail and the seccomp filter);
the guest gets nowhere, and each VM is deleted (--force) as soon as its phases file shows its
vCPUs started. Nothing outside that namespace changes.

    bench/vm_host_side.py

Environment: RUNS (default 20, after one warm-up run each), CAPSULE_KERNEL (default: the kernel
scripts/build-kernel builds or has cached), PEERS (plain runtimes timed beside capsule when
installed, default "crun runc"; one that fails its warm-up, as crun does on hybrid cgroups, is left
out and says why), BUILDS (capsule build directories, default build/; two or more, e.g.
"build /tmp/old", compare builds in alternate runs), V1_ONLY=1 (on a hybrid host: unmount
/sys/fs/cgroup/unified in the private mount namespace, as bench/container_run.sh does, so that
every runtime, crun too, runs on the v1 hierarchies alone).

Every run must succeed: a failure ends the benchmark with status 1. Everything it started is
deleted at the end, and its cgroup parent removed."""
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vm_container as vc  # noqa: E402  (its bundles, cgroup parent and phase names)

RUNS = int(os.environ.get("RUNS", "20"))
BUILDS = [os.path.abspath(b) for b in os.environ.get("BUILDS", vc.BUILD).split()]
PEERS = os.environ.get("PEERS", "crun runc").split()
V1_ONLY = os.environ.get("V1_ONLY") == "1"
UNIFIED = "/sys/fs/cgroup/unified"
INNER = "CAPSULE_BENCH_HOST_SIDE_NS"
STEPS = ("cli", "state", "vmm")
TARGET_MS = 20
# Between two runs: a cgroup move right after another skips the RCU grace period the first waited
# for, so back-to-back runs would favour whichever comes second. Each starts from an idle host.
PAUSE = 0.3
START_TIMEOUT = 30


class RunFailed(Exception):
    pass


def die(msg):
    print(f"vm_host_side: {msg}", file=sys.stderr)
    sys.exit(1)


def pvm():
    mods = "/sys/module"
    return os.path.isdir(f"{mods}/kvm_pvm") and not any(
        os.path.isdir(f"{mods}/{m}") for m in ("kvm_intel", "kvm_amd"))


def hide_pvm():
    """In this (private) mount namespace: a /sys/module with kvm_amd, without kvm_pvm."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755,size=64k", "capsule-bench", "/sys/module"], check=True)
    os.mkdir("/sys/module/kvm_amd")


class HostSide(vc.Bench):
    def binary(self, rt):
        build, _, name = rt.partition(":")
        if name:
            return os.path.join(build, name)
        return super().binary(rt)

    def root(self, rt):
        return os.path.join(self.work, "state", rt.replace("/", "_"))

    def vm_run(self, rt):
        """capsule-vm create until the vCPUs start: (cli, state, vmm) in ms."""
        path, cid = self.bundle(["true"])
        phases = os.path.join(self.root(rt), cid, "phases")
        self.live.append((rt, cid))
        t0 = time.monotonic_ns()
        err = open(os.path.join(self.work, f"{cid}.err"), "w+")
        p = subprocess.Popen([self.binary(rt), "--root", self.root(rt), "create", "--bundle", path, cid],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        ph = {}
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            ended = p.poll() is not None
            try:
                with open(phases) as f:
                    ph = {k: int(v) for k, v in (line.split() for line in f if line.strip())}
            except OSError:
                pass
            if "guest" in ph:
                break
            if ended:
                err.seek(0)
                die(f"{rt} create exited {p.returncode} before the vCPUs started: {err.read().strip()}")
            if time.monotonic() > deadline:
                p.kill()
                die(f"{rt}: the vCPUs did not start within {START_TIMEOUT} s")
            time.sleep(0.001)
        self.delete(rt, cid)
        p.wait()
        err.close()
        self.live.remove((rt, cid))
        stamps = [t0, ph["create"], ph["vmm"], ph["guest"]]
        if stamps != sorted(stamps):
            die(f"{phases}: phases out of order: {ph} (t0 {t0})")
        return [(b - a) / 1e6 for a, b in zip(stamps, stamps[1:])]

    def plain_run(self, rt):
        """A whole plain `create` (exec to exit), in ms."""
        path, cid = self.bundle(["sleep", "1000"])
        self.live.append((rt, cid))
        # A file, not a pipe: the created container keeps its stdio until it is deleted.
        with open(os.path.join(self.work, f"{cid}.err"), "w+") as err:
            t0 = time.monotonic_ns()
            r = subprocess.run([self.binary(rt), "--root", self.root(rt), "create", "--bundle", path, cid],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
            t1 = time.monotonic_ns()
            if r.returncode != 0:
                err.seek(0)
                self.live.remove((rt, cid))
                raise RunFailed(f"{rt} create exited {r.returncode}: {err.read().strip()}")
        self.delete(rt, cid)
        self.live.remove((rt, cid))
        return (t1 - t0) / 1e6


def cgroup_mounts():
    """(mount point, "cgroup" or "cgroup2") of every cgroup hierarchy mounted here."""
    with open("/proc/self/mountinfo") as f:
        return [(line.split()[4], line.split(" - ")[1].split()[0]) for line in f if " - cgroup" in line]


def cgroup_layout():
    kinds = {kind for _, kind in cgroup_mounts()}
    return "hybrid" if kinds == {"cgroup", "cgroup2"} else "v1" if "cgroup" in kinds else "v2"


def remove_cgroup_parent():
    """The bundles' cgroup parent, in every hierarchy (v1, hybrid and v2 alike)."""
    for m, _ in cgroup_mounts():
        for d, _, _ in sorted(os.walk(os.path.join(m, vc.CGROUP_PARENT)), reverse=True):  # deepest first
            os.rmdir(d)


def fmt(values):
    return f"{statistics.median(values):7.1f} ({min(values):5.1f})"


def measure(b, peers):
    vms = [f"{build}:capsule-vm" for build in BUILDS]
    plains = [f"{build}:capsule" for build in BUILDS] + peers
    for peer in peers:
        try:
            b.plain_run(peer)
        except RunFailed as e:
            print(f"  {peer} left out: {e}")
            plains.remove(peer)
    res = {rt: [] for rt in vms + plains}
    for i in range(RUNS + 1):
        for rt in vms:
            time.sleep(PAUSE)
            r = b.vm_run(rt)
            if i:
                res[rt].append(r)
        for rt in plains:
            time.sleep(PAUSE)
            try:
                r = b.plain_run(rt)
            except RunFailed as e:
                die(str(e))
            if i:
                res[rt].append(r)
    print(f"  {RUNS} runs each after a warm-up, alternating, {PAUSE} s apart; median (min), ms")
    print(f"  {'capsule-vm create, up to the vCPUs':44s} {'cli':>15s} {'state':>15s} {'vmm':>15s} {'host side':>15s}")
    for rt in vms:
        rows = res[rt]
        cols = [fmt([r[k] for r in rows]) for k in range(len(STEPS))]
        total = [sum(r) for r in rows]
        verdict = "met" if statistics.median(total) < TARGET_MS else "MISSED"
        print(f"  {rt:44s} {' '.join(cols)} {fmt(total)}   target < {TARGET_MS} ms: {verdict}")
    print(f"  {'plain create, whole command':44s} {'create':>15s}")
    for rt in plains:
        print(f"  {rt:44s} {fmt(res[rt])}")
    base = statistics.median(res[plains[0]])
    for rt in vms:
        print(f"  {rt} host side / {plains[0]} create: "
              f"{statistics.median([sum(r) for r in res[rt]]) / base:.2f}")


def main():
    if os.geteuid() != 0:
        die("needs root")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        die("needs read-write /dev/kvm")
    drop_unified = V1_ONLY and os.path.ismount(UNIFIED)
    if (pvm() or drop_unified) and not os.environ.get(INNER):
        env = dict(os.environ, **{INNER: "1"})
        os.execvpe("unshare", ["unshare", "--mount", "--propagation", "private", sys.executable,
                               os.path.abspath(__file__)], env)
    hidden = pvm()
    if hidden:
        hide_pvm()
    if drop_unified:
        subprocess.run(["umount", UNIFIED], check=True)
    kernel = os.environ.get("CAPSULE_KERNEL")
    if not kernel:
        cache = subprocess.run([os.path.join(vc.REPO, "scripts", "build-kernel")], capture_output=True, text=True)
        if cache.returncode != 0:
            die(f"scripts/build-kernel failed: {cache.stderr.strip()}")
        kernel = os.path.join(cache.stdout.strip(), "vmlinux")
        os.environ["CAPSULE_KERNEL"] = kernel
    if not os.path.isfile(kernel):
        die(f"CAPSULE_KERNEL: {kernel} is not a file")
    for build in BUILDS:
        for f in vc.missing_files(build):
            die(f"{build}/{f} is missing")
    peers = [p for p in PEERS if shutil.which(p)]
    print(f"vm_host_side: {vc.host_summary()}, "
          f"KVM {'PVM (kvm_pvm hidden in a private mount namespace)' if hidden else 'as it is'}, "
          f"cgroups {cgroup_layout()}, "
          f"guest kernel {kernel}, peers: {' '.join(peers) or 'none'}")
    work = vc.tempfile.mkdtemp(prefix="capsule-hostside.")
    b = None
    try:
        b = HostSide(work)
        measure(b, peers)
    finally:
        for rt, cid in reversed(b.live if b else []):
            b.delete(rt, cid)
        state = os.path.join(work, "state")
        for rt in os.listdir(state) if os.path.isdir(state) else []:
            if os.listdir(os.path.join(state, rt)):
                print(f"vm_host_side: {rt} left {os.listdir(os.path.join(state, rt))} behind", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
        remove_cgroup_parent()


if __name__ == "__main__":
    main()
