"""VM containers end to end: capsule-vm boots the guest kernel with capsule-guest, the agent, and the
container runs in it. Needs hardware KVM (a PVM host refuses, see test_sandbox_host.py), so on this
host tests/testbed/test_sandbox.py runs the module inside the testbed. Each test is one boot (10-90 s
in nested TCG), so the checks are batched into few tests; the test_jail_ ones are the VMM's confinement."""
import copy
import ctypes
import errno
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time

import pytest

from conftest import BUILD, BUSYBOX, Bundle, Capsule, procs_cgroup_dir
from test_terminal import ConsoleSocket, read_until

PVM = os.path.isdir("/sys/module/kvm_pvm") and not any(
    os.path.isdir(f"/sys/module/{m}") for m in ("kvm_intel", "kvm_amd"))
KERNEL = os.environ.get("CAPSULE_KERNEL", os.path.join(BUILD, "capsule-vmlinux"))
INITRD = os.path.join(BUILD, "capsule-guest.initrd")
# capsule waits this long for the agent ($CAPSULE_VM_BOOT_TIMEOUT's default); a command that boots
# gets a little more.
BOOT = 360

pytestmark = [
    pytest.mark.skipif(PVM or not os.access("/dev/kvm", os.R_OK | os.W_OK),
                       reason="a VM container needs hardware KVM: tests/testbed/test_sandbox.py runs this in the testbed"),
    pytest.mark.skipif(not os.path.isfile(KERNEL), reason=f"no guest kernel at {KERNEL} ($CAPSULE_KERNEL)"),
    pytest.mark.skipif(not os.path.isfile(INITRD), reason="build/capsule-guest.initrd is missing: run make"),
]


@pytest.fixture
def vm(tmp_path):
    c = Capsule(str(tmp_path / "state"), os.path.join(BUILD, "capsule-vm"))
    yield c
    c.cleanup()
    leftover = os.listdir(c.root) if os.path.isdir(c.root) else []
    assert leftover == [], f"containers left behind: {leftover}"


def install_runtime(d):
    """capsule-vm as installed, in directory d: a capsule of its own, started as capsule-vm, with the
    kernel and the agent's initrd next to it (for runtimes started by clients that do not pass
    $CAPSULE_KERNEL on). Returns the capsule-vm path."""
    os.mkdir(d)
    shutil.copy(os.path.join(BUILD, "capsule"), os.path.join(d, "capsule"))
    os.symlink("capsule", os.path.join(d, "capsule-vm"))
    os.symlink(KERNEL, os.path.join(d, "capsule-vmlinux"))
    os.symlink(INITRD, os.path.join(d, "capsule-guest.initrd"))
    return os.path.join(d, "capsule-vm")


def become_subreaper():
    """As podman's conmon: the sandbox process outlives `capsule create` and is reparented to us."""
    PR_SET_CHILD_SUBREAPER = 36
    assert ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def guest_release():
    with open(KERNEL, "rb") as f:
        m = re.search(rb"Linux version (\S+)", f.read())
    assert m, f"{KERNEL} has no version string"
    return m.group(1).decode()


def wait_status(vm, cid, want, timeout=60):
    deadline = time.time() + timeout
    while vm.status(cid) != want and time.time() < deadline:
        time.sleep(0.2)
    assert vm.status(cid) == want


def processes_naming(text):
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def assert_nothing_left(vm, bundle):
    assert not os.path.exists(os.path.join(vm.root, bundle.id))
    assert not os.path.exists(procs_cgroup_dir(f"capsule-test/{bundle.id}"))
    assert processes_naming(bundle.rootfs) == [], "virtiofsd (or the VMM) still serves the rootfs"


def test_run_output_exit_status_guest_kernel_size_rootfs_writes_and_host_binds(vm, bundle, tmp_path):
    bundle.config["annotations"] = {"capsule.vm.memory": "256M", "capsule.vm.cpus": "1"}
    # As podman's /etc/hosts and volumes: host files and directories outside the rootfs.
    (tmp_path / "hosts").write_text("10.1.2.3 from-the-host\n")
    (tmp_path / "vol").mkdir()
    (tmp_path / "vol" / "in.txt").write_text("in-volume\n")
    bundle.config["mounts"] += [
        {"destination": "/etc/hosts", "type": "bind", "source": str(tmp_path / "hosts"), "options": ["rbind", "ro"]},
        {"destination": "/vol", "type": "bind", "source": str(tmp_path / "vol"), "options": ["rbind", "rw"]}]
    bundle.set_args("sh", "-c", "echo hello; uname -r; grep MemTotal /proc/meminfo; nproc; "
                    "echo from-guest >/written.txt; echo to-stderr >&2; "
                    "cat /etc/hosts /vol/in.txt; echo out-of-volume >/vol/out.txt; exit 7")
    p = vm.run("run", "--bundle", bundle.path, bundle.id, timeout=BOOT)
    assert p.returncode == 7, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "hello"
    assert lines[1] == guest_release()
    mem_kib = int(lines[2].split()[1])
    assert 200 * 1024 < mem_kib <= 256 * 1024, lines[2]  # the guest's RAM, not the host's
    assert lines[3] == "1"
    assert lines[4:] == ["10.1.2.3 from-the-host", "in-volume"]
    assert p.stderr == "to-stderr\n"
    with open(os.path.join(bundle.rootfs, "written.txt")) as f:
        assert f.read() == "from-guest\n"
    assert (tmp_path / "vol" / "out.txt").read_text() == "out-of-volume\n"
    assert_nothing_left(vm, bundle)


def read_tick(bundle):
    try:
        with open(os.path.join(bundle.rootfs, "tick")) as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""


def wait_tick_moves(bundle, timeout=60):
    """The container's loop writes a new count to /tick (the bundle's rootfs) every 0.2 s."""
    first = read_tick(bundle)
    deadline = time.time() + timeout
    while read_tick(bundle) in (first, "") and time.time() < deadline:
        time.sleep(0.2)
    assert read_tick(bundle) not in (first, ""), f"/tick stayed at {first!r}"


