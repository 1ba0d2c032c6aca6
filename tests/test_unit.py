"""Runs every C unit test binary (normal and ASan+UBSan builds), one pytest case per C test."""
import glob
import os
import subprocess
import pytest

from conftest import BUILD

SKIPPED_EXIT = 77  # TEST_SKIPPED_EXIT in tests/unit/check.h: the test said why it cannot run here


def _cases():
    for variant in ("", "asan"):
        for binary in sorted(glob.glob(os.path.join(BUILD, variant, "tests", "test_*"))):
            names = subprocess.run([binary, "--list"], capture_output=True, text=True, check=True).stdout.split()
            for name in names:
                yield pytest.param(binary, name, id=f"{variant or 'normal'}/{os.path.basename(binary)}/{name}")


@pytest.mark.parametrize("binary,name", list(_cases()))
def test_unit(binary, name):
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0", UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    p = subprocess.run([binary, name], capture_output=True, text=True, env=env, timeout=120)
    if p.returncode == SKIPPED_EXIT:
        why = [l.split(": ", 1)[1] for l in p.stdout.splitlines() if l.startswith(f"skip {name}: ")]
        assert why, p.stdout + p.stderr
        pytest.skip(why[0])
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"ok {name}\n" in p.stdout, p.stdout
