"""Exact top-k BM25 by MaxScore (Turtle & Flood 1995), term at a time over numpy postings.

A query term can add at most its *bound* to a chunk's score (its idf times the largest tf part in
its postings). Terms are taken from the largest bound down (rare terms first, whose postings are
short). Once the terms not yet taken can add less, together, than the k-th best score so far, no
chunk outside the candidates can reach the top k: the long postings of the remaining (common)
terms are then only looked up at the candidates, never scanned, after dropping every candidate
whose score plus what is left cannot reach the k-th.

The result is exact: the candidates that can reach the k-th score are rescored in query order,
the same float operations as scoring every chunk, so scores are bit for bit those of
:meth:`indexer.store.lexical.BM25Index.get_scores` and ties are kept. Pruning needs scores that
only grow, so a query holding a term of negative idf is scored without it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHORT = 4096  # postings merged in the first pass whatever their bounds: sorting them costs little
MARGIN = 1e-9  # relative slack on every comparison of sums added in different orders


@dataclass
class Postings:
    """Every posting of one index, term after term, rows increasing within a term.

    Attributes:
        rows: int32 row per posting.
        weights: float64 tf part of BM25 per posting, ``tf * (k1 + 1) / (tf + k1 * norm)``; only
            the postings of the terms being scored need to be filled.
        keys: int64 ``term * n + row`` per posting (sorted): finds (term, row) pairs in one search.
        n: Rows in the index.
    """

    rows: np.ndarray
    weights: np.ndarray
    keys: np.ndarray
    n: int


@dataclass
class QueryTerms:
    """The query's distinct indexed terms, as parallel arrays.

    Attributes:
        term: int64 term ids.
        start, end: int64: each term's postings are ``[start, end)``.
        idf: float64 idf of each.
        count: int64 times each occurs in the query.
        top: float64 largest tf part in each term's postings (0 for none).
    """

    term: np.ndarray
    start: np.ndarray
    end: np.ndarray
    idf: np.ndarray
    count: np.ndarray
    top: np.ndarray

    def take(self, which: np.ndarray) -> QueryTerms:
        return QueryTerms(*(getattr(self, f)[which] for f in ("term", "start", "end", "idf", "count", "top")))


def top_k(postings: Postings, terms: QueryTerms, query: np.ndarray, k: int,
          keep: np.ndarray | None = None, with_ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best rows among those holding a query term, best first (ties to the lower row).

    Args:
        terms: The query's distinct indexed terms.
        query: int64 positions in ``terms`` of the query's tokens, in query order, repeats included.
        k: How many rows (``k >= 1``).
        keep: Optional bool per row: rows allowed in the result (live and passing the filter).
        with_ties: Also the rows tied with the ``k``-th score, up to ``2 k`` in all.

    Returns:
        ``(rows int64, scores float64)``.
    """
    bound = terms.count * terms.idf * terms.top  # the most each term adds to one row's score
    order = terms.take(np.argsort(-bound, kind="stable"))
    rest = np.concatenate((np.cumsum(np.sort(bound)), [0.0]))[::-1].tolist()  # rest[i]: bound of order[i:]
    lengths = (order.end - order.start).tolist()
    prune = bool((terms.idf >= 0).all())
    rows, scores, taken, theta = np.empty(0, np.int64), np.empty(0), 0, -np.inf
    while taken < len(lengths):
        first, size = taken, lengths[taken]
        taken += 1
        while taken < len(lengths) and size + lengths[taken] <= SHORT:
            size += lengths[taken]
            taken += 1
        rows, scores = _merge(postings, rows, scores, order.take(slice(first, taken)), keep)
        if prune and len(rows) >= k:
            theta = _kth(scores, k)
            if rest[taken] < _lower(theta):
                break
    for position in range(taken, len(lengths)):  # the rest only at the candidates that can still reach the k-th
        alive = scores + rest[position] >= _lower(theta)
        rows, scores = rows[alive], scores[alive]
        start, end = int(order.start[position]), int(order.end[position])
        term_rows = postings.rows[start:end]  # one term's postings: a search in cache
        at = np.minimum(np.searchsorted(term_rows, rows), len(term_rows) - 1)
        hit = term_rows[at] == rows
        scores[hit] += (order.count[position] * order.idf[position]) * postings.weights[start + at[hit]]
        theta = max(theta, _kth(scores, k)) if len(rows) >= k else theta
    if len(rows) > k:  # rescore exactly what can reach the k-th
        rows = rows[scores >= _lower(_kth(scores, k))]
    per_term = _lookup(postings, terms, rows)
    scores = np.add.accumulate(per_term[query], axis=0)[-1]  # one token after another, as scoring every row
    best = best_positions(rows, scores, k, with_ties)
    return rows[best], scores[best]


