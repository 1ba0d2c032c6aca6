#!/usr/bin/env python3
"""VM containers against plain containers, side by side in one run: the time from `run` to the
workload's first output, split into its phases, and the host memory per sandbox with several
sandboxes at once. Needs root and hardware KVM; on a PVM host, run it in the testbed:

    tests/testbed/run 'nice -n 10 bench/vm_container.py'

Environment: RUNS (startup runs per runtime, default 5, after one warm-up run each),
SANDBOXES (how many at once for the memory part, default 10, started BATCH at a time, default
2), MEMORY (each VM's RAM, default 128M; one vCPU), CAPSULE_KERNEL (the guest kernel, set by
the testbed), PEERS (default "crun runc": plain runtimes timed beside capsule when installed;
empty: none).

(a) Startup. Each run starts `RUNTIME run` of `echo hello` in a busybox bundle and times, from
    just before the exec to the first byte on its stdout, with CLOCK_MONOTONIC. Runs of every
    runtime alternate, so load changes hit all alike. A VM run (`capsule-vm run --keep`) also
    reads the state directory's phases file (src/sandbox/sandbox_phases.c), whose stamps share
    that clock, and splits the time into:
      cli      exec -> sandbox_create(): the re-exec from the sealed copy, flags, nothing else
      state    -> the sandbox process: config.json, the state directory, the cgroup, fork
      vmm      -> the vCPUs start: guest memory, kernel and initrd loading, devices, virtiofsd
               started (its vhost-user handshake runs beside the boot)
      boot     -> the agent takes the first connection. The guest reports its part by its own
               clock (CLOCK_BOOTTIME): "guest kernel" until the agent began, "guest agent"
               from there until it listened. "boot, rest" is what the guest's clock does not
               see: the kernel's early boot before its clock starts, and the host's connect
      create   -> the container exists in the guest (stdio connections, create request)
      start    -> the start request answered (wait connection, create's report, `run`'s start)
      output   -> the first byte of the output reached the host
    cli + state + vmm are the host side capsule controls (target: under 20 ms together).
(b) Memory. SANDBOXES VM containers run `sleep` at once (`capsule-vm run --detach`), then as
    many plain capsule containers. Per sandbox: the PSS (smaps_rollup) of the sandbox process
    (the VMM) and every process below it (virtiofsd), split into the guest RAM mappings
    (memfd:capsule-guest-ram, in the VMM and mapped again by virtiofsd) and the rest, the
    overhead (target: under 20 MiB). A plain container's cost is its processes' PSS (no
    conmon: capsule leaves nothing else running). MemAvailable's fall per sandbox is printed
    beside it: it also counts the kernel's share (page tables, KVM's structures).

Every run must succeed with the expected output: a failure ends the benchmark with status 1.
Everything it started is deleted at the end, and its cgroup parent removed."""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(REPO, "build")
RUNS = int(os.environ.get("RUNS", "5"))
SANDBOXES = int(os.environ.get("SANDBOXES", "10"))
MEMORY = os.environ.get("MEMORY", "128M")
PEERS = os.environ.get("PEERS", "crun runc").split()
# How many boot at the same time: with 10, virtiofsd in nested TCG under load missed capsule's
# 5 s vhost-user handshake timeout (GET_FEATURES), which runs from the vCPUs' start.
BATCH = int(os.environ.get("BATCH", "2"))
BUSYBOX = "/bin/busybox"
CGROUP_PARENT = f"capsule-bench-{os.getpid()}"
BOOT_TIMEOUT = 600
HOST_PHASES = ("create", "vmm", "guest", "agent", "created", "started")
PARTS = ("cli", "state", "vmm", "boot", "create", "start", "output")


def die(msg):
    print(f"vm_container: {msg}", file=sys.stderr)
    sys.exit(1)


