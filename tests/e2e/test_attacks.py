"""A hostile container against capsule (issue 7, section 1). The attacks on capsule's processes
and descriptors run small static attacker programs (tests/attackers/, built into build/attackers/)
inside the container; each shows that it reached the moment it attacks, and that the attack
fails. For the image-borne attacks (a /proc symlink into a volume, a deep tmpcopyup tree) the
image itself is the attacker.

The binary-overwrite tests run a copy of build/capsule from a temporary directory: if an attack
ever succeeds, it damages only that copy."""
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

from conftest import BUILD, CAPSULE, Capsule
from seccomp_agent import SECCOMP_USER_NOTIF_FLAG_CONTINUE, recv_listener_message, serve_notifications

ATTACKERS = os.path.join(BUILD, "attackers")
LIBC = ctypes.CDLL(None, use_errno=True)
OVERLAYFS_SUPER_MAGIC = 0x794C7630


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture
def copy(tmp_path):
    """A Capsule that runs a private copy of build/capsule; the copy must come out unchanged."""
    d = tmp_path / "bin"
    d.mkdir()
    binary = str(d / "capsule")
    shutil.copy2(CAPSULE, binary)
    before = sha256(binary)
    c = Capsule(str(tmp_path / "state"), binary)
    yield c
    c.cleanup()
    assert sha256(binary) == before, "the attacker modified capsule's binary"


def install(bundle, *names):
    for n in names:
        shutil.copy2(os.path.join(ATTACKERS, n), os.path.join(bundle.rootfs, "bin", n))


def report_lines(bundle):
    path = os.path.join(bundle.rootfs, "report")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return f.read().splitlines()


def wait_report(bundle, pred, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        lines = report_lines(bundle)
        if any(pred(l) for l in lines):
            return lines
        time.sleep(0.02)
    raise AssertionError(f"the attacker never reported what was expected: {report_lines(bundle)}")


def start_attacker(capsule, bundle, *args):
    bundle.set_args(*args)
    capsule.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
    wait_report(bundle, lambda l: l == "ready")


def attempted(lines):
    """The attacker's results for the rounds in which it acted while capsule's code still ran."""
    out = []
    for l in lines:
        if " failed after " in l:
            if int(l.split(" failed after ")[1].split()[0]) > 0:
                out.append(l)
        elif l.startswith(("open-exe", "open-write", "write ", "stole ", "FORGED", "OVERWRITTEN")):
            out.append(l)
    return out


class SlowAgent(threading.Thread):
    """A seccomp agent (linux.seccomp.listenerPath) that lets every execve through, after
    HOLD seconds. The exec child's window, from dropping capabilities to execve, is a few
    microseconds, which a real attacker wins by retrying; held in execve, the child sits in
    that window (still capsule's image, capabilities dropped) long enough for one try."""
    HOLD = 0.5

    def __init__(self, path):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.held = 0

    def answer(self, _notif_id, _pid, _nr):
        time.sleep(self.HOLD)
        self.held += 1
        return 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE

    def run(self):
        while True:
            conn, _ = self.sock.accept()
            with conn:
                _, fds = recv_listener_message(conn)
            for fd in fds:
                threading.Thread(target=serve_notifications, args=(fd, self.answer), daemon=True).start()


def hold_execve(config, tmp_path):
    path = str(tmp_path / "agent.sock")
    agent = SlowAgent(path)
    agent.start()
    config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": path,
                                  "syscalls": [{"names": ["execve"], "action": "SCMP_ACT_NOTIFY"}]}
    return agent


def statfs_type(path):
    """f_type of statfs(2) (os.statvfs does not give it)."""
    buf = ctypes.create_string_buffer(120)  # struct statfs: f_type is its first word
    if LIBC.statfs(path.encode(), buf) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), path)
    return int.from_bytes(buf.raw[:8], "little")


