"""VM containers end to end: capsule-vm boots the guest kernel with capsule-guest, the agent, and the
container runs in it. Needs hardware KVM (a PVM host refuses, see test_sandbox_host.py), so on this
host tests/testbed/test_sandbox.py runs the module inside the testbed. Each test is one boot (10-90 s
in nested TCG): the checks are batched into three."""
import ctypes
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import BUILD, Capsule, procs_cgroup_dir

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


def test_create_start_state_exec_kill_delete(vm, bundle, tmp_path):
    become_subreaper()
    # Without a pid namespace init is not pid 1 in the guest, so SIGTERM's default action kills it.
    bundle.config["linux"]["namespaces"] = [ns for ns in bundle.config["linux"]["namespaces"] if ns["type"] != "pid"]
    bundle.set_args("sleep", "1000")
    pidfile = tmp_path / "pid"
    vm.run("create", "--bundle", bundle.path, "--pid-file", pidfile, bundle.id, check=True, timeout=BOOT)
    st = vm.state(bundle.id)
    assert st["status"] == "created"
    pid = st["pid"]
    assert pid > 0 and int(pidfile.read_text()) == pid
    # The sandbox process is the VMM, inside the container's cgroup.
    with open(os.path.join(procs_cgroup_dir(f"capsule-test/{bundle.id}"), "cgroup.procs")) as f:
        assert str(pid) in f.read().split()
    assert "console.log" in os.listdir(os.path.join(vm.root, bundle.id))

    vm.run("start", bundle.id, check=True, timeout=120)
    assert vm.status(bundle.id) == "running"
    again = vm.run("start", bundle.id, timeout=120)
    assert again.returncode != 0 and "not created" in again.stderr
    refused = vm.run("delete", bundle.id, timeout=120)
    assert refused.returncode != 0 and "not stopped" in refused.stderr
    listed = vm.run("list", "-q", check=True, timeout=120).stdout.split()
    assert listed == [bundle.id]
    # not yet: the cgroup freezer did not stop the VMM's vCPU threads in time
    p = vm.run("pause", bundle.id, timeout=120)
    assert p.returncode == 1 and p.stderr.strip().endswith("pausing a VM container is not supported yet")
    assert vm.status(bundle.id) == "running"

    p = vm.run("exec", bundle.id, "sh", "-c", "echo exec-out; echo exec-err >&2; exit 5", timeout=120)
    assert (p.returncode, p.stdout, p.stderr) == (5, "exec-out\n", "exec-err\n")
    p = vm.run("exec", "-t", bundle.id, "sh", "-c", "tty; exit 4", timeout=120)
    assert p.returncode == 4 and p.stdout.startswith("/dev/pts/"), (p.returncode, p.stdout, p.stderr)

    vm.run("kill", bundle.id, "TERM", check=True, timeout=120)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 143
    wait_status(vm, bundle.id, "stopped")
    vm.run("delete", bundle.id, check=True, timeout=120)
    gone = vm.run("state", bundle.id)
    assert gone.returncode != 0 and "does not exist" in gone.stderr
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


def sh(*args):
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def netns_pair(tmp_path):
    """Two network namespaces joined by a veth pair, as CNI leaves a pod's: the container's side
    is eth0 (10.77.0.2/24, MTU 1400, default route via the server's 10.77.0.1), and an HTTP
    server listens on the other side."""
    tag = os.getpid() % 100000
    srv, ctr = f"capsrv{tag}", f"capctr{tag}"
    sh("ip", "netns", "add", srv)
    sh("ip", "netns", "add", ctr)
    server = None
    try:
        sh("ip", "-n", ctr, "link", "add", "eth0", "mtu", "1400", "type", "veth", "peer", "name", "veth-srv", "netns", srv)
        sh("ip", "-n", srv, "link", "set", "veth-srv", "mtu", "1400", "up")
        sh("ip", "-n", srv, "addr", "add", "10.77.0.1/24", "dev", "veth-srv")
        sh("ip", "-n", ctr, "addr", "add", "10.77.0.2/24", "dev", "eth0")
        sh("ip", "-n", ctr, "link", "set", "eth0", "up")
        sh("ip", "-n", ctr, "route", "add", "default", "via", "10.77.0.1")
        (tmp_path / "www").mkdir()
        (tmp_path / "www" / "token.txt").write_text("served-across-the-veth\n")
        server = subprocess.Popen(
            ["ip", "netns", "exec", srv, "python3", "-m", "http.server", "--bind", "10.77.0.1", "8077",
             "--directory", str(tmp_path / "www")], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        probe = ("import socket,time\nfor _ in range(100):\n try: socket.create_connection(('10.77.0.1',8077),1); break\n"
                 " except OSError: time.sleep(0.1)\nelse: raise SystemExit('the server does not listen')")
        sh("ip", "netns", "exec", ctr, "python3", "-c", probe)
        mac = re.search(r"link/ether (\S+)", sh("ip", "-n", ctr, "link", "show", "eth0")).group(1)
        yield ctr, mac
    finally:
        if server:
            server.kill()
            server.wait()
        sh("ip", "netns", "del", ctr)
        sh("ip", "netns", "del", srv)


def test_net_the_netns_address_routes_dns_and_a_server_reached_through_the_veth(vm, bundle, netns_pair, tmp_path):
    ctr, mac = netns_pair
    bundle.config["linux"]["namespaces"] = [ns for ns in bundle.config["linux"]["namespaces"] if ns["type"] != "network"]
    bundle.config["linux"]["namespaces"].append({"type": "network", "path": f"/run/netns/{ctr}"})
    # DNS as podman gives it: its resolv.conf bind-mounted (the binds share carries it).
    (tmp_path / "resolv.conf").write_text("nameserver 10.77.0.1\n")
    bundle.config["mounts"].append({"destination": "/etc/resolv.conf", "type": "bind",
                                    "source": str(tmp_path / "resolv.conf"), "options": ["rbind", "ro"]})
    bundle.set_args("sh", "-c", "ip addr show; ip route show; cat /etc/resolv.conf; "
                    "wget -q -O - http://10.77.0.1:8077/token.txt")
    p = vm.run("run", "--bundle", bundle.path, bundle.id, timeout=BOOT)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert "inet 10.77.0.2/24" in out  # the namespace's address, inside the VM's container
    assert f"link/ether {mac}" in out  # the veth's MAC: the server's neighbour entry stays valid
    assert "mtu 1400" in out
    assert "default via 10.77.0.1" in out
    assert "nameserver 10.77.0.1" in out
    assert out.rstrip().endswith("served-across-the-veth")
    # The tap went with the VMM, the veth's ingress qdisc with the sandbox.
    assert "capsule-tap0" not in sh("ip", "-n", ctr, "link", "show")
    assert "ingress" not in sh("tc", "-n", ctr, "qdisc", "show", "dev", "eth0")
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
