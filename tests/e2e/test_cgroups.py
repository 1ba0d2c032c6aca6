"""linux.resources and linux.cgroupsPath as a user sees them, on v1, hybrid and v2 hosts:
limits in the cgroup files and inside, devices, paths, update, pause/resume, cleanup."""
import glob
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import own_cgroup

MODE_FS = subprocess.run(["stat", "-f", "-c", "%T", "/sys/fs/cgroup"], capture_output=True, text=True,
                         check=True).stdout.strip()
V2 = MODE_FS == "cgroup2fs"


def mounts():
    """(controllers, mount point) of every cgroup hierarchy; controllers is "" for cgroup2."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype, _, opts = right.split()[:3]
            mnt = left.split()[4]
            if fstype == "cgroup2":
                out.append(("", mnt))
            elif fstype == "cgroup":
                ctrls = [o for o in opts.split(",") if o not in ("rw", "ro", "nosuid", "nodev", "noexec", "relatime",
                                                                 "clone_children") and not o.startswith("release_agent")]
                out.append((",".join(ctrls), mnt))
    return out


def hier_dirs(cgroup_lines):
    """Map "controllers" ("" = unified) to a directory, from /proc/PID/cgroup style lines."""
    mp = dict(mounts())
    if V2:
        mp = {"": "/sys/fs/cgroup"}
    dirs = {}
    for line in cgroup_lines:
        _, ctrls, path = line.split(":", 2)
        if ctrls in mp and (ctrls != "" or V2 or os.path.isdir("/sys/fs/cgroup/unified")):
            dirs[ctrls] = mp[ctrls].rstrip("/") + path.rstrip("/")
    return dirs


def container_dirs(pid):
    with open(f"/proc/{pid}/cgroup") as f:
        return hier_dirs(f.read().splitlines())


def expected_dirs(rel):
    """Where a relative cgroupsPath lands for this process: below our own cgroup in each hierarchy."""
    with open("/proc/self/cgroup") as f:
        lines = [l.rstrip("\n") for l in f if l.strip()]
    return {k: v.rstrip("/") + "/" + rel for k, v in hier_dirs(lines).items()}


def ctl_dir(dirs, controller):
    """The directory whose files configure controller (a v1 hierarchy, or the unified one)."""
    for ctrls, d in dirs.items():
        if controller in ctrls.split(","):
            return d
    u = dirs.get("")
    assert u is not None, f"no {controller} hierarchy"
    assert controller in read(os.path.join(u, "cgroup.controllers")).split(), f"{controller} not in {u}"
    return u


def is_v1(d):
    return not os.path.exists(os.path.join(d, "cgroup.controllers"))


def read(path):
    with open(path) as f:
        return f.read().strip()


def run_detached(capsule, bundle, *args):
    bundle.set_args(*(args or ("sleep", "1000")))
    capsule.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
    pid = capsule.state(bundle.id)["pid"]
    return pid, container_dirs(pid)


def resources(bundle):
    return bundle.config["linux"].setdefault("resources", {})


MB = 1024 * 1024


def test_mode_detected_matches_host(capsule, bundle):
    """capsule's cgroup mode shows in what it builds: the container's /sys/fs/cgroup (cgroup2 on a v2
    host, a tmpfs of v1 hierarchies otherwise) and the limit file it writes (memory.max on v2,
    memory.limit_in_bytes on v1 and hybrid)."""
    resources(bundle)["memory"] = {"limit": 64 * MB}
    pid, dirs = run_detached(capsule, bundle)
    # the magic number in hex: busybox's stat names no cgroup2 (%T says UNKNOWN)
    inside = capsule.run("exec", bundle.id, "sh", "-c", "stat -f -c %t /sys/fs/cgroup; ls /sys/fs/cgroup",
                         check=True).stdout.split()
    assert inside[0] == ("63677270" if V2 else "1021994")  # CGROUP2_SUPER_MAGIC, TMPFS_MAGIC
    d = ctl_dir(dirs, "memory")
    if V2:
        assert not is_v1(d) and int(read(f"{d}/memory.max")) == 64 * MB
        assert "cgroup.controllers" in inside[1:]
    else:
        assert is_v1(d) and int(read(f"{d}/memory.limit_in_bytes")) == 64 * MB
        assert "memory" in inside[1:] and "cgroup.controllers" not in inside[1:]


def test_container_is_in_its_cgroup_everywhere(capsule, bundle):
    pid, dirs = run_detached(capsule, bundle)
    want = expected_dirs(f"capsule-test/{bundle.id}")
    assert dirs == want
    for d in dirs.values():
        assert str(pid) in read(os.path.join(d, "cgroup.procs")).split()


def test_memory_limit_swap_reservation(capsule, bundle):
    resources(bundle)["memory"] = {"limit": 64 * MB, "swap": 96 * MB, "reservation": 32 * MB}
    pid, dirs = run_detached(capsule, bundle)
    d = ctl_dir(dirs, "memory")
    if is_v1(d):
        assert int(read(f"{d}/memory.limit_in_bytes")) == 64 * MB
        assert int(read(f"{d}/memory.soft_limit_in_bytes")) == 32 * MB
        assert int(read(f"{d}/memory.memsw.limit_in_bytes")) == 96 * MB
    else:
        assert int(read(f"{d}/memory.max")) == 64 * MB
        assert int(read(f"{d}/memory.low")) == 32 * MB
        assert int(read(f"{d}/memory.swap.max")) == 32 * MB  # v2 counts swap alone


def test_memory_limit_is_enforced(capsule, bundle):
    resources(bundle)["memory"] = {"limit": 16 * MB, "swap": 16 * MB}
    # The shell (the container's init) reads a 64 MB string into a variable, which cannot fit in
    # 16 MB: the OOM killer kills it (SIGKILL, so run exits 137). Any other failure is not this.
    bundle.set_args("sh", "-c", "x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo survived ${#x}")
    p = capsule.run("run", "-b", bundle.path, bundle.id, timeout=120)
    assert "survived" not in p.stdout
    assert p.returncode == 128 + signal.SIGKILL, (p.returncode, p.stderr)
    assert "capsule" not in p.stderr, p.stderr


def test_cpu_shares_quota_period(capsule, bundle):
    resources(bundle)["cpu"] = {"shares": 512, "quota": 25000, "period": 100000}
    pid, dirs = run_detached(capsule, bundle)
    d = ctl_dir(dirs, "cpu")
    if is_v1(d):
        assert read(f"{d}/cpu.shares") == "512"
        assert read(f"{d}/cpu.cfs_quota_us") == "25000"
        assert read(f"{d}/cpu.cfs_period_us") == "100000"
    else:
        assert read(f"{d}/cpu.max") == "25000 100000"
        assert read(f"{d}/cpu.weight") == str(1 + ((512 - 2) * 9999) // 262142)


def test_cpuset_cpus_mems(capsule, bundle):
    resources(bundle)["cpu"] = {"cpus": "1", "mems": "0"}
    pid, dirs = run_detached(capsule, bundle)
    d = ctl_dir(dirs, "cpuset")
    assert read(f"{d}/cpuset.cpus") == "1"
    assert read(f"{d}/cpuset.mems") == "0"
    inside = capsule.run("exec", bundle.id, "grep", "Cpus_allowed_list", "/proc/self/status", check=True).stdout
    assert inside.split() == ["Cpus_allowed_list:", "1"]


def test_cpuset_invalid_cpu_names_field(capsule, bundle):
    resources(bundle)["cpu"] = {"cpus": "99"}
    bundle.set_args("true")
    p = capsule.run("run", "-b", bundle.path, bundle.id)
    assert p.returncode != 0 and "linux.resources.cpu.cpus" in p.stderr
    for d in expected_dirs(f"capsule-test/{bundle.id}").values():
        assert not os.path.exists(d)


def test_pids_limit(capsule, bundle):
    resources(bundle)["pids"] = {"limit": 10}
    pid, dirs = run_detached(capsule, bundle)
    d = ctl_dir(dirs, "pids")
    assert read(f"{d}/pids.max") == "10"
    p = capsule.run("exec", bundle.id, "sh", "-c", "for i in $(seq 20); do sleep 10 & done")
    assert "can't fork" in p.stderr, p.stderr
    # sleep 1000, the exec'd shell and as many sleeps as fit: never more than 10
    assert int(read(f"{d}/pids.current")) <= 10
    procs = read(f"{d}/cgroup.procs").split()
    assert 3 <= len(procs) <= 10
    if is_v1(d):
        assert int(read(f"{d}/pids.events").split()[-1]) > 0  # "max N": forks refused


def test_pids_limit_in_run(capsule, bundle):
    resources(bundle)["pids"] = {"limit": 5}
    bundle.set_args("sh", "-c", "for i in $(seq 20); do sleep 10 & done")
    p = capsule.run("run", "-b", bundle.path, bundle.id, timeout=60)
    assert "can't fork" in p.stderr, p.stderr


def blkio_weight_support():
    """Why this host cannot weight block I/O, or None if it can. On v1 the weight files come with a
    scheduler (CFQ, gone since Linux 5.0, or BFQ) and appear in a new cgroup; on v2, io.weight
    comes with blk-iocost (io.cost.qos in the root) and io.bfq.weight with BFQ."""
    if V2:
        own = "/sys/fs/cgroup" + own_cgroup("").rstrip("/")
        if "io" not in read(f"{own}/cgroup.controllers").split():
            return f"the io controller is not available in {own}"
        bfq = any("bfq" in read(f) for f in glob.glob("/sys/block/*/queue/scheduler"))
        if not bfq and not os.path.exists("/sys/fs/cgroup/io.cost.qos"):
            return "no io.weight on this kernel: neither blk-iocost nor the BFQ scheduler"
        return None
    mount = next((m for c, m in mounts() if "blkio" in c.split(",")), None)
    if mount is None:
        return "no blkio hierarchy is mounted"
    probe = mount.rstrip("/") + own_cgroup("blkio").rstrip("/") + f"/capsule-probe-{os.getpid()}"
    os.mkdir(probe)
    try:
        if any(os.path.exists(os.path.join(probe, f)) for f in ("blkio.weight", "blkio.bfq.weight")):
            return None
    finally:
        os.rmdir(probe)
    return "the v1 blkio hierarchy has no blkio.weight or blkio.bfq.weight (no CFQ or BFQ scheduler)"


def test_blkio_weight(capsule, bundle):
    unsupported = blkio_weight_support()
    resources(bundle)["blockIO"] = {"weight": 300}
    bundle.set_args("sleep", "1000")
    p = capsule.run("run", "-d", "-b", bundle.path, bundle.id)
    if unsupported:
        # capsule must refuse the field it cannot apply, name it, and leave nothing behind
        assert p.returncode != 0 and "linux.resources.blockIO.weight" in p.stderr, (p.returncode, p.stderr)
        for d in expected_dirs(f"capsule-test/{bundle.id}").values():
            assert not os.path.exists(d)
        pytest.skip(f"blockIO.weight cannot work here ({unsupported}); capsule refuses it as it should")
    assert p.returncode == 0, p.stderr
    dirs = container_dirs(capsule.state(bundle.id)["pid"])
    d = next((v for k, v in dirs.items() if "blkio" in k.split(",")), None) or ctl_dir(dirs, "io")
    names = ("blkio.weight", "blkio.bfq.weight") if is_v1(d) else ("io.bfq.weight", "io.weight")
    files = [f for f in names if os.path.exists(os.path.join(d, f))]
    assert files, f"capsule succeeded but {d} has none of {names}"
    # io.weight has its own scale (1..10000); capsule maps blkio's 10..1000 onto it as runc does
    want = str(1 + (300 - 10) * 9999 // 990) if files[0] == "io.weight" else "300"
    assert read(os.path.join(d, files[0])).split()[-1] == want


def test_hugetlb_limit(capsule, bundle):
    if not os.path.isdir("/sys/kernel/mm/hugepages/hugepages-2048kB"):
        pytest.fail("this host has no 2MB huge pages; the test expects them")
    resources(bundle)["hugepageLimits"] = [{"pageSize": "2MB", "limit": 4 * 2 * MB}]
    pid, dirs = run_detached(capsule, bundle)
    d = ctl_dir(dirs, "hugetlb")
    f = "hugetlb.2MB.limit_in_bytes" if is_v1(d) else "hugetlb.2MB.max"
    assert int(read(os.path.join(d, f))) == 8 * MB
    if not V2 and not is_v1(d):
        assert d.startswith("/sys/fs/cgroup/unified/")  # hybrid: hugetlb lives in the unified hierarchy


# /dev/net/tun: not an OCI default device, and opening it needs no capability
TUN = {"path": "/dev/tun-test", "type": "c", "major": 10, "minor": 200, "fileMode": 0o666, "uid": 0, "gid": 0}


def test_devices_rules(capsule, bundle):
    bundle.config["linux"]["devices"] = [TUN]
    resources(bundle)["devices"] = [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "rm"},
    ]
    pid, dirs = run_detached(capsule, bundle)
    # read allowed, write denied by the cgroup (not by the file mode: we are root)
    p = capsule.run("exec", bundle.id, "sh", "-c", "exec 3</dev/tun-test && echo read-ok;"
                    " exec 4>/dev/tun-test")
    assert p.stdout == "read-ok\n"
    assert "Operation not permitted" in p.stderr, p.stderr
    d = next((v for k, v in dirs.items() if "devices" in k.split(",")), None)
    if d:
        lst = read(os.path.join(d, "devices.list")).splitlines()
        assert "c 10:200 rm" in lst and "a *:* rwm" not in lst


def test_devices_mknod_denied_for_unlisted(capsule, bundle):
    for s in ("bounding", "effective", "permitted"):
        bundle.config["process"]["capabilities"][s].append("CAP_MKNOD")
    resources(bundle)["devices"] = [{"allow": False, "access": "rwm"}]
    bundle.set_args("sh", "-c", "mknod /tmp/null2 c 1 3 && echo null-ok; mknod /tmp/mem c 1 1 && echo mem-ok; true")
    p = capsule.run("run", "-b", bundle.path, bundle.id)
    assert p.stdout == "null-ok\n", p.stderr
    assert "Operation not permitted" in p.stderr


def test_devices_default_devices_stay_usable(capsule, bundle):
    # as runc: the OCI default devices (null, zero, ...) are allowed after the config's rules,
    # so even a deny of /dev/null write leaves it writable
    resources(bundle)["devices"] = [
        {"allow": False, "access": "rwm"},
        {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"},
    ]
    bundle.set_args("sh", "-c", "echo x > /dev/null && head -c 2 /dev/zero | wc -c")
    p = capsule.run("run", "-b", bundle.path, bundle.id)
    assert p.returncode == 0 and p.stdout.strip() == "2", p.stderr


def test_relative_path_default_bundle_lands_below_own(capsule, bundle):
    pid, dirs = run_detached(capsule, bundle)
    for k, d in dirs.items():
        own = own_cgroup(k.split(",")[0]) if k else None
        assert d.endswith(f"/capsule-test/{bundle.id}")
        if own and own != "/":
            assert own + "/capsule-test/" in d


def test_absolute_cgroups_path(capsule, bundle):
    # absolute = from each hierarchy's root: write our own (deepest) cgroup as an absolute path
    own = max((own_cgroup(c) or "/" for c in ("memory", "pids", "cpu")), key=len) if not V2 else own_cgroup("")
    abs_path = own.rstrip("/") + f"/capsule-abs-{bundle.id}"
    bundle.config["linux"]["cgroupsPath"] = abs_path
    mp = dict(mounts()) if not V2 else {"": "/sys/fs/cgroup"}
    before = {k: set(os.listdir(m)) for k, m in mp.items()}
    pid, dirs = run_detached(capsule, bundle)
    with open(f"/proc/{pid}/cgroup") as f:
        paths = {line.split(":", 2)[1]: line.rstrip("\n").split(":", 2)[2] for line in f}
    for k, d in dirs.items():
        assert paths[k] == abs_path, (k, paths[k])
    capsule.run("delete", "--force", bundle.id, check=True)
    for k, d in dirs.items():
        assert not os.path.exists(d)
    # directories capsule made on the way (in hierarchies where we sit at the root) are gone too
    assert {k: set(os.listdir(m)) for k, m in mp.items()} == before


def test_cgroups_path_with_dotdot_rejected(capsule, bundle):
    bundle.config["linux"]["cgroupsPath"] = "capsule-test/../../escape"
    bundle.set_args("true")
    p = capsule.run("run", "-b", bundle.path, bundle.id)
    assert p.returncode != 0 and "linux.cgroupsPath" in p.stderr and ".." in p.stderr


def limits_now(dirs):
    mem = ctl_dir(dirs, "memory")
    cpu = ctl_dir(dirs, "cpu")
    pids = ctl_dir(dirs, "pids")
    if is_v1(mem):
        m = int(read(f"{mem}/memory.limit_in_bytes"))
    else:
        m = int(read(f"{mem}/memory.max"))
    if is_v1(cpu):
        c = (read(f"{cpu}/cpu.cfs_quota_us"), read(f"{cpu}/cpu.cfs_period_us"))
    else:
        c = tuple(read(f"{cpu}/cpu.max").split())
    return m, c, read(f"{pids}/pids.max")


def test_update_from_flags(capsule, bundle):
    pid, dirs = run_detached(capsule, bundle)
    capsule.run("update", "--memory", "100m", "--pids-limit", "42", "--cpu-quota", "30000", "--cpu-period", "60000",
                bundle.id, check=True)
    assert limits_now(dirs) == (100 * MB, ("30000", "60000"), "42")
    capsule.run("update", "--pids-limit", "43", bundle.id, check=True)
    # only what was given changes
    assert limits_now(dirs) == (100 * MB, ("30000", "60000"), "43")
    bad = capsule.run("update", "--memory", "lots", bundle.id)
    assert bad.returncode != 0 and "--memory" in bad.stderr


def test_update_from_file_and_stdin(capsule, bundle, tmp_path):
    pid, dirs = run_detached(capsule, bundle)
    f = tmp_path / "res.json"
    f.write_text(json.dumps({"memory": {"limit": 80 * MB}, "pids": {"limit": 33},
                             "cpu": {"quota": 20000, "period": 50000}}))
    capsule.run("update", "-r", f, bundle.id, check=True)
    assert limits_now(dirs) == (80 * MB, ("20000", "50000"), "33")
    p = subprocess.run(capsule.cmd("update", "-r", "-", bundle.id), input=json.dumps({"pids": {"limit": 34}}),
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert limits_now(dirs) == (80 * MB, ("20000", "50000"), "34")
    bad = subprocess.run(capsule.cmd("update", "-r", "-", bundle.id), input="{not json", capture_output=True, text=True)
    assert bad.returncode != 0 and "invalid JSON" in bad.stderr


def test_update_stopped_container_fails(capsule, bundle):
    bundle.set_args("true")
    capsule.run("run", "--keep", "-b", bundle.path, bundle.id, check=True)
    p = capsule.run("update", "--pids-limit", "5", bundle.id)
    assert p.returncode != 0 and "not running" in p.stderr


def all_gone(dirs):
    return [d for d in dirs.values() if os.path.exists(d)]


def test_delete_removes_every_directory(capsule, bundle):
    pid, dirs = run_detached(capsule, bundle, "sh", "-c", "sleep 1000 & sleep 1000")
    assert set(dirs) == set(expected_dirs("x"))  # every hierarchy, unified included
    capsule.run("kill", bundle.id, "KILL", check=True)
    deadline = time.time() + 5
    while capsule.status(bundle.id) != "stopped":
        assert time.time() < deadline
        time.sleep(0.05)
    # the background sleep survives its parent's death in the cgroup until delete
    capsule.run("delete", bundle.id, check=True)
    assert all_gone(dirs) == []


def test_delete_force_after_runtime_killed(capsule, bundle):
    bundle.set_args("sleep", "1000")
    proc = subprocess.Popen(capsule.cmd("run", "-b", bundle.path, bundle.id))
    try:
        deadline = time.time() + 10
        while capsule.run("state", bundle.id).returncode != 0 or capsule.status(bundle.id) != "running":
            assert time.time() < deadline
            time.sleep(0.05)
        pid = capsule.state(bundle.id)["pid"]
        dirs = container_dirs(pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert capsule.status(bundle.id) == "running"
        capsule.run("delete", "--force", bundle.id, check=True)
        assert all_gone(dirs) == []
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(") ")[1][0] == "Z"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def freezer_state(dirs):
    for k, d in dirs.items():
        if "freezer" in k.split(","):
            return read(f"{d}/freezer.state")
    return {"1": "FROZEN", "0": "THAWED"}[read(f"{dirs['']}/cgroup.freeze")]


def proc_state(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[1][0]


def test_pause_resume_freezer(capsule, bundle):
    pid, dirs = run_detached(capsule, bundle, "sh", "-c", "while true; do echo -n; done")
    capsule.run("pause", bundle.id, check=True)
    assert freezer_state(dirs) == "FROZEN"
    assert capsule.status(bundle.id) == "paused"
    # a frozen busy loop uses no CPU
    t0 = sum(map(int, open(f"/proc/{pid}/stat").read().split(") ")[1].split()[11:13]))
    time.sleep(0.5)
    t1 = sum(map(int, open(f"/proc/{pid}/stat").read().split(") ")[1].split()[11:13]))
    assert t1 - t0 <= 1
    capsule.run("resume", bundle.id, check=True)
    assert freezer_state(dirs) == "THAWED"
    assert capsule.status(bundle.id) == "running"
    time.sleep(0.3)
    t2 = sum(map(int, open(f"/proc/{pid}/stat").read().split(") ")[1].split()[11:13]))
    assert t2 > t1


def test_delete_force_paused_container(capsule, bundle):
    pid, dirs = run_detached(capsule, bundle)
    capsule.run("pause", bundle.id, check=True)
    capsule.run("delete", "--force", bundle.id, check=True)
    assert all_gone(dirs) == []


def sibling_pair(capsule, bundle):
    parent = f"capsule-sib-{bundle.id}"
    bundle.config["linux"]["cgroupsPath"] = f"{parent}/a"
    run_detached(capsule, bundle)
    bundle.config["linux"]["cgroupsPath"] = f"{parent}/b"
    bundle.write()
    capsule.run("run", "-d", "-b", bundle.path, bundle.id + "-b", check=True)
    return expected_dirs(parent)


def test_sibling_parent_goes_with_its_creator_when_last(capsule, bundle):
    parents = sibling_pair(capsule, bundle)  # bundle.id made the parent
    capsule.run("delete", "--force", bundle.id + "-b", check=True)
    assert all(os.path.isdir(d) for d in parents.values())
    capsule.run("delete", "--force", bundle.id, check=True)
    assert all_gone(parents) == []


def test_sibling_parent_kept_while_in_use(capsule, bundle):
    parents = sibling_pair(capsule, bundle)
    try:
        capsule.run("delete", "--force", bundle.id, check=True)
        # the creator is gone but the sibling still lives in the parent
        assert all(os.path.isdir(d) for d in parents.values())
        capsule.run("delete", "--force", bundle.id + "-b", check=True)
        assert all(not os.path.exists(d + "/b") for d in parents.values())
    finally:
        # as with runc, a parent outlives its creator when a sibling was last: ours to remove
        for d in parents.values():
            if os.path.isdir(d):
                os.rmdir(d)


# ---- exec --cgroup ----

def make_sub_cgroups(dirs, name):
    """name below the container's cgroup in every hierarchy; a v1 cpuset child starts empty, so copy its parent's."""
    subs = {}
    for ctrls, d in dirs.items():
        sub = os.path.join(d, name)
        os.mkdir(sub)
        subs[ctrls] = sub
        if "cpuset" in ctrls.split(",") and is_v1(d):
            for f in ("cpuset.cpus", "cpuset.mems"):
                with open(os.path.join(sub, f), "w") as out:
                    out.write(read(os.path.join(d, f)))
    return subs


@pytest.fixture
def exec_sub_cgroups(capsule, bundle):
    """A running container with a "sub" cgroup below its cgroup in each hierarchy, removed afterwards."""
    pid, dirs = run_detached(capsule, bundle)
    subs = make_sub_cgroups(dirs, "sub")
    yield dirs, subs
    for d in subs.values():
        deadline = time.time() + 5
        while read(os.path.join(d, "cgroup.procs")):
            assert time.time() < deadline, f"{d} still holds processes"
            time.sleep(0.05)
        os.rmdir(d)


def exec_cgroup_lines(capsule, bundle, *flags):
    """/proc/self/cgroup of a process exec'd with flags, as {controllers: path}."""
    p = capsule.run("exec", *flags, bundle.id, "cat", "/proc/self/cgroup")
    assert p.returncode == 0, p.stderr
    return {ctrls: path for _, ctrls, path in (l.split(":", 2) for l in p.stdout.splitlines())}


