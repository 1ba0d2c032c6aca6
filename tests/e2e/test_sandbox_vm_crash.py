"""VM containers killed or crashing: capsule killed at each step of create, run and exec, and a guest
that runs out of memory, panics, resets or does not answer. Runs as test_sandbox_vm.py does."""
import json
import os
import shutil
import subprocess

import pytest

from conftest import BUILD
import sandbox_vm_env
from sandbox_vm_env import BOOT, assert_nothing_left, crash_leftovers, live_processes, poll_until, vmm_gone_on_its_own

# Their skip (hardware KVM, the kernel and the initrd) and fixtures.
pytestmark = sandbox_vm_env.pytestmark
vm = sandbox_vm_env.vm
crash_netns = sandbox_vm_env.crash_netns


def phases_of(vm, cid):
    """The steps the container's create and start have reached (the sandbox's phases file)."""
    try:
        with open(os.path.join(vm.root, cid, "phases")) as f:
            return dict(line.split() for line in f if len(line.split()) == 2)
    except FileNotFoundError:
        return {}


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
            # The state directory comes moments before the VM starts; the guest's boot lasts.
            if step == "dir":
                poll_until(what, lambda: os.path.isdir(os.path.join(vm.root, cid)), interval=0.002)
            elif step == "boot":
                poll_until(what, lambda: "guest" in phases_of(vm, cid), interval=0.01)
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


def test_vm_killed_by_a_create_hook_fails_create_in_one_line_and_leaves_nothing(vm, bundle):
    """A createRuntime hook (config.json is hostile) SIGKILLs the sandbox process whose pid its
    state names, and waits until all of it is gone. create's next word to it then meets a closed
    socket: create fails in one line and cleans up. Before, the write's SIGPIPE killed create
    and left its state behind."""
    # Until its last thread is gone: a zombie leader's other threads (vCPUs leaving KVM_RUN) still
    # hold the process's descriptors.
    kill_vmm = ("pid=$(python3 -c 'import json, sys; print(json.load(sys.stdin)[\"pid\"])'); kill -9 $pid; "
                "while [ -e /proc/$pid ] && { ! grep -q ') Z ' /proc/$pid/stat || [ $(ls /proc/$pid/task | wc -l) -gt 1 ]; }; "
                "do sleep 0.05; done")
    bundle.config["hooks"] = {"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", kill_vmm]}]}
    bundle.set_args("true")
    p = vm.run("create", "--bundle", bundle.path, bundle.id, timeout=BOOT)
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.endswith("tell the VM's sandbox process that create has finished: Broken pipe\n"), p.stderr
    assert_nothing_left(vm, bundle)


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


def test_guest_panic_under_create_fails_create_with_the_reason(vm, bundle):
    """A createContainer hook runs in the container, in the guest, while the agent answers create;
    its path resolves in the runtime's namespace, the guest's, where the agent mounts the rootfs
    at /run/capsule/rootfs (a hostile config.json may know that). One that crashes the guest
    kernel fails create in one line that says why the VM ended, and nothing is left."""
    bundle.config["linux"]["readonlyPaths"] = []
    bundle.config["hooks"] = {"createContainer": [{"path": "/run/capsule/rootfs/bin/sh",
                                                   "args": ["sh", "-c", "echo c >/proc/sysrq-trigger"]}]}
    bundle.set_args("true")
    p = vm.run("create", "--bundle", bundle.path, bundle.id, timeout=BOOT)
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert p.stderr.count("\n") == 1, p.stderr
    assert "the VM ended: the guest kernel panicked (status 81) before its agent answered" in p.stderr, p.stderr
    assert_nothing_left(vm, bundle)


def test_guest_panic_under_start_fails_start_with_the_reason(vm, bundle):
    """A startContainer hook runs in the container, in the guest, while the agent answers start. One
    that may write /proc/sysrq-trigger (a hostile config.json) crashes the guest kernel there: start's
    connection to the agent closes with no reply, and start says in one line why the VM ended (from
    the sandbox process's vmm.log), not only that the connection closed. The container is stopped,
    and delete leaves nothing."""
    bundle.config["linux"]["readonlyPaths"] = []
    bundle.config["hooks"] = {"startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "echo c >/proc/sysrq-trigger"]}]}
    bundle.set_args("sh", "-c", "echo survived")
    vm.run("create", "--bundle", bundle.path, bundle.id, check=True, timeout=BOOT)
    p = vm.run("start", bundle.id, timeout=120)
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert p.stderr == (f'capsule: start container "{bundle.id}": '
                        "the VM ended: the guest kernel panicked (status 81)\n"), p.stderr
    assert vm.status(bundle.id) == "stopped"
    vm.run("delete", bundle.id, check=True, timeout=120)
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
