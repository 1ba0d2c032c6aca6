"""The container process as a user sees it: args, env, cwd, user, umask, capabilities,
noNewPrivileges, rlimits, oomScoreAdj, LSM labels, ioPriority, scheduler, personality, and exec."""
import ctypes
import os

import pytest

# Capability numbers from linux/capability.h.
CAPS = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_FOWNER": 3, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7,
    "CAP_SETPCAP": 8, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_RAW": 13, "CAP_SYS_CHROOT": 18, "CAP_SYS_ADMIN": 21,
    "CAP_SYS_NICE": 23, "CAP_MKNOD": 27, "CAP_AUDIT_WRITE": 29,
}


def capmask(names):
    m = 0
    for n in names:
        m |= 1 << CAPS[n]
    return m


def run_ok(capsule, bundle, *args):
    """Run args in a fresh container; return its stdout (and stderr for warnings)."""
    bundle.set_args(*args)
    p = capsule.run("run", "-b", bundle.path, bundle.id)
    assert p.returncode == 0, p.stderr
    return p.stdout


def status_fields(text):
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def start_sleeper(capsule, bundle):
    bundle.set_args("sleep", "1000")
    capsule.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
    return capsule.state(bundle.id)["pid"]


def test_args_env_cwd(capsule, bundle):
    bundle.config["process"]["env"] = ["PATH=/bin", "GREETING=hello world", "EMPTY="]
    bundle.config["process"]["cwd"] = "/tmp"
    out = run_ok(capsule, bundle, "sh", "-c", 'echo "$0|$1|$GREETING|${EMPTY-unset}|$(pwd)"; env | sort', "zero", "arg one")
    first, *env = out.splitlines()
    assert first == "zero|arg one|hello world||/tmp"
    assert "GREETING=hello world" in env and "PATH=/bin" in env
    # nothing from the runtime's own environment leaks in
    assert not any(e.startswith("PYTEST") or e.startswith("HOME=/root") for e in env)


def test_cwd_that_does_not_exist_fails_naming_it(capsule, bundle):
    bundle.config["process"]["cwd"] = "/no/such/dir"
    bundle.set_args("true")
    p = capsule.run("run", "-b", bundle.path, bundle.id)
    assert p.returncode != 0 and "/no/such/dir" in p.stderr


def test_user_uid_gid_additional_gids(capsule, bundle):
    bundle.config["process"]["user"] = {"uid": 1000, "gid": 1001, "additionalGids": [5, 7, 65534]}
    out = run_ok(capsule, bundle, "sh", "-c", "id -u; id -g; id -G; grep -E '^(Uid|Gid|Groups):' /proc/self/status")
    lines = out.splitlines()
    assert lines[0] == "1000" and lines[1] == "1001"
    assert sorted(map(int, lines[2].split())) == [5, 7, 1001, 65534]
    st = status_fields("\n".join(lines[3:]))
    assert st["Uid"].split() == ["1000"] * 4
    assert st["Gid"].split() == ["1001"] * 4
    assert sorted(map(int, st["Groups"].split())) == [5, 7, 65534]


@pytest.mark.parametrize("umask,want", [(0o77, "0077"), (0o2, "0002"), (None, "0022")])
def test_umask(capsule, bundle, umask, want):
    if umask is None:
        bundle.config["process"]["user"].pop("umask", None)
    else:
        bundle.config["process"]["user"]["umask"] = umask
    out = run_ok(capsule, bundle, "sh", "-c", "umask; touch /tmp/f; stat -c %a /tmp/f")
    assert out.splitlines()[0] == want
    assert int(out.splitlines()[1], 8) == 0o666 & ~int(want, 8)


READ_STATUS = ["sh", "-c", "while read l; do echo \"$l\"; done < /proc/self/status"]


