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
        return _merge([part.search(query, k, mine, **options) for part, mine in self._routed(allowed)], k,
                      options.get("with_ties", False))

    def search_many(self, queries: np.ndarray, k: int,
                    allowed: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`search` for each row of ``queries`` ``(m, dim)``, each part searching all of them at once
        (dense parts only)."""
        found = [part.search_many(queries, k, mine) for part, mine in self._routed(allowed)]
        return [_merge([part[i] for part in found], k, False) for i in range(len(queries))]

    def _routed(self, allowed: np.ndarray | None) -> list[tuple[object, np.ndarray | None]]:
        """The parts to search, each with its share of ``allowed`` (None: every chunk); a part with no
        allowed chunk is left out."""
        if allowed is None:
            return [(part, None) for part in self.parts]
        return [(part, mine) for part, (_, mine) in zip(self.parts, self.route(allowed)) if len(mine)]

    def score_chunks(self, query, chunk_ids: Sequence[int]) -> np.ndarray:
        out = None
        for part, (positions, ids) in zip(self.parts, self.route(chunk_ids)):
            if len(ids):
                scores = np.asarray(part.score_chunks(query, ids))
                out = np.zeros(len(chunk_ids), scores.dtype) if out is None else out
                out[positions] = scores
        return out if out is not None else np.zeros(len(chunk_ids))


def _merge(found: Sequence[tuple[np.ndarray, np.ndarray]], k: int,
           with_ties: bool) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` of the parts' top lists, best first, ties by lower chunk id (``with_ties``: as
    ``BM25Index.search``, every chunk tied with the k-th kept, 2 k at most)."""
    if not found:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    ids = np.concatenate([f[0] for f in found]).astype(np.int64)
    scores = np.concatenate([f[1] for f in found])
    order = np.lexsort((ids, -scores))
    cut = k
    if with_ties and len(order) > k:
        cut = min(2 * k, int(np.searchsorted(-scores[order], -scores[order[k - 1]], side="right")))
    best = order[:cut]
    return ids[best], scores[best]


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