def test_life_create_start_pause_ps_update_exec_kill_delete(vm, bundle, tmp_path):
    become_subreaper()
    # Without a pid namespace init is not pid 1 in the guest, so SIGTERM's default action kills it.
    bundle.config["linux"]["namespaces"] = [ns for ns in bundle.config["linux"]["namespaces"] if ns["type"] != "pid"]
    bundle.set_args("sh", "-c", "i=0; while :; do i=$((i+1)); echo $i >/tick; sleep 0.2; done")
    shutil.copy2(os.path.join(BUILD, "attackers", "vsock_agent"), os.path.join(bundle.rootfs, "bin", "vsock_agent"))
    pidfile = tmp_path / "pid"
    vm.run("create", "--bundle", bundle.path, "--pid-file", pidfile, bundle.id, check=True, timeout=BOOT)
    st = vm.state(bundle.id)
    assert st["status"] == "created"
    pid = st["pid"]
    assert pid > 0 and int(pidfile.read_text()) == pid
    # The sandbox process is the VMM, inside the container's cgroup.
    cgdir = procs_cgroup_dir(f"capsule-test/{bundle.id}")
    with open(os.path.join(cgdir, "cgroup.procs")) as f:
        assert str(pid) in f.read().split()
    assert "console.log" in os.listdir(os.path.join(vm.root, bundle.id))

    vm.run("start", bundle.id, check=True, timeout=120)
    assert vm.status(bundle.id) == "running"
    # The phases bench/vm_container.py reads: every step once, the host's in order, the guest's
    # boot (its agent's start) before its agent listened.
    with open(os.path.join(vm.root, bundle.id, "phases")) as f:
        lines = [line.split() for line in f]
    phases = dict(lines)
    assert len(lines) == len(phases) == 8, lines
    host = [int(phases[k]) for k in ("create", "vmm", "guest", "agent", "created", "started")]
    assert host == sorted(host) and host[0] > 0, phases
    assert 0 < int(phases["guest_boot_us"]) <= int(phases["guest_ready_us"]), phases
    again = vm.run("start", bundle.id, timeout=120)
    assert again.returncode != 0 and "not created" in again.stderr
    refused = vm.run("delete", bundle.id, timeout=120)
    assert refused.returncode != 0 and "not stopped" in refused.stderr
    listed = vm.run("list", "-q", check=True, timeout=120).stdout.split()
    assert listed == [bundle.id]
    wait_tick_moves(bundle)

    # ps: the guest's pids of the container's processes (sh and its sleep).
    pids = json.loads(vm.run("ps", "--format", "json", bundle.id, check=True, timeout=120).stdout)
    assert len(pids) >= 1 and all(isinstance(p, int) and p > 0 for p in pids), pids
    table = vm.run("ps", bundle.id, check=True, timeout=120).stdout.splitlines()
    # The loop's sleeps come and go between two calls; its shell stays.
    assert table[0] == "PID" and set(map(int, table[1:])) & set(pids), (table, pids)

    # pause freezes the container in the guest; state, list and ps still answer meanwhile.
    vm.run("pause", bundle.id, check=True, timeout=120)
    assert vm.status(bundle.id) == "paused"
    assert " paused " in vm.run("list", check=True, timeout=120).stdout
    time.sleep(1)
    frozen = read_tick(bundle)
    time.sleep(2)
    assert read_tick(bundle) == frozen, "the container ran while paused"
    assert json.loads(vm.run("ps", "-f", "json", bundle.id, check=True, timeout=120).stdout)
    refused = vm.run("pause", bundle.id, timeout=120)
    assert refused.returncode == 1 and "is paused, not running" in refused.stderr
    vm.run("resume", bundle.id, check=True, timeout=120)
    assert vm.status(bundle.id) == "running"
    wait_tick_moves(bundle)

    # update: the host's cgroup (the whole VM) and the container's cgroup in the guest.
    # On the host, the limit leaves room for the VMM's own threads (sandbox_config.c).
    vm.run("update", "--pids-limit", "50", bundle.id, check=True, timeout=120)
    with open(os.path.join(cgdir, "pids.max")) as f:
        assert f.read().strip() == str(50 + 32 + os.cpu_count())
    p = vm.run("exec", bundle.id, "cat", "/sys/fs/cgroup/pids.max", timeout=120)
    assert (p.returncode, p.stdout) == (0, "50\n"), p.stderr

    p = vm.run("exec", bundle.id, "sh", "-c", "echo exec-out; echo exec-err >&2; exit 5", timeout=120)
    assert (p.returncode, p.stdout, p.stderr) == (5, "exec-out\n", "exec-err\n")
    p = vm.run("exec", "-t", bundle.id, "sh", "-c", "tty; exit 4", timeout=120)
    assert p.returncode == 4 and p.stdout.startswith("/dev/pts/"), (p.returncode, p.stdout, p.stderr)
    # --env, --cwd and --user reach the guest's process: the runtime's own exec applies them there.
    p = vm.run("exec", "--env", "GREETING=from-host", "--cwd", "/tmp", "--user", "1000:1001", bundle.id,
               "sh", "-c", 'echo "$GREETING $(pwd) $(id -u):$(id -g)"', timeout=120)
    assert (p.returncode, p.stdout) == (0, "from-host /tmp 1000:1001\n"), p.stderr

    # Attack: the container reaches for the agent's vsock port and asks for an exec; the agent
    # takes requests from the host's CID only, so no try gets an answer and nothing runs.
    p = vm.run("exec", bundle.id, "/bin/vsock_agent", timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["cid=1", "cid=2", "cid=3"], lines
    # In the testbed cid=1 and cid=3 (the guest itself) connect and the agent closes them
    # unanswered; cid=2 (the host) has no listener for the guest on that port.
    assert all(re.match(r"cid=\d (connect: |closed unanswered)", line) for line in lines), lines
    assert not os.path.exists(os.path.join(bundle.rootfs, "pwned"))
    p = vm.run("exec", bundle.id, "ls", "/pwned", timeout=120)
    assert p.returncode != 0

    # kill while paused: cgroup v2 lets a signal whose default action is fatal end a frozen task,
    # as for a plain container on the host.
    vm.run("pause", bundle.id, check=True, timeout=120)
    assert vm.status(bundle.id) == "paused"
    vm.run("kill", bundle.id, "TERM", check=True, timeout=120)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 143
    wait_status(vm, bundle.id, "stopped")
    vm.run("delete", bundle.id, check=True, timeout=120)
    gone = vm.run("state", bundle.id)
    assert gone.returncode != 0 and "does not exist" in gone.stderr
    assert_nothing_left(vm, bundle)


def test_life_hooks_console_exec_and_delete_force_of_a_paused_one(vm, bundle, tmp_path):
    """The hooks the host runs, exec -t with a console socket (podman exec -t), and delete --force
    of a paused container."""
    become_subreaper()
    bundle.config["hooks"] = {name: [{"path": "/bin/sh", "args": ["sh", "-c", f"cat >{tmp_path}/{name}.json"]}]
                              for name in ("prestart", "createRuntime", "poststart", "poststop")}
    bundle.set_args("sleep", "1000")
    vm.run("create", "--bundle", bundle.path, bundle.id, check=True, timeout=BOOT)
    pid = vm.state(bundle.id)["pid"]
    for name in ("prestart", "createRuntime"):
        st = json.loads((tmp_path / f"{name}.json").read_text())
        assert (st["id"], st["pid"]) == (bundle.id, pid), (name, st)
    assert not (tmp_path / "poststart.json").exists()
    vm.run("start", bundle.id, check=True, timeout=120)
    assert json.loads((tmp_path / "poststart.json").read_text())["status"] == "running"

    console = ConsoleSocket(tmp_path / "console.sock")
    pidfile = tmp_path / "exec.pid"
    vm.run("exec", "-t", "-d", "--console-socket", console.path, "--pid-file", pidfile, bundle.id,
           "sh", "-c", "tty; read line; echo got:$line; exit 6", check=True, timeout=120)
    master, _ = console.receive_master()
    os.write(master, b"typed-in\n")
    out = read_until(master, "got:typed-in", timeout=60)
    assert "/dev/pts/" in out, out
    _, status = os.waitpid(int(pidfile.read_text()), 0)
    assert os.waitstatus_to_exitcode(status) == 6
    os.close(master)
    console.close()

    vm.run("pause", bundle.id, check=True, timeout=120)
    assert vm.status(bundle.id) == "paused"
    refused = vm.run("delete", bundle.id, timeout=120)
    assert refused.returncode == 1 and "not stopped: paused" in refused.stderr
    vm.run("delete", "--force", bundle.id, check=True, timeout=120)
    assert json.loads((tmp_path / "poststop.json").read_text())["id"] == bundle.id
    assert_nothing_left(vm, bundle)


def test_life_kill_all(vm, bundle):
    become_subreaper()
    bundle.set_args("sleep", "1000")
    vm.run("create", "--bundle", bundle.path, bundle.id, check=True, timeout=BOOT)
    pid = vm.state(bundle.id)["pid"]
    vm.run("start", bundle.id, check=True, timeout=120)
    vm.run("exec", "-d", bundle.id, "sleep", "999", check=True, timeout=120)
    assert len(json.loads(vm.run("ps", "-f", "json", bundle.id, check=True, timeout=120).stdout)) == 2
    vm.run("kill", "--all", bundle.id, "KILL", check=True, timeout=120)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 137
    wait_status(vm, bundle.id, "stopped")
    p = vm.run("ps", bundle.id, timeout=120)
    assert p.returncode == 1 and "is not running" in p.stderr
    assert vm.run("kill", "--all", bundle.id, "KILL", timeout=120).returncode == 0  # as runc: nothing left
    vm.run("delete", bundle.id, check=True, timeout=120)
    assert_nothing_left(vm, bundle)


def make_marked_initrd(path, marker):
    """An agent initrd that says marker on the guest's console before it starts the agent: /init
    is a busybox script that execs capsule-guest (pid 1 still)."""
    work = tempfile.mkdtemp()
    try:
        for d in ("bin", "dev", "newroot"):
            os.mkdir(os.path.join(work, d))
        shutil.copy(BUSYBOX, os.path.join(work, "bin", "busybox"))
        shutil.copy(os.path.join(BUILD, "capsule-guest"), os.path.join(work, "capsule-guest"))
        with open(os.path.join(work, "init"), "w") as f:
            f.write(f"#!/bin/busybox sh\n/bin/busybox echo {marker} >/dev/console\nexec /capsule-guest\n")
        os.chmod(os.path.join(work, "init"), 0o755)
        os.mknod(os.path.join(work, "dev", "console"), 0o600 | stat.S_IFCHR, os.makedev(5, 1))
        names = subprocess.run(["find", ".", "-mindepth", "1"], cwd=work, capture_output=True, text=True, check=True).stdout
        with open(path, "wb") as out:
            subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"], cwd=work, input=names.encode(), stdout=out,
                           check=True)
    finally:
        shutil.rmtree(work)


def test_life_initrd_annotation_pause_created_memory_floor_and_console_sizes(vm, bundle, tmp_path):
    """One boot for four small things a user sees: the initrd capsule.vm.initrd names is the one
    the VM boots; a created container pauses (start refused until resume); update refuses a
    memory limit below the VM's RAM plus the VMM's share and changes nothing; process.consoleSize
    is the terminal's size from the start, for the init (create) and for exec -t, with and
    without a console socket."""
    become_subreaper()
    c = Capsule(vm.root, install_runtime(str(tmp_path / "bin")))
    marker = "capsule-test-marked-initrd"
    make_marked_initrd(str(tmp_path / "bin" / "marked.initrd"), marker)
    bundle.config["annotations"] = {"capsule.vm.initrd": "marked.initrd", "capsule.vm.memory": "256M"}
    bundle.config["process"]["terminal"] = True
    bundle.config["process"]["consoleSize"] = {"height": 33, "width": 77}
    bundle.set_args("sh", "-c", "echo size $(stty size); exec sleep 1000")
    console = ConsoleSocket(tmp_path / "console.sock")
    c.run("create", "--bundle", bundle.path, "--console-socket", console.path, bundle.id, check=True, timeout=BOOT)
    master, _ = console.receive_master()
    pid = c.state(bundle.id)["pid"]
    with open(os.path.join(vm.root, bundle.id, "console.log")) as f:
        assert marker in f.read(), "the VM did not boot the annotation's initrd"

    c.run("pause", bundle.id, check=True, timeout=120)
    assert c.status(bundle.id) == "paused"
    p = c.run("start", bundle.id, timeout=120)
    assert p.returncode == 1 and p.stderr == f'capsule: cannot start container "{bundle.id}": it is paused, not created\n'
    c.run("resume", bundle.id, check=True, timeout=120)
    assert c.status(bundle.id) == "created"
    c.run("start", bundle.id, check=True, timeout=120)
    assert "size 33 77" in read_until(master, "size 33 77", timeout=60)

    # 256M of guest RAM and 32M for the VMM: 288M at least.
    cgdir = procs_cgroup_dir(f"capsule-test/{bundle.id}")
    before = cgroup_value(bundle, "memory.max")
    p = c.run("update", "--memory", "200M", bundle.id, timeout=120)
    assert p.returncode == 1 and p.stderr == (
        f'capsule: update container "{bundle.id}": linux.resources.memory.limit (--memory): {200 << 20} bytes is below '
        "the VM's minimum of 288M (256M of guest RAM, 32M for the VMM)\n"), p.stderr
    assert cgroup_value(bundle, "memory.max") == before
    p = c.run("exec", bundle.id, "cat", "/sys/fs/cgroup/memory.max", timeout=120)
    assert (p.returncode, p.stdout) == (0, "max\n"), p.stderr
    c.run("update", "--memory", "288M", bundle.id, check=True, timeout=120)
    with open(os.path.join(cgdir, "memory.max")) as f:
        assert int(f.read()) == 288 << 20
    p = c.run("exec", bundle.id, "cat", "/sys/fs/cgroup/memory.max", timeout=120)
    assert (p.returncode, p.stdout) == (0, f"{288 << 20}\n"), p.stderr

    # exec's consoleSize: through a console socket (podman exec -t), and relayed by exec -t itself
    # (its stdin no terminal, so no size of its own to send).
    proc = dict(bundle.config["process"], args=["sh", "-c", "echo size $(stty size)"], consoleSize={"height": 21, "width": 55})
    (tmp_path / "process.json").write_text(json.dumps(proc))
    pidfile = tmp_path / "exec.pid"
    c.run("exec", "-d", "--console-socket", console.path, "--pid-file", pidfile, "-p", tmp_path / "process.json", bundle.id,
          check=True, timeout=120)
    exec_master, _ = console.receive_master()
    assert "size 21 55" in read_until(exec_master, "size 21 55", timeout=60)
    _, status = os.waitpid(int(pidfile.read_text()), 0)
    assert os.waitstatus_to_exitcode(status) == 0
    os.close(exec_master)
    p = c.run("exec", "-t", "-p", tmp_path / "process.json", bundle.id, stdin=subprocess.DEVNULL, timeout=120)
    assert p.returncode == 0 and "size 21 55" in p.stdout, (p.returncode, p.stdout, p.stderr)

    c.run("kill", bundle.id, "KILL", check=True, timeout=120)
    os.waitpid(pid, 0)
    os.close(master)
    console.close()
    wait_status(c, bundle.id, "stopped")
    c.run("delete", bundle.id, check=True, timeout=120)
    assert_nothing_left(vm, bundle)


