"""Several indexes searched as one: the segments of an index, and the shards of a sharded one.

Merging is exact. Dense scores (cosine) do not depend on the other parts, and the global top
k is among the union of each part's top k. BM25 scores do (N, document frequencies, average
length), so every part scores with the statistics of the whole collection
(:class:`indexer.store.lexical.Collection`), which :func:`share_statistics` hands to the
leaf BM25 indexes (every segment of every shard) whenever a part changes.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ...indexer.store.lexical import BM25Index, Collection, Vocabulary

Route = Callable[[Sequence[int]], list[tuple[np.ndarray, np.ndarray]]]  # per part: (positions, ids)


class Merged:
    """Parts' dense indexes as one :class:`~search.index.reader.DenseRetriever` (and, as
    :class:`MergedLexical`, their BM25 indexes): ``search`` merges the parts' top k,
    ``score_chunks`` asks each chunk's part, found by ``route``."""

    def __init__(self, parts: Sequence, route: Route):
        self.parts, self.route = list(parts), route

    def __len__(self) -> int:
        return sum(len(part) for part in self.parts)

    def search(self, query, k: int, allowed: np.ndarray | None = None, **options) -> tuple[np.ndarray, np.ndarray]:
        """Global top ``k`` (ids, scores), best first; ``allowed`` split by part before searching.
        ``options`` go to each part's search (``with_ties=True`` keeps every chunk tied with the k-th)."""
        routed = None if allowed is None else self.route(allowed)
        found = []
        for p, part in enumerate(self.parts):
            mine = None if routed is None else routed[p][1]
            if mine is not None and len(mine) == 0:
                continue
            found.append(part.search(query, k, mine, **options))
        if not found:
            return np.empty(0, np.int64), np.empty(0, np.float64)
        ids = np.concatenate([f[0] for f in found]).astype(np.int64)
        scores = np.concatenate([f[1] for f in found])
        order = np.lexsort((ids, -scores))  # ties: lower chunk id first
        cut = k
        if options.get("with_ties") and len(order) > k:  # as BM25Index.search: ties kept, 2 k at most
            cut = min(2 * k, int(np.searchsorted(-scores[order], -scores[order[k - 1]], side="right")))
        best = order[:cut]
        return ids[best], scores[best]

    def score_chunks(self, query, chunk_ids: Sequence[int]) -> np.ndarray:
        out = None
        for part, (positions, ids) in zip(self.parts, self.route(chunk_ids)):
            if len(ids):
                scores = np.asarray(part.score_chunks(query, ids))
                out = np.zeros(len(chunk_ids), scores.dtype) if out is None else out
                out[positions] = scores
        return out if out is not None else np.zeros(len(chunk_ids))


class MergedLexical(Merged):
    """Parts' BM25 indexes as one :class:`~search.index.reader.LexicalRetriever`; every leaf
    scores with the whole collection's statistics (:func:`share_statistics`)."""

    def query_weights(self, query_tokens: list[str]) -> np.ndarray:
        """The parts share the whole collection's statistics, so any part answers."""
        if not self.parts:
            return np.zeros(len(query_tokens))
        return self.parts[0].query_weights(query_tokens)


def share_statistics(leaves: Sequence[BM25Index], vocabulary: Vocabulary) -> None:
    """Make every leaf score as one index over all their live chunks would (one leaf: its own);
    ``vocabulary`` is the reader's, kept from one commit to the next."""
    collection = Collection.of(leaves, vocabulary) if len(leaves) > 1 else None
    for leaf in leaves:
        leaf.use_collection(collection)


def route_by_membership(leaves: Sequence[BM25Index]) -> Route:
    """Route chunk ids to the segment holding them (each leaf knows its live chunk ids)."""
    def route(chunk_ids: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        ids = np.asarray(chunk_ids, dtype=np.int64)
        out = []
        for leaf in leaves:
            positions = np.flatnonzero(leaf.contains(ids))
            out.append((positions, ids[positions]))
        return out
    return route


def route_by_modulo(shards: int) -> Route:
    """Route chunk ids to shard ``chunk_id % shards`` (``indexer.store.shard_layout``)."""
    def route(chunk_ids: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        ids = np.asarray(chunk_ids, dtype=np.int64)
        owner = ids % shards
        out = []
        for s in range(shards):
            positions = np.flatnonzero(owner == s)
            out.append((positions, ids[positions]))
        return out
    return route