def test_exec_cgroup_path_in_every_hierarchy(capsule, bundle, exec_sub_cgroups):
    dirs, subs = exec_sub_cgroups
    seen = exec_cgroup_lines(capsule, bundle, "--cgroup", "sub")
    for ctrls in dirs:
        assert seen[ctrls].endswith("/sub"), (ctrls, seen)
    # without --cgroup: the container's own cgroup
    seen = exec_cgroup_lines(capsule, bundle)
    assert not any(seen[ctrls].endswith("/sub") for ctrls in dirs), seen


def test_exec_cgroup_per_controller(capsule, bundle, exec_sub_cgroups):
    dirs, subs = exec_sub_cgroups
    v1 = sorted(c for c in dirs if c)
    if len(v1) < 3:
        pytest.skip("needs three v1 hierarchies")
    # two controllers in one option, a third in another: only those hierarchies use the sub-cgroup
    first = [c.split(",")[0] for c in v1[:3]]
    seen = exec_cgroup_lines(capsule, bundle, "--cgroup", f"{first[0]},{first[1]}:sub", "--cgroup", f"{first[2]}:sub")
    for ctrls in dirs:
        assert seen[ctrls].endswith("/sub") == (ctrls in v1[:3]), (ctrls, seen)


@pytest.mark.parametrize("arg,message", [
    ("nope", "does not exist"),
    ("sub/../..", "`..`"),
    ("/sub", "relative"),
    ("nosuchcontroller:sub", "nosuchcontroller"),
])
def test_exec_cgroup_bad_path_fails(capsule, bundle, exec_sub_cgroups, arg, message):
    p = capsule.run("exec", "--cgroup", arg, bundle.id, "true")
    assert p.returncode != 0 and "--cgroup" in p.stderr and message in p.stderr, p.stderr


def test_exec_cgroup_without_prefix_only_once(capsule, bundle, exec_sub_cgroups):
    p = capsule.run("exec", "--cgroup", "sub", "--cgroup", "sub", bundle.id, "true")
    assert p.returncode != 0 and "--cgroup" in p.stderr, p.stderr