def test_run_with_a_terminal_starts_at_the_console_size(vm, bundle):
    """`run` in the foreground with process.terminal: capsule is the console and, its stdin no
    terminal, has no size of its own, so the guest's pty keeps process.consoleSize."""
    bundle.config["process"]["terminal"] = True
    bundle.config["process"]["consoleSize"] = {"height": 25, "width": 99}
    bundle.set_args("sh", "-c", "echo size $(stty size)")
    p = vm.run("run", "--bundle", bundle.path, bundle.id, stdin=subprocess.DEVNULL, timeout=BOOT)
    assert p.returncode == 0 and "size 25 99" in p.stdout, (p.returncode, p.stdout, p.stderr)
    assert_nothing_left(vm, bundle)


def test_delete_force_after_the_vmm_was_killed(vm, bundle):
    become_subreaper()
    bundle.set_args("sleep", "1000")
    vm.run("create", "--bundle", bundle.path, bundle.id, check=True, timeout=BOOT)
    pid = vm.state(bundle.id)["pid"]
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert vm.status(bundle.id) == "stopped"
    vm.run("delete", "--force", bundle.id, check=True, timeout=120)
    assert_nothing_left(vm, bundle)


def phases_of(vm, cid):
    """The steps the container's create and start have reached (the sandbox's phases file)."""
    try:
        with open(os.path.join(vm.root, cid, "phases")) as f:
            return dict(line.split() for line in f if len(line.split()) == 2)
    except FileNotFoundError:
        return {}


def poll_until(what, cond, timeout=BOOT):
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, f"{what}: never came"
        time.sleep(0.002)


