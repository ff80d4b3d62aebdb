"""Where a passage matched the query's words: character spans to highlight, for people reading hits."""
from __future__ import annotations

from collections.abc import Iterable

from ..indexer.text.analysis import term_spans


def highlights(passage: str, query_terms: Iterable[str]) -> list[tuple[int, int]]:
    """Sorted, non-overlapping ``(start, end)`` spans of ``passage`` whose analyzed terms are among
    ``query_terms`` (the analyzed query: what BM25 matched, prefixes and CJK bigrams included)."""
    wanted = set(query_terms)
    spans: list[tuple[int, int]] = []
    if not wanted:
        return spans
    for start, end, terms in term_spans(passage):
        if wanted.intersection(terms):
            if spans and start <= spans[-1][1]:  # overlapping bigrams of one run merge
                spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
            else:
                spans.append((start, end))
    return spans
