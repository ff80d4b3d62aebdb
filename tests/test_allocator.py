"""The allocator setting of the command line: freed blocks are reused, not faulted in afresh."""
from __future__ import annotations

import ctypes
import resource
import sys

import pytest

from xlsearch.indexer.allocator import retain_freed_memory

SIZE = 64 << 20


def faults_of_a_fresh_block() -> int:
    """Minor page faults of malloc-ing, touching and freeing 64 MiB."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(SIZE)
    ctypes.memset(block, 1, SIZE)
    libc.free(block)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_retained_memory_is_reused_without_page_faults():
    assert faults_of_a_fresh_block() > 1_000  # glibc maps a block this large on its own and unmaps it
    assert retain_freed_memory()
    faults_of_a_fresh_block()  # the heap grows once
    assert faults_of_a_fresh_block() < 100


def test_the_command_line_sets_it(monkeypatch):
    from xlsearch.api.cli import main as cli

    calls = []
    monkeypatch.setattr(cli, "retain_freed_memory", lambda: calls.append(True))
    assert cli.main(["check", "--index", "/nonexistent/index"]) == 1
    assert calls == [True]
