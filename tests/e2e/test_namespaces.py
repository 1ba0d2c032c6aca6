"""Linux namespaces as a user sees them: new ones, joined ones (by path), and rootless operation."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import CAPSULE, Capsule, build_rootfs


def run_in(capsule, bundle, script, check=True):
    """Run `sh -c script` in the foreground; return its stdout."""
    bundle.set_args("sh", "-c", script)
    p = capsule.run("run", "-b", bundle.path, bundle.id)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def start_sleeping(capsule, bundle):
    bundle.set_args("sleep", "1000")
    capsule.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
    return capsule.state(bundle.id)["pid"]


def exec_out(capsule, cid, *args):
    p = capsule.run("exec", cid, *args)
    assert p.returncode == 0, p.stderr
    return p.stdout


def set_namespaces(bundle, *types, **paths):
    ns = [{"type": t} for t in types]
    ns += [{"type": t, "path": p} for t, p in paths.items()]
    bundle.config["linux"]["namespaces"] = ns
    if "uts" not in types and "uts" not in paths:
        bundle.config.pop("hostname", None)
    bundle.write()


def add_caps(bundle, *caps):
    for kind in ("bounding", "effective", "permitted"):
        bundle.config["process"]["capabilities"][kind] += list(caps)
    bundle.write()


@pytest.fixture
def public_bundle(bundle):
    """The bundle moved where a non-root (or mapped) user can reach it: pytest's tmp is 0700."""
    d = tempfile.mkdtemp(prefix="capsule-e2e-")
    os.chmod(d, 0o755)
    shutil.move(bundle.path, os.path.join(d, "bundle"))
    bundle.path = os.path.join(d, "bundle")
    yield bundle
    shutil.rmtree(d)


def ns_id(pid, name):
    return os.readlink(f"/proc/{pid}/ns/{name}")


def test_default_namespaces_differ_from_host(capsule, bundle):
    pid = start_sleeping(capsule, bundle)
    for name in ("pid", "net", "ipc", "uts", "mnt"):
        assert ns_id(pid, name) != ns_id("self", name), name
    # not asked for: shared with the host
    assert ns_id(pid, "user") == ns_id("self", "user")


def test_pid_namespace(capsule, bundle):
    pid = start_sleeping(capsule, bundle)
    assert pid != 1
    assert exec_out(capsule, bundle.id, "cat", "/proc/1/cmdline") == "sleep\0" + "1000\0"
    # the host pid appears in the container's pid namespace as 1
    status = open(f"/proc/{pid}/status").read()
    nspid = [l.split()[1:] for l in status.splitlines() if l.startswith("NSpid:")][0]
    assert nspid == [str(pid), "1"]
    assert exec_out(capsule, bundle.id, "sh", "-c", "echo $$").strip() != str(pid)


def test_no_pid_namespace_sees_host_pids(capsule, bundle):
    set_namespaces(bundle, "mount")
    out = run_in(capsule, bundle, "echo $$; test -d /proc/%d && echo host-visible" % os.getpid()).stdout.split()
    assert out[0] != "1" and out[1] == "host-visible"


def test_mount_namespace_isolates_mounts(capsule, bundle):
    add_caps(bundle, "CAP_SYS_ADMIN")
    pid = start_sleeping(capsule, bundle)
    exec_out(capsule, bundle.id, "mount", "-t", "tmpfs", "capsule-ns-probe", "/tmp")
    assert "capsule-ns-probe" in exec_out(capsule, bundle.id, "cat", "/proc/self/mountinfo")
    assert "capsule-ns-probe" not in open("/proc/self/mountinfo").read()
    assert "capsule-ns-probe" in open(f"/proc/{pid}/mountinfo").read()


def test_uts_namespace_hostname_and_domainname(capsule, bundle):
    host_name, host_domain = os.uname().nodename, open("/proc/sys/kernel/domainname").read()
    bundle.config["hostname"] = "capsule-box"
    bundle.config["domainname"] = "capsule.example"
    out = run_in(capsule, bundle, "hostname; cat /proc/sys/kernel/domainname").stdout
    assert out == "capsule-box\ncapsule.example\n"
    assert os.uname().nodename == host_name
    assert open("/proc/sys/kernel/domainname").read() == host_domain


def test_hostname_needs_uts_namespace(capsule, bundle):
    set_namespaces(bundle, "mount", "pid")
    bundle.config["hostname"] = "capsule-box"
    bundle.write()
    p = capsule.run("create", "-b", bundle.path, bundle.id)
    assert p.returncode != 0 and "hostname" in p.stderr
    assert os.uname().nodename != "capsule-box"


