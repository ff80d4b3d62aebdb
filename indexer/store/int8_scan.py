"""Exact top-k inner products over many vectors, reading most of them in int8.

An exact scan of ``n x d`` fp32 vectors reads ``4 n d`` bytes per query, and from a few tens of
MiB (more than a CPU's last-level cache) that read is the cost: 20 ms of one core at 100,000 x 768.
:class:`Int8Scan` keeps an int8 copy of the vectors (1 byte per dimension and 8 per row, beside
the fp32 ones), scans that instead, and then rescores in fp32 every row whose int8 score is close
enough to the k-th best to be in the true top k, so the result is the fp32 scan's, not an
approximation of it:

* Each row ``x`` is stored as ``x' = s c``: ``s = max|x| / 127`` (fp32) and ``c`` the int8 nearest to
  ``x / s``; the copy keeps ``e = |x - x'|``, computed exactly (in float64) when it is made. By
  Cauchy-Schwarz ``|q.x - q.x'| <= |q| e``. Summing ``d`` products in fp32, in any order, errs by at
  most ``d 2^-24 |q| |x|`` (with a little to spare), once in this scan and once in the fp32 scan whose
  top k is the one guaranteed. So each row's int8 score is within ``|q| (e + 3 (d + 1) 2^-24 (|x| + e))``
  of its fp32 score: its *slack*, kept per row (4 bytes), times the query's norm.
* The k-th best of the rows' lower bounds (score minus slack) is at most the true k-th best fp32 score,
  so every row of the true top k has an upper bound (score plus slack) at least that high. Those rows,
  and only those, are rescored from the fp32 vectors.

Per-row scales and error norms keep the bounds tight: with multilingual-e5-small's vectors (20,000
Tatoeba sentences, XQuAD questions; ``bench/bench_scan.py``) a median 0.24% of the rows is rescored for
k = 10 and 0.98% for k = 50; 0.07% and 0.19% of 100,000 x 768. When more than a quarter would be
(vectors crowded around the k-th score), the whole fp32 scan is cheaper and runs instead.

The scan is a numba loop that widens each int8 to fp32 and sums in fp32 vector registers. It reads a
quarter of the fp32 bytes and half of those of the bf16 copy it replaced: at one thread on a 2-core AMD
EPYC with AVX-512, 100,000 x 768 vectors, the scan loop alone took 5.1-5.4 ms against the bf16 copy's
7.1-7.2 and numpy's fp32 matrix-vector product's 23-25 ms. Integer products (the query rounded to int8
or int16 too) were slower (7.2-7.4 ms): numba's compiler does not emit the CPU's int8 dot-product
instructions.
"""
from __future__ import annotations

import numba
import numpy as np

from .topk import best_first

RESCORE_LIMIT = 0.25  # rescoring more than this share of the rows: scan them all in fp32 instead
ROOM = 1.0 + 2.0 ** -20  # rounds a float64 bound up past its fp32 rounding
FLOAT32_MAX = float(np.finfo(np.float32).max)
TINY = float(np.finfo(np.float32).tiny)  # the smallest scale: an all-zero row


