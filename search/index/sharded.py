"""Read a sharded index as one: global top k from the shards' top k, BM25 with global statistics.

:class:`ShardedIndex` offers what :class:`search.searcher.Searcher` uses of a
:class:`search.loader.LoadedIndex` (``manifest``, ``store``, ``dense``, ``lexical``,
``refresh``), so the searcher fuses the *merged* dense and lexical candidate lists
exactly as for an unsharded index. Merging is exact:

- dense scores (cosine) do not depend on the other shards, and the global top k is
  among the union of each shard's top k;
- BM25 scores do (N, document frequencies, average length), so every shard scores
  with the statistics of the whole collection (:class:`indexer.lexical.Collection`),
  recomputed whenever a shard's generation changes.

Chunk ids are unique across shards and ``chunk_id % shards`` is the shard of a chunk;
``shard_of(doc_id)`` that of a document (see ``indexer.shards``).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

from ...indexer.config import Manifest
from ...indexer.document import Document
from ...indexer.store.docstore import ChunkRow
from ...indexer.errors import IndexFormatError
from ...indexer.store.lexical import Collection
from ...indexer.store.shard_layout import index_directories, read_shards, shard_of

from .loader import LoadedIndex, load_index
from .reader import IndexReader


def open_index(directory: str | Path) -> IndexReader:
    """Open the committed state of any index: one :class:`LoadedIndex`, or all shards of a sharded one.

    Raises:
        IndexNotFoundError, IndexFormatError: As :func:`search.loader.load_index`, for any shard;
            IndexFormatError also when shards were built with different settings or models.
    """
    if read_shards(directory) is None:
        return load_index(directory)
    shards: list[LoadedIndex] = []
    try:
        for path in index_directories(directory):
            shards.append(load_index(path))
    except BaseException:
        for shard in shards:
            shard.close()
        raise
    first = shards[0].manifest
    for shard in shards[1:]:
        if (shard.manifest.config, shard.manifest.model_fingerprint) != (first.config, first.model_fingerprint):
            for s in shards:
                s.close()
            raise IndexFormatError(f"{shard.directory}: built with other settings or another model "
                                   f"than {shards[0].directory}")
    return ShardedIndex(Path(directory), shards)


class ShardedIndex:
    """Every shard of a sharded index, loaded; reads route by chunk id or document id.

    Implements :class:`~search.index.reader.IndexReader`, as :class:`LoadedIndex` does.
    """

    def __init__(self, directory: Path, shards: list[LoadedIndex]):
        self.directory = directory
        self.shards = shards
        self.store = _Stores(shards)
        self.dense = _Merged(shards, lambda shard: shard.dense)
        self.lexical = _MergedLexical(shards, lambda shard: shard.lexical)
        self.centroids = None  # sharded indexes do not center languages
        self._share_statistics()

    @property
    def parts(self) -> list[LoadedIndex]:
        return self.shards

    @property
    def manifest(self) -> Manifest:
        """Shard 0's manifest: settings and model, the same in every shard."""
        return self.shards[0].manifest

    def close(self) -> None:
        for shard in self.shards:
            shard.close()

    def refresh(self) -> bool:
        """Load each shard's newest committed generation; call inside ``store.snapshot()``."""
        changed = [shard.refresh() for shard in self.shards]
        if any(changed):
            self._share_statistics()
        return any(changed)

    def _share_statistics(self) -> None:
        collection = Collection.of([shard.lexical for shard in self.shards])
        for shard in self.shards:
            shard.lexical.use_collection(collection)


class _Stores:
    """The shards' document stores, read as one :class:`~search.index.reader.ChunkStore`."""

    def __init__(self, shards: list[LoadedIndex]):
        self.shards = shards

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """One read transaction per shard, all open for the duration."""
        with ExitStack() as stack:
            for shard in self.shards:
                stack.enter_context(shard.store.snapshot())
            yield

    def chunk_ids_where(self, lang: str | None = None, filter: dict | None = None) -> list[int]:
        return [i for shard in self.shards for i in shard.store.chunk_ids_where(lang, filter)]

    def chunks(self, chunk_ids: Sequence[int]) -> dict[int, ChunkRow]:
        out: dict[int, ChunkRow] = {}
        for shard, (_, ids) in zip(self.shards, _route(chunk_ids, len(self.shards))):
            out.update(shard.store.chunks(ids.tolist()))
        return out

    def documents(self, doc_ids: Iterable[str]) -> dict[str, Document]:
        routed: list[list[str]] = [[] for _ in self.shards]
        for doc_id in doc_ids:
            routed[shard_of(doc_id, len(self.shards))].append(doc_id)
        out: dict[str, Document] = {}
        for shard, ids in zip(self.shards, routed):
            if ids:
                out.update(shard.store.documents(ids))
        return out

    def get_document(self, doc_id: str) -> Document | None:
        return self.shards[shard_of(doc_id, len(self.shards))].store.get_document(doc_id)


class _Merged:
    """The shards' dense indexes as one :class:`~search.index.reader.DenseRetriever` (and, as
    :class:`_MergedLexical`, their BM25 indexes): ``search`` merges the shards' top k,
    ``score_chunks`` routes each chunk to its shard."""

    def __init__(self, shards: list[LoadedIndex], part: Callable):
        self.shards, self.part = shards, part

    def __len__(self) -> int:
        return sum(len(self.part(shard)) for shard in self.shards)

    def search(self, query, k: int, allowed: np.ndarray | None = None, **options) -> tuple[np.ndarray, np.ndarray]:
        """Global top ``k`` (ids, scores), best first; ``allowed`` split by shard before searching.
        ``options`` go to each shard's search (``with_ties=True`` keeps every chunk tied with the k-th)."""
        routed = None if allowed is None else _route(allowed, len(self.shards))
        found = []
        for s, shard in enumerate(self.shards):
            mine = None if routed is None else routed[s][1]
            if mine is not None and len(mine) == 0:
                continue
            found.append(self.part(shard).search(query, k, mine, **options))
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
        for shard, (positions, ids) in zip(self.shards, _route(chunk_ids, len(self.shards))):
            if len(ids):
                scores = np.asarray(self.part(shard).score_chunks(query, ids))
                out = np.zeros(len(chunk_ids), scores.dtype) if out is None else out
                out[positions] = scores
        return out if out is not None else np.zeros(len(chunk_ids))


class _MergedLexical(_Merged):
    """The shards' BM25 indexes as one :class:`~search.index.reader.LexicalRetriever`; every
    shard scores with the whole collection's statistics (``_share_statistics``)."""

    def query_weights(self, query_tokens: list[str]) -> np.ndarray:
        """The shards share the whole collection's statistics, so any shard answers."""
        return self.part(self.shards[0]).query_weights(query_tokens)


def _route(chunk_ids: Sequence[int], shards: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per shard: (positions in ``chunk_ids``, the chunk ids there)."""
    ids = np.asarray(chunk_ids, dtype=np.int64)
    owner = ids % shards
    out = []
    for s in range(shards):
        positions = np.flatnonzero(owner == s)
        out.append((positions, ids[positions]))
    return out
