"""podman with --runtime capsule-vm: every container is a VM container, with no annotation. Needs
hardware KVM, so on this host tests/testbed/test_sandbox.py runs it in the testbed. One boot per
test (nested TCG boots take 10-90 s)."""
import json
import os
import re
import subprocess

import pytest

from podman_env import CAPSULE_ROOT, IMAGE, Podman, mounts_below, podman_session, rmdir_unless_used
from test_podman import image_tar, run_in_pty  # noqa: F401 (the module's busybox image)
import sandbox_vm_env
from sandbox_vm_env import guest_release, install_runtime

pytestmark = sandbox_vm_env.pytestmark  # hardware KVM, the kernel and the initrd, or skip


class VmPodman(Podman):
    """podman does not pass its environment ($CAPSULE_KERNEL) to the runtime: as installed, the
    kernel and the agent's initrd sit next to a capsule of its own, started as capsule-vm."""

    def __init__(self, *args):
        super().__init__(*args)
        self.runtime = install_runtime(os.path.join(self.base, "bin"))

    def global_args(self):
        args = super().global_args()
        assert args[-2] == "--runtime"
        return args[:-1] + [self.runtime]


@pytest.fixture
def podman(image_tar):  # noqa: F811
    yield from podman_session(image_tar, "capsule-vm-podman", VmPodman)


def test_run_prints_output_and_returns_exit_code_and_podmans_dns(podman):
    """In a network namespace by path (podman writes and binds its resolv.conf, which --network none
    has not), with lo only: the resolv.conf podman made from --dns reaches the container in the VM."""
    netns = f"capdns{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        p = podman.run("run", "--rm", "--network", f"ns:/run/netns/{netns}", "--dns", "10.77.0.53",
                       "--dns-search", "pod.example", "--cgroup-parent", podman.cgroup_parent, IMAGE,
                       "sh", "-c", "echo hello; uname -r; cat /etc/resolv.conf; exit 5", check=False, timeout=400)
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=True)
    assert p.returncode == 5, p.stderr
    lines = p.stdout.splitlines()
    assert lines[:2] == ["hello", guest_release()]
    assert "nameserver 10.77.0.53" in lines and "search pod.example" in lines, p.stdout


def test_detached_exec_tty_pause_memory_sizing_and_stop(podman):
    cid = podman.create_detached("sh", "-c", "echo up >/tmp/up; exec sleep 1000", opts=["--memory", "300m"])
    insp = podman.inspect(cid)
    assert insp["OCIRuntime"] == podman.runtime and insp["State"]["Running"]
    p = podman.run("exec", cid, "sh", "-c", "cat /tmp/up; grep MemTotal /proc/meminfo; echo oops >&2; exit 7",
                   check=False, timeout=120)
    assert p.returncode == 7, p.stderr
    assert p.stdout.startswith("up\n") and p.stderr == "oops\n"
    mem_kib = int(re.search(r"MemTotal:\s+(\d+)", p.stdout).group(1))
    assert 200 * 1024 < mem_kib <= (300 - 32) * 1024, p.stdout  # --memory minus the VMM's share
    # exec -it: conmon hands capsule-vm a --console-socket, with --detach.
    argv = podman.cmd("exec", "-it", cid, "sh", "-c", "tty; echo ready; read line; echo got:$line; exit 3")
    rc, out = run_in_pty(argv, podman.env, [(r"ready", "exec-typed\r"), (r"got:exec-typed", None)], timeout=180)
    assert rc == 3, out
    assert re.search(r"^/dev/pts/\d+\r?$", out, re.M), out
    podman.run("pause", cid, timeout=120)
    assert podman.inspect(cid)["State"]["Status"] == "paused"
    podman.run("unpause", cid, timeout=120)
    assert podman.inspect(cid)["State"]["Status"] == "running"
    podman.run("stop", "--time", "2", cid, timeout=120)
    assert podman.inspect(cid)["State"]["Status"] == "exited"
    podman.run("rm", cid, timeout=120)


# What a pod's containers run: they end at SIGTERM, as catatonit and pause do (`pod stop`).
UNTIL_TERM = "trap 'exit 0' TERM; sleep 1000000 & wait"
# One that ignores SIGTERM: only podman's SIGKILL at the end of `stop --time` ends it.
IGNORES_TERM = "trap '' TERM; sleep 1000000 & wait"