def exe_while_running(copy, bundle):
    """/proc/PID/exe of a running `capsule run`, once it has re-executed itself: (link, pid)."""
    bundle.set_args("sleep", "5")
    bundle.write()
    p = subprocess.Popen(copy.cmd("run", "-b", bundle.path, bundle.id), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    deadline = time.time() + 10
    exe = os.readlink(f"/proc/{p.pid}/exe")
    while time.time() < deadline and exe == copy.binary:
        time.sleep(0.02)
        exe = os.readlink(f"/proc/{p.pid}/exe")
    return exe, p


def test_runtime_runs_from_a_read_only_overlay(copy, bundle):
    """With its state root in place, capsule re-executes itself from its binary seen through an
    overlayfs mounted nowhere: no copy, and no way to write it, not even by a remount."""
    os.makedirs(copy.root)
    exe, p = exe_while_running(copy, bundle)
    try:
        assert exe == "/capsule"  # the overlay's root is the binary's directory
        assert statfs_type(f"/proc/{p.pid}/exe") == OVERLAYFS_SUPER_MAGIC
        with pytest.raises(OSError) as e:
            os.open(f"/proc/{p.pid}/exe", os.O_WRONLY)
        assert e.value.errno == errno.EROFS
        # mounted nowhere: its mount namespace does not list it
        fd = os.open(f"/proc/{p.pid}/exe", os.O_PATH)
        try:
            with open(f"/proc/self/fdinfo/{fd}") as f:
                mnt_id = next(l.split()[1] for l in f if l.startswith("mnt_id:"))
        finally:
            os.close(fd)
        with open(f"/proc/{p.pid}/mountinfo") as f:
            assert mnt_id not in [l.split()[0] for l in f]
        # host root's attempt, in a mount namespace of its own: bind the file somewhere, make that
        # mount read-write, write. A lower-only overlay has nowhere to write, whichever step stops it.
        target = os.path.join(os.path.dirname(copy.root), "target")
        open(target, "w").close()
        attack = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c",
             f"mount --bind /proc/{p.pid}/exe {target} || exit 10; "
             f"mount -o remount,bind,rw {target}; mount -o remount,rw {target}; "
             f"printf x >> {target} || exit 11; exit 0"], capture_output=True, text=True)
        assert attack.returncode in (10, 11), attack
        assert os.path.getsize(target) == 0
    finally:
        p.kill()
        p.wait()


def test_runtime_runs_from_a_sealed_memfd_without_a_state_root(copy, bundle):
    """The overlay's second layer is the state root: before the first container made it, capsule
    copies itself into a sealed memfd instead."""
    assert not os.path.exists(copy.root)
    exe, p = exe_while_running(copy, bundle)
    try:
        assert exe == "/memfd:capsule (deleted)"
        fd = os.open(f"/proc/{p.pid}/exe", os.O_RDONLY)
        try:
            seals = fcntl.fcntl(fd, 1034)  # F_GET_SEALS
        finally:
            os.close(fd)
        assert seals & 0xF == 0xF  # SEAL, SHRINK, GROW, WRITE
    finally:
        p.kill()
        p.wait()


def test_exec_child_exe_cannot_be_opened_or_overwritten(copy, bundle, tmp_path):
    install(bundle, "exe_overwrite")
    agent = hold_execve(bundle.config, tmp_path)
    start_attacker(copy, bundle, "/bin/exe_overwrite", "/report", copy.binary, "1", "30000")
    p = copy.run("exec", bundle.id, "true")
    assert p.returncode == 0, (p.stderr, report_lines(bundle))
    lines = wait_report(bundle, lambda l: l == "done")
    assert agent.held == 2  # init's execve, then the exec child's
    tried = attempted(lines)
    assert len(tried) == 1 and tried[0].startswith("open-exe") and "Permission denied" in tried[0], lines
    assert not any("OVERWRITTEN" in l for l in lines), lines


