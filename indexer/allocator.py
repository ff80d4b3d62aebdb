"""The C allocator's setting for encoding: keep freed memory for reuse instead of handing it back.

glibc serves every allocation above a threshold (128 KiB, rising to at most 32 MiB) with its own
``mmap`` and gives it back on free, so the next batch's activations (tens of MiB each: a
batch of 32 paragraphs holds 6,000 tokens x 3,072 floats after the FFN's first layer) land on
fresh pages, and the kernel zero-fills every one of them on first touch: 600,000-900,000 page
faults per 64 paragraphs, a tenth of the CPU time of bulk encoding (``bench/bench_encode.py``).
Raising the mmap and trim thresholds keeps freed blocks in the heap to be reused. The price is
memory: what is freed after a peak stays with the process, and the heap fragments (indexing
203,105 chunks peaked at 2,550 MiB instead of 2,441, ``bench/bench_memory.py``).
"""
from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
RETAINED = 1 << 30  # blocks up to 1 GiB come from the heap, which is never trimmed below 1 GiB


def retain_freed_memory() -> bool:
    """Make glibc keep freed blocks for reuse, for the rest of the process; False where it does not
    apply (not Linux, or a C library without ``mallopt``)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, RETAINED)) and bool(mallopt(M_TRIM_THRESHOLD, RETAINED))