def pod_create(podman, name, *opts, share_parent=False, infra_script=UNTIL_TERM):
    """A podman pod whose infra container is the busybox image's sh (no catatonit or pause image
    here), created and started: returns the infra container's id and `pod start`. With the pod's
    own cgroup as its containers' parent (podman's default), its device filter denies /dev/kvm.
    podman splits --infra-command at spaces: the script's are tabs."""
    podman.run("pod", "create", "--name", name, "--infra-image", IMAGE,
               "--infra-command", "sh -c " + infra_script.replace(" ", "\t"),
               "--cgroup-parent", podman.cgroup_parent, f"--share-parent={str(share_parent).lower()}", *opts, timeout=60)
    infra = json.loads(podman.run("pod", "inspect", name).stdout)["InfraContainerID"]
    podman.ids.append(infra)
    return infra, podman.run("pod", "start", name, check=False, timeout=400)


def pod_run_detached(podman, pod, *args):
    cid = podman.run("run", "-d", "--pod", pod, IMAGE, *args, timeout=120).stdout.strip().splitlines()[-1]
    podman.ids.append(cid)
    return cid


def exec_out(podman, cid, script):
    p = podman.run("exec", cid, "sh", "-c", script, check=False, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout


BOOT_ID = "cat /proc/sys/kernel/random/boot_id"


def pod_leftovers(podman, ids):
    """What a removed pod left of its containers: capsule's state, a process naming one (conmon's
    and podman's aside: the session's end checks them), a mount below podman's directory, a cgroup
    below the pod's parent."""
    left = [f"state {cid}" for cid in ids if os.path.lexists(os.path.join(CAPSULE_ROOT, cid))]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().decode(errors="replace")
        except OSError:
            continue
        if os.path.basename(args.split("\0")[0]) not in ("conmon", "podman"):
            left += [f"process {pid}: {args}" for cid in ids if cid in args]
    left += [f"mount {mp}" for mp in mounts_below(podman.base) if any(cid in mp for cid in ids)]
    for d in podman.cgroup.leftovers():
        left += [f"cgroup {top}" for top, _, _ in os.walk(d) if any(cid in os.path.basename(top) for cid in ids)]
    return left


VAR_LIB_CNI = "/var/lib/cni"
CNI_PLUGINS = "/usr/lib/cni"
# ptp as podman runs it, each call logged: a cache entry left behind then says whether CNI DEL ran
# and what it answered (podman's cleanup process, started by conmon, logs its errors nowhere).
PTP_LOGGED = """#!/bin/sh
in=$(cat)
out=$(printf %s "$in" | {plugins}/ptp 2>&1)
rc=$?
printf '%s %s %s rc=%s %s\\n' "$(date +%T.%N)" "$CNI_COMMAND" "$CNI_CONTAINERID" "$rc" "$(printf %s "$out" | tr -s '\\n ' ' ')" >>{log}
printf %s "$out"
exit $rc
"""


def log_ptp(podman):
    """podman's CNI plugins: host-local and a ptp that logs (PTP_LOGGED) to the returned file."""
    plugins, log = os.path.join(podman.base, "cni-plugins"), os.path.join(podman.base, "cni-calls.log")
    os.makedirs(plugins)
    os.symlink(os.path.join(CNI_PLUGINS, "host-local"), os.path.join(plugins, "host-local"))
    with open(os.path.join(plugins, "ptp"), "w") as f:
        f.write(PTP_LOGGED.format(plugins=CNI_PLUGINS, log=log))
    os.chmod(os.path.join(plugins, "ptp"), 0o755)
    with open(podman.conf, "a") as f:
        f.write(f'cni_plugin_dirs = ["{plugins}"]\n')
    return log


@pytest.fixture
def pod_network(podman):
    """A CNI network of podman's for a pod (podman's pods take no namespace by path): ptp, a veth
    pair whose host side is the gateway, host-local addresses kept below podman's directory.
    libcni's result cache is /var/lib/cni/results whatever podman says: our entries go with CNI
    DEL, its directories if they are ours. Left entries fail the test with ptp's calls."""
    calls = log_ptp(podman)
    name = f"cappod{os.getpid() % 100000}"
    conf = {"cniVersion": "0.4.0", "name": name, "plugins": [
        {"type": "ptp", "ipMasq": False, "ipam": {"type": "host-local", "subnet": "10.89.0.0/24",
                                                  "routes": [{"dst": "0.0.0.0/0"}],
                                                  "dataDir": os.path.join(podman.base, "cni-ipam")}}]}
    with open(os.path.join(podman.base, "netconf", f"{name}.conflist"), "w") as f:
        json.dump(conf, f)
    results = os.path.join(VAR_LIB_CNI, "results")
    existed = {d: os.path.isdir(d) for d in (VAR_LIB_CNI, results)}
    yield name
    left = [e for e in (os.listdir(results) if os.path.isdir(results) else []) if e.startswith(name + "-")]
    for d in (results, VAR_LIB_CNI):
        if not existed[d] and os.path.isdir(d) and not left:
            rmdir_unless_used(d)
    if left:
        with open(calls) as f:
            raise AssertionError(f"CNI cache entries left behind: {left}; ptp's calls:\n{f.read()}")


def test_pod_two_containers_run_in_the_infras_vm_with_the_pods_address_and_stop_rm_leave_nothing(podman, pod_network):
    """podman marks no pod's infra container, only the others (CRI-O's annotations naming the
    infra); under capsule-vm, as under Kata, the infra boots the pod's VM on the pod's CNI
    network namespace and the pod's containers join it: one guest kernel (its boot_id), the
    pod's address and hostname, exec into each. `podman pod stop` and `pod rm` leave nothing.
    podman 4.3 stops a pod's containers all at once: the infra ends at SIGTERM and the VM powers
    off under the second container, which ignores it; podman's SIGKILL to that one then finds the
    VM going or gone, and the stop still succeeds."""
    infra, started = pod_create(podman, "webpod", "--network", pod_network)
    assert started.returncode == 0, started.stderr
    netns = podman.inspect(infra)["NetworkSettings"]["SandboxKey"]
    address = podman.inspect(infra)["NetworkSettings"]["Networks"][pod_network]["IPAddress"]
    assert address.startswith("10.89.0."), address
    c1 = pod_run_detached(podman, "webpod", "sh", "-c", "echo one >/tmp/who; " + UNTIL_TERM)
    c2 = pod_run_detached(podman, "webpod", "sh", "-c", "echo two >/tmp/who; " + IGNORES_TERM)
    script = f"{BOOT_ID}; cat /tmp/who; hostname; ip -4 -o addr show eth0 | grep -o 'inet [0-9.]*'"
    out1, out2 = exec_out(podman, c1, script).splitlines(), exec_out(podman, c2, script).splitlines()
    assert out1[1:] == ["one", "webpod", f"inet {address}"], out1
    assert out2[1:] == ["two", "webpod", f"inet {address}"], out2
    assert out1[0] == out2[0] == exec_out(podman, infra, BOOT_ID).strip()
    vmm = podman.inspect(infra)["State"]["Pid"]
    assert [podman.inspect(c)["State"]["Pid"] != vmm for c in (c1, c2)] == [True, True]

    podman.run("pod", "stop", "--time", "5", "webpod", timeout=180)
    assert {podman.inspect(c)["State"]["Status"] for c in (infra, c1, c2)} == {"exited"}
    podman.run("pod", "rm", "webpod", timeout=180)
    assert pod_leftovers(podman, [infra, c1, c2]) == []
    assert not os.path.exists(netns)


def forged(podman, tmp_path, config, name, pod, net, ipc=None):
    """A bundle with podman's config.json of a pod's container, its claims changed: the pod it
    names (None: no container type, as podman writes a container outside any pod), the network
    namespace, the ipc one. Returns (bundle, id)."""
    cfg = json.loads(json.dumps(config))
    ann = cfg["annotations"]
    if pod:
        ann["io.kubernetes.cri-o.SandboxID"] = pod
    else:
        del ann["io.kubernetes.cri-o.SandboxID"], ann["io.kubernetes.cri-o.ContainerType"]
    for ns in cfg["linux"]["namespaces"]:
        if ns["type"] == "network":
            ns["path"] = net
        if ns["type"] == "ipc" and ipc:
            ns["path"] = ipc
    cid = f"forged-{name}-{os.getpid()}"
    cfg["linux"]["cgroupsPath"] = f"{podman.cgroup_parent}/{cid}"
    cfg["process"]["args"] = ["sh", "-c", "readlink /proc/self/ns/ipc"]
    bundle = tmp_path / name
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(cfg))
    return str(bundle), cid