def live_processes():
    """(pid, argv, cgroup lines) of each process that is not a zombie."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in "ZX":
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().decode(errors="replace").split("\0")
            with open(f"/proc/{pid}/cgroup") as f:
                cgroups = f.read().splitlines()
        except (OSError, IndexError):
            continue  # gone meanwhile
        yield pid, args, cgroups


def crash_leftovers(vm, bundle, cid, netns=None):
    """What VM container cid left: its state directory, its cgroup, a live process that names it
    (the VMM is a fork of create) or its rootfs (virtiofsd) or sits in its cgroup, a mount of its
    bundle or state directory, a socket bound in that directory, and in netns the VM's tap and
    the ingress qdisc on eth0."""
    left = []
    state = os.path.join(vm.root, cid)
    if os.path.lexists(state):
        left.append(f"state dir {os.listdir(state)}")
    if os.path.exists(procs_cgroup_dir(f"capsule-test/{cid}")):
        left.append("cgroup")
    left += [f"process {pid}: {' '.join(args).strip()}" for pid, args, cgroups in live_processes()
             if cid in args or any(bundle.rootfs in a for a in args)
             or any(c.endswith(f"/capsule-test/{cid}") for c in cgroups)]
    with open("/proc/self/mountinfo") as f:
        left += [f"mount {line.split()[4]}" for line in f if bundle.path in line or state in line]
    with open("/proc/net/unix") as f:
        left += [f"socket {line.split()[-1]}" for line in f if state + "/" in line]
    if netns:
        if "capsule-tap0" in sh("ip", "-n", netns, "link", "show"):
            left.append(f"capsule-tap0 in {netns}")
        if "ingress" in sh("tc", "-n", netns, "qdisc", "show", "dev", "eth0"):
            left.append(f"the ingress qdisc of eth0 in {netns}")
    return left


def vmm_gone_on_its_own(cid, what):
    """A create that did not finish leaves no VMM running (a fork of create: it names cid)."""
    poll_until(f"{what}: the VMM's end", lambda: not any(cid in args for _, args, _ in live_processes()), timeout=30)


@pytest.fixture
def crash_netns():
    """A network namespace as CNI leaves one: eth0, one end of a veth pair, with an address."""
    tag = os.getpid() % 100000
    ns, peer = f"capcrash{tag}", f"capcrashp{tag}"
    for name in (ns, peer):
        sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "veth0", "netns", peer)
        sh("ip", "-n", ns, "addr", "add", "10.79.0.2/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", peer, "link", "set", "veth0", "up")
        yield ns
    finally:
        for name in (ns, peer):
            sh("ip", "netns", "del", name)


def test_crash_create_killed_at_each_step_leaves_nothing_after_delete(vm, bundle, crash_netns, tmp_path):
    """SIGKILL `capsule-vm create` right after its state directory appeared, while the VM boots
    (its vCPUs started, its agent not answered yet) and after the agent created the container
    while create runs its createRuntime hook; a network namespace in some. Each time state
    answers at once, the VMM dies on its own (create did not finish), and delete (--force when
    state had nothing to go by) leaves nothing."""
    bundle.set_args("sleep", "1000")
    own_ns = [ns for ns in bundle.config["linux"]["namespaces"] if ns["type"] != "network"]
    steps = [("dir", None), ("boot", crash_netns), ("hook", crash_netns), ("boot", None)]
    for i, (step, netns) in enumerate(steps):
        cid = f"{bundle.id}-c{i}"
        what = f"create killed at {step}" + (" in a netns" if netns else "")
        bundle.config["linux"]["cgroupsPath"] = f"capsule-test/{cid}"
        bundle.config["linux"]["namespaces"] = own_ns + (
            [{"type": "network", "path": f"/run/netns/{netns}"}] if netns else [{"type": "network"}])
        hook_pid = tmp_path / f"hook{i}.pid"
        bundle.config.pop("hooks", None)
        if step == "hook":
            bundle.config["hooks"] = {"createRuntime": [{"path": "/bin/sh", "args": [
                "sh", "-c", f"echo $$ >{hook_pid}.new && mv {hook_pid}.new {hook_pid} && exec sleep 600"]}]}
        bundle.write()
        create = subprocess.Popen(vm.cmd("create", "--bundle", bundle.path, cid),
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if step == "dir":
                poll_until(what, lambda: os.path.isdir(os.path.join(vm.root, cid)))
            elif step == "boot":
                poll_until(what, lambda: "guest" in phases_of(vm, cid))
            else:
                poll_until(what, hook_pid.exists)
            assert create.poll() is None, f"{what}: create ended ({create.returncode}) before the kill"
        finally:
            create.kill()
            create.wait()
        # The kill landed where it was meant to.
        reached = phases_of(vm, cid)
        if step == "dir":
            assert "guest" not in reached, f"{what}: the VM started before the kill: {reached}"
        elif step == "boot":
            assert "agent" not in reached, f"{what}: the agent answered before the kill: {reached}"
        else:
            assert "created" in reached, reached
            hook = hook_pid.read_text().strip()
            poll_until(f"{what}: the hook's end (it dies with its runtime)",
                       lambda: all(pid != hook for pid, _, _ in live_processes()), timeout=30)
        p = vm.run("state", cid, timeout=30)
        if p.returncode == 0:
            assert json.loads(p.stdout)["status"] == "stopped", f"{what}: {p.stdout}"
        else:
            assert cid in p.stderr and p.stderr.count("\n") == 1, f"{what}: {p.stderr}"
        vmm_gone_on_its_own(cid, what)
        delete = vm.run("delete", *([] if p.returncode == 0 else ["--force"]), cid, timeout=120)
        assert delete.returncode == 0, f"{what}: {delete.stderr}"
        assert crash_leftovers(vm, bundle, cid, netns) == [], what


def test_crash_run_killed_leaves_its_vm_to_state_list_and_delete(vm, bundle, tmp_path):
    """SIGKILL the foreground `capsule-vm run` once the container runs: as runc's, the container
    stays; state and list find it, and delete --force removes it and all of the VM."""
    bundle.set_args("sleep", "1000")
    with open(tmp_path / "run.out", "w") as out:
        run = subprocess.Popen(vm.cmd("run", "--bundle", bundle.path, bundle.id),
                               stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        poll_until("run's start", lambda: "started" in phases_of(vm, bundle.id))
        assert run.poll() is None, f"run ended ({run.returncode}) before the kill"
    finally:
        run.kill()
        run.wait()
    st = vm.state(bundle.id)
    assert st["status"] == "running"
    assert vm.run("list", "-q", check=True).stdout.split() == [bundle.id]
    assert any(pid == str(st["pid"]) for pid, _, _ in live_processes()), "the VMM is gone"
    vm.run("delete", "--force", bundle.id, check=True, timeout=120)
    assert crash_leftovers(vm, bundle, bundle.id) == []


def test_crash_exec_killed_its_process_goes_the_container_stays(vm, bundle, tmp_path):
    """SIGKILL `capsule-vm exec` (piped, then -t) while its process runs in the guest: the
    container runs on and state answers; the exec'd process, whose status nobody can collect
    any more, is killed by the agent (unlike runc, where it runs on: README)."""
    bundle.set_args("sleep", "1000")
    vm.run("run", "-d", "--bundle", bundle.path, bundle.id, check=True, timeout=BOOT)

    def ps():
        return json.loads(vm.run("ps", "--format", "json", bundle.id, check=True, timeout=120).stdout)

    for flags in ([], ["-t"]):
        what = f"exec {' '.join(flags)} killed"
        out = tmp_path / f"exec{len(flags)}.out"
        with open(out, "w") as f:
            ex = subprocess.Popen(vm.cmd("exec", *flags, bundle.id, "sh", "-c", "echo started; exec sleep 777"),
                                  stdin=subprocess.PIPE, stdout=f, stderr=f)
        try:
            poll_until(f"{what}: its output", lambda: "started" in out.read_text(), timeout=120)
            assert len(ps()) == 2, what
        finally:
            ex.kill()
            ex.wait()
            ex.stdin.close()
        assert vm.status(bundle.id) == "running", what
        poll_until(f"{what}: the end of its process", lambda: len(ps()) == 1, timeout=30)
    vm.run("delete", "--force", bundle.id, check=True, timeout=120)
    assert crash_leftovers(vm, bundle, bundle.id) == []


def test_guest_oom_kills_the_container_and_the_vm_reports_it(vm, bundle):
    """The guest's own OOM killer (a 128M VM, 112M touched: less than its RAM, so that mmap passes
    the overcommit heuristic, more than is free): the container's init dies by SIGKILL, the guest
    powers off, run returns 137 and nothing is left."""
    shutil.copy(os.path.join(BUILD, "guest", "memhog"), os.path.join(bundle.rootfs, "memhog"))
    bundle.config["annotations"] = {"capsule.vm.memory": "128M"}
    bundle.set_args("/memhog", "112", "0")
    p = vm.run("run", "--bundle", bundle.path, bundle.id, timeout=BOOT)
    assert p.returncode == 137, (p.returncode, p.stdout, p.stderr)
    assert "phase=touched" not in p.stdout
    assert_nothing_left(vm, bundle)


def test_guest_panic_stops_the_container_with_the_vms_status(vm, bundle):
    """A container that may write /proc/sys (a hostile config.json can ask for that) makes the guest
    kernel panic on OOM, then runs out of memory: the guest panics, pvpanic tells the VMM, run
    exits 81 (the VMM's status for a panic) and nothing is left."""
    shutil.copy(os.path.join(BUILD, "guest", "memhog"), os.path.join(bundle.rootfs, "memhog"))
    bundle.config["annotations"] = {"capsule.vm.memory": "128M"}
    bundle.config["linux"]["readonlyPaths"] = []
    bundle.set_args("sh", "-c", "echo 1 >/proc/sys/vm/panic_on_oom && echo armed && /memhog 112 0")
    p = vm.run("run", "--bundle", bundle.path, bundle.id, timeout=BOOT)
    assert p.returncode == 81, (p.returncode, p.stdout, p.stderr)
    assert p.stdout.startswith("armed\n") and "phase=touched" not in p.stdout, p.stdout
    assert_nothing_left(vm, bundle)


def test_guest_reset_by_the_container_stops_it_with_the_vms_status(vm, bundle):
    """A container that may write /proc/sysrq-trigger resets the guest at once (sysrq b: no
    shutdown, no power-off): the VMM sees the reset, run exits 80 (its status for a reset) and
    nothing is left."""
    bundle.config["linux"]["readonlyPaths"] = []
    bundle.set_args("sh", "-c", "echo b >/proc/sysrq-trigger; sleep 60; echo survived")
    p = vm.run("run", "--bundle", bundle.path, bundle.id, timeout=BOOT)
    assert p.returncode == 80, (p.returncode, p.stdout, p.stderr)
    assert "survived" not in p.stdout, p.stdout
    assert_nothing_left(vm, bundle)

@pytest.mark.skipif(os.environ.get("TESTBED") != "qemu", reason="on hardware KVM the guest may answer within 1 s")
def test_boot_timeout_leaves_nothing(vm, bundle):
    """A guest that does not answer in time (1 s: nested TCG boots take 10 s and more): create
    fails with one line and kills the VMM; no state, cgroup or virtiofsd is left."""
    bundle.set_args("true")
    p = vm.run("create", "--bundle", bundle.path, bundle.id, timeout=120,
               env=dict(os.environ, CAPSULE_VM_BOOT_TIMEOUT="1"))
    assert p.returncode == 1
    assert p.stderr.startswith("capsule: the VM's agent did not answer within the boot timeout"), p.stderr
    assert p.stderr.count("\n") == 1
    assert_nothing_left(vm, bundle)


class UserRegs(ctypes.Structure):
    """x86-64 struct user_regs_struct, for PTRACE_GETREGS/SETREGS."""
    _fields_ = [(n, ctypes.c_ulong) for n in (
        "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi", "rdi",
        "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs")]


class Tracee:
    """A process's main thread under ptrace, stopped. That thread sleeps in a syscall, so the two
    bytes before its rip are a `syscall` instruction, through which syscalls are injected."""
    PTRACE_CONT, PTRACE_GETREGS, PTRACE_SETREGS, PTRACE_ATTACH, PTRACE_DETACH, PTRACE_SYSCALL = 7, 12, 13, 16, 17, 24
    WALL = 0x40000000  # a thread of another process's group: waitpid's __WALL

    def __init__(self, pid):
        self.pid = pid
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        self.libc.ptrace.restype = ctypes.c_long
        self.ptrace(self.PTRACE_ATTACH)
        assert os.WIFSTOPPED(self.wait())
        self.saved = self.regs()
        with open(f"/proc/{pid}/mem", "rb") as mem:
            mem.seek(self.saved.rip - 2)
            assert mem.read(2) == b"\x0f\x05", "the main thread is not in a syscall"

    def ptrace(self, req, data=None):
        r = self.libc.ptrace(req, self.pid, None, data)
        assert r >= 0, f"ptrace {req}: {os.strerror(ctypes.get_errno())}"

    def wait(self):
        return os.waitpid(self.pid, self.WALL)[1]

    def regs(self):
        regs = UserRegs()
        self.ptrace(self.PTRACE_GETREGS, ctypes.addressof(regs))
        return regs

    def start_syscall(self, nr, args, req):
        """rip back to the `syscall` with rax = nr and args, then let go with req; returns the
        next stop signal (0: the thread ended)."""
        regs = UserRegs.from_buffer_copy(self.saved)
        regs.rip -= 2
        regs.rax = nr
        regs.orig_rax = ctypes.c_ulong(-1).value  # no syscall restart on the way out
        regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9 = (list(args) + [0] * 6)[:6]
        self.ptrace(self.PTRACE_SETREGS, ctypes.addressof(regs))
        self.ptrace(req)
        st = self.wait()
        return os.WSTOPSIG(st) if os.WIFSTOPPED(st) else 0

    def detach(self, sig=0):
        self.libc.ptrace(self.PTRACE_DETACH, self.pid, None, ctypes.c_void_p(sig))


def inject_syscall(pid, nr):
    """What a compromised VMM would do: make syscall nr (arguments 0) from the process's main
    thread. Returns the signal the thread stopped with next (the filter's SIGSYS), passed on at
    detach."""
    t = Tracee(pid)
    sig = t.start_syscall(nr, [], Tracee.PTRACE_CONT)
    t.detach(sig)
    return sig


def call_syscall(pid, nr, *args):
    """The same for a syscall the filter allows: stopped at its entry and its exit, whose rax is
    the result (-errno), then the thread goes back to the syscall it slept in, restarted as the
    kernel restarts one a stop interrupted."""
    t = Tracee(pid)
    assert t.start_syscall(nr, args, Tracee.PTRACE_SYSCALL) == signal.SIGTRAP, "no syscall-entry stop"
    t.ptrace(Tracee.PTRACE_SYSCALL)
    st = t.wait()
    assert os.WIFSTOPPED(st) and os.WSTOPSIG(st) == signal.SIGTRAP, f"no syscall-exit stop: {st:#x}"
    result = ctypes.c_long(t.regs().rax).value
    regs = t.saved
    ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND, ERESTART_RESTARTBLOCK = 512, 513, 514, 516
    err = -ctypes.c_long(regs.rax).value
    if ctypes.c_long(regs.orig_rax).value >= 0 and err in (ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND, ERESTART_RESTARTBLOCK):
        regs.rax = 219 if err == ERESTART_RESTARTBLOCK else regs.orig_rax  # x86-64 restart_syscall
        regs.rip -= 2
    t.ptrace(Tracee.PTRACE_SETREGS, ctypes.addressof(regs))
    t.detach()
    return result


def proc_status(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def jail_files(root):
    """Every path under a process's root (/proc/PID/root)."""
    found = []
    for d, dirs, files in os.walk(root):
        found += [os.path.join(d, n)[len(root):] for n in dirs + files]
    return sorted(found)


def test_jail_seccomp_namespaces_and_a_forbidden_syscall(vm, bundle):
    """The VMM runs confined: every thread under the seccomp filter, no capabilities, fresh
    namespaces, a root that shows only the agent's socket; the container still works (exec); a
    syscall outside the allow-list kills the VMM with one line in vmm.log, the container stops
    and delete leaves nothing."""
    become_subreaper()
    bundle.set_args("sleep", "1000")
    vm.run("create", "--bundle", bundle.path, bundle.id, check=True, timeout=BOOT)
    pid = vm.state(bundle.id)["pid"]
    vm.run("start", bundle.id, check=True, timeout=120)
    p = vm.run("exec", bundle.id, "sh", "-c", "echo confined; exit 3", timeout=120)
    assert (p.returncode, p.stdout) == (3, "confined\n"), p.stderr

    status = proc_status(pid)
    assert status["Seccomp"] == "2" and int(status["Seccomp_filters"]) >= 1, status
    assert status["NoNewPrivs"] == "1"
    for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[key], 16) == 0, (key, status[key])
    for tid in os.listdir(f"/proc/{pid}/task"):
        assert proc_status(tid)["Seccomp"] == "2", f"thread {tid} is not filtered"
    for ns in ("mnt", "net", "ipc", "uts", "cgroup"):
        assert os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"), ns
    sock = os.path.join(vm.root, bundle.id, "agent.sock")
    parts = sock.strip("/").split("/")
    assert jail_files(f"/proc/{pid}/root") == ["/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1)]

    execve = 59  # x86-64
    assert inject_syscall(pid, execve) == signal.SIGSYS
    _, st = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(st) and os.WTERMSIG(st) == signal.SIGSYS
    with open(os.path.join(vm.root, bundle.id, "vmm.log")) as f:
        assert f"capsule: the VMM was killed by its seccomp filter (syscall {execve})\n" in f.read()
    assert vm.status(bundle.id) == "stopped"
    p = vm.run("delete", bundle.id, check=True, timeout=120)
    assert p.stderr == (f'capsule: warning: container "{bundle.id}": '
                        f"the VMM was killed by its seccomp filter (syscall {execve})\n")
    assert_nothing_left(vm, bundle)


SANDBOX_ID_BASE = 0x70000000  # src/sandbox/sandbox_internal.h


def held_pidfds(pid):
    """{fd: the pid it names} of the pidfds a process holds."""
    found = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[pidfd]":
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                info = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
            found[int(fd)] = int(info["Pid"])
    return found


def wait_reaped(pid, timeout=20):
    """pid, a process reparented to us (the subreaper), has exited within timeout seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
        time.sleep(0.1)
    return False


def test_jail_each_vmm_runs_as_a_uid_of_its_own_that_cannot_signal_virtiofsd(vm, bundle, tmp_path):
    """Two VM containers at once: every thread of each VMM has its real, effective, saved and
    file-system uid and gid SANDBOX_ID_BASE + its pid (so the two differ, and neither is a host
    user's), and no supplementary groups. The attack: the VMM signals its virtiofsd (root) through
    the pidfd it holds, which its seccomp filter allows; the uid refuses it (EPERM), and virtiofsd
    serves on. virtiofsd's parent-death signal cannot reach it from that uid: it ends on its own
    as its socket closes, when the VMM is killed and when the VM powers off."""
    become_subreaper()
    bundle.set_args("sleep", "1000")
    other = Bundle(str(tmp_path / "other"), copy.deepcopy(bundle.config))
    shutil.copytree(bundle.path, other.path, symlinks=True)
    other.config["linux"]["cgroupsPath"] = f"capsule-test/{other.id}"
    other.write()
    pids = []
    for b in (bundle, other):
        vm.run("create", "--bundle", b.path, b.id, check=True, timeout=BOOT)
        pids.append(vm.state(b.id)["pid"])
        vm.run("start", b.id, check=True, timeout=120)
    for pid in pids:
        want = [str(SANDBOX_ID_BASE + pid)] * 4
        for tid in os.listdir(f"/proc/{pid}/task"):
            status = proc_status(f"{pid}/task/{tid}")
            assert (status["Uid"].split(), status["Gid"].split(), status["Groups"].split()) == (want, want, []), (tid, status)
    assert pids[0] != pids[1]

    vmm = pids[0]
    (fd, virtiofsd), = held_pidfds(vmm).items()
    with open(f"/proc/{virtiofsd}/cmdline", "rb") as f:
        assert b"virtiofsd" in f.read()
    assert proc_status(virtiofsd)["Uid"].split()[0] == "0"
    pidfd_send_signal = 424  # x86-64
    assert call_syscall(vmm, pidfd_send_signal, fd, signal.SIGKILL) == -errno.EPERM
    assert proc_status(virtiofsd)["State"][0] in "SR", "virtiofsd was stopped"
    p = vm.run("exec", bundle.id, "sh", "-c", "echo still-served > /served; cat /served", timeout=120)
    assert (p.returncode, p.stdout) == (0, "still-served\n"), p.stderr
    with open(os.path.join(bundle.rootfs, "served")) as f:
        assert f.read() == "still-served\n"

    os.kill(vmm, signal.SIGKILL)
    os.waitpid(vmm, 0)
    assert wait_reaped(virtiofsd), "virtiofsd outlived its killed VMM"
    assert processes_naming(bundle.rootfs) == []
    vm.run("kill", other.id, "KILL", check=True, timeout=120)
    os.waitpid(pids[1], 0)  # the VM powered off: the VMM stopped and reaped its virtiofsd itself
    assert processes_naming(other.rootfs) == []
    for b in (bundle, other):
        assert vm.status(b.id) == "stopped"
        vm.run("delete", b.id, check=True, timeout=120)
        assert_nothing_left(vm, b)


def test_jail_run_reports_the_seccomp_kill(vm, bundle):
    """`capsule run` in the foreground, whose VMM a syscall outside its list kills: run says why
    in one line (its delete does), exits 128 + SIGSYS, and removes the container."""
    bundle.set_args("sleep", "1000")
    with tempfile.TemporaryFile("w+") as err:
        run = subprocess.Popen(vm.cmd("run", "--bundle", bundle.path, bundle.id), stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.time() + BOOT
        while time.time() < deadline and run.poll() is None:
            p = vm.run("state", bundle.id)
            if p.returncode == 0 and '"running"' in p.stdout:
                break
            time.sleep(0.5)
        assert vm.status(bundle.id) == "running"
        execve = 59  # x86-64
        assert inject_syscall(vm.state(bundle.id)["pid"], execve) == signal.SIGSYS
        assert run.wait(timeout=120) == 128 + signal.SIGSYS
        err.seek(0)
        assert err.read() == (f'capsule: warning: container "{bundle.id}": '
                              f"the VMM was killed by its seccomp filter (syscall {execve})\n")
    assert_nothing_left(vm, bundle)


def cgroup_value(bundle, name):
    with open(os.path.join(procs_cgroup_dir(f"capsule-test/{bundle.id}"), name)) as f:
        return f.read()


def test_jail_vmm_memory_is_charged_to_the_container_and_its_oom_stops_it(vm, bundle):
    """Guest RAM the guest touches is the VMM's RSS, charged to the container's cgroup; a VM
    sized above the limit that touches more than it is stopped by the cgroup's OOM killer."""
    become_subreaper()
    bundle.config["annotations"] = {"capsule.vm.memory": "512M"}
    bundle.config["linux"]["resources"] = {"memory": {"limit": 320 << 20}}
    bundle.config["mounts"].append({"destination": "/fill", "type": "tmpfs", "source": "tmpfs", "options": ["size=480m"]})
    bundle.set_args("sleep", "1000")
    vm.run("create", "--bundle", bundle.path, bundle.id, check=True, timeout=BOOT)
    pid = vm.state(bundle.id)["pid"]
    vm.run("start", bundle.id, check=True, timeout=120)
    before = int(cgroup_value(bundle, "memory.current"))
    p = vm.run("exec", bundle.id, "dd", "if=/dev/zero", "of=/fill/a", "bs=1M", "count=100", timeout=120)
    assert p.returncode == 0, p.stderr
    grown = int(cgroup_value(bundle, "memory.current")) - before
    # A little of it may reuse pages the guest had touched and freed since it booted.
    assert grown >= 80 << 20, f"memory.current grew by {grown >> 20} MiB for 100 MiB the guest touched"

    p = vm.run("exec", bundle.id, "dd", "if=/dev/zero", "of=/fill/b", "bs=1M", "count=300", timeout=300)
    assert p.returncode != 0
    _, st = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(st) and os.WTERMSIG(st) == signal.SIGKILL
    events = dict(line.split() for line in cgroup_value(bundle, "memory.events").splitlines())
    assert int(events["oom_kill"]) >= 1, events
    assert vm.status(bundle.id) == "stopped"
    vm.run("delete", bundle.id, check=True, timeout=120)
    assert_nothing_left(vm, bundle)


def sh(*args):
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


# Answers every GET with the client's address: what the server sees as the source.
PEER_SERVER = """
import http.server, socket, sys
class Peer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (self.client_address[0] + "\\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
class Server(http.server.HTTPServer):
    address_family = socket.AF_INET6
Server(("::", int(sys.argv[1])), Peer).serve_forever()
"""


def wait_listening(netns, addr, port):
    probe = (f"import socket,time\nfor _ in range(100):\n try: socket.create_connection(({addr!r},{port}),1); break\n"
             " except OSError: time.sleep(0.1)\nelse: raise SystemExit('the server does not listen')")
    sh("ip", "netns", "exec", netns, "python3", "-c", probe)


@pytest.fixture
def netns_pair(tmp_path):
    """Network namespaces joined by a veth pair, as CNI leaves a dual-stack pod's: the container's
    side is eth0 (10.77.0.2/24 and fd77::2/64, MTU 1400, default routes via the server's 10.77.0.1
    and fd77::1, and fd99::/64 via fe80::1), and servers listen on the other side: HTTP on
    10.77.0.1:8077, and on port 8078 of fd77::1 and fd98::1 (through the default route) one that
    answers with the client's address. fe80::1 is a router of its own on the same link (a third
    namespace, bridged in by the server's) with fd99::1 and the same server: the server's namespace
    does not forward, so only the fd99::/64 route reaches it."""
    tag = os.getpid() % 100000
    srv, ctr, gw = f"capsrv{tag}", f"capctr{tag}", f"capgw{tag}"
    for ns in (srv, ctr, gw):
        sh("ip", "netns", "add", ns)
    servers = []
    try:
        # The server's side is a bridge (its addresses on br0): the router's veth joins it.
        sh("ip", "-n", srv, "link", "add", "br0", "mtu", "1400", "type", "bridge", "mcast_snooping", "0")
        sh("ip", "-n", ctr, "link", "add", "eth0", "mtu", "1400", "type", "veth", "peer", "name", "veth-srv", "netns", srv)
        sh("ip", "-n", gw, "link", "add", "gw0", "mtu", "1400", "type", "veth", "peer", "name", "veth-gw", "netns", srv)
        for port in ("veth-srv", "veth-gw"):
            sh("ip", "-n", srv, "link", "set", port, "mtu", "1400", "master", "br0", "up")
        sh("ip", "-n", srv, "link", "set", "br0", "up")
        sh("ip", "-n", srv, "addr", "add", "10.77.0.1/24", "dev", "br0")
        sh("ip", "-n", srv, "addr", "add", "fd77::1/64", "dev", "br0", "nodad")
        sh("ip", "-n", srv, "link", "set", "lo", "up")
        sh("ip", "-n", srv, "addr", "add", "fd98::1/128", "dev", "lo")
        sh("ip", "-n", gw, "link", "set", "lo", "up")
        sh("ip", "-n", gw, "addr", "add", "fd99::1/128", "dev", "lo")
        sh("ip", "-n", gw, "addr", "add", "fe80::1/64", "dev", "gw0", "nodad")
        sh("ip", "-n", gw, "link", "set", "gw0", "up")
        sh("ip", "-n", gw, "-6", "route", "add", "fd77::/64", "dev", "gw0")
        sh("ip", "-n", ctr, "addr", "add", "10.77.0.2/24", "dev", "eth0")
        sh("ip", "-n", ctr, "addr", "add", "fd77::2/64", "dev", "eth0")
        sh("ip", "-n", ctr, "link", "set", "eth0", "up")
        sh("ip", "-n", ctr, "route", "add", "default", "via", "10.77.0.1")
        sh("ip", "-n", ctr, "-6", "route", "add", "default", "via", "fd77::1")
        sh("ip", "-n", ctr, "-6", "route", "add", "fd99::/64", "via", "fe80::1", "dev", "eth0")
        (tmp_path / "www").mkdir()
        (tmp_path / "www" / "token.txt").write_text("served-across-the-veth\n")
        servers.append(subprocess.Popen(
            ["ip", "netns", "exec", srv, "python3", "-m", "http.server", "--bind", "10.77.0.1", "8077",
             "--directory", str(tmp_path / "www")], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL))
        for ns in (srv, gw):
            servers.append(subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-c", PEER_SERVER, "8078"],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_listening(ctr, "10.77.0.1", 8077)
        wait_listening(ctr, "fd77::1", 8078)
        wait_listening(ctr, "fd99::1", 8078)
        # The premise: without its route, fd99::1 is out of reach.
        sh("ip", "-n", ctr, "-6", "route", "del", "fd99::/64")
        probe = "import socket\ntry: socket.create_connection(('fd99::1',8078),2); print('reached')\nexcept OSError: print('unreachable')"
        assert sh("ip", "netns", "exec", ctr, "python3", "-c", probe).strip() == "unreachable"
        sh("ip", "-n", ctr, "-6", "route", "add", "fd99::/64", "via", "fe80::1", "dev", "eth0")
        mac = re.search(r"link/ether (\S+)", sh("ip", "-n", ctr, "link", "show", "eth0")).group(1)
        yield ctr, mac
    finally:
        for server in servers:
            server.kill()
            server.wait()
        for ns in (ctr, gw, srv):
            sh("ip", "netns", "del", ns)


def test_net_the_netns_address_routes_dns_and_a_server_reached_through_the_veth(vm, bundle, netns_pair, tmp_path):
    ctr, mac = netns_pair
    bundle.config["linux"]["namespaces"] = [ns for ns in bundle.config["linux"]["namespaces"] if ns["type"] != "network"]
    bundle.config["linux"]["namespaces"].append({"type": "network", "path": f"/run/netns/{ctr}"})
    # DNS as podman gives it: its resolv.conf bind-mounted (the binds share carries it).
    (tmp_path / "resolv.conf").write_text("nameserver 10.77.0.1\n")
    bundle.config["mounts"].append({"destination": "/etc/resolv.conf", "type": "bind",
                                    "source": str(tmp_path / "resolv.conf"), "options": ["rbind", "ro"]})
    bundle.set_args("sh", "-c", "ip addr show; ip route show; ip -6 route show; cat /etc/resolv.conf; "
                    "cd /proc/sys/net/ipv6/conf/eth0; echo \"dad,ra,slaac: $(cat accept_dad),$(cat accept_ra),$(cat autoconf)\"; "
                    "for a in fd77::1 fd98::1 fd99::1; do echo \"$a sees $(wget -q -O - http://[$a]:8078/)\"; done; "
                    "wget -q -O - http://10.77.0.1:8077/token.txt")
    p = vm.run("run", "--bundle", bundle.path, bundle.id, timeout=BOOT)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert "inet 10.77.0.2/24" in out  # the namespace's address, inside the VM's container
    pod6 = re.search(r"inet6 fd77::2/64 .*", out)
    assert pod6 and "scope global" in pod6.group(0), out
    assert "tentative" not in pod6.group(0) and "dadfailed" not in pod6.group(0), out  # usable at once
    assert f"link/ether {mac}" in out  # the veth's MAC: the server's neighbour entry stays valid
    assert "mtu 1400" in out
    assert "default via 10.77.0.1" in out
    assert "default via fd77::1" in out and "fd99::/64 via fe80::1" in out
    # No duplicate address detection (the address works at once), no router advertisement taken.
    assert "dad,ra,slaac: 0,0,0\n" in out, out
    assert "nameserver 10.77.0.1" in out
    # Over IPv6 on the link, through the default route and through the fd99::/64 route's link-local
    # gateway, the server sees the pod's address as the source.
    for server in ("fd77::1", "fd98::1", "fd99::1"):
        assert f"{server} sees fd77::2\n" in out, out
    assert out.rstrip().endswith("served-across-the-veth")
    # The tap went with the VMM, the veth's ingress qdisc with run's delete.
    assert "capsule-tap0" not in sh("ip", "-n", ctr, "link", "show")
    assert "ingress" not in sh("tc", "-n", ctr, "qdisc", "show", "dev", "eth0")
    assert_nothing_left(vm, bundle)


def test_net_an_ipv6_only_namespace(vm, bundle):
    """A single-stack IPv6 pod: the interface is the IPv6 default route's, the guest has no IPv4
    address, and the server sees the pod's address."""
    tag = os.getpid() % 100000
    srv, ctr = f"capsrv6{tag}", f"capctr6{tag}"
    for ns in (srv, ctr):
        sh("ip", "netns", "add", ns)
    server = None
    try:
        sh("ip", "-n", ctr, "link", "add", "eth0", "type", "veth", "peer", "name", "veth-srv", "netns", srv)
        sh("ip", "-n", srv, "link", "set", "veth-srv", "up")
        sh("ip", "-n", srv, "addr", "add", "2001:db8:6::1/64", "dev", "veth-srv", "nodad")
        sh("ip", "-n", ctr, "addr", "add", "2001:db8:6::2/64", "dev", "eth0", "nodad")
        sh("ip", "-n", ctr, "link", "set", "eth0", "up")
        sh("ip", "-n", ctr, "-6", "route", "add", "default", "via", "2001:db8:6::1")
        server = subprocess.Popen(["ip", "netns", "exec", srv, "python3", "-c", PEER_SERVER, "8078"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(ctr, "2001:db8:6::1", 8078)
        bundle.config["linux"]["namespaces"] = [ns for ns in bundle.config["linux"]["namespaces"]
                                                if ns["type"] != "network"]
        bundle.config["linux"]["namespaces"].append({"type": "network", "path": f"/run/netns/{ctr}"})
        bundle.set_args("sh", "-c", "ip addr show eth0; ip -6 route show; "
                        "echo \"sees $(wget -q -O - http://[2001:db8:6::1]:8078/)\"")
        p = vm.run("run", "--bundle", bundle.path, bundle.id, timeout=BOOT)
    finally:
        if server:
            server.kill()
            server.wait()
        for ns in (ctr, srv):
            sh("ip", "netns", "del", ns)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert "inet6 2001:db8:6::2/64 scope global" in out and "inet " not in out, out
    assert "default via 2001:db8:6::1" in out, out
    assert "sees 2001:db8:6::2\n" in out, out
    assert_nothing_left(vm, bundle)


def test_net_a_network_namespace_path_that_is_no_namespace_is_refused(vm, bundle, tmp_path):
    (tmp_path / "not-a-netns").write_text("")
    bundle.config["linux"]["namespaces"] = [ns for ns in bundle.config["linux"]["namespaces"] if ns["type"] != "network"]
    bundle.config["linux"]["namespaces"].append({"type": "network", "path": str(tmp_path / "not-a-netns")})
    bundle.set_args("true")
    p = vm.run("create", "--bundle", bundle.path, bundle.id, timeout=120)
    assert p.returncode == 1
    assert p.stderr.startswith("capsule: linux.namespaces: network: ") and "is not a network namespace" in p.stderr, p.stderr
    assert p.stderr.count("\n") == 1
    assert_nothing_left(vm, bundle)


def test_net_a_second_vm_container_in_a_namespace_whose_interface_a_vm_took_is_refused(vm, bundle, crash_netns, tmp_path):
    """As a pod's second workload container under capsule-vm: the first VM has the namespace's
    interface, so the second's create is refused in one line that names linux.namespaces and
    the holder (or, from another --root, its tap), and leaves nothing; the first keeps its tap
    and tc filters, and its container the namespace's address."""
    become_subreaper()
    bundle.config["linux"]["namespaces"] = [ns for ns in bundle.config["linux"]["namespaces"] if ns["type"] != "network"]
    bundle.config["linux"]["namespaces"].append({"type": "network", "path": f"/run/netns/{crash_netns}"})
    bundle.set_args("sleep", "1000")
    other = Bundle(str(tmp_path / "other"), copy.deepcopy(bundle.config))
    shutil.copytree(bundle.path, other.path, symlinks=True)
    other.config["linux"]["cgroupsPath"] = f"capsule-test/{other.id}"
    other.write()
    vm.run("create", "--bundle", bundle.path, bundle.id, check=True, timeout=BOOT)
    filters = sh("tc", "-n", crash_netns, "filter", "show", "dev", "eth0", "ingress")
    assert "capsule-tap0" in filters, filters
    p = vm.run("create", "--bundle", other.path, other.id, timeout=120)
    assert p.returncode == 1, p.stdout + p.stderr
    assert p.stderr == (f"capsule: linux.namespaces: network: `/run/netns/{crash_netns}`: its interface is taken by "
                        f"VM container `{bundle.id}` (one VM per network namespace)\n"), p.stderr
    assert crash_leftovers(vm, other, other.id) == []
    elsewhere = Capsule(str(tmp_path / "elsewhere"), os.path.join(BUILD, "capsule-vm"))
    p = elsewhere.run("create", "--bundle", other.path, other.id, timeout=120)
    assert p.returncode == 1, p.stdout + p.stderr
    assert p.stderr == (f"capsule: linux.namespaces: network: `/run/netns/{crash_netns}`: its interface is taken by "
                        "another VM container (its tap `capsule-tap0` is there; one VM per network namespace)\n"), p.stderr
    assert crash_leftovers(elsewhere, other, other.id) == []
    assert vm.status(bundle.id) == "created"
    assert sh("tc", "-n", crash_netns, "filter", "show", "dev", "eth0", "ingress") == filters
    vm.run("start", bundle.id, check=True, timeout=120)
    p = vm.run("exec", bundle.id, "ip", "addr", "show", "eth0", timeout=120)
    assert p.returncode == 0 and "inet 10.79.0.2/24" in p.stdout, p.stdout + p.stderr
    vm.run("delete", "--force", bundle.id, check=True, timeout=120)
    assert crash_leftovers(vm, bundle, bundle.id, crash_netns) == []


POD_TYPE = "io.kubernetes.cri.container-type"
POD_ID = "io.kubernetes.cri.sandbox-id"


def pod_member(bundle, tmp_path, name, pod_id, netns_path, pod_pid):
    """A workload container of the pod, as containerd writes its config.json: the pod's network
    namespace by path, its ipc and uts namespaces as the pause's /proc paths, a pid namespace
    of its own, and the annotations that name the pod."""
    m = Bundle(str(tmp_path / name), copy.deepcopy(bundle.config))
    shutil.copytree(bundle.path, m.path, symlinks=True)
    m.config["linux"]["cgroupsPath"] = f"capsule-test/{m.id}"
    m.config["annotations"] = {POD_TYPE: "container", POD_ID: pod_id}
    m.config.pop("hostname", None)
    paths = {"network": netns_path, "ipc": f"/proc/{pod_pid}/ns/ipc", "uts": f"/proc/{pod_pid}/ns/uts"}
    m.config["linux"]["namespaces"] = [ns for ns in m.config["linux"]["namespaces"] if ns["type"] not in paths]
    m.config["linux"]["namespaces"] += [{"type": t, "path": p} for t, p in paths.items()]
    return m.write()


def start_pod(vm, pod, netns_path):
    """The pod's sandbox container, created and started: returns its host pid."""
    pod.config["annotations"] = {POD_TYPE: "sandbox"}
    pod.config["hostname"] = "the-pod"
    pod.config["linux"]["namespaces"] = [ns for ns in pod.config["linux"]["namespaces"] if ns["type"] != "network"]
    pod.config["linux"]["namespaces"].append({"type": "network", "path": netns_path})
    pod.set_args("sleep", "1000")
    vm.run("create", "--bundle", pod.path, pod.id, check=True, timeout=BOOT)
    vm.run("start", pod.id, check=True, timeout=120)
    return vm.state(pod.id)["pid"]


def test_pod_members_join_the_pods_vm_its_address_ipc_and_uts_each_in_a_pid_namespace_of_its_own(vm, bundle, crash_netns, tmp_path):
    """One VM per pod: the sandbox container boots it and takes the pod's interface; two members
    run in it (the same guest kernel's boot_id), each with the pod's address, ipc and uts (the
    pause's hostname) and a pid namespace of its own, and their exit statuses reach the host.
    Claims of the pod that do not hold are refused before anything exists: another network
    namespace, an id that is no pod, another --root. Delete leaves nothing, the pod's too."""
    become_subreaper()
    pod = bundle
    netns_path = f"/run/netns/{crash_netns}"
    pod_pid = start_pod(vm, pod, netns_path)
    p = vm.run("exec", pod.id, "sh", "-c", "cat /proc/sys/kernel/random/boot_id; readlink /proc/self/ns/ipc", timeout=120)
    assert p.returncode == 0, p.stderr
    boot_id, pod_ipc = p.stdout.split()
    script = ("cat /proc/sys/kernel/random/boot_id; readlink /proc/self/ns/ipc; hostname; echo pid $$; "
              "ip -4 -o addr show eth0 | grep -o 'inet [0-9./]*'; echo from-{0} >&2; exit {1}")
    for name, status in (("m1", 3), ("m2", 5)):
        m = pod_member(pod, tmp_path, name, pod.id, netns_path, pod_pid)
        m.set_args("sh", "-c", script.format(name, status))
        p = vm.run("run", "--bundle", m.path, m.id, timeout=120)
        assert p.returncode == status, p.stdout + p.stderr
        assert p.stdout.splitlines() == [boot_id, pod_ipc, "the-pod", "pid 1", "inet 10.79.0.2/24"], p.stdout
        assert p.stderr == f"from-{name}\n"
        assert crash_leftovers(vm, m, m.id) == []
        with open("/proc/self/mountinfo") as f:
            assert not [line for line in f if f"/{pod.id}/members/{m.id}" in line]

    other_ns = f"capother{os.getpid() % 100000}"
    sh("ip", "netns", "add", other_ns)
    try:
        intruder = pod_member(pod, tmp_path, "intruder", pod.id, f"/run/netns/{other_ns}", pod_pid)
        intruder.set_args("true")
        p = vm.run("create", "--bundle", intruder.path, intruder.id, timeout=120)
        assert (p.returncode, p.stderr) == (1, f"capsule: linux.namespaces: network: `/run/netns/{other_ns}` is not the "
                                               f"network namespace of the pod `{pod.id}`\n"), p.stderr
        assert crash_leftovers(vm, intruder, intruder.id) == []
    finally:
        sh("ip", "netns", "del", other_ns)
    stray = pod_member(pod, tmp_path, "stray", "no-such-pod", netns_path, pod_pid)
    stray.set_args("true")
    p = vm.run("create", "--bundle", stray.path, stray.id, timeout=120)
    assert (p.returncode, p.stderr) == (1, "capsule: annotations: the pod `no-such-pod` is no capsule VM pod in this --root\n")
    stray.config["annotations"][POD_ID] = pod.id
    stray.write()
    elsewhere = Capsule(str(tmp_path / "elsewhere"), os.path.join(BUILD, "capsule-vm"))
    p = elsewhere.run("create", "--bundle", stray.path, stray.id, timeout=120)
    assert (p.returncode, p.stderr) == (1, f"capsule: annotations: the pod `{pod.id}` is no capsule VM pod in this --root\n")
    assert crash_leftovers(vm, stray, stray.id) == [] and crash_leftovers(elsewhere, stray, stray.id) == []

    # A member the guest cannot create (its tmpfs's options) fails in one line and leaves nothing;
    # the same id works once its config does.
    again = pod_member(pod, tmp_path, "again", pod.id, netns_path, pod_pid)
    again.config["mounts"].append({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                                   "options": ["size=no-size"]})
    again.set_args("true")
    p = vm.run("create", "--bundle", again.path, again.id, timeout=120)
    assert p.returncode == 1 and p.stderr.startswith("capsule: ") and p.stderr.count("\n") == 1, p.stderr
    assert crash_leftovers(vm, again, again.id) == []
    again.config["mounts"].pop()
    again.write()
    p = vm.run("run", "--bundle", again.path, again.id, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr

    vm.run("delete", "--force", pod.id, check=True, timeout=120)
    assert crash_leftovers(vm, pod, pod.id, crash_netns) == []


def test_pod_a_detached_members_state_exec_ps_kill_and_the_pods_end_ends_the_others(vm, bundle, crash_netns, tmp_path):
    """A member as containerd's shim drives it: its host process (state's pid, in the member's
    cgroup, sandbox.json naming the pod) stands for it; its binds reach the pod's VM, a read-only
    one read-only in virtiofsd's own mount namespace too; exec, ps, pause and resume reach it in
    the pod's VM, and kill's signal ends it with its own status. A member with a terminal gets
    its console socket's pty. A member still running when the pod's VM ends stops too; each
    delete leaves nothing."""
    become_subreaper()
    pod = bundle
    netns_path = f"/run/netns/{crash_netns}"
    pod_pid = start_pod(vm, pod, netns_path)
    m = pod_member(pod, tmp_path, "m", pod.id, netns_path, pod_pid)
    for name in ("ro", "rw"):
        (tmp_path / name).mkdir()
        m.config["mounts"].append({"destination": f"/{name}", "type": "bind", "source": str(tmp_path / name),
                                   "options": ["rbind", name]})
    (tmp_path / "ro" / "in.txt").write_text("from-the-host\n")
    m.set_args("sh", "-c", "trap 'exit 9' TERM; echo mine > /mine; cat /ro/in.txt > /rw/out.txt; "
               "while :; do sleep 0.2; done")
    vm.run("create", "--bundle", m.path, m.id, check=True, timeout=120)
    st = vm.state(m.id)
    assert st["status"] == "created"
    with open(os.path.join(vm.root, m.id, "sandbox.json")) as f:
        assert json.load(f)["member_of"] == pod.id
    with open(f"/proc/{st['pid']}/cgroup") as f:
        assert f.read().strip().endswith(f"/capsule-test/{m.id}")
    vm.run("start", m.id, check=True, timeout=120)
    wait_status(vm, m.id, "running")
    poll_until("the member's first write", lambda: os.path.exists(os.path.join(m.rootfs, "mine")), timeout=60)
    out = tmp_path / "rw" / "out.txt"
    poll_until("the member's copy through its binds", lambda: out.exists() and out.read_text() == "from-the-host\n", timeout=60)
    # Each copy of the binds (the host's, virtiofsd's below its own root) has the bind's mode.
    seen = set()
    for pid in processes_naming(f"{pod.id}/members"):
        with open(f"/proc/{pid}/mountinfo") as f:
            for line in f:
                point, options = line.split()[4:6]
                for n, mode in ((0, "ro"), (1, "rw")):
                    if point.endswith(f"/{m.id}/binds/{n}"):
                        assert options.split(",")[0] == mode, line
                        seen.add((point.startswith(f"/{m.id}/"), n))
    assert {(True, 0), (True, 1)} <= seen, seen
    p = vm.run("exec", m.id, "sh", "-c", "cat /mine; hostname", timeout=120)
    assert (p.returncode, p.stdout.split()) == (0, ["mine", "the-pod"]), p.stdout + p.stderr
    p = vm.run("ps", "--format", "json", m.id, timeout=120)
    assert p.returncode == 0 and len(json.loads(p.stdout)) >= 2, p.stdout + p.stderr
    vm.run("pause", m.id, check=True, timeout=120)
    assert (vm.status(m.id), vm.status(pod.id)) == ("paused", "running")
    vm.run("resume", m.id, check=True, timeout=120)
    assert vm.status(m.id) == "running"
    vm.run("kill", m.id, "TERM", check=True, timeout=120)
    _, wstatus = os.waitpid(st["pid"], 0)
    assert os.waitstatus_to_exitcode(wstatus) == 9
    wait_status(vm, m.id, "stopped")
    vm.run("delete", m.id, check=True, timeout=120)
    assert crash_leftovers(vm, m, m.id) == []

    # A member with a terminal: the console socket gets the pty of its guest terminal.
    t = pod_member(pod, tmp_path, "t", pod.id, netns_path, pod_pid)
    t.config["process"]["terminal"] = True
    t.set_args("sh", "-c", "tty; read line; echo got:$line; exit 6")
    console = ConsoleSocket(tmp_path / "console.sock")
    vm.run("create", "--bundle", t.path, "--console-socket", console.path, t.id, check=True, timeout=120)
    master, _ = console.receive_master()
    pid = vm.state(t.id)["pid"]
    vm.run("start", t.id, check=True, timeout=120)
    os.write(master, b"typed-in\n")
    out = read_until(master, "got:typed-in", timeout=60)
    assert "/dev/pts/" in out, out
    _, wstatus = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(wstatus) == 6
    os.close(master)
    console.close()
    vm.run("delete", t.id, check=True, timeout=120)
    assert crash_leftovers(vm, t, t.id) == []

    # The same id again: delete --force ends it while it runs, and the pod runs on.
    vm.run("create", "--bundle", m.path, m.id, check=True, timeout=120)
    vm.run("start", m.id, check=True, timeout=120)
    wait_status(vm, m.id, "running")
    p = vm.run("delete", m.id, timeout=120)
    assert p.returncode == 1 and "not stopped: running" in p.stderr, p.stderr
    vm.run("delete", "--force", m.id, check=True, timeout=120)
    assert crash_leftovers(vm, m, m.id) == []
    assert vm.status(pod.id) == "running"

    # Once more, left running when the pod goes.
    vm.run("create", "--bundle", m.path, m.id, check=True, timeout=120)
    vm.run("start", m.id, check=True, timeout=120)
    wait_status(vm, m.id, "running")
    pid = vm.state(m.id)["pid"]
    vm.run("delete", "--force", pod.id, check=True, timeout=120)
    os.waitpid(pid, 0)
    assert vm.status(m.id) == "stopped"
    vm.run("delete", m.id, check=True, timeout=120)
    assert crash_leftovers(vm, m, m.id) == []
    assert crash_leftovers(vm, pod, pod.id, crash_netns) == []


def test_net_a_namespace_with_lo_only_gives_the_container_lo_only(vm, bundle):
    """As podman's --network none: a namespace by path with no interface to take over."""
    name = f"caplo{os.getpid() % 100000}"
    sh("ip", "netns", "add", name)
    try:
        bundle.config["linux"]["namespaces"] = [ns for ns in bundle.config["linux"]["namespaces"]
                                                if ns["type"] != "network"]
        bundle.config["linux"]["namespaces"].append({"type": "network", "path": f"/run/netns/{name}"})
        bundle.set_args("sh", "-c", "for i in /sys/class/net/*; do echo ${i##*/} $(cat $i/type); done")
        p = vm.run("run", "--bundle", bundle.path, bundle.id, timeout=BOOT)
        assert p.returncode == 0, p.stdout + p.stderr
        links = dict(line.split() for line in p.stdout.splitlines())
        # lo, and the guest kernel's own sit0 tunnel; no Ethernet NIC (ARPHRD_ETHER, 1)
        assert links.get("lo") == "772" and "1" not in links.values(), links
        assert "capsule-tap0" not in sh("ip", "-n", name, "link", "show")
    finally:
        sh("ip", "netns", "del", name)
    assert_nothing_left(vm, bundle)


def test_a_small_pids_limit_bounds_the_container_not_the_vmm(vm, bundle):
    """pids.limit 8: the VM starts although the VMM and virtiofsd need more threads than that on
    the host (11 for one vCPU); in the guest the container's own cgroup holds it to 8 processes."""
    bundle.config["linux"]["resources"] = {"pids": {"limit": 8}}
    # A refused fork ends a busybox shell: the subshell forks until it is refused; then the
    # slots are taken, and only builtins work (read, echo).
    bundle.set_args("sh", "-c", "cat /sys/fs/cgroup/pids.max; (for i in $(seq 12); do sleep 30 & done) 2>/dev/null; "
                    "read n </sys/fs/cgroup/pids.current; echo current=$n; "
                    "while read k v; do echo $k=$v; done </sys/fs/cgroup/pids.events; exit 0")
    p = vm.run("run", "--bundle", bundle.path, bundle.id, timeout=BOOT)
    assert p.returncode == 0, (p.stdout, p.stderr)
    lines = p.stdout.split()
    current = [int(x.split("=")[1]) for x in lines if x.startswith("current=")]
    assert lines[0] == "8" and current and 2 <= current[0] <= 8, p.stdout
    refused = [int(x.split("=")[1]) for x in lines if x.startswith("max=")]
    assert refused and refused[0] >= 1, p.stdout


def block_rootfs(bundle, name="rootfs.ext4"):
    """The bundle's rootfs as an ext4 image in the bundle, named by the annotation; the rootfs
    directory is emptied, so that the container runs from the image or not at all."""
    image = os.path.join(bundle.path, name)
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", bundle.rootfs, image, "64M"], check=True)
    for entry in os.listdir(bundle.rootfs):
        path = os.path.join(bundle.rootfs, entry)
        shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)
    bundle.config.setdefault("annotations", {})["capsule.vm.rootfs.block"] = name
    return image


def image_cat(image, path):
    p = subprocess.run(["debugfs", "-R", f"cat {path}", image], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_block_rootfs_runs_the_image_and_its_writes_land_in_it(vm, bundle):
    image = block_rootfs(bundle)
    bundle.set_args("sh", "-c", "echo hello; grep ' / ' /proc/mounts; cat /sys/block/vda/ro; "
                    "echo from-guest >/written.txt; exit 3")
    p = vm.run("run", "--bundle", bundle.path, bundle.id, timeout=BOOT)
    assert p.returncode == 3, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "hello"
    assert lines[1].startswith("/dev/vda / ext4 rw,"), lines
    assert lines[2] == "0"
    assert os.listdir(bundle.rootfs) == []
    # The guest left the file system clean (no journal to replay): the host reads the write as is.
    fsck = subprocess.run(["e2fsck", "-fn", image], capture_output=True, text=True, timeout=60)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    header = subprocess.run(["dumpe2fs", "-h", image], capture_output=True, text=True, timeout=60).stdout
    features = next(line for line in header.splitlines() if line.startswith("Filesystem features:"))
    assert "needs_recovery" not in features, features
    assert image_cat(image, "/written.txt") == "from-guest\n"
    assert_nothing_left(vm, bundle)


def test_block_rootfs_read_only_with_root_readonly(vm, bundle):
    image = block_rootfs(bundle)
    bundle.config["root"]["readonly"] = True
    bundle.set_args("sh", "-c", "grep ' / ' /proc/mounts; cat /sys/block/vda/ro; "
                    "echo x >/written.txt && echo wrote; exit 0")
    before = open(image, "rb").read()
    p = vm.run("run", "--bundle", bundle.path, bundle.id, timeout=BOOT)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("/dev/vda / ext4 ro,"), lines
    assert lines[1] == "1", "the guest's disk is read-only, not just its mount"
    assert "wrote" not in lines and "Read-only file system" in p.stderr, (p.stdout, p.stderr)
    with open(image, "rb") as f:
        assert f.read() == before
    assert_nothing_left(vm, bundle)


@pytest.mark.parametrize("attack", ["dotdot", "absolute", "symlink"])
def test_block_rootfs_outside_the_bundle_is_refused(vm, bundle, tmp_path, attack):
    """config.json is hostile: its annotation names no host file, by `..`, an absolute path or a
    symlink; create refuses it with one line before anything exists (no boot, no VMM), and the
    host file is untouched."""
    victim = tmp_path / "host-secret"
    victim.write_text("secret\n")
    name = {"dotdot": os.path.relpath(victim, bundle.path), "absolute": str(victim), "symlink": "disk.img"}[attack]
    if attack == "symlink":
        os.symlink(victim, os.path.join(bundle.path, "disk.img"))
    bundle.config["annotations"] = {"capsule.vm.rootfs.block": name}
    bundle.set_args("true")
    p = vm.run("create", "--bundle", bundle.path, bundle.id, timeout=120)
    assert p.returncode == 1
    why = {"dotdot": "leads out of the bundle directory", "absolute": "is not a relative path inside the bundle directory",
           "symlink": "is or passes through a symbolic link, which is not followed"}[attack]
    assert p.stderr == f"capsule: annotation capsule.vm.rootfs.block: `{name}` {why}\n", p.stderr
    assert victim.read_text() == "secret\n"
    assert_nothing_left(vm, bundle)


def test_block_rootfs_that_is_no_ext4_image_fails_create_and_leaves_nothing(vm, bundle):
    """The host cannot tell a file system from any file: the guest's mount refuses it, and create
    fails with the agent's one line."""
    with open(os.path.join(bundle.path, "zeros.img"), "wb") as f:
        f.truncate(8 << 20)
    bundle.config["annotations"] = {"capsule.vm.rootfs.block": "zeros.img"}
    bundle.set_args("true")
    p = vm.run("create", "--bundle", bundle.path, bundle.id, timeout=BOOT)
    assert p.returncode == 1
    assert "the container's rootfs (the disk /dev/vda, ext4): mount ext4 on `/run/capsule/rootfs`" in p.stderr, p.stderr
    assert p.stderr.startswith("capsule: ") and p.stderr.count("\n") == 1, p.stderr
    assert_nothing_left(vm, bundle)