def test_all_five_capability_sets_root(capsule, bundle):
    # For root, execve sets P = E = (bounding | inheritable), limited to the old P under
    # no_new_privs; a config with effective == permitted therefore survives exactly.
    caps = {
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SYS_CHROOT"],
        "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "effective": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "inheritable": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "ambient": ["CAP_NET_BIND_SERVICE"],
    }
    bundle.config["process"]["capabilities"] = caps
    bundle.config["process"]["noNewPrivileges"] = True
    # the shell reads its status with a builtin: what the configured process itself has
    st = status_fields(run_ok(capsule, bundle, *READ_STATUS))
    for key, name in (("CapBnd", "bounding"), ("CapPrm", "permitted"), ("CapEff", "effective"),
                      ("CapInh", "inheritable"), ("CapAmb", "ambient")):
        assert int(st[key], 16) == capmask(caps[name]), key


def test_all_five_capability_sets_non_root_ambient(capsule, bundle):
    # A non-root execve keeps exactly the ambient set in permitted and effective.
    caps = {
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETUID"],
        "permitted": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "effective": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "inheritable": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "ambient": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
    }
    bundle.config["process"]["capabilities"] = caps
    bundle.config["process"]["user"] = {"uid": 1000, "gid": 1000}
    out = run_ok(capsule, bundle, "sh", "-c", "cat /proc/self/status; id -u; nc -l -p 80 & sleep 0.5; "
                 "netstat -ltn | grep -q ':80 ' && echo bound-80; kill $!")
    st = status_fields(out)
    for key, name in (("CapBnd", "bounding"), ("CapPrm", "permitted"), ("CapEff", "effective"),
                      ("CapInh", "inheritable"), ("CapAmb", "ambient")):
        assert int(st[key], 16) == capmask(caps[name]), key
    # and the ambient capability really works: uid 1000 binds port 80
    assert out.splitlines()[-2:] == ["1000", "bound-80"]


def test_non_root_without_ambient_cannot_bind_low_port(capsule, bundle):
    bundle.config["process"]["capabilities"] = {k: ["CAP_NET_BIND_SERVICE"] for k in ("bounding", "effective", "permitted")}
    bundle.config["process"]["user"] = {"uid": 1000, "gid": 1000}
    out = run_ok(capsule, bundle, "sh", "-c", "grep CapEff /proc/self/status; nc -l -p 80 2>&1 & sleep 0.5; "
                 "netstat -ltn | grep -q ':80 ' && echo bound-80; kill $! 2>/dev/null; true")
    assert out.split()[:2] == ["CapEff:", "0000000000000000"]
    assert "bound-80" not in out and "ermission denied" in out


def test_capabilities_default_root(capsule, bundle):
    caps = bundle.config["process"]["capabilities"]
    st = status_fields(run_ok(capsule, bundle, *READ_STATUS))
    for key in ("CapBnd", "CapPrm", "CapEff"):
        assert int(st[key], 16) == capmask(caps["bounding"]), key
    assert int(st["CapInh"], 16) == 0 and int(st["CapAmb"], 16) == 0


def test_capability_really_dropped(capsule, bundle):
    bundle.config["process"]["capabilities"] = {k: ["CAP_KILL"] for k in ("bounding", "effective", "permitted")}
    bundle.set_args("sh", "-c", "chown 1:1 /tmp")
    p = capsule.run("run", "-b", bundle.path, bundle.id)
    assert p.returncode != 0 and "Operation not permitted" in p.stderr + p.stdout


def test_unknown_capability_is_rejected(capsule, bundle):
    bundle.config["process"]["capabilities"]["effective"].append("CAP_NOPE")
    bundle.set_args("true")
    p = capsule.run("run", "-b", bundle.path, bundle.id)
    assert p.returncode != 0 and "CAP_NOPE" in p.stderr and "effective" in p.stderr
    assert not os.path.isdir(capsule.root) or os.listdir(capsule.root) == []


@pytest.mark.parametrize("nnp", [True, False])
def test_no_new_privileges(capsule, bundle, nnp):
    bundle.config["process"]["noNewPrivileges"] = nnp
    out = run_ok(capsule, bundle, "grep", "NoNewPrivs", "/proc/self/status")
    assert out.split() == ["NoNewPrivs:", "1" if nnp else "0"]


