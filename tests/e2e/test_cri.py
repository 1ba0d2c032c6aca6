"""Kubernetes' path: containerd's CRI plugin drives capsule as a RuntimeClass handler, and the runtime
answers the shim as runc does.

The first tests run capsule and runc side by side on the calls the shim and conmon make on containers
that have stopped or do not exist, and check the texts those clients parse (containerd's
checkKillError and task delete, podman's state check). The rest is in the second half of the file.
"""
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import CAPSULE, Capsule
from podman_env import pid_alive, wait_for

RUNC = shutil.which("runc")
RUNTIMES = ["capsule", "runc"]


@pytest.fixture(params=RUNTIMES)
def runtime(request, tmp_path):
    if request.param == "runc" and not RUNC:
        pytest.skip("runc is not installed: run scripts/install-deps")
    rt = Capsule(str(tmp_path / "state"), CAPSULE if request.param == "capsule" else RUNC)
    rt.name = request.param
    yield rt
    rt.cleanup()
    assert not os.path.isdir(rt.root) or os.listdir(rt.root) == []


def without_pid_namespace(bundle):
    """The container shares a pid namespace (here the host's, in a pod the pause container's): its
    init is not pid 1 there, so its exit does not take the other processes with it."""
    ns = bundle.config["linux"]["namespaces"]
    bundle.config["linux"]["namespaces"] = [n for n in ns if n["type"] != "pid"]


def wait_stopped(rt, cid):
    wait_for(lambda: rt.status(cid) == "stopped", what=f"{cid} to stop")


def test_kill_all_after_init_exit_signals_what_is_left(runtime, bundle):
    without_pid_namespace(bundle)
    bundle.set_args("sh", "-c", "sleep 1000 & echo $! > /left.pid")
    runtime.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
    wait_stopped(runtime, bundle.id)
    with open(os.path.join(bundle.rootfs, "left.pid")) as f:
        left = int(f.read())
    assert pid_alive(left)
    # plain kill: init is gone, which the shim must read as "process already finished"
    p = runtime.run("kill", bundle.id, "KILL")
    assert p.returncode != 0
    assert "container not running" in p.stderr, p.stderr
    assert pid_alive(left)
    # --all: what is left in the cgroup gets the signal, and the call succeeds
    runtime.run("kill", "--all", bundle.id, "KILL", check=True)
    wait_for(lambda: not pid_alive(left), what=f"leftover {left} to die")
    # and again, with nothing left
    runtime.run("kill", "--all", bundle.id, "KILL", check=True)
    runtime.run("delete", bundle.id, check=True)


def test_kill_all_keeps_a_non_fatal_signal(runtime, bundle):
    """--all delivers the signal asked for, not SIGKILL: a leftover that traps TERM stays alive."""
    without_pid_namespace(bundle)
    bundle.set_args("sh", "-c", "sh -c 'trap \"echo got TERM > /term\" TERM; while :; do sleep 0.1; done' & "
                    "echo $! > /left.pid")
    runtime.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
    wait_stopped(runtime, bundle.id)
    with open(os.path.join(bundle.rootfs, "left.pid")) as f:
        left = int(f.read())
    runtime.run("kill", "--all", bundle.id, "TERM", check=True)
    term = os.path.join(bundle.rootfs, "term")
    wait_for(lambda: os.path.exists(term) and open(term).read() == "got TERM\n", what="the trap to run")
    assert pid_alive(left)
    runtime.run("delete", "--force", bundle.id, check=True)
    wait_for(lambda: not pid_alive(left), what=f"leftover {left} to die with delete --force")


def test_kill_stopped_container_with_own_pid_namespace(runtime, bundle):
    bundle.set_args("true")
    runtime.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
    wait_stopped(runtime, bundle.id)
    p = runtime.run("kill", bundle.id)
    assert p.returncode != 0 and "container not running" in p.stderr, p.stderr
    runtime.run("kill", "--all", bundle.id, "KILL", check=True)
    runtime.run("delete", bundle.id, check=True)


@pytest.mark.parametrize("args", [["state"], ["kill"], ["kill", "--all"], ["delete"], ["pause"], ["resume"],
                                  ["ps"], ["exec"]])
def test_missing_container_does_not_exist(runtime, args):
    """containerd ignores a failed delete and kill, and podman a failed state, when the text says
    "does not exist"."""
    tail = ["/bin/true"] if args == ["exec"] else []
    p = runtime.run(*args, "no-such-ctr", *tail)
    assert p.returncode != 0
    assert "does not exist" in p.stderr, p.stderr
