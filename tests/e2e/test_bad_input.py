"""Bad input: one clear line naming the field or file, a non-zero exit, and nothing left behind."""
import os

import pytest

from conftest import procs_cgroup_dir

ALSO_UNDER_ASAN = True


def cgroup_dir(bundle):
    return procs_cgroup_dir(f"capsule-test/{bundle.id}")


def assert_clean_failure(capsule, bundle, *needles):
    p = capsule.run("create", "-b", bundle.path, bundle.id)
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    assert not os.path.exists(os.path.join(capsule.root, bundle.id))
    assert not os.path.exists(cgroup_dir(bundle))
    return lines[0]


def test_malformed_json(capsule, bundle):
    with open(os.path.join(bundle.path, "config.json"), "w") as f:
        f.write('{"ociVersion": "1.1.0", "root": {"path": "rootfs"},,}')
    assert_clean_failure(capsule, bundle, "config.json", "line 1")


def test_missing_config(capsule, bundle):
    os.unlink(os.path.join(bundle.path, "config.json"))
    assert_clean_failure(capsule, bundle, "config.json")


def test_missing_rootfs(capsule, bundle):
    bundle.config["root"]["path"] = "nope"
    bundle.write()
    assert_clean_failure(capsule, bundle, "nope", "rootfs does not exist")


def test_unknown_namespace(capsule, bundle):
    bundle.config["linux"]["namespaces"].append({"type": "bogus"})
    bundle.write()
    assert_clean_failure(capsule, bundle, "linux.namespaces", "bogus")


def test_bad_id_mapping(capsule, bundle):
    bundle.config["linux"]["namespaces"].append({"type": "user"})
    bundle.config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 0}]
    bundle.config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    bundle.write()
    assert_clean_failure(capsule, bundle, "uidMappings")


def test_unknown_seccomp_syscall(capsule, bundle):
    bundle.config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "not_a_syscall"], "action": "SCMP_ACT_ERRNO"}],
    }
    bundle.write()
    assert_clean_failure(capsule, bundle, "linux.seccomp.syscalls[0].names[1]", "not_a_syscall")


def test_unknown_capability(capsule, bundle):
    bundle.config["process"]["capabilities"]["bounding"].append("CAP_NOPE")
    bundle.write()
    assert_clean_failure(capsule, bundle, "process.capabilities.bounding", "CAP_NOPE")


@pytest.mark.parametrize("kind", ["prestart", "createRuntime", "createContainer"])
def test_failing_hook(capsule, bundle, kind):
    # createContainer hooks run in the container's mount namespace before pivot_root: host paths resolve.
    bundle.config["hooks"] = {kind: [{"path": "/bin/sh", "args": ["sh", "-c", "exit 4"]}]}
    bundle.set_args("sleep", "100")
    line = assert_clean_failure(capsule, bundle, f"hooks.{kind}[0]", "status 4")
    assert "/bin/sh" in line


def test_bad_flag(capsule, bundle):
    p = capsule.run("create", "--no-such-flag", "-b", bundle.path, bundle.id)
    assert p.returncode != 0 and "--no-such-flag" in p.stderr
    p = capsule.run("create", "--preserve-fds", "many", "-b", bundle.path, bundle.id)
    assert p.returncode != 0 and "--preserve-fds" in p.stderr
    assert not os.path.exists(os.path.join(capsule.root, bundle.id))


def test_missing_executable(capsule, bundle):
    bundle.set_args("/bin/not-here")
    assert_clean_failure(capsule, bundle, "/bin/not-here", "no such file or directory")


def test_bad_cgroup_value(capsule, bundle):
    bundle.config["linux"]["resources"]["cpu"] = {"cpus": "9999"}
    bundle.write()
    assert_clean_failure(capsule, bundle, "linux.resources.cpu.cpus")
