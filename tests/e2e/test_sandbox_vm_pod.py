"""One VM per Kubernetes pod (sandbox_pod.c): the pause container boots it, members join. Runs as
test_sandbox_vm.py does."""
import copy
import json
import os
import shutil


from conftest import BUILD, Bundle, Capsule
from test_terminal import ConsoleSocket, read_until
import sandbox_vm_env
from sandbox_vm_env import BOOT, become_subreaper, crash_leftovers, poll_until, proc_status, processes_naming, reap, sh, wait_status

# Their skip (hardware KVM, the kernel and the initrd) and fixtures.
pytestmark = sandbox_vm_env.pytestmark
vm = sandbox_vm_env.vm
crash_netns = sandbox_vm_env.crash_netns


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


def start_pod(vm, pod, netns_path, **annotations):
    """The pod's sandbox container, created and started: returns its host pid."""
    pod.config["annotations"] = {POD_TYPE: "sandbox", **annotations}
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
               "sleep 3600 & while :; do sleep 0.2; done")
    vm.run("create", "--bundle", m.path, m.id, check=True, timeout=120)
    st = vm.state(m.id)
    assert st["status"] == "created"
    with open(os.path.join(vm.root, m.id, "sandbox.json")) as f:
        record = json.load(f)
    assert record["member_of"] == pod.id
    with open(f"/proc/{st['pid']}/cgroup") as f:
        assert f.read().strip().endswith(f"/capsule-test/{m.id}")
    vm.run("start", m.id, check=True, timeout=120)
    wait_status(vm, m.id, "running")
    # Confined as an exec's relay is: every thread of it under its seccomp filter, no capabilities.
    for tid in os.listdir(f"/proc/{st['pid']}/task"):
        status = proc_status(f"{st['pid']}/task/{tid}")
        assert status["Seccomp"] == "2" and int(status["CapEff"], 16) == 0, (tid, status)
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
                    if point.endswith(f"/{record['member_dir']}/binds/{n}"):
                        assert options.split(",")[0] == mode, line
                        seen.add((point.startswith(f"/{record['member_dir']}/"), n))
    assert {(True, 0), (True, 1)} <= seen, seen
    p = vm.run("exec", m.id, "sh", "-c", "cat /mine; hostname", timeout=120)
    assert (p.returncode, p.stdout.split()) == (0, ["mine", "the-pod"]), p.stdout + p.stderr
    # Its shell and the long sleep stay (the loop's short sleeps come and go).
    p = vm.run("ps", "--format", "json", m.id, timeout=120)
    assert p.returncode == 0 and len(json.loads(p.stdout)) >= 2, p.stdout + p.stderr
    vm.run("pause", m.id, check=True, timeout=120)
    assert (vm.status(m.id), vm.status(pod.id)) == ("paused", "running")
    vm.run("resume", m.id, check=True, timeout=120)
    assert vm.status(m.id) == "running"
    vm.run("kill", m.id, "TERM", check=True, timeout=120)
    wstatus = reap(st["pid"], "the member's host process after kill TERM")
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
    wstatus = reap(pid, "the member's host process with a terminal")
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
    reap(pid, "the member's host process after the pod's delete --force")
    assert vm.status(m.id) == "stopped"
    vm.run("delete", m.id, check=True, timeout=120)
    assert crash_leftovers(vm, m, m.id) == []
    assert crash_leftovers(vm, pod, pod.id, crash_netns) == []


def test_pod_a_member_id_used_again_at_once_gets_its_own_rootfs_and_binds(vm, bundle, crash_netns, tmp_path):
    """The pod's guest keeps what it looked up of a member's files for a second (virtio-fs's
    entry cache). A member of the same id created right after one the guest refused must get
    its own rootfs and binds all the same, never the last one's: each create's files reach the
    guest under a name it has not seen."""
    become_subreaper()
    pod = bundle
    netns_path = f"/run/netns/{crash_netns}"
    pod_pid = start_pod(vm, pod, netns_path)
    members = {}
    for name in ("refused", "runs"):
        m = pod_member(pod, tmp_path, name, pod.id, netns_path, pod_pid)
        (tmp_path / f"{name}-data").mkdir()
        m.config["mounts"].append({"destination": "/data", "type": "bind", "source": str(tmp_path / f"{name}-data"),
                                   "options": ["rbind", "ro"]})
        members[name] = m
    refused, runs = members["refused"], members["runs"]
    refused.config["mounts"].append({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                                     "options": ["size=no-size"]})
    refused.set_args("true")
    runs.id = refused.id
    runs.config["linux"]["cgroupsPath"] = f"capsule-test/{runs.id}"
    runs.set_args("cat", "/which", "/data/which")
    for round in range(4):
        for name, m in members.items():
            with open(os.path.join(m.rootfs, "which"), "w") as f:
                f.write(f"{name}-rootfs-{round}\n")
            (tmp_path / f"{name}-data" / "which").write_text(f"{name}-data-{round}\n")
        p = vm.run("create", "--bundle", refused.path, refused.id, timeout=120)
        assert p.returncode == 1 and "/scratch" in p.stderr, p.stderr
        p = vm.run("run", "--bundle", runs.path, runs.id, timeout=120)
        assert (p.returncode, p.stdout, p.stderr) == (0, f"runs-rootfs-{round}\nruns-data-{round}\n", ""), round
        assert crash_leftovers(vm, runs, runs.id) == []
    vm.run("delete", "--force", pod.id, check=True, timeout=120)
    assert crash_leftovers(vm, pod, pod.id, crash_netns) == []


GUEST_SIZE = "nproc; grep MemTotal /proc/meminfo"


def test_pod_vm_is_sized_from_the_pods_totals_and_a_member_keeps_its_own_limit(vm, bundle, crash_netns, tmp_path):
    """containerd's totals of the pod on its sandbox container (the kubelet's pod-level resources)
    size the pod's VM, over the pause's own limit: a quota of 150000 per 100000 us is 2 vCPUs,
    352M is 320M for the guest (32M go to the VMM), where the pause's 512M limit alone would give
    480M. A member runs in that VM, its own memory limit on its cgroup in the guest."""
    become_subreaper()
    pod = bundle
    netns_path = f"/run/netns/{crash_netns}"
    pod.config["linux"].setdefault("resources", {})["memory"] = {"limit": 512 << 20}
    pod_pid = start_pod(vm, pod, netns_path, **{"io.kubernetes.cri.sandbox-memory": str(352 << 20),
                                               "io.kubernetes.cri.sandbox-cpu-quota": "150000",
                                               "io.kubernetes.cri.sandbox-cpu-period": "100000"})
    p = vm.run("exec", pod.id, "sh", "-c", GUEST_SIZE, timeout=120)
    assert p.returncode == 0, p.stderr
    nproc, memtotal = p.stdout.splitlines()
    assert nproc == "2"
    mem_kib = int(memtotal.split()[1])
    assert 264 * 1024 < mem_kib <= 320 * 1024, memtotal
    m = pod_member(pod, tmp_path, "sized", pod.id, netns_path, pod_pid)
    m.config["linux"].setdefault("resources", {})["memory"] = {"limit": 100 << 20}
    m.set_args("sh", "-c", GUEST_SIZE + "; cat /sys/fs/cgroup/memory.max")
    p = vm.run("run", "--bundle", m.path, m.id, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.splitlines() == [nproc, memtotal, str(100 << 20)], p.stdout
    assert crash_leftovers(vm, m, m.id) == []
    vm.run("delete", "--force", pod.id, check=True, timeout=120)
    assert crash_leftovers(vm, pod, pod.id, crash_netns) == []