def _merge(postings: Postings, rows: np.ndarray, scores: np.ndarray, batch: QueryTerms,
           keep: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Candidates (sorted) and their partial scores after adding every posting of ``batch``."""
    spans = list(zip(batch.start.tolist(), batch.end.tolist()))
    new_rows = np.concatenate([postings.rows[a:b] for a, b in spans] + [rows])
    new_scores = np.repeat(batch.count * batch.idf, batch.end - batch.start) * np.concatenate(
        [postings.weights[a:b] for a, b in spans])
    new_scores = np.concatenate((new_scores, scores))
    if keep is not None:
        kept = keep[new_rows]
        new_rows, new_scores = new_rows[kept], new_scores[kept]
    if len(new_rows) * 8 > postings.n:  # one pass over the rows beats sorting this many
        merged = np.flatnonzero(np.bincount(new_rows, minlength=postings.n))
        return merged, np.bincount(new_rows, weights=new_scores, minlength=postings.n)[merged]
    if len(new_rows) == 0:
        return np.empty(0, np.int64), np.empty(0)
    sort = np.argsort(new_rows, kind="stable")  # timsort over a few sorted runs
    sorted_rows = new_rows[sort]
    starts = np.flatnonzero(np.concatenate(([True], sorted_rows[1:] != sorted_rows[:-1])))
    return sorted_rows[starts].astype(np.int64), np.add.reduceat(new_scores[sort], starts)


def _lookup(postings: Postings, terms: QueryTerms, rows: np.ndarray) -> np.ndarray:
    """float64 ``(terms, len(rows))``: what each term adds to each row, ``idf * tf part`` (0 where absent)."""
    wanted = (terms.term[:, None] * postings.n + rows[None, :]).ravel()
    at = np.minimum(np.searchsorted(postings.keys, wanted), max(len(postings.keys) - 1, 0))
    hit = postings.keys[at] == wanted if len(postings.keys) else np.zeros(len(wanted), bool)
    idf = np.repeat(terms.idf, len(rows))
    out = np.zeros(len(wanted))
    out[hit] = idf[hit] * postings.weights[at[hit]]
    return out.reshape(len(terms.term), len(rows))


def _lower(score: float) -> float:
    """``score`` less the slack for sums of the same terms added in another order."""
    return score - MARGIN * abs(score)


def _kth(scores: np.ndarray, k: int) -> float:
    """The ``k``-th largest of ``scores`` (``len(scores) >= k``)."""
    return float(np.partition(scores, len(scores) - k)[len(scores) - k])


def best_positions(rows: np.ndarray, scores: np.ndarray, k: int, with_ties: bool = False) -> np.ndarray:
    """Positions of the ``k`` best ``scores`` (``rows`` increasing), best first, ties to the lower row
    (``with_ties``: the rows tied with the ``k``-th are kept too, up to ``2 k`` in all)."""
    if len(rows) <= k:
        return np.lexsort((rows, -scores))
    threshold = scores[np.argpartition(-scores, k - 1)[k - 1]]
    above = np.flatnonzero(scores > threshold)
    at = np.flatnonzero(scores == threshold)[: (2 * k if with_ties else k) - len(above)]
    keep = np.union1d(above, at)
    return keep[np.lexsort((rows[keep], -scores[keep]))]
