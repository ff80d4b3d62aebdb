"""One setting for every pool of compute threads in the process."""
from __future__ import annotations


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
