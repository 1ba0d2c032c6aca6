"""Builds the libFuzzer targets (`make fuzz-build`) and runs each for a bounded time on a
copy of its corpus (tests/fuzz/corpus/<name>, grown by `make fuzz`'s long runs, which also
holds the inputs of every bug the fuzzers found, named regress-*), with tests/fuzz/<name>.dict
if there is one. The repository's corpus is only read. Any crash, leak, sanitizer report,
timeout or out-of-memory fails."""
import os
import shutil
import subprocess
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FUZZ_BUILD = os.path.join(REPO, "build", "fuzz")
CORPUS = os.path.join(HERE, "corpus")
FUZZERS = sorted(name[:-2] for name in os.listdir(HERE) if name.startswith("fuzz_") and name.endswith(".c"))
# Each target stops at whichever comes first. The suite's run is a smoke test of every target
# and its corpus; finding bugs is `make fuzz`'s job (300 s per target).
RUNS = 50000
SECONDS = 10


@pytest.fixture(scope="module")
def fuzz_build():
    p = subprocess.run(["make", "-C", REPO, f"-j{os.cpu_count() or 1}", "fuzz-build"], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    return FUZZ_BUILD


@pytest.mark.parametrize("name", FUZZERS)
def test_fuzz(fuzz_build, name, tmp_path):
    # libFuzzer adds new inputs to its first corpus directory: give it a copy.
    scratch = tmp_path / "corpus"
    shutil.copytree(os.path.join(CORPUS, name), scratch)
    cmd = [os.path.join(fuzz_build, name), f"-runs={RUNS}", f"-max_total_time={SECONDS}", "-timeout=20",
           "-rss_limit_mb=2048", f"-artifact_prefix={tmp_path}/"]
    dictionary = os.path.join(HERE, name + ".dict")
    if os.path.exists(dictionary):
        cmd.append(f"-dict={dictionary}")
    cmd.append(str(scratch))
    p = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=SECONDS + 120)
    report = "\n".join(line for line in p.stderr.splitlines() if not line.startswith("#"))
    assert p.returncode == 0, f"{' '.join(cmd)}\n{report[-8000:]}"
    for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "ERROR: libFuzzer"):
        assert marker not in p.stderr, f"{' '.join(cmd)}\n{report[-8000:]}"
    assert "Done " in p.stderr or "DONE " in p.stderr, report[-4000:]
