"""One setting for every pool of compute threads in the process, and its cores shared between requests."""
from __future__ import annotations

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


class CoreShare:
    """A server's cores divided between the requests that run at once.

    A request entering :meth:`threads_for_request` gets ``max(1, min(cap, cores // running))`` intra-op
    threads for torch, set on its own thread (under OpenMP the count a thread runs with is its own;
    setting it also sets the count that threads which have not used torch yet start from). A lone
    query's forward runs on every core; one that starts while others run takes a smaller share
    instead of spreading over every core as well, where the threads of all of them wait at every
    operator's end for one another (``bench/bench_core_share.py``). A request keeps the share it
    started with: the first of a burst keeps every core until it ends. A request counts for its whole
    run, not only while it encodes: its dense scan takes a core too, and a search waiting for its turn
    at the index runs its scan next (counted only while encoding, 4 concurrent searches lost the gain:
    0.95-1.04x, docs/performance.md).

    Args:
        cap: The most threads one request may use (``xlsearch serve --threads``); None: every core.
        cores: The cores to share; None: torch's thread count when the share is made, which is the
            machine's physical cores unless ``OMP_NUM_THREADS`` or a caller said otherwise (make the
            share before capping torch's threads).
    """

    def __init__(self, cap: int | None = None, cores: int | None = None):
        import torch

        self.cores = cores or torch.get_num_threads()
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