def rootfs(dest):
    for d in ("bin", "dev", "proc", "sys", "tmp", "etc", "root", "run"):
        os.makedirs(os.path.join(dest, d), exist_ok=True)
    shutil.copy2(BUSYBOX, os.path.join(dest, "bin", "busybox"))
    for a in subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split():
        if not os.path.lexists(os.path.join(dest, "bin", a)):
            os.symlink("busybox", os.path.join(dest, "bin", a))
    with open(os.path.join(dest, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")


class Bench:
    def __init__(self, work):
        self.work = work
        self.rootfs = os.path.join(work, "rootfs")
        rootfs(self.rootfs)
        spec = os.path.join(work, "spec")
        os.mkdir(spec)
        subprocess.run([os.path.join(BUILD, "capsule"), "spec", "--bundle", spec], check=True)
        with open(os.path.join(spec, "config.json")) as f:
            self.spec = json.load(f)
        self.live = []  # (binary, root, id) to delete at the end
        self.n = 0

    def bundle(self, args):
        """A fresh bundle (and id): the same config for every runtime but for the cgroup."""
        self.n += 1
        cid = f"b{self.n}"
        path = os.path.join(self.work, "bundles", cid)
        os.makedirs(path)
        c = json.loads(json.dumps(self.spec))
        c["process"]["terminal"] = False
        c["process"]["args"] = args
        c["root"]["path"] = self.rootfs
        c["linux"]["cgroupsPath"] = f"/{CGROUP_PARENT}/{cid}"
        c.setdefault("annotations", {}).update({"capsule.vm.memory": MEMORY, "capsule.vm.cpus": "1"})
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(c, f)
        return path, cid

    def binary(self, rt):
        return {"capsule": os.path.join(BUILD, "capsule"), "capsule-vm": os.path.join(BUILD, "capsule-vm")}.get(
            rt) or shutil.which(rt)

    def root(self, rt):
        return os.path.join(self.work, "state", rt)

    def delete(self, rt, cid):
        subprocess.run([self.binary(rt), "--root", self.root(rt), "delete", "--force", cid],
                       capture_output=True, timeout=BOOT_TIMEOUT)

    def startup_run(self, rt):
        """One `run` of echo hello: seconds to the first output byte, and the phases (VM)."""
        path, cid = self.bundle(["echo", "hello"])
        vm = rt == "capsule-vm"
        cmd = [self.binary(rt), "--root", self.root(rt), "run"] + (["--keep"] if vm else []) + \
              ["--bundle", path, cid]
        self.live.append((rt, cid))
        t0 = time.monotonic_ns()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        first = os.read(p.stdout.fileno(), 1)
        t1 = time.monotonic_ns()
        try:
            out, err = p.communicate(timeout=BOOT_TIMEOUT)
        except subprocess.TimeoutExpired:
            p.kill()
            die(f"{rt} run did not end within {BOOT_TIMEOUT} s")
        if p.returncode != 0 or first + out != b"hello\n":
            die(f"{rt} run exited {p.returncode} with {first + out!r}: {err.decode(errors='replace').strip()}")
        parts = None
        if vm:
            parts = self.phases(os.path.join(self.root(rt), cid, "phases"), t0, t1)
        self.delete(rt, cid)
        self.live.remove((rt, cid))
        return (t1 - t0) / 1e9, parts

    @staticmethod
    def phases(path, t0, t1):
        with open(path) as f:
            ph = {k: int(v) for k, v in (line.split() for line in f)}
        missing = [k for k in HOST_PHASES + ("guest_boot_us", "guest_ready_us") if k not in ph]
        if missing:
            die(f"{path} lacks {missing}")
        stamps = [t0] + [ph[k] for k in HOST_PHASES] + [t1]
        if stamps != sorted(stamps):
            die(f"{path}: phases out of order: {ph} (t0 {t0}, first output {t1})")
        parts = {name: (b - a) / 1e6 for name, a, b in zip(PARTS, stamps, stamps[1:])}
        parts["guest kernel"] = ph["guest_boot_us"] / 1e3
        parts["guest agent"] = (ph["guest_ready_us"] - ph["guest_boot_us"]) / 1e3
        parts["boot, rest"] = parts["boot"] - ph["guest_ready_us"] / 1e3
        return parts

    def start_sleepers(self, rt, n):
        """n containers running `sleep` at once, started BATCH at a time; their state pids."""
        pids = []
        while len(pids) < n:
            pids += self.start_batch(rt, min(BATCH, n - len(pids)))
        return pids

    def start_batch(self, rt, n):
        started = []
        for _ in range(n):
            path, cid = self.bundle(["sh", "-c", "echo up; exec sleep 100000"])
            # Files, not pipes: the container keeps them (its stdout and stderr) after run returns.
            out, err = (os.path.join(self.work, f"{cid}.{n}") for n in ("out", "err"))
            with open(out, "w") as o, open(err, "w") as e:
                p = subprocess.Popen([self.binary(rt), "--root", self.root(rt), "run", "--detach", "--bundle", path,
                                      cid], stdout=o, stderr=e, stdin=subprocess.DEVNULL)
            self.live.append((rt, cid))
            started.append((cid, p, out, err))
        pids = []
        for cid, p, out, err in started:
            try:
                p.wait(timeout=BOOT_TIMEOUT)
            except subprocess.TimeoutExpired:
                p.kill()
                die(f"{rt} run --detach of {cid} did not return within {BOOT_TIMEOUT} s")
            if p.returncode != 0:
                die(f"{rt} run --detach {cid} exited {p.returncode}: {read(err).strip()}")
            deadline = time.monotonic() + 60
            while (said := read(out)) != "up\n":
                if time.monotonic() > deadline:
                    die(f"{rt} {cid} never said up (its output: {said!r})")
                time.sleep(0.2)
            st = json.loads(subprocess.run([self.binary(rt), "--root", self.root(rt), "state", cid],
                                           capture_output=True, text=True, check=True).stdout)
            if st["status"] != "running":
                die(f"{rt} {cid} is {st['status']}, not running")
            pids.append(st["pid"])
        return pids


def read(path):
    with open(path) as f:
        return f.read()


def children():
    kids = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        kids.setdefault(ppid, []).append(int(pid))
    return kids


def tree(pid, kids):
    out = [pid]
    for k in kids.get(pid, []):
        out += tree(k, kids)
    return out


def pss_kib(pid):
    """(PSS of the process, PSS of its guest RAM mappings), KiB."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        total = next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
    guest, in_guest = 0, False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and not fields[0].endswith(":"):
                in_guest = "capsule-guest-ram" in line
            elif in_guest and fields[0] == "Pss:":
                guest += int(fields[1])
    return total, guest


def comm(pid):
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def mem_available_kib():
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))


def median(xs):
    return statistics.median(xs)


def startup(b, runtimes):
    print(f"== (a) startup: `run` of echo hello to its first output, {RUNS} runs each, alternating "
          f"({MEMORY} VM, 1 vCPU)")
    times = {rt: [] for rt in runtimes}
    parts = []
    for rt in runtimes:  # warm-up: the binaries' and the kernel's first read
        b.startup_run(rt)
    for i in range(RUNS):
        for rt in runtimes:
            t, p = b.startup_run(rt)
            times[rt].append(t)
            if p:
                parts.append(p)
        print(f"  run {i + 1}: " + "  ".join(f"{rt} {times[rt][-1] * 1e3:.1f} ms" for rt in runtimes), flush=True)
        print("         capsule-vm: " + "  ".join(f"{k} {v:.1f}" for k, v in parts[-1].items()), flush=True)
    for rt in runtimes:
        print(f"  {rt:11} median {median(times[rt]) * 1e3:9.1f} ms   min {min(times[rt]) * 1e3:9.1f} ms")
    vm, plain = median(times["capsule-vm"]), median(times["capsule"])
    print(f"  capsule-vm/capsule (medians): {vm / plain:.1f}x")
    print("  capsule-vm phases (medians, ms):")
    for name in PARTS + ("guest kernel", "guest agent", "boot, rest"):
        inside = "   (in boot)" if name.startswith(("guest", "boot,")) else ""
        print(f"    {name:13} {median([p[name] for p in parts]):9.1f}{inside}")
    host = median([p["cli"] + p["state"] + p["vmm"] for p in parts])
    print(f"  host side (cli + state + vmm, median of sums): {host:.1f} ms   target < 20 ms: "
          f"{'met' if host < 20 else 'MISSED'}")


def memory(b):
    print(f"== (b) memory: {SANDBOXES} sandboxes at once ({MEMORY}, 1 vCPU, sleep), then {SANDBOXES} plain containers")
    before = mem_available_kib()
    vm_pids = b.start_sleepers("capsule-vm", SANDBOXES)
    time.sleep(2)  # let the guests settle after their workload's start
    kids = children()
    rows = []
    by_proc = {}
    for pid in vm_pids:
        total = guest = 0
        names = []
        for p in tree(pid, kids):
            t, g = pss_kib(p)
            total, guest = total + t, guest + g
            names.append(comm(p))
            # the VMM (its comm is its sealed copy's memfd name) against everything below it
            by_proc.setdefault("vmm" if p == pid else names[-1], []).append(t - g)
        rows.append((total, guest, names))
    vm_fall = (before - mem_available_kib()) / SANDBOXES
    mid = mem_available_kib()
    plain_pids = b.start_sleepers("capsule", SANDBOXES)
    time.sleep(1)
    kids = children()
    plain = [sum(pss_kib(p)[0] for p in tree(pid, kids)) for pid in plain_pids]
    plain_fall = (mid - mem_available_kib()) / SANDBOXES
    overhead = [t - g for t, g, _ in rows]
    print(f"  sandbox processes: {', '.join(sorted(set(rows[0][2])))}")
    print("  per sandbox (MiB)   PSS total   guest RAM   overhead   MemAvailable fall")
    print(f"  capsule-vm median   {median([r[0] for r in rows]) / 1024:9.2f}   "
          f"{median([r[1] for r in rows]) / 1024:9.2f}   {median(overhead) / 1024:8.2f}   {vm_fall / 1024:8.2f}")
    print(f"  capsule-vm max      {max(r[0] for r in rows) / 1024:9.2f}   "
          f"{max(r[1] for r in rows) / 1024:9.2f}   {max(overhead) / 1024:8.2f}")
    print("  overhead by process (median PSS outside guest RAM, MiB): " +
          ", ".join(f"{name} {median(v) / 1024:.2f}" for name, v in sorted(by_proc.items())))
    print(f"  capsule    median   {median(plain) / 1024:9.2f}   {'-':>9}   {median(plain) / 1024:8.2f}   "
          f"{plain_fall / 1024:8.2f}")
    print(f"  capsule-vm/capsule PSS (medians): {median([r[0] for r in rows]) / median(plain):.0f}x   "
          f"overhead target < 20 MiB: {'met' if median(overhead) < 20 * 1024 else 'MISSED'}")


def missing_files(build):
    """What a VM container needs from a build directory and it lacks."""
    return [f for f in ("capsule", "capsule-vm", "capsule-guest.initrd") if not os.path.exists(os.path.join(build, f))]


def host_summary():
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    return f"{os.cpu_count()} CPUs, load {' '.join(load)}, kernel {os.uname().release}"


def main():
    if os.geteuid() != 0:
        die("needs root")
    kernel = os.environ.get("CAPSULE_KERNEL")
    if not kernel or not os.path.isfile(kernel):
        die("CAPSULE_KERNEL names no guest kernel (tests/testbed/run sets it)")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        die("needs read-write /dev/kvm (on a PVM host: tests/testbed/run 'bench/vm_container.py')")
    for f in missing_files(BUILD):
        die(f"build/{f} is missing: make -C {REPO}")
    peers = [p for p in PEERS if shutil.which(p)]
    print(f"vm_container: {host_summary()}, guest kernel {kernel}, peers: {' '.join(peers) or 'none'}")
    # SANDBOXES nested-TCG boots at once can take longer than capsule's default wait for an agent.
    os.environ.setdefault("CAPSULE_VM_BOOT_TIMEOUT", str(BOOT_TIMEOUT))
    work = tempfile.mkdtemp(prefix="capsule-vmbench.")
    b = None
    try:
        b = Bench(work)
        startup(b, ["capsule", "capsule-vm"] + peers)
        memory(b)
    finally:
        for rt, cid in reversed(b.live if b else []):
            b.delete(rt, cid)
        for rt in ["capsule", "capsule-vm"] + PEERS:
            leftover = os.listdir(os.path.join(work, "state", rt)) if os.path.isdir(
                os.path.join(work, "state", rt)) else []
            if leftover:
                print(f"vm_container: {rt} left {leftover} behind", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
        cg = os.path.join("/sys/fs/cgroup", CGROUP_PARENT)
        for d, _, _ in sorted(os.walk(cg), reverse=True):  # deepest first
            os.rmdir(d)


if __name__ == "__main__":
    main()
