"""Exact top-k BM25 by MaxScore (Turtle & Flood 1995), compiled by numba over the postings.

A query term can add at most its *bound* to a chunk's score (its idf times the largest tf part in
its postings). Terms are taken from the largest bound down (rare terms first, whose postings are
short), adding their postings to per-row partial scores. Once the terms not yet taken can add
less, together, than the k-th best score so far, no chunk outside the candidates reached so far can
reach the top k: the postings of the remaining (common) terms are then only searched for at the
candidates (or read, where the candidates are many), after dropping every candidate whose score
plus what is left cannot reach the k-th.

The result is exact: the candidates that can reach the k-th score are rescored token by token in
query order, the same float operations as scoring every chunk, so scores are bit for bit those of
:meth:`indexer.store.lexical.BM25Index.get_scores` and ties are kept. Pruning needs scores that
only grow, so a query holding a term of negative idf is scored without it.

The loops are compiled (numba, cached on disk after the first run): a query costs a few
microseconds of calls plus its postings work, where numpy paid some forty calls of about a
microsecond each before reading a posting.
"""
from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

MARGIN = 1e-9  # relative slack on every comparison of sums added in different orders


class Postings:
    """Every posting of one index, term after term, rows increasing within a term (a CSC matrix's arrays,
    in the dtypes the compiled loops take), the tf parts of BM25 computed so far and the scratch arrays of
    the searches over them.

    Attributes:
        tf: int32 term frequency per posting.
        rows: int32 row per posting.
        indptr: int64 ``(terms + 1,)``: term ``t``'s postings are ``[indptr[t], indptr[t + 1])``.
        weights: float64 tf part of BM25 per posting, ``tf * (k1 + 1) / (tf + k1 * norm)``, filled by
            :meth:`fill` for the terms being scored.
        n: Rows in the index.
    """

    def __init__(self, tf: np.ndarray, rows: np.ndarray, indptr: np.ndarray, n: int):
        self.tf, self.rows = np.asarray(tf, np.int32), np.asarray(rows, np.int32)
        self.indptr, self.n = np.asarray(indptr, np.int64), n
        self.weights = np.empty(len(self.rows))
        self.weights[::512] = 0.0  # its pages mapped now (4-40 ms at 3.4M postings), not one by one under
        # the first queries: untouched, they cost one query in sixty 12-25 ms of first-pass CPU in bench_bm25
        self._free: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # scratch not in use

    def fill(self, terms: np.ndarray, norm: np.ndarray, k1: float, ready: np.ndarray, tops: np.ndarray) -> None:
        """Compute the tf parts of the postings of ``terms`` (int64) not ``ready`` yet, and each one's largest
        into ``tops``, for rows of ``k1 * (1 - b + b * dl / avgdl)`` = ``norm``."""
        _fill(self.tf, self.rows, self.indptr, norm, k1, terms, self.weights, ready, tops)

    def terms(self, ids: np.ndarray, idf: np.ndarray, tops: np.ndarray, query: list[int]) -> QueryTerms:
        """The query's distinct terms ``ids`` (int64) with their ``idf`` and largest tf parts, and each query
        token's position among them."""
        return QueryTerms(self.indptr[ids], self.indptr[ids + 1], idf, np.bincount(query), tops,
                          np.array(query, np.int64))

    def take_scratch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(a partial score, a mark and room for a touched row, per row): 13 bytes a row for each search
        running at once, kept for the next one; marks are all 0 between searches."""
        try:
            return self._free.pop()  # atomic: concurrent searches never share one
        except IndexError:
            return np.empty(self.n), np.zeros(self.n, np.uint8), np.empty(self.n, np.int32)

    def give_scratch(self, scratch: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        self._free.append(scratch)


class QueryTerms(NamedTuple):
    """A query's distinct terms as arrays (postings ``[starts, ends)``, idf, times in the query, largest tf
    part, 0 for none) and ``query``: each token's position among them, in query order, repeats included."""

    starts: np.ndarray
    ends: np.ndarray
    idf: np.ndarray
    counts: np.ndarray
    tops: np.ndarray
    query: np.ndarray


_NO_FILTER = np.ones(1, bool)