def test_rlimits(capsule, bundle):
    bundle.config["process"]["rlimits"] = [
        {"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456},
        {"type": "RLIMIT_NPROC", "soft": 77, "hard": 88},
        {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
    ]
    out = run_ok(capsule, bundle, "sh", "-c", "ulimit -n; ulimit -Hn; cat /proc/self/limits")
    lines = out.splitlines()
    assert lines[0] == "123" and lines[1] == "456"
    limits = {l[:26].strip(): l[26:].split()[:2] for l in lines[3:]}
    assert limits["Max open files"] == ["123", "456"]
    assert limits["Max processes"] == ["77", "88"]
    assert limits["Max core file size"] == ["0", "0"]


def test_rlimit_soft_above_hard_is_rejected(capsule, bundle):
    bundle.config["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 2000, "hard": 1000}]
    bundle.set_args("true")
    p = capsule.run("run", "-b", bundle.path, bundle.id)
    assert p.returncode != 0 and "process.rlimits[0]" in p.stderr


def own_effective_caps():
    with open("/proc/self/status") as f:
        return int(status_fields(f.read())["CapEff"], 16)


@pytest.mark.parametrize("adj", [0, 300, 1000])
def test_oom_score_adj(capsule, bundle, adj):
    bundle.config["process"]["oomScoreAdj"] = adj
    assert run_ok(capsule, bundle, "cat", "/proc/self/oom_score_adj").strip() == str(adj)


def test_negative_oom_score_adj(capsule, bundle):
    # lowering it needs CAP_SYS_RESOURCE, which the runtime may lack (as on this host)
    bundle.config["process"]["oomScoreAdj"] = -500
    bundle.set_args("cat", "/proc/self/oom_score_adj")
    p = capsule.run("run", "-b", bundle.path, bundle.id)
    if own_effective_caps() & (1 << 24):
        assert p.returncode == 0 and p.stdout.strip() == "-500", p.stderr
    else:
        assert p.returncode != 0 and "process.oomScoreAdj" in p.stderr and "Permission denied" in p.stderr


def test_apparmor_and_selinux_accepted_with_warning(capsule, bundle):
    assert not os.path.exists("/sys/kernel/security/apparmor") and not os.path.exists("/sys/fs/selinux/enforce"), \
        "this test expects a host without AppArmor and SELinux"
    bundle.config["process"]["apparmorProfile"] = "capsule-test-profile"
    bundle.config["process"]["selinuxLabel"] = "system_u:system_r:container_t:s0"
    bundle.set_args("echo", "ran")
    p = capsule.run("run", "-b", bundle.path, bundle.id)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "ran\n"
    assert "apparmorProfile" in p.stderr and "capsule-test-profile" in p.stderr
    assert "selinuxLabel" in p.stderr


def ioprio_get(pid):
    libc = ctypes.CDLL(None, use_errno=True)
    SYS_ioprio_get = 252  # x86_64
    r = libc.syscall(SYS_ioprio_get, 1, pid)
    assert r >= 0, os.strerror(ctypes.get_errno())
    return r >> 13, r & 0xff


def test_io_priority(capsule, bundle):
    bundle.config["process"]["ioPriority"] = {"class": "IOPRIO_CLASS_BE", "priority": 6}
    pid = start_sleeper(capsule, bundle)
    assert ioprio_get(pid) == (2, 6)
    out = capsule.run("exec", bundle.id, "ionice", "-p", "1", check=True).stdout
    assert out.strip() == "best-effort: prio 6"


def test_io_priority_unknown_class(capsule, bundle):
    bundle.config["process"]["ioPriority"] = {"class": "IOPRIO_CLASS_FAST", "priority": 1}
    bundle.set_args("true")
    p = capsule.run("run", "-b", bundle.path, bundle.id)
    assert p.returncode != 0 and "IOPRIO_CLASS_FAST" in p.stderr


def test_scheduler_batch_with_nice(capsule, bundle):
    bundle.config["process"]["scheduler"] = {"policy": "SCHED_BATCH", "nice": 7}
    pid = start_sleeper(capsule, bundle)
    assert os.sched_getscheduler(pid) == os.SCHED_BATCH
    assert os.getpriority(os.PRIO_PROCESS, pid) == 7
    # inside too: field 19 of /proc/self/stat is nice, 41 the policy
    stat = capsule.run("exec", bundle.id, "cat", "/proc/1/stat", check=True).stdout
    fields = stat.rsplit(")", 1)[1].split()
    assert fields[19 - 3] == "7" and fields[41 - 3] == "3"


def test_personality_linux32(capsule, bundle):
    bundle.config["linux"]["personality"] = {"domain": "LINUX32"}
    assert run_ok(capsule, bundle, "uname", "-m").strip() == "i686"


def test_personality_linux(capsule, bundle):
    bundle.config["linux"]["personality"] = {"domain": "LINUX"}
    assert run_ok(capsule, bundle, "uname", "-m").strip() == os.uname().machine


# ---- exec ----

def test_exec_environment(capsule, bundle):
    bundle.config["process"]["env"] = ["PATH=/bin", "FROM_CONFIG=1", "OVERRIDE=old"]
    start_sleeper(capsule, bundle)
    out = capsule.run("exec", "-e", "OVERRIDE=new", "--env", "ADDED=x y", bundle.id, "env", check=True).stdout
    env = sorted(out.splitlines())
    assert env == ["ADDED=x y", "FROM_CONFIG=1", "OVERRIDE=new", "PATH=/bin"]


def test_exec_user(capsule, bundle):
    start_sleeper(capsule, bundle)
    out = capsule.run("exec", "-u", "1234:4321", "--additional-gids", "9", bundle.id, "sh", "-c", "id -u; id -g; id -G",
                      check=True).stdout.split("\n")
    assert out[0] == "1234" and out[1] == "4321"
    assert sorted(out[2].split()) == ["4321", "9"]
    # uid only: gid 0
    out = capsule.run("exec", "-u", "77", bundle.id, "id", "-g", check=True).stdout
    assert out.strip() == "0"
    bad = capsule.run("exec", "-u", "nobody:x", bundle.id, "true")
    assert bad.returncode != 0 and "nobody:x" in bad.stderr


def test_exec_cap_adds_capability(capsule, bundle):
    start_sleeper(capsule, bundle)
    base = status_fields(capsule.run("exec", bundle.id, *READ_STATUS, check=True).stdout)
    default = capmask(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"])
    assert int(base["CapEff"], 16) == default
    more = status_fields(capsule.run("exec", "--cap", "CAP_SYS_ADMIN", "--cap", "CAP_NET_RAW", bundle.id, *READ_STATUS,
                                     check=True).stdout)
    want = default | capmask(["CAP_SYS_ADMIN", "CAP_NET_RAW"])
    assert int(more["CapEff"], 16) == want
    assert int(more["CapPrm"], 16) == want
    assert int(more["CapBnd"], 16) == want
    bad = capsule.run("exec", "--cap", "CAP_BOGUS", bundle.id, "true")
    assert bad.returncode != 0 and "CAP_BOGUS" in bad.stderr


def test_exec_no_new_privs(capsule, bundle):
    bundle.config["process"]["noNewPrivileges"] = False
    start_sleeper(capsule, bundle)
    plain = capsule.run("exec", bundle.id, "grep", "NoNewPrivs", "/proc/self/status", check=True).stdout
    assert plain.split() == ["NoNewPrivs:", "0"]
    nnp = capsule.run("exec", "--no-new-privs", bundle.id, "grep", "NoNewPrivs", "/proc/self/status", check=True).stdout
    assert nnp.split() == ["NoNewPrivs:", "1"]


def test_exec_inherits_rlimits_and_oom_from_config(capsule, bundle):
    bundle.config["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 321, "hard": 654}]
    bundle.config["process"]["oomScoreAdj"] = 300
    start_sleeper(capsule, bundle)
    out = capsule.run("exec", bundle.id, "sh", "-c", "ulimit -n; ulimit -Hn; cat /proc/self/oom_score_adj",
                      check=True).stdout
    assert out.split() == ["321", "654", "300"]


def test_exec_personality(capsule, bundle):
    bundle.config["linux"]["personality"] = {"domain": "LINUX32"}
    start_sleeper(capsule, bundle)
    assert capsule.run("exec", bundle.id, "uname", "-m", check=True).stdout.strip() == "i686"
