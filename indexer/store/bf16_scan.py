"""Exact top-k inner products over many vectors, reading most of them in bf16.

An exact scan of ``n x d`` fp32 vectors reads ``4 n d`` bytes per query, and from a few tens of
MiB (more than a CPU's last-level cache) that read is the cost: 20 ms of one core at 100,000 x 768.
:class:`Bf16Scan` keeps a bf16 copy of the vectors (2 bytes per dimension, beside the fp32 ones),
scans that instead, and then rescores in fp32 every row whose bf16 score is close enough to the
k-th best to be in the true top k, so the result is the fp32 scan's, not an approximation of it:

* Rounding a vector to bf16 (relative error ``u = 2^-8`` per element) moves its inner product with an
  fp32 query by at most ``u |q| |x|``; summing ``d`` products in fp32, in any order, errs by at most
  ``d 2^-24 |q| |x|`` (with a little to spare), once in this scan and once in the fp32 scan whose
  top k is the one guaranteed. So ``eps = |q| max|x| (u + 3 d 2^-24)`` bounds the difference
  (about 0.004 for unit vectors of 768 dimensions).
* If ``t`` is the k-th best bf16 score, the k rows at or above it score at least ``t - eps`` in
  fp32, so the true k-th best does too, and every row of the true top k has a bf16 score of at
  least ``t - 2 eps``. Those rows, and only those, are rescored from the fp32 vectors.

With multilingual-e5-small's vectors (20,000 Tatoeba sentences, XQuAD questions;
``bench/bench_scan.py``) that rescores a median 0.15% of the rows for k = 10 and 0.65% for k = 50.
When more than a quarter would be rescored (vectors crowded around the k-th score), the whole fp32
scan is cheaper and runs instead.

The scan is a numba loop that widens each bf16 to fp32 (a 16-bit shift) and sums in fp32 registers:
memory-bound on every x86 vector width. At one thread, 100,000 x 768, it took 5.2-6.4 ms where numpy's
fp32 matrix-vector product took 20-22 ms, with AVX-512, AVX2 or plain SSE2 code alike (an AMD EPYC;
``NUMBA_CPU_NAME`` set to ``haswell`` and ``x86-64``). torch's own bf16 matrix-vector product, used
before, needed AMX to beat fp32 (0.55-0.6x of its time on a Xeon) and lost to it without (0.77x on
that EPYC with AVX512-BF16).
"""
from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .topk import best_first

U = 2.0 ** -8  # bf16's unit roundoff (8 significant bits)
RESCORE_LIMIT = 0.25  # rescoring more than this share of the rows: scan them all in fp32 instead


class Bf16Scan:
    """A bf16 copy ``(n, d)`` of fp32 vectors, as the top 16 bits of each float (uint16), and the top-k
    search over it (see the module); made by :meth:`of`. ``max_norm`` bounds the norms of the rows it was
    made from."""

    def __init__(self, matrix: np.ndarray, max_norm: float):
        self.matrix = matrix
        self.max_norm = max_norm
        self.rescored = 0  # rows rescored in fp32 by the last search (benches, tests)

    @classmethod
    def of(cls, vectors: np.ndarray) -> Bf16Scan:
        """The copy of ``vectors`` ``(n, d)`` float32, each rounded to the nearest bf16 (ties to even)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        matrix = np.empty(vectors.shape, np.uint16)
        _round_to_bf16(vectors.reshape(-1).view(np.uint32), matrix.reshape(-1))
        return cls(matrix, float(np.sqrt(np.einsum("ij,ij->i", vectors, vectors).max())) if len(vectors) else 0.0)

    @property
    def rows(self) -> int:
        return self.matrix.shape[0]

    def floats(self) -> np.ndarray:
        """The copy as float32 ``(n, d)`` (tests)."""
        return (self.matrix.astype(np.uint32) << 16).view(np.float32)

    def keep(self, rows: np.ndarray) -> Bf16Scan:
        """This copy with only ``rows`` (a boolean mask) left, in order: what the fp32 vectors become when
        chunks are removed. ``max_norm`` stays, an upper bound still."""
        return Bf16Scan(self.matrix[np.asarray(rows, dtype=bool)], self.max_norm)

    def bound(self, query: np.ndarray) -> float:
        """The most a bf16 score of ``query`` can differ from its fp32 score."""
        dim = self.matrix.shape[1]
        return float(np.linalg.norm(query)) * self.max_norm * (U + 3 * dim * 2.0 ** -24)

    def scores(self, query: np.ndarray) -> np.ndarray:
        """The bf16 scores ``(n,)`` float32 of ``query`` ``(d,)``: each row's inner product with it."""
        out = np.empty(self.rows, np.float32)
        _scores(self.matrix, np.ascontiguousarray(query, dtype=np.float32), out)
        return out

    def top(self, vectors: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the ``k`` best inner products with ``query`` and their fp32 scores, best first.

        Args:
            vectors: The fp32 vectors this copy was made from (rescoring reads them).
            query: ``(d,)`` float32.
            k: At most ``rows``.
        """
        approx = self.scores(query)
        kth = np.partition(approx, self.rows - k)[self.rows - k]
        candidates = np.flatnonzero(approx >= kth - 2 * self.bound(query))
        if len(candidates) > RESCORE_LIMIT * self.rows:
            candidates, exact = np.arange(self.rows), vectors @ query
        else:
            exact = vectors[candidates] @ query
        self.rescored = len(candidates)
        best = best_first(exact, k)
        return candidates[best], exact[best]


def compile_now() -> None:
    """Compile the scan (or load it from numba's disk cache) now, not at a server's first search."""
    Bf16Scan.of(np.ones((1, 1), np.float32)).scores(np.ones(1, np.float32))


@intrinsic
def _float_bits(typingctx, bits):
    """The float32 whose bits are the uint32 ``bits`` (a reinterpretation, no conversion)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.uint32), codegen


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})  # any summation order: the bound allows it
def _scores(matrix, query, out):
    rows, dim = matrix.shape
    for i in range(rows):
        total = np.float32(0.0)
        for j in range(dim):
            total += _float_bits(np.uint32(matrix[i, j]) << np.uint32(16)) * query[j]
        out[i] = total


@numba.njit(cache=True, nogil=True)
def _round_to_bf16(bits, out):
    for i in range(bits.size):  # round to nearest, ties to even, on the 16 bits dropped
        b = bits[i]
        out[i] = np.uint16((b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))