def test_pods_without_a_network_and_forged_claims_reach_neither_another_pod_nor_the_host(podman, tmp_path):
    """Two pods on podman's default here (--network none): each its own VM, each container in its
    pod's. What podman hands capsule for a pod's container, its infra's id and /proc/PID/ns/...
    of the infra's host pid (the pod's sandbox process), is checked: changed to name another
    pod's VM or the host's namespace, create fails in one line and leaves nothing; a container
    with another VM's namespace (`--network container:`) is refused; a member whose ipc path is
    the host's gets its pod's ipc namespace in the guest. In podb every process ignores SIGTERM:
    at `pod stop`'s timeout, podman's SIGKILLs to the infra and to the member race, the member's
    reaching a VM that the infra's powers off; the stop succeeds."""
    (infra_a, a), (infra_b, b) = pod_create(podman, "poda"), pod_create(podman, "podb", infra_script=IGNORES_TERM)
    assert (a.returncode, b.returncode) == (0, 0), a.stderr + b.stderr
    p = podman.run("run", "--rm", "--pod", "poda", IMAGE, "sh", "-c", f"{BOOT_ID}; exit 3", check=False, timeout=120)
    assert p.returncode == 3, p.stderr
    boot_a = exec_out(podman, infra_a, BOOT_ID).strip()
    assert p.stdout.strip() == boot_a
    member = pod_run_detached(podman, "podb", "sh", "-c", IGNORES_TERM)
    boot_b = exec_out(podman, member, BOOT_ID).strip()
    assert boot_b != boot_a and boot_b == exec_out(podman, infra_b, BOOT_ID).strip()

    vmm_a, vmm_b = (podman.inspect(c)["State"]["Pid"] for c in (infra_a, infra_b))
    with open(os.path.join(podman.base, "root", "vfs-containers", member, "userdata", "config.json")) as f:
        config = json.load(f)
    paths = {ns["type"]: ns.get("path") for ns in config["linux"]["namespaces"]}
    assert config["annotations"]["io.kubernetes.cri-o.SandboxID"] == infra_b
    assert (paths["network"], paths["ipc"]) == (f"/proc/{vmm_b}/ns/net", f"/proc/{vmm_b}/ns/ipc")
    refused = {
        "other-pod": (infra_a, f"/proc/{vmm_b}/ns/net",
                      f"linux.namespaces: network: `/proc/{vmm_b}/ns/net` is not the network namespace of the pod `{infra_a}`"),
        "host": (infra_b, "/proc/1/ns/net",
                 f"linux.namespaces: network: `/proc/1/ns/net` is not the network namespace of the pod `{infra_b}`"),
        "container-net": (None, f"/proc/{vmm_b}/ns/net",
                          f"linux.namespaces: network: `/proc/{vmm_b}/ns/net` is the sandbox process's of VM container "
                          f"`{infra_b}`, whose network only a member of its pod shares"),
    }
    for name, (pod, net, want) in refused.items():
        bundle, cid = forged(podman, tmp_path, config, name, pod, net)
        p = subprocess.run([podman.runtime, "--root", CAPSULE_ROOT, "create", "--bundle", bundle, cid],
                           capture_output=True, text=True, timeout=400)
        assert (p.returncode, p.stderr) == (1, f"capsule: {want}\n"), name
        assert pod_leftovers(podman, [cid]) == [], name

    pod_ipc = exec_out(podman, infra_a, "readlink /proc/self/ns/ipc").strip()
    bundle, cid = forged(podman, tmp_path, config, "host-ipc", infra_a, f"/proc/{vmm_a}/ns/net", ipc="/proc/1/ns/ipc")
    p = subprocess.run([podman.runtime, "--root", CAPSULE_ROOT, "run", "--bundle", bundle, cid],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert (p.returncode, p.stdout) == (0, pod_ipc + "\n"), p.stderr

    podman.run("pod", "stop", "--time", "5", "poda", "podb", timeout=180)
    states = [podman.inspect(c)["State"] for c in (infra_b, member)]
    assert [s["Status"] for s in states] == ["exited"] * 2, states
    podman.run("pod", "rm", "poda", "podb", timeout=180)
    assert pod_leftovers(podman, [infra_a, infra_b, member, cid]) == []


def test_a_pod_in_its_own_cgroup_is_refused_in_one_line_for_its_device_filter(podman):
    """podman's default pod cgroup (cgroupfs on cgroup v2) filters devices for the pod's
    containers: /dev/kvm is denied to the VMM there. `pod start` fails with capsule's one line
    naming the cgroup and podman's way out, and nothing of the infra container is left."""
    infra, started = pod_create(podman, "filtered", share_parent=True)
    assert started.returncode != 0
    line = re.search(r"capsule: linux\.cgroupsPath: `([^`]*)` or a cgroup above it denies /dev/kvm to its processes, "
                     r"which the VM needs \(podman's pod cgroup does: create the pod with --share-parent=false\)", started.stderr)
    assert line, started.stderr
    assert line.group(1).endswith(f"/libpod-{infra}")
    assert pod_leftovers(podman, [infra]) == []
    podman.run("pod", "rm", "filtered", timeout=120)
    assert pod_leftovers(podman, [infra]) == []
