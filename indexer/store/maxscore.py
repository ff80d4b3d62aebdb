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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

SHORT = 4096  # postings merged in the first pass whatever their bounds: sorting them costs little
MARGIN = 1e-9  # relative slack on every comparison of sums added in different orders


@dataclass
class Postings:
    """Every posting of one index, term after term, rows increasing within a term.

    Attributes:
        rows: int32 row per posting.
        weights: float64 tf part of BM25 per posting, ``tf * (k1 + 1) / (tf + k1 * norm)``, and one
            more for the sentinel; only the postings of the terms being scored need to be filled.
        keys: int64 ``term * n + row`` per posting (sorted), then a sentinel larger than any: finds
            (term, row) pairs in one search.
        n: Rows in the index.
    """

    rows: np.ndarray
    weights: np.ndarray
    keys: np.ndarray
    n: int


class Term(NamedTuple):
    """One distinct query term: postings ``[start, end)``, idf, times in the query, largest tf part (0 for none)."""

    term: int
    start: int
    end: int
    idf: float
    count: int
    top: float


def top_k(postings: Postings, terms: Sequence[Term], query: Sequence[int], k: int,
          keep: np.ndarray | None = None, with_ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best rows among those holding a query term, best first (ties to the lower row).

    Args:
        terms: The query's distinct terms (a handful: plain Python, cheaper than numpy at this size).
        query: Positions in ``terms`` of the query's tokens, in query order, repeats included.
        k: How many rows (``k >= 1``).
        keep: Optional bool per row: rows allowed in the result (live and passing the filter).
        with_ties: Also the rows tied with the ``k``-th score, up to ``2 k`` in all.

    Returns:
        ``(rows int64, scores float64)``.
    """
    bound = {t: t.count * t.idf * t.top for t in terms}  # the most each term adds to one row's score
    order = sorted(terms, key=bound.__getitem__, reverse=True)
    rest = [0.0] * (len(order) + 1)  # rest[i]: the bound of order[i:]
    for i in range(len(order) - 1, -1, -1):
        rest[i] = rest[i + 1] + bound[order[i]]
    prune = all(t.idf >= 0 for t in terms)
    rows, scores, taken, theta = np.empty(0, np.int64), np.empty(0), 0, -np.inf
    while taken < len(order):
        first, size = taken, order[taken].end - order[taken].start
        taken += 1
        while taken < len(order) and size + order[taken].end - order[taken].start <= SHORT:
            size += order[taken].end - order[taken].start
            taken += 1
        rows, scores = _merge(postings, rows, scores, order[first:taken], keep)
        if prune and len(rows) >= k:
            theta = _kth(scores, k)
            if rest[taken] < _lower(theta):
                break
    for position in range(taken, len(order)):  # the rest only at the candidates that can still reach the k-th
        alive = scores + rest[position] >= _lower(theta)
        rows, scores = rows[alive], scores[alive]
        term = order[position]
        term_rows = postings.rows[term.start:term.end]  # one term's postings: a search in cache
        at = np.minimum(np.searchsorted(term_rows, rows), len(term_rows) - 1)
        hit = term_rows[at] == rows
        scores[hit] += (term.count * term.idf) * postings.weights[term.start + at[hit]]
        theta = max(theta, _kth(scores, k)) if len(rows) >= k else theta
    if len(rows) > k:  # rescore exactly what can reach the k-th
        rows = rows[scores >= _lower(_kth(scores, k))]
    scores = exact_scores(postings, terms, query, rows)
    best = best_positions(rows, scores, k, with_ties)
    return rows[best], scores[best]


def _merge(postings: Postings, rows: np.ndarray, scores: np.ndarray, batch: Sequence[Term],
           keep: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Candidates (sorted) and their partial scores after adding every posting of ``batch``."""
    new_rows = np.concatenate([postings.rows[t.start:t.end] for t in batch])
    new_scores = np.concatenate([(t.count * t.idf) * postings.weights[t.start:t.end] for t in batch])
    if keep is not None:
        kept = keep[new_rows]
        new_rows, new_scores = new_rows[kept], new_scores[kept]
    if len(batch) > 1 and len(new_rows):  # short postings: sorting their concatenation costs little
        sort = np.argsort(new_rows, kind="stable")
        new_rows, new_scores = new_rows[sort], new_scores[sort]
        starts = np.flatnonzero(np.concatenate(([True], new_rows[1:] != new_rows[:-1])))
        new_rows, new_scores = new_rows[starts], np.add.reduceat(new_scores, starts)
    if len(rows) < len(new_rows):
        rows, scores, new_rows, new_scores = new_rows, new_scores, rows, scores
    return _union(rows, scores, new_rows, new_scores)


def _union(rows: np.ndarray, scores: np.ndarray, more: np.ndarray, more_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sorted distinct ``rows`` and ``more`` with their scores summed: ``more`` (the shorter) is
    searched in ``rows`` and what is missing inserted, in time linear in ``rows``."""
    if len(more) == 0:
        return rows, scores
    at = np.searchsorted(rows, more)
    found = np.zeros(len(more), bool)
    inside = at < len(rows)
    found[inside] = rows[at[inside]] == more[inside]
    scores = scores.copy()
    scores[at[found]] += more_scores[found]
    missing = ~found
    return np.insert(rows, at[missing], more[missing]), np.insert(scores, at[missing], more_scores[missing])


def exact_scores(postings: Postings, terms: Sequence[Term], query: Sequence[int], rows: np.ndarray) -> np.ndarray:
    """float64 BM25 of ``rows`` (any order; 0 where no term matches), added token after token in query order
    from 0: the same float operations as scoring every row (``query`` non-empty)."""
    per_term = _lookup(postings, terms, rows)
    return np.add.accumulate(per_term[list(query)], axis=0)[-1]


def _lookup(postings: Postings, terms: Sequence[Term], rows: np.ndarray) -> np.ndarray:
    """float64 ``(len(terms), len(rows))``: what each term adds to each row, ``idf * tf part`` (0 where absent)."""
    ids = np.array([t.term for t in terms], np.int64)
    wanted = ids[:, None] * postings.n + rows[None, :]
    at = np.searchsorted(postings.keys, wanted)  # keys end with a sentinel: ``at`` stays in range
    found = np.where(postings.keys[at] == wanted, postings.weights[at], 0.0)
    return found * np.array([t.idf for t in terms])[:, None]


def _lower(score: float) -> float:
    """``score`` less the slack for sums of the same terms added in another order."""
    return score - MARGIN * abs(score)


def _kth(scores: np.ndarray, k: int) -> float:
    """The ``k``-th largest of ``scores`` (``len(scores) >= k``)."""
    return float(np.partition(scores, len(scores) - k)[len(scores) - k])


def best_positions(rows: np.ndarray, scores: np.ndarray, k: int, with_ties: bool = False) -> np.ndarray:
    """Positions of the ``k`` best ``scores`` (``rows`` increasing), best first, ties to the lower row
    (``with_ties``: the rows tied with the ``k``-th are kept too, up to ``2 k`` in all)."""
    order = np.lexsort((rows, -scores))
    if len(order) <= k:
        return order
    tied = np.count_nonzero(scores[order[k:2 * k if with_ties else k]] == scores[order[k - 1]])  # a prefix
    return order[:k + tied]
