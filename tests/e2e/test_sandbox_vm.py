"""VM containers end to end: capsule-vm boots the guest kernel with capsule-guest, the agent, and the
container runs in it. Needs hardware KVM (a PVM host refuses, see test_sandbox_host.py), so on this
host tests/testbed/test_sandbox.py runs the module inside the testbed. Each test is one boot (10-90 s
in nested TCG), so the checks are batched into few tests; the test_jail_ ones are the VMM's confinement."""
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

from conftest import BUILD, BUSYBOX, Capsule, procs_cgroup_dir
from test_terminal import ConsoleSocket, read_until
import sandbox_vm_env
from sandbox_vm_env import BOOT, assert_nothing_left, become_subreaper, cgroup_value, guest_release, install_runtime, reap, wait_status

# Their skip (hardware KVM, the kernel and the initrd) and fixtures.
pytestmark = sandbox_vm_env.pytestmark
vm = sandbox_vm_env.vm


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
    status = reap(pid, "the sandbox process after kill TERM while paused")
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
    status = reap(int(pidfile.read_text()), "the detached exec's relay (--pid-file)")
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
    status = reap(pid, "the sandbox process after kill --all KILL")
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
    status = reap(int(pidfile.read_text()), "the detached exec's relay (--pid-file)")
    assert os.waitstatus_to_exitcode(status) == 0
    os.close(exec_master)
    p = c.run("exec", "-t", "-p", tmp_path / "process.json", bundle.id, stdin=subprocess.DEVNULL, timeout=120)
    assert p.returncode == 0 and "size 21 55" in p.stdout, (p.returncode, p.stdout, p.stderr)

    c.run("kill", bundle.id, "KILL", check=True, timeout=120)
    reap(pid, "the sandbox process after kill KILL")
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
    reap(pid, "the killed sandbox process")
    assert vm.status(bundle.id) == "stopped"
    vm.run("delete", "--force", bundle.id, check=True, timeout=120)
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
