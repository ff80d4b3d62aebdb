"""What the searcher reads an index through: the Protocols that a plain index
(:class:`~search.index.loader.LoadedIndex`) and a sharded one
(:class:`~search.index.sharded.ShardedIndex`) both implement.

A hybrid search is composed of a :class:`DenseRetriever` and a :class:`LexicalRetriever` over one
:class:`ChunkStore`, as Pyserini composes its hybrid searcher from two searchers.
Scores are higher-is-better: cosine for dense, BM25 for lexical.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import numpy as np

from ...indexer.config import Manifest
from ...indexer.document import Document
from ...indexer.store.centering import Centroids
from ...indexer.store.docstore import ChunkRow


class DenseRetriever(Protocol):
    """Chunk vectors: inner product with a unit query vector ``(dim,)`` (cosine)."""

    def __len__(self) -> int: ...

    def search(self, query: np.ndarray, k: int,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` ``(chunk ids int64 (n,), scores (n,))``, best first, among ``allowed`` if given."""

    def search_many(self, queries: np.ndarray, k: int,
                    allowed: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`search` for each row of ``queries`` ``(m, dim)``, together (one matrix product where exact)."""

    def score_chunks(self, query: np.ndarray, chunk_ids: Sequence[int]) -> np.ndarray:
        """``(len(chunk_ids),)`` scores of the given chunks."""


class LexicalRetriever(Protocol):
    """Chunk terms: Okapi BM25 of analyzed query tokens, with collection-wide statistics."""

    def __len__(self) -> int: ...

    def search(self, query_tokens: list[str], k: int, allowed: np.ndarray | None = None,
               with_ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` chunks holding a query term, best first (``with_ties``: and those tied with the k-th)."""

    def score_chunks(self, query_tokens: list[str], chunk_ids: Sequence[int]) -> np.ndarray:
        """``(len(chunk_ids),)`` BM25 scores (0 where no term matches)."""

    def query_weights(self, query_tokens: list[str]) -> np.ndarray:
        """IDF of each query term over the whole collection."""


class ChunkStore(Protocol):
    """Documents and chunks, read inside one snapshot (one committed generation)."""

    def snapshot(self) -> AbstractContextManager[None]: ...

    def chunk_ids_where(self, lang: str | None = None, filter: dict | None = None) -> list[int]: ...

    def chunks(self, chunk_ids: Sequence[int]) -> dict[int, ChunkRow]: ...

    def documents(self, doc_ids: Iterable[str]) -> dict[str, Document]: ...

    def get_document(self, doc_id: str) -> Document | None: ...


class IndexReader(Protocol):
    """A committed index opened for search: its manifest, stores and retrievers."""

    manifest: Manifest
    store: ChunkStore
    dense: DenseRetriever
    lexical: LexicalRetriever
    centroids: Centroids | None

    @property
    def parts(self) -> Sequence[Any]:
        """The complete indexes it is made of (itself, or its shards)."""

    def refresh(self) -> bool:
        """Load the newest committed generation; call inside ``store.snapshot()``."""

    def close(self) -> None: ...