def test_ipc_namespace_hides_host_queue(capsule, bundle):
    mk = subprocess.run(["ipcmk", "-Q"], capture_output=True, text=True, check=True)
    qid = mk.stdout.split(":")[1].strip()
    try:
        assert any(l.split()[1] == qid for l in open("/proc/sysvipc/msg").read().splitlines()[1:])
        out = run_in(capsule, bundle, "cat /proc/sysvipc/msg").stdout.splitlines()
        assert len(out) == 1 and out[0].split()[0] == "key"  # header only
        # without an ipc namespace the host queue is there
        set_namespaces(bundle, "mount", "pid")
        bundle.id += "-b"
        out = run_in(capsule, bundle, "cat /proc/sysvipc/msg").stdout.splitlines()
        assert any(l.split()[1] == qid for l in out[1:])
    finally:
        subprocess.run(["ipcrm", "-q", qid], check=True)


def test_net_namespace_has_only_lo(capsule, bundle):
    out = run_in(capsule, bundle, "ip -o link; ls /sys/class/net").stdout
    links = [l.split(":")[1].strip() for l in out.splitlines() if ": " in l]
    # the kernel gives every namespace its fallback tunnels (sit0@NONE, ...) when built in
    assert [l for l in links if not l.endswith("@NONE")] == ["lo"]
    # /sys/class/net is this namespace's too
    assert sorted(out.splitlines()[len(links):]) == sorted(l.split("@")[0] for l in links)


def map_user_namespace(bundle, host_uid, host_gid):
    """A user namespace mapping 65536 ids from container 0; the rootfs is chowned to the mapped
    root, as a root-owned one would be nobody inside."""
    bundle.config["linux"]["namespaces"].append({"type": "user"})
    bundle.config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": host_uid, "size": 65536}]
    bundle.config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": host_gid, "size": 65536}]
    subprocess.run(["chown", "-R", "-h", f"{host_uid}:{host_gid}", bundle.rootfs], check=True)


def test_user_namespace_mappings(capsule, public_bundle):
    bundle = public_bundle
    map_user_namespace(bundle, 100000, 200000)
    pid = start_sleeping(capsule, bundle)
    assert exec_out(capsule, bundle.id, "cat", "/proc/self/uid_map").split() == ["0", "100000", "65536"]
    assert exec_out(capsule, bundle.id, "cat", "/proc/self/gid_map").split() == ["0", "200000", "65536"]
    assert exec_out(capsule, bundle.id, "id", "-u").strip() == "0"
    assert exec_out(capsule, bundle.id, "id", "-g").strip() == "0"
    status = open(f"/proc/{pid}/status").read().splitlines()
    uids = [l.split()[1:] for l in status if l.startswith("Uid:")][0]
    gids = [l.split()[1:] for l in status if l.startswith("Gid:")][0]
    assert uids == ["100000"] * 4
    assert gids == ["200000"] * 4
    assert ns_id(pid, "user") != ns_id("self", "user")
    # uid 1000 inside is host uid 101000
    capsule.run("exec", "--cap", "CAP_CHOWN", bundle.id, "sh", "-c", "touch /tmp/owned && chown 1000:1000 /tmp/owned",
                check=True)
    st = os.stat(os.path.join(bundle.rootfs, "tmp", "owned"))
    assert (st.st_uid, st.st_gid) == (101000, 201000)


def without_namespace(bundle, ns_type):
    """The bundle's namespaces minus ns_type (`capsule spec` adds cgroup on a cgroup v2 host)."""
    return [ns for ns in bundle.config["linux"]["namespaces"] if ns["type"] != ns_type]


def test_cgroup_namespace_root(capsule, bundle):
    bundle.config["linux"]["namespaces"] = without_namespace(bundle, "cgroup") + [{"type": "cgroup"}]
    bundle.write()
    pid = start_sleeping(capsule, bundle)
    host_view = open(f"/proc/{pid}/cgroup").read().splitlines()
    # from the host, the container sits below our own cgroup
    assert any("capsule-test/" + bundle.id in l for l in host_view)
    inside = exec_out(capsule, bundle.id, "cat", "/proc/self/cgroup").splitlines()
    assert len(inside) == len(host_view)
    assert all(l.split(":", 2)[2] == "/" for l in inside), inside


def test_no_cgroup_namespace_shows_full_path(capsule, bundle):
    bundle.config["linux"]["namespaces"] = without_namespace(bundle, "cgroup")
    out = run_in(capsule, bundle, "cat /proc/self/cgroup").stdout
    assert "capsule-test/" + bundle.id in out


