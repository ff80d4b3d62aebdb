"""One setting for every pool of compute threads in the process, and its cores shared between requests."""
from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager


def limit_threads(threads: int) -> None:
    """Cap torch's intra-op threads, the BLAS numpy calls (dense search), and FAISS's OpenMP
    threads at ``threads``, for the rest of the process (``xlsearch serve --threads``).

    Without it a server told to use one thread per request still ran numpy's matrix products
    and FAISS on every core.
    """
    import faiss
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    threadpool_limits(limits=threads)  # as a call, not a context: the limits stay


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class CoreShare:
    """The cores of a server divided between the requests that run at once.

    A request entering :meth:`threads_for_request` gets ``max(1, min(cap, cores // running))``
    intra-op threads for torch on its own thread (torch's thread count under OpenMP belongs to
    the calling thread): a lone query's forward runs on every core, while requests that arrive
    together run on fewer each instead of each spreading over every core, where their threads
    wait at every operator's barrier for one another (``bench/bench_core_share.py``). A request
    keeps the count it entered with; one that arrives while others run never takes a core from
    them.

    Args:
        cap: The most threads one request may use (``xlsearch serve --threads``); None: the cores.
        cores: The cores to share; None: :func:`usable_cores`.
    """

    def __init__(self, cap: int | None = None, cores: int | None = None):
        self.cores = cores or usable_cores()
        self.cap = min(cap, self.cores) if cap else self.cores
        self.running = 0
        self._lock = threading.Lock()

    @contextmanager
    def threads_for_request(self) -> Iterator[int]:
        """Count this request as running and set this thread's torch threads to its share; yields the share."""
        import torch

        with self._lock:
            self.running += 1
            share = max(1, min(self.cap, self.cores // self.running))
        try:
            if torch.get_num_threads() != share:
                torch.set_num_threads(share)
            yield share
        finally:
            with self._lock:
                self.running -= 1
