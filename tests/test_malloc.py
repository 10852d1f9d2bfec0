"""Tests of the glibc malloc thresholds applied by the first SAE fit."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from sklearn_hypothesaes import _malloc

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="mallopt thresholds are a glibc feature",
)

# Three 6 MiB blocks freed together leave more free memory at the top of the
# heap than glibc's adaptive trim threshold (twice the largest chunk freed so
# far), so without the pinned thresholds each round is trimmed and faulted back
# in. The probe loads only the module under test and calls malloc directly, so
# nothing else in the process moves glibc's adaptive thresholds.
_PROBE = textwrap.dedent(
    """
    import ctypes, importlib.util, resource, sys
    spec = importlib.util.spec_from_file_location("_malloc", sys.argv[1])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    applied = mod.keep_freed_memory()
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size = 1024 * 1536 * 4

    def round_():
        blocks = [libc.malloc(size) for _ in range(3)]
        for b in blocks:
            ctypes.memset(b, 1, size)
        for b in blocks:
            libc.free(b)

    for _ in range(3):
        round_()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        round_()
    print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _probe(tune: str) -> tuple[bool, int]:
    env = {**os.environ, "SKLEARN_HYPOTHESAES_TUNE_MALLOC": tune}
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"):
        env.pop(name, None)
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, _malloc.__file__],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[0] == "True", int(out[1])


@glibc
def test_pinned_thresholds_stop_per_round_page_faults():
    pages = 20 * 3 * 1024 * 1536 * 4 // 4096  # what 20 rounds would fault if all trimmed
    applied, faults = _probe("1")
    assert applied
    assert faults < pages // 20
    applied, untuned = _probe("0")
    assert not applied
    assert untuned > pages // 4  # the faults the thresholds remove


def test_opt_out_and_idempotence(monkeypatch):
    monkeypatch.setattr(_malloc, "_applied", None)
    monkeypatch.setenv("SKLEARN_HYPOTHESAES_TUNE_MALLOC", "off")
    assert _malloc.keep_freed_memory() is False
    monkeypatch.setenv("SKLEARN_HYPOTHESAES_TUNE_MALLOC", "1")
    assert _malloc.keep_freed_memory() is False  # decided once per process
    monkeypatch.setattr(_malloc, "_applied", None)
    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert _malloc.keep_freed_memory() is expected
    assert _malloc.keep_freed_memory() is expected
