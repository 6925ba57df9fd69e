"""jigcnn.allocator: glibc malloc keeps freed memory (no page faults on reuse), and the opt-out."""

import ctypes
import os
import pathlib
import resource
import subprocess
import sys

import pytest

from jigcnn import allocator

pytestmark = pytest.mark.skipif(not allocator.available(), reason="jigcnn.allocator needs glibc (Linux)")

BLOCK = 64 << 20  # above glibc's largest dynamic mmap threshold (32 MiB)


def _faults_of_reuse(cycles: int = 4, block: int = BLOCK) -> int:
    """Minor page faults of malloc + touch + free of `block` bytes, after one warm-up cycle."""
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)

    def cycle():
        p = libc.malloc(block)
        assert p, "malloc failed"
        ctypes.memset(p, 1, block)
        libc.free(p)

    cycle()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(cycles):
        cycle()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.fixture
def restore_allocator():
    yield
    assert allocator.restore_defaults()
    assert not allocator.retaining()


def test_retained_memory_is_reused_without_page_faults(restore_allocator):
    pages = BLOCK // resource.getpagesize()
    assert allocator.restore_defaults()
    # defaults: a 64 MiB block is mmap-ed afresh and unmapped on free, so every cycle faults its pages in
    assert _faults_of_reuse() > 2 * pages
    assert allocator.retain_freed_memory(respect_env=False)
    assert allocator.retaining()
    # retained: the freed block stays in the heap and the next malloc reuses the touched pages
    assert _faults_of_reuse() < pages // 10


def test_a_worker_threads_large_blocks_are_retained_too():
    # a thread's own arena grows in heaps of at most 64 MiB and glibc mmaps larger blocks there
    # whatever M_MMAP_MAX says; with one arena the worker's blocks stay in the main heap. In a fresh
    # process: once other threads have made arenas, glibc may hand a new thread one of those.
    code = (
        "import resource, threading, tests.test_allocator as t\n"
        "from jigcnn import allocator\n"
        "assert allocator.retain_freed_memory(respect_env=False)\n"
        "out = []\n"
        "w = threading.Thread(target=lambda: out.append(t._faults_of_reuse(block=96 << 20)))\n"
        "w.start(); w.join()\n"
        "print(out[0], (96 << 20) // resource.getpagesize())\n")
    root = pathlib.Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root / "src"), str(root)]))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root, timeout=120)
    assert run.returncode == 0, run.stderr
    faults, pages = map(int, run.stdout.split())
    assert faults < pages // 10


def test_env_var_opts_out(monkeypatch, restore_allocator):
    calls = []
    monkeypatch.setattr(allocator, "_apply", lambda settings: calls.append(settings) or True)
    monkeypatch.setenv(allocator.ENV_VAR, "0")
    assert allocator.retain_freed_memory() is False
    assert calls == []
    assert allocator.retain_freed_memory(respect_env=False) is True
    monkeypatch.setenv(allocator.ENV_VAR, "1")
    assert allocator.retain_freed_memory() is True
    assert len(calls) == 2


def test_off_glibc_it_does_nothing(monkeypatch):
    monkeypatch.setattr(allocator, "_libc", lambda: None)
    assert not allocator.available()
    assert allocator.retain_freed_memory(respect_env=False) is False
    assert allocator.restore_defaults() is False