def top_k(postings: Postings, terms: QueryTerms, k: int, keep: np.ndarray | None = None,
          with_ties: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
    """The ``k`` best rows among those holding a query term, best first (ties to the lower row).

    Args:
        k: How many rows (``k >= 1``).
        keep: Optional bool per row: rows allowed in the result (live and passing the filter).
        with_ties: Also the rows tied with the ``k``-th score, up to ``2 k`` in all.

    Returns:
        ``(rows int64, scores float64, postings scanned)``; the last counts the postings read in order,
        not those searched for at candidates.
    """
    scratch = postings.take_scratch()
    try:
        return _top_k(postings.rows, postings.weights, terms.starts, terms.ends, terms.idf, terms.counts,
                      terms.tops, terms.query, k, _NO_FILTER if keep is None else keep, keep is not None,
                      with_ties, *scratch)
    finally:
        postings.give_scratch(scratch)


def exact_scores(postings: Postings, terms: QueryTerms, rows: np.ndarray) -> np.ndarray:
    """float64 BM25 of ``rows`` (any order; 0 where no term matches), added token after token in query order
    from 0: the same float operations as scoring every row."""
    return _exact(postings.rows, postings.weights, terms.starts, terms.ends, terms.idf, terms.query,
                  np.ascontiguousarray(rows, np.int64))


def compile_now() -> None:
    """Compile the search loops now (or load them from numba's disk cache), not at the first query: a
    server starting pays the seconds of the first compile on a machine, not its first user."""
    postings, ids, ready, tops = Postings(np.ones(1), np.zeros(1), np.array([0, 1]), 1), np.zeros(1, np.int64), \
        np.zeros(1, bool), np.zeros(1)
    postings.fill(ids, np.ones(1), 1.5, ready, tops)
    terms = postings.terms(ids, np.ones(1), tops, [0])
    top_k(postings, terms, 1)
    exact_scores(postings, terms, ids)


_jit = numba.njit(cache=True, nogil=True)
TOUCHED, PRUNED = 1, 2  # marks of a row during a search (0: not reached)


@numba.njit(cache=True)  # holds the GIL: a term is marked ready only once its weights are written
def _fill(tf, rows, indptr, norm, k1, terms, weights, ready, tops):
    """:meth:`Postings.fill`, in the float operations numpy does for ``tf * (k1 + 1) / (tf + norm)``."""
    for term in terms:
        if ready[term]:
            continue
        top = 0.0
        for j in range(indptr[term], indptr[term + 1]):
            f = float(tf[j])
            weights[j] = f * (k1 + 1) / (f + norm[rows[j]])
            top = max(top, weights[j])
        tops[term], ready[term] = top, True


@_jit
def _top_k(rows, weights, starts, ends, idf, counts, tops, query, k, keep, filtered, with_ties,
           partial, mark, touched):
    n_terms = len(starts)
    factor = counts * idf  # what one posting's tf part is multiplied by while pruning
    bound = factor * tops  # the most each term adds to one row's score
    order = _ranked(bound, np.arange(n_terms))  # largest bound first, ties in query order
    rest = np.zeros(n_terms + 1)  # rest[i]: the bound of order[i:]
    for i in range(n_terms - 1, -1, -1):
        rest[i] = rest[i + 1] + bound[order[i]]
    prune = True
    for i in range(n_terms):
        prune = prune and idf[i] >= 0
    size, taken, scanned, theta, best = 0, 0, 0, -np.inf, -np.inf
    while taken < n_terms:  # every posting of the terms that can lift a new row into the top k
        term = order[taken]
        taken += 1
        for j in range(starts[term], ends[term]):
            row = rows[j]
            if filtered and not keep[row]:
                continue
            if mark[row]:
                partial[row] += factor[term] * weights[j]
            else:
                mark[row], partial[row], touched[size] = TOUCHED, factor[term] * weights[j], row
                size += 1
            best = max(best, partial[row])
        scanned += ends[term] - starts[term]
        if prune and size >= k and rest[taken] < _lower(best):  # else the k-th cannot be enough
            theta = _kth(partial, touched[:size], k)
            if rest[taken] < _lower(theta):
                break
    alive = touched[:size].copy()
    for position in range(taken, n_terms):  # the rest only at the candidates that can still reach the k-th
        term, lower, count = order[position], _lower(theta), 0
        for row in alive:
            if partial[row] + rest[position] >= lower:
                alive[count] = row
                count += 1
            else:
                mark[row] = PRUNED
        alive = alive[:count]
        start, end = starts[term], ends[term]
        if 4 * count * (np.log2(end - start + 1) + 1) < end - start:  # few candidates: search each
            for row in alive:
                at = _search(rows, start, end, row)
                if at < end and rows[at] == row:
                    partial[row] += factor[term] * weights[at]
        else:  # read the postings, adding those of live candidates
            scanned += end - start
            for j in range(start, end):
                if mark[rows[j]] == TOUCHED:
                    partial[rows[j]] += factor[term] * weights[j]
        if count >= k:
            theta = max(theta, _kth(partial, alive, k))
    if len(alive) > k:  # rescore exactly what can reach the k-th
        lower = _lower(_kth(partial, alive, k))
        alive = alive[partial[alive] >= lower]
    for row in touched[:size]:
        mark[row] = 0
    scores = _exact(rows, weights, starts, ends, idf, query, alive)
    best_first = _best(scores, alive, k, with_ties)
    return alive[best_first].astype(np.int64), scores[best_first], scanned


@_jit
def _search(rows, lo, hi, row):
    """The first position in ``rows[lo:hi]`` (increasing) not below ``row``, or ``hi``."""
    while lo < hi:
        middle = (lo + hi) >> 1
        if rows[middle] < row:
            lo = middle + 1
        else:
            hi = middle
    return lo


@_jit
def _exact(rows, weights, starts, ends, idf, query, wanted):
    per_term = np.zeros((len(starts), len(wanted)))  # what each term adds to each wanted row
    for term in range(len(starts)):
        for i in range(len(wanted)):
            at = _search(rows, starts[term], ends[term], wanted[i])
            if at < ends[term] and rows[at] == wanted[i]:
                per_term[term, i] = idf[term] * weights[at]
    scores = np.zeros(len(wanted))
    for i in range(len(wanted)):
        score = 0.0
        for position in query:
            score += per_term[position, i]
        scores[i] = score
    return scores


@_jit
def _lower(score):
    """``score`` less the slack for sums of the same terms added in another order."""
    return score - MARGIN * abs(score)


@_jit
def _kth(partial, rows, k):
    """The ``k``-th largest of ``partial[rows]`` (``len(rows) >= k``): the root of a min-heap of the ``k``
    largest."""
    heap = np.empty(k)
    for i in range(k):
        heap[i] = partial[rows[i]]
    for start in range(k // 2 - 1, -1, -1):
        _sift_min(heap, start)
    for i in range(k, len(rows)):
        if partial[rows[i]] > heap[0]:
            heap[0] = partial[rows[i]]
            _sift_min(heap, 0)
    return heap[0]


@_jit
def _sift_min(heap, root):
    while 2 * root + 1 < len(heap):
        child = 2 * root + 1
        if child + 1 < len(heap) and heap[child + 1] < heap[child]:
            child += 1
        if heap[child] >= heap[root]:
            return
        heap[root], heap[child] = heap[child], heap[root]
        root = child


@_jit
def _best(scores, rows, k, with_ties):
    """Positions of the ``k`` best ``scores``, best first, ties to the lower row (``with_ties``: the rows tied
    with the ``k``-th are kept too, up to ``2 k`` in all)."""
    order = _ranked(scores, rows)
    if len(order) <= k:
        return order
    tied = 0
    if with_ties:
        while k + tied < min(len(order), 2 * k) and scores[order[k + tied]] == scores[order[k - 1]]:
            tied += 1
    return order[:k + tied]


@_jit
def _ranked(primary, secondary):
    """Positions ordered by ``primary`` decreasing, then ``secondary`` increasing (a heap sort: numpy's sorts
    cost numba seconds to compile)."""
    order = np.arange(len(primary))
    for start in range(len(order) // 2 - 1, -1, -1):
        _sift_worst(order, primary, secondary, start, len(order))
    for end in range(len(order) - 1, 0, -1):  # the worst left goes last
        order[0], order[end] = order[end], order[0]
        _sift_worst(order, primary, secondary, 0, end)
    return order


@_jit
def _sift_worst(order, primary, secondary, root, end):
    """Restore a heap of ``order[:end]`` whose root ranks last."""
    while 2 * root + 1 < end:
        child = 2 * root + 1
        if child + 1 < end and _after(primary, secondary, order[child + 1], order[child]):
            child += 1
        if not _after(primary, secondary, order[child], order[root]):
            return
        order[root], order[child] = order[child], order[root]
        root = child


@_jit
def _after(primary, secondary, a, b):
    """Whether ``a`` ranks after ``b``."""
    return primary[a] < primary[b] or (primary[a] == primary[b] and secondary[a] > secondary[b])