def test_time_namespace_offsets(capsule, bundle):
    bundle.config["linux"]["namespaces"].append({"type": "time"})
    bundle.config["linux"]["timeOffsets"] = {"boottime": {"secs": 86400 * 365, "nanosecs": 0},
                                             "monotonic": {"secs": 7200, "nanosecs": 0}}
    pid = start_sleeping(capsule, bundle)
    # timens_offsets shows the offsets of the namespace the process is in
    offsets = dict(l.split()[0:2] for l in open(f"/proc/{pid}/timens_offsets").read().splitlines())
    assert offsets == {"monotonic": "7200", "boottime": "31536000"}
    host_uptime = float(open("/proc/uptime").read().split()[0])
    inside = float(exec_out(capsule, bundle.id, "cat", "/proc/uptime").split()[0])
    assert 86400 * 365 - 5 < inside - host_uptime < 86400 * 365 + 5


def test_time_offsets_need_time_namespace(capsule, bundle):
    bundle.config["linux"]["timeOffsets"] = {"boottime": {"secs": 100}}
    bundle.write()
    p = capsule.run("create", "-b", bundle.path, bundle.id)
    assert p.returncode != 0 and "timeOffsets" in p.stderr


@pytest.fixture
def netns():
    name = f"capsule-t-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield name
    subprocess.run(["ip", "netns", "del", name], check=True)


def test_join_network_namespace_by_path(capsule, bundle, netns):
    # this kernel has no dummy driver built in: a bridge is just as visible
    subprocess.run(["ip", "-n", netns, "link", "add", "capsuledummy0", "type", "bridge"], check=True)
    set_namespaces(bundle, "pid", "mount", network=f"/var/run/netns/{netns}")
    out = run_in(capsule, bundle, "ip -o link").stdout
    links = sorted(l.split(":")[1].strip() for l in out.splitlines() if ": " in l)
    assert [l for l in links if not l.endswith("@NONE")] == ["capsuledummy0", "lo"]
    # and the host's interfaces are not there
    assert "capsuledummy0" not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def test_join_missing_namespace_path_fails_cleanly(capsule, bundle):
    set_namespaces(bundle, "pid", "mount", network="/var/run/netns/capsule-no-such-ns")
    p = capsule.run("create", "-b", bundle.path, bundle.id)
    assert p.returncode != 0 and "capsule-no-such-ns" in p.stderr
    assert not os.path.exists(os.path.join(capsule.root, bundle.id))


def test_join_another_containers_uts_and_ipc(capsule, bundle, tmp_path, rootfs_template):
    bundle.config["hostname"] = "first-box"
    first_pid = start_sleeping(capsule, bundle)

    second = tmp_path / "second"
    second.mkdir()
    shutil.copytree(rootfs_template, second / "rootfs", symlinks=True)
    cfg = json.loads(json.dumps(bundle.config))
    cfg.pop("hostname")
    cfg["linux"]["cgroupsPath"] = cfg["linux"]["cgroupsPath"] + "-2"
    cfg["linux"]["namespaces"] = [{"type": "pid"}, {"type": "mount"}, {"type": "network"},
                                  {"type": "uts", "path": f"/proc/{first_pid}/ns/uts"},
                                  {"type": "ipc", "path": f"/proc/{first_pid}/ns/ipc"}]
    cfg["process"]["args"] = ["sleep", "1000"]
    (second / "config.json").write_text(json.dumps(cfg))
    sid = bundle.id + "-2"
    capsule.run("run", "-d", "-b", second, sid, check=True)
    second_pid = capsule.state(sid)["pid"]
    assert ns_id(second_pid, "uts") == ns_id(first_pid, "uts")
    assert ns_id(second_pid, "ipc") == ns_id(first_pid, "ipc")
    assert ns_id(second_pid, "net") != ns_id(first_pid, "net")
    assert exec_out(capsule, sid, "hostname").strip() == "first-box"
    # a change made in one is seen by the other
    capsule.run("exec", "--cap", "CAP_SYS_ADMIN", sid, "hostname", "renamed-box", check=True)
    assert exec_out(capsule, bundle.id, "hostname").strip() == "renamed-box"


def strace_can_delay():
    """strace's delay injection needs POSIX timers, which the testbed's kernel lacks."""
    if shutil.which("strace") is None:
        return False
    probe = ["strace", "-qq", "-o", "/dev/null", "-e", "inject=getppid:delay_enter=100000",
             sys.executable, "-c", "import os; os.getppid()"]
    return subprocess.run(probe, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30).returncode == 0


