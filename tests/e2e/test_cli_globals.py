"""Global flags as containerd and podman pass them: --log, --log-format, --root, --debug."""
import json
import os


def test_log_json_records_errors(capsule, bundle, tmp_path):
    log = tmp_path / "capsule.log"
    bundle.config["root"]["path"] = "missing-rootfs"
    bundle.write()
    p = capsule.run("--log", log, "--log-format", "json", "create", "-b", bundle.path, bundle.id)
    assert p.returncode != 0
    assert "rootfs does not exist" in p.stderr
    records = [json.loads(line) for line in log.read_text().splitlines()]
    errors = [r for r in records if r["level"] == "error"]
    assert errors and "rootfs does not exist" in errors[-1]["msg"]
    assert errors[-1]["time"].endswith("Z")


def test_log_text_format(capsule, bundle, tmp_path):
    log = tmp_path / "capsule.log"
    p = capsule.run("--log", log, "--log-format", "text", "state", "nope")
    assert p.returncode != 0
    line = log.read_text().splitlines()[-1]
    assert line.startswith('time="') and "level=error" in line and "does not exist" in line


def test_bad_log_format_is_rejected(capsule):
    p = capsule.run("--log-format", "yaml", "list")
    assert p.returncode != 0 and "--log-format" in p.stderr


def test_debug_messages_go_to_the_log(capsule, bundle, tmp_path):
    log = tmp_path / "capsule.log"
    bundle.set_args("true")
    capsule.run("--debug", "--log", log, "--log-format", "json", "run", "-b", bundle.path, bundle.id, check=True)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(r["level"] == "debug" and f"created container {bundle.id}" in r["msg"] for r in records)
    assert any(r["level"] == "debug" and f"deleted container {bundle.id}" in r["msg"] for r in records)
    assert all(r["level"] != "error" for r in records)


def test_root_holds_the_state(capsule, bundle):
    bundle.set_args("sleep", "100")
    capsule.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
    assert os.path.isfile(os.path.join(capsule.root, bundle.id, "state.json"))
    assert capsule.run("--root", capsule.root + "-other", "state", bundle.id).returncode != 0