class Int8Scan:
    """An int8 copy ``(n, d)`` of fp32 vectors with each row's scale and slack ``(n,)`` (see the module),
    and the top-k search over it; made by :meth:`of`."""

    def __init__(self, codes: np.ndarray, scales: np.ndarray, slack: np.ndarray):
        self.codes = codes
        self.scales = scales
        self.slack = slack
        self.rescored = 0  # rows rescored in fp32 by the last search (benches, tests)

    @classmethod
    def of(cls, vectors: np.ndarray) -> Int8Scan:
        """The copy of ``vectors`` ``(n, d)`` float32. A row with a NaN or an infinity gets an infinite
        slack: it is rescored in fp32 by every search."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        rows = vectors.shape[0]
        codes = np.empty(vectors.shape, np.int8)
        scales, slack = np.empty(rows, np.float32), np.empty(rows, np.float32)
        _quantize(vectors, codes, scales, slack)
        return cls(codes, scales, slack)

    @property
    def rows(self) -> int:
        return self.codes.shape[0]

    @property
    def nbytes(self) -> int:
        return self.codes.nbytes + self.scales.nbytes + self.slack.nbytes

    def floats(self) -> np.ndarray:
        """The rows the copy stands for, ``s c``, as float32 ``(n, d)`` (tests)."""
        return self.codes.astype(np.float32) * self.scales[:, None]

    def keep(self, rows: np.ndarray) -> Int8Scan:
        """This copy with only ``rows`` (a boolean mask) left, in order: what the fp32 vectors become when
        chunks are removed."""
        rows = np.asarray(rows, dtype=bool)
        return Int8Scan(self.codes[rows], self.scales[rows], self.slack[rows])

    def bounds(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each row's lower and upper bound ``(n,)`` float32 on its fp32 score with ``query`` ``(d,)``."""
        query = np.ascontiguousarray(query, dtype=np.float32)
        width = np.float32(float(np.linalg.norm(query.astype(np.float64))) * ROOM)
        lower, upper = np.empty(self.rows, np.float32), np.empty(self.rows, np.float32)
        _bounds(self.codes, self.scales, self.slack, query, width, lower, upper)
        return lower, upper

    def scores(self, query: np.ndarray) -> np.ndarray:
        """The int8 copy's scores ``(n,)`` float32 of ``query`` ``(d,)`` (benches, tests)."""
        out = np.empty(self.rows, np.float32)
        _bounds(self.codes, self.scales, self.slack, np.ascontiguousarray(query, dtype=np.float32),
                np.float32(0.0), out, np.empty(self.rows, np.float32))
        return out

    def top(self, vectors: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the ``k`` best inner products with ``query`` and their fp32 scores, best first.

        Args:
            vectors: The fp32 vectors this copy was made from (rescoring reads them).
            query: ``(d,)`` float32.
            k: At most ``rows``.
        """
        lower, upper = self.bounds(query)
        kth = np.partition(lower, self.rows - k)[self.rows - k]
        candidates = np.flatnonzero(upper >= kth)
        if not k <= len(candidates) <= RESCORE_LIMIT * self.rows:  # crowded, or a query with a NaN
            candidates, exact = np.arange(self.rows), vectors @ query
        else:
            exact = vectors[candidates] @ query
        self.rescored = len(candidates)
        best = best_first(exact, k)
        return candidates[best], exact[best]


def compile_now() -> None:
    """Compile the scan (or load it from numba's disk cache) now, not at a server's first search."""
    Int8Scan.of(np.ones((1, 1), np.float32)).top(np.ones((1, 1), np.float32), np.ones(1, np.float32), 1)


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})  # NaN-aware: no "nnan"
def _quantize(vectors, codes, scales, slack):
    rows, dim = vectors.shape
    margin = 3.0 * (dim + 1) * 2.0 ** -24
    for i in range(rows):
        row = vectors[i]
        top, finite = np.float32(0.0), True
        for j in range(dim):
            value = abs(row[j])
            finite &= value <= np.float32(FLOAT32_MAX)  # False for a NaN too
            top = max(top, value)
        if not finite:  # always rescored
            codes[i, :] = 0
            scales[i] = 0.0
            slack[i] = np.inf
            continue
        scale = max(np.float32(np.float64(top) / 127.0), np.float32(TINY))
        inverse = np.float32(1.0) / scale  # the nearest code but for a rare tie: the error below is the codes' own
        for j in range(dim):
            codes[i, j] = np.int8(min(max(np.rint(row[j] * inverse), np.float32(-127.0)), np.float32(127.0)))
        step = np.float64(scale)
        error, norm = 0.0, 0.0
        for j in range(dim):
            value = np.float64(row[j])
            difference = value - np.float64(codes[i, j]) * step  # exact in float64
            error += difference * difference
            norm += value * value
        error = np.sqrt(error)
        scales[i] = scale
        slack[i] = np.float32((error + margin * (np.sqrt(norm) + error)) * ROOM)


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})  # any summation order: the bound allows it
def _bounds(codes, scales, slack, query, width, lower, upper):
    rows, dim = codes.shape
    for i in range(rows):
        total = np.float32(0.0)
        for j in range(dim):
            total += np.float32(codes[i, j]) * query[j]
        score = total * scales[i]
        margin = width * slack[i] if width > 0 else np.float32(0.0)
        lower[i] = score - margin
        upper[i] = score + margin