@pytest.mark.skipif(not strace_can_delay(), reason="strace cannot delay a system call here (not installed, or no POSIX timers)")
def test_join_pid_namespace_when_setup_reports_init_late(capsule, bundle, tmp_path, rootfs_template):
    """Joining a pid namespace by path, a setup process clones init and hands its pidfd to the
    runtime. When that message comes late (strace delays setup's sendmsg, the only one), init must
    still wait for it: the state, the hooks and `start` need init's pid."""
    first_pid = start_sleeping(capsule, bundle)
    second = tmp_path / "second"
    second.mkdir()
    shutil.copytree(rootfs_template, second / "rootfs", symlinks=True)
    cfg = json.loads(json.dumps(bundle.config))
    cfg["linux"]["cgroupsPath"] += "-2"
    cfg["linux"]["namespaces"] = [{"type": "mount"}, {"type": "pid", "path": f"/proc/{first_pid}/ns/pid"}]
    cfg.pop("hostname", None)
    cfg["process"]["args"] = ["sh", "-c", "echo $$; ls /proc | grep -c '^[0-9]'"]
    (second / "config.json").write_text(json.dumps(cfg))
    sid = bundle.id + "-2"
    delayed = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=sendmsg",
               "-e", "inject=sendmsg:delay_enter=400000"] + capsule.cmd("create", "-b", second, sid)
    # strace -f ends with the last process it follows: init, once the workload exits
    with tempfile.TemporaryFile("w+") as out:
        tracer = subprocess.Popen(delayed, stdout=out, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.time() + 30
            while capsule.run("state", sid).returncode != 0 or capsule.status(sid) != "created":
                assert tracer.poll() in (None, 0) and time.time() < deadline, "create did not finish"
                time.sleep(0.05)
            st = capsule.state(sid)
            assert st["pid"] > 0, st
            with open(f"/proc/{st['pid']}/status") as f:
                nspid = [line.split()[1:] for line in f if line.startswith("NSpid:")][0]
            assert nspid[0] == str(st["pid"]) and len(nspid) == 2, nspid  # in the joined namespace
            p = capsule.run("start", sid)
            assert p.returncode == 0, p.stderr
            assert tracer.wait(timeout=30) == 0
        finally:
            if tracer.poll() is None:
                tracer.kill()
                tracer.wait()
        out.seek(0)
        pid_in_ns, nprocs = out.read().split()
    # the workload shares the first container's pid namespace: it is not pid 1 and sees sleep
    assert pid_in_ns != "1" and int(nprocs) >= 2


NOBODY = 65534


def as_nobody(cmd):
    return ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups"] + cmd


@pytest.fixture
def rootless():
    """A bundle and --root owned by nobody, the config from `capsule spec --rootless` run as nobody."""
    top = tempfile.mkdtemp(prefix="capsule-e2e-")
    os.chmod(top, 0o755)
    base = Path(top) / "rootless"
    base.mkdir()
    build_rootfs(str(base / "bundle" / "rootfs"))
    subprocess.run(["chown", "-R", "-h", f"{NOBODY}:{NOBODY}", base], check=True)
    subprocess.run(as_nobody([CAPSULE, "spec", "--rootless", "--bundle", str(base / "bundle")]), check=True)
    cfg = json.loads((base / "bundle" / "config.json").read_text())
    assert cfg["linux"]["uidMappings"] == [{"containerID": 0, "hostID": NOBODY, "size": 1}]
    cfg["process"]["terminal"] = False
    cfg["root"]["readonly"] = False
    c = Capsule(str(base / "state"))
    c.cmd = lambda *args: as_nobody([CAPSULE, "--root", c.root] + [str(a) for a in args])
    c.bundle, c.config = str(base / "bundle"), cfg
    yield c
    c.cleanup()
    left = os.listdir(c.root) if os.path.isdir(c.root) else []
    shutil.rmtree(top)
    assert left == []


def test_rootless_run(rootless):
    rootless.config["process"]["args"] = ["sh", "-c", "id -u; id -g; cat /proc/self/uid_map; echo pid=$$"]
    with open(os.path.join(rootless.bundle, "config.json"), "w") as f:
        json.dump(rootless.config, f)
    p = rootless.run("run", "-b", rootless.bundle, "rootless1")
    assert p.returncode == 0, p.stderr
    out = p.stdout.splitlines()
    assert out[0] == "0" and out[1] == "0"
    assert out[2].split() == ["0", str(NOBODY), "1"]
    assert out[3] == "pid=1"


def test_rootless_detached_state_exec_kill(rootless):
    rootless.config["process"]["args"] = ["sleep", "1000"]
    with open(os.path.join(rootless.bundle, "config.json"), "w") as f:
        json.dump(rootless.config, f)
    rootless.run("run", "-d", "-b", rootless.bundle, "rootless2", check=True)
    pid = rootless.state("rootless2")["pid"]
    uids = [l.split()[1:] for l in open(f"/proc/{pid}/status").read().splitlines() if l.startswith("Uid:")][0]
    assert uids == [str(NOBODY)] * 4
    p = rootless.run("exec", "rootless2", "id", "-u")
    assert p.returncode == 0 and p.stdout == "0\n", p.stderr
    rootless.run("kill", "rootless2", "KILL", check=True)
    deadline = time.time() + 10
    while rootless.status("rootless2") != "stopped":
        assert time.time() < deadline
        time.sleep(0.05)
    rootless.run("delete", "rootless2", check=True)
    assert not os.path.exists(os.path.join(rootless.root, "rootless2"))


def test_exec_joins_time_namespace(capsule, bundle):
    bundle.config["linux"]["namespaces"].append({"type": "time"})
    bundle.config["linux"]["timeOffsets"] = {"monotonic": {"secs": 3600 * 24 * 100, "nanosecs": 0}}
    start_sleeping(capsule, bundle)
    # busybox has no monotonic clock printer: the offsets file names the namespace exec ran in
    offsets = exec_out(capsule, bundle.id, "cat", "/proc/self/timens_offsets")
    assert offsets.split()[:2] == ["monotonic", str(3600 * 24 * 100)]


def test_join_another_containers_user_namespace(capsule, public_bundle, tmp_path, rootfs_template):
    bundle = public_bundle
    map_user_namespace(bundle, 100000, 100000)
    first_pid = start_sleeping(capsule, bundle)

    cfg = json.loads(json.dumps(bundle.config))
    cfg["linux"]["cgroupsPath"] += "-2"
    cfg.pop("hostname", None)
    del cfg["linux"]["uidMappings"], cfg["linux"]["gidMappings"]
    # new namespaces created after joining the user namespace are owned by it
    cfg["linux"]["namespaces"] = [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"},
                                  {"type": "user", "path": f"/proc/{first_pid}/ns/user"},
                                  {"type": "network", "path": f"/proc/{first_pid}/ns/net"}]
    cfg["process"]["args"] = ["sh", "-c", "id -u; cat /proc/self/uid_map"]
    second = os.path.join(os.path.dirname(bundle.path), "second")
    os.mkdir(second)
    os.symlink(bundle.rootfs, os.path.join(second, "rootfs"))
    with open(os.path.join(second, "config.json"), "w") as f:
        json.dump(cfg, f)
    p = capsule.run("run", "-b", second, bundle.id + "-2")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["0", "0", "100000", "65536"]
    assert capsule.run("state", bundle.id + "-2").returncode != 0


def test_user_namespace_mqueue_without_ipc_namespace(capsule, public_bundle):
    """mqueue can't be mounted for the host's ipc namespace from a new user namespace: the host's is bound
    instead, and when the host has none, the error says why."""
    bundle = public_bundle
    bundle.config["linux"]["namespaces"] = [n for n in bundle.config["linux"]["namespaces"] if n["type"] != "ipc"]
    map_user_namespace(bundle, 100000, 100000)
    bundle.set_args("sh", "-c", "grep ' /dev/mqueue ' /proc/self/mountinfo")
    p = capsule.run("run", "-b", bundle.path, bundle.id)
    if os.path.ismount("/dev/mqueue"):
        assert p.returncode == 0, p.stderr
        assert " - mqueue " in p.stdout
    else:
        assert p.returncode != 0
        assert "/dev/mqueue" in p.stderr and "Operation not permitted" in p.stderr, p.stderr
        assert not os.path.exists(os.path.join(capsule.root, bundle.id))


def test_rootless_default_config_readonly_root(rootless):
    """The --rootless spec as written (read-only root, masked and read-only paths, /sys bind) works."""
    if os.stat("/dev/null").st_mode & 0o777 != 0o666:
        # without mknod, a rootless container binds the host's node, as runc does
        pytest.skip("the host's /dev/null is not mode 0666, so an unprivileged user cannot write to it")
    rootless.config["root"]["readonly"] = True
    rootless.config["process"]["args"] = ["sh", "-c", "id -u; touch /x 2>&1; ls /sys/fs/cgroup >/dev/null && echo cg"]
    with open(os.path.join(rootless.bundle, "config.json"), "w") as f:
        json.dump(rootless.config, f)
    p = rootless.run("run", "-b", rootless.bundle, "rootless3")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "0"
    assert "Read-only file system" in lines[1]
    assert lines[2] == "cg"
