"""Exact top-k inner products over many vectors, reading most of them in bf16.

An exact scan of ``n x d`` fp32 vectors reads ``4 n d`` bytes per query, and at 100,000 x 768
that read is the cost (about 20 ms of one core). :class:`Bf16Scan` keeps a bf16 copy of the
vectors (2 bytes per dimension, beside the fp32 ones), scans that instead, and then rescores in
fp32 every row whose bf16 score is close enough to the k-th best to be in the true top k, so the
result is the fp32 scan's, not an approximation of it:

* Rounding the vectors and the query to bf16 (relative error ``u = 2^-8`` each), summing in
  fp32 and rounding the score to bf16 moves a score by at most
  ``eps = |q| max|x| (3u + 4u^2 + 4 d 2^-24)`` (about 0.012 for unit vectors; the last term covers
  the fp32 sums of both scans, so the fp32 scan's own top k is what is guaranteed).
* If ``t`` is the k-th best bf16 score, the k rows at or above it score at least ``t - eps`` in
  fp32, so the true k-th best does too, and every row of the true top k has a bf16 score of at
  least ``t - 2 eps``. Those rows, and only those, are rescored from the fp32 vectors.

With multilingual-e5-small's vectors (20,000 Tatoeba sentences, XQuAD questions;
``bench/bench_scan.py``) that rescores a median 1.2% of the rows for k = 10 and 3.6% for k = 50.
When more than a quarter would be rescored (vectors crowded around the k-th score), the whole
fp32 scan is cheaper and runs instead.

It is used only on CPUs with AMX (:func:`native`), for vectors too large for the
CPU's caches (:data:`indexer.store.dense.BF16_SCAN_MIN_BYTES`): below that, fp32 reads are cheap
and the scan measured no faster.
"""
from __future__ import annotations

import numpy as np
import torch

from ..cpu import amx, native_matmul
from .topk import best_first

U = 2.0 ** -8  # bf16's unit roundoff (8 significant bits)
RESCORE_LIMIT = 0.25  # rescoring more than this share of the rows: scan them all in fp32 instead


class Bf16Scan:
    """A bf16 copy of fp32 vectors ``(n, d)`` and the top-k search over it (see the module); made by
    :meth:`of`. ``max_norm`` bounds the norms of the rows it was made from."""

    def __init__(self, matrix: torch.Tensor, max_norm: float):
        self.matrix = matrix
        self.max_norm = max_norm
        self.rescored = 0  # rows rescored in fp32 by the last search (benches, tests)

    @classmethod
    def of(cls, vectors: np.ndarray) -> Bf16Scan:
        """The copy of ``vectors`` ``(n, d)`` float32."""
        matrix = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)).to(torch.bfloat16)
        return cls(matrix, float(np.sqrt(np.einsum("ij,ij->i", vectors, vectors).max())) if len(vectors) else 0.0)

    @property
    def rows(self) -> int:
        return self.matrix.shape[0]

    def keep(self, rows: np.ndarray) -> Bf16Scan:
        """This copy with only ``rows`` (a boolean mask) left, in order: what the fp32 vectors become when
        chunks are removed. ``max_norm`` stays, an upper bound still."""
        return Bf16Scan(self.matrix[torch.from_numpy(np.asarray(rows, dtype=bool))], self.max_norm)

    def bound(self, query: np.ndarray) -> float:
        """The most a bf16 score of ``query`` can differ from its fp32 score."""
        dim = self.matrix.shape[1]
        return float(np.linalg.norm(query)) * self.max_norm * (3 * U + 4 * U * U + 4 * dim * 2.0 ** -24)

    def top(self, vectors: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the ``k`` best inner products with ``query`` and their fp32 scores, best first.

        Args:
            vectors: The fp32 vectors this copy was made from (rescoring reads them).
            query: ``(d,)`` float32.
            k: At most ``rows``.
        """
        approx = torch.mv(self.matrix, torch.tensor(query, dtype=torch.bfloat16)).float().numpy()
        kth = np.partition(approx, self.rows - k)[self.rows - k]
        candidates = np.flatnonzero(approx >= kth - 2 * self.bound(query))
        if len(candidates) > RESCORE_LIMIT * self.rows:
            candidates, exact = np.arange(self.rows), vectors @ query
        else:
            exact = vectors[candidates] @ query
        self.rescored = len(candidates)
        best = best_first(exact, k)
        return candidates[best], exact[best]


def native() -> bool:
    """Whether the bf16 scan pays on this CPU: where it multiplies bf16 on AMX tiles.

    Measured, one thread, 100,000 x 768: on an Intel Xeon with AMX the scan took 0.55-0.6x the fp32
    scan's CPU time; on an AMD EPYC with AVX512-BF16 and no AMX, torch's bf16 matrix-vector products
    ran at 0.65-1.0x the speed of numpy's fp32 one (22-34 ms against 22 ms) and the scan at 0.77x, so
    fp32 stays there. Decided by the CPU's instructions, not by timing: a timed probe small enough to
    be cheap sits in the CPU's caches, where fp32 wins, and timings in a busy process pick up other
    threads' spinning.
    """
    return native_matmul(torch.bfloat16) and amx()