def test_create_init_in_a_joined_pid_namespace_is_not_reachable(copy, bundle, tmp_path):
    install(bundle, "exe_overwrite")
    start_attacker(copy, bundle, "/bin/exe_overwrite", "/report", copy.binary, "1", "30000")
    pid = copy.state(bundle.id)["pid"]
    # a second container in the attacker's pid namespace: its init runs capsule's code from
    # create until start execs the workload
    other = tmp_path / "other"
    other.mkdir()
    config = json.loads(json.dumps(bundle.config))
    config["root"]["path"] = bundle.rootfs
    config["process"]["args"] = ["true"]
    config["linux"]["cgroupsPath"] = f"capsule-test/{bundle.id}-b"
    config["linux"]["namespaces"] = [n if n["type"] != "pid" else {"type": "pid", "path": f"/proc/{pid}/ns/pid"}
                                     for n in config["linux"]["namespaces"]]
    agent = hold_execve(config, tmp_path)
    (other / "config.json").write_text(json.dumps(config))
    copy.run("create", "-b", str(other), bundle.id + "-b", check=True)
    lines = wait_report(bundle, lambda l: l.startswith("saw "))
    time.sleep(0.2)  # the attacker keeps trying while init waits for start
    copy.run("start", bundle.id + "-b", check=True)
    lines = wait_report(bundle, lambda l: l.startswith("open-exe") or l == "done")
    assert agent.held == 1  # init sat in execve, its capabilities dropped
    tried = [l for l in lines if l.startswith("open-exe")]
    assert len(tried) == 1 and "Permission denied" in tried[0], lines
    attempts = int(tried[0].split("after ")[1].split()[0])
    assert attempts > 1, lines  # it tried through the whole window, up to execve
    copy.run("delete", "--force", bundle.id + "-b")


def test_shebang_proc_self_exe_cannot_overwrite_capsule(copy, bundle):
    """The workload is a script whose interpreter is /proc/self/exe: capsule's exec child runs
    capsule's image again, now as a dumpable process in the container. Depending on the kernel,
    the sealed copy (an overlay mounted nowhere, or a memfd) cannot be executed from the
    container's mount namespace at all, or it runs and the attacker can open it but not write it."""
    install(bundle, "exe_overwrite")
    for name, interp in (("evil", "/proc/self/exe"), ("control", "/proc/1/exe")):
        path = os.path.join(bundle.rootfs, "bin", name)
        with open(path, "w") as f:
            f.write(f"#!{interp}\n")
        os.chmod(path, 0o755)
    start_attacker(copy, bundle, "/bin/exe_overwrite", "/report", "/proc/self/exe", "1", "30000")
    # the control: a #!/proc/PID/exe script does run in this container (/proc/1/exe is the
    # attacker's binary, which exits 2 on a bad command line)
    p = copy.run("exec", bundle.id, "/bin/control")
    assert p.returncode == 2, p.stderr
    # capsule, if it starts in the container, blocks on a full stderr pipe: the attacker then
    # gets all the time it wants while that process runs capsule's image
    r, w = os.pipe()
    fl = fcntl.fcntl(w, fcntl.F_GETFL)
    fcntl.fcntl(w, fcntl.F_SETFL, fl | os.O_NONBLOCK)
    try:
        while True:
            os.write(w, b"x" * 4096)
    except BlockingIOError:
        pass
    fcntl.fcntl(w, fcntl.F_SETFL, fl)
    p = subprocess.Popen(copy.cmd("exec", bundle.id, "/bin/evil"), stdout=subprocess.DEVNULL, stderr=w)
    os.close(w)
    drained = []
    try:
        deadline = time.time() + 20
        while time.time() < deadline and p.poll() is None and not attempted(report_lines(bundle)):
            time.sleep(0.02)
    finally:
        drain = threading.Thread(target=lambda: drained.extend(iter(lambda: os.read(r, 65536), b"")), daemon=True)
        drain.start()
        p.wait(timeout=30)
        drain.join(timeout=10)
        os.close(r)
    lines = report_lines(bundle)
    if not attempted(lines):
        # refused by the kernel: nothing in the container ever ran capsule's image
        assert p.returncode != 0 and b"exec `/bin/evil`: No such file or directory" in b"".join(drained)
        assert not any(l.startswith("saw ") for l in lines), lines
        return
    opened = [l for l in lines if l.startswith("open-exe")]
    assert opened[0].endswith(("ok: /capsule", "ok: /memfd:capsule (deleted)")), lines
    lines = wait_report(bundle, lambda l: l.startswith(("open-write", "write ", "OVERWRITTEN")))
    assert not any("OVERWRITTEN" in l for l in lines), lines
    # the overlay is read-only; the memfd's seals refuse writes
    refused = ("Read-only file system", "Operation not permitted")
    assert any(l.startswith(("open-write", "write ")) and l.endswith(refused) for l in lines), lines


def test_stolen_sync_socket_cannot_make_capsule_kill_a_host_process(copy, bundle, tmp_path):
    install(bundle, "sock_thief")
    agent = hold_execve(bundle.config, tmp_path)
    victim = subprocess.Popen(["sleep", "1000"])
    try:
        start_attacker(copy, bundle, "/bin/sock_thief", "/report", copy.binary, str(victim.pid), "1", "30000")
        pid_file = tmp_path / "exec.pid"
        p = copy.run("exec", "--pid-file", pid_file, bundle.id, "true")
        assert p.returncode == 0, p.stderr
        lines = wait_report(bundle, lambda l: l == "done")
        assert agent.held == 2
        tried = attempted(lines)
        assert len(tried) == 1 and tried[0].startswith("pidfd_getfd") and "Operation not permitted" in tried[0], lines
        assert victim.poll() is None, "capsule killed the host process"
        assert int(pid_file.read_text()) != victim.pid
    finally:
        victim.kill()
        victim.wait()


def leaked_dir_fd():
    """A directory fd of the host's / without O_CLOEXEC, as a careless caller leaks it."""
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    os.set_inheritable(fd, True)
    return fd


NO_CLOSE_RANGE = {"defaultAction": "SCMP_ACT_ALLOW",
                  "syscalls": [{"names": ["close_range"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]}


@pytest.mark.parametrize("where", ["container-seccomp", "runtime-seccomp"])
def test_leaked_fd_does_not_reach_the_container(copy, bundle, where):
    """The container's own filter denies close_range (the runtime must not rely on it after
    seccomp), or capsule itself runs where close_range fails (its /proc/self/fd fallback)."""
    install(bundle, "fd_scan")
    if where == "container-seccomp":
        bundle.config["linux"]["seccomp"] = NO_CLOSE_RANGE
    bundle.set_args("/bin/fd_scan")
    fd = leaked_dir_fd()
    try:
        wrap = [os.path.join(ATTACKERS, "no_close_range")] if where == "runtime-seccomp" else []
        p = subprocess.run(wrap + copy.cmd("run", "-b", bundle.path, bundle.id), pass_fds=(fd,),
                           capture_output=True, text=True, timeout=60)
    finally:
        os.close(fd)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["cwd /"], p.stdout  # fd_scan ran, and saw no fd above 2


def test_leaked_fd_does_not_reach_an_exec_process(copy, bundle):
    install(bundle, "fd_scan")
    bundle.config["linux"]["seccomp"] = NO_CLOSE_RANGE
    bundle.set_args("sleep", "1000")
    copy.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
    fd = leaked_dir_fd()
    try:
        p = copy.run("exec", bundle.id, "/bin/fd_scan", pass_fds=(fd,))
    finally:
        os.close(fd)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["cwd /"], p.stdout


def test_cwd_through_a_leaked_fd_is_refused(copy, bundle):
    install(bundle, "fd_scan")
    fd = leaked_dir_fd()
    try:
        bundle.config["process"]["cwd"] = f"/proc/self/fd/{fd}"
        bundle.set_args("/bin/fd_scan")
        p = copy.run("run", "-b", bundle.path, bundle.id, pass_fds=(fd,))
        assert p.returncode != 0 and "ESCAPED" not in p.stdout and "cwd" not in p.stdout, p.stdout
        assert f"process.cwd: `/proc/self/fd/{fd}` is outside the container's root" in p.stderr, p.stderr
        copy.run("delete", "--force", bundle.id)
        # the same through exec --cwd
        bundle.config["process"]["cwd"] = "/"
        bundle.set_args("sleep", "1000")
        copy.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
        p = copy.run("exec", "--cwd", f"/proc/self/fd/{fd}", bundle.id, "/bin/fd_scan", pass_fds=(fd,))
        assert p.returncode != 0 and "cwd" not in p.stdout, p.stdout
        assert f"`/proc/self/fd/{fd}` is outside the container's root" in p.stderr, p.stderr
    finally:
        os.close(fd)


def test_proc_symlink_into_a_volume_is_refused(capsule, bundle, tmp_path):
    """The image makes /proc a symlink to /data, and a volume is mounted at /data after proc:
    post-pivot writes through /proc would land in the volume's files."""
    proc = os.path.join(bundle.rootfs, "proc")
    os.rmdir(proc)
    os.symlink("data", proc)
    os.mkdir(os.path.join(bundle.rootfs, "data"))
    vol = tmp_path / "vol"
    (vol / "sys" / "kernel").mkdir(parents=True)
    fake = vol / "sys" / "kernel" / "shm_rmid_forced"
    fake.write_text("0\n")
    bundle.config["mounts"].append({"destination": "/data", "type": "bind", "source": str(vol),
                                    "options": ["rbind", "rw"]})
    bundle.config["linux"]["sysctl"] = {"kernel.shm_rmid_forced": "1"}
    bundle.set_args("true")
    p = capsule.run("run", "-b", bundle.path, bundle.id)
    assert p.returncode != 0
    assert ("linux.sysctl.kernel.shm_rmid_forced: `/proc/sys/kernel/shm_rmid_forced` is not on procfs"
            in p.stderr), p.stderr
    assert fake.read_text() == "0\n"
    assert os.listdir(capsule.root) == []


def make_tree(top, depth):
    d = top
    for _ in range(depth):
        d = os.path.join(d, "d")
    os.makedirs(d)
    with open(os.path.join(d, "leaf"), "w") as f:
        f.write("deep\n")


def test_tmpcopyup_of_a_200_level_tree(capsule, bundle):
    make_tree(os.path.join(bundle.rootfs, "deep"), 200)
    bundle.config["mounts"].append({"destination": "/deep", "type": "tmpfs", "source": "tmpfs",
                                    "options": ["tmpcopyup"]})
    leaf = "/deep" + "/d" * 200 + "/leaf"
    bundle.set_args("sh", "-c", f"cat {leaf}; stat -f -c %T /deep")
    p = capsule.run("run", "-b", bundle.path, bundle.id)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["deep", "tmpfs"]


def test_tmpcopyup_too_deep_fails_cleanly(capsule, bundle):
    make_tree(os.path.join(bundle.rootfs, "deep"), 300)
    bundle.config["mounts"].append({"destination": "/deep", "type": "tmpfs", "source": "tmpfs",
                                    "options": ["tmpcopyup"]})
    bundle.set_args("true")
    p = capsule.run("run", "-b", bundle.path, bundle.id)
    assert p.returncode != 0
    assert "tmpcopyup: `d` is nested deeper than 256 directories" in p.stderr, p.stderr
    assert os.listdir(capsule.root) == []


def test_default_spec_masks_interrupts_and_powercap(capsule, bundle):
    masked = bundle.config["linux"]["maskedPaths"]
    assert "/proc/interrupts" in masked and "/sys/devices/virtual/powercap" in masked
    with open("/proc/interrupts") as f:
        assert f.read()  # the host's is not empty
    assert run_out(capsule, bundle, "sh", "-c", "wc -c < /proc/interrupts") == "0\n"


def test_default_spec_masks_powercap(capsule, bundle):
    host = "/sys/devices/virtual/powercap"
    if not os.path.isdir(host) or not os.listdir(host):
        pytest.skip("the host has no powercap devices")
    assert run_out(capsule, bundle, "ls", "-A", host) == ""


def run_out(capsule, bundle, *args):
    bundle.set_args(*args)
    p = capsule.run("run", "-b", bundle.path, bundle.id)
    assert p.returncode == 0, p.stderr
    return p.stdout
