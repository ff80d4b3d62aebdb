"""Search an index: dense, lexical or hybrid, with chunk hits aggregated to documents."""
from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..indexer.compat import check_compatible
from ..indexer.text.analysis import analyze
from ..indexer.store.centering import center
from ..indexer.store.docstore import ChunkRow
from ..indexer.store.maxscore import compile_now
from ..indexer.errors import IndexFormatError, IndexMismatchError, QueryError
from ..indexer.text.language import detect_language
from ..indexer.text.validation import text_problem

from .fusion import SCORE_BOTH_SIDES, Candidates, fuse
from .options import AUTO, DEFAULT_FUSION, FUSIONS, MAX_K, MODES
from .highlight import highlights
from .index.reader import IndexReader
from .index.sharded import open_index
from .index.loader import SNAPSHOT_RETRIES

if TYPE_CHECKING:  # torch loads with the model, on the first dense or hybrid query
    from ..indexer.encoding.protocol import TextEncoder

log = logging.getLogger(__name__)

QUERY_BATCH = 32  # queries encoded in one forward pass by search_many (one query: a batch of one)


def _first_depth(k: int) -> int:
    """Chunks each side lists first for the top ``k`` documents (deeper when too few documents remain)."""
    return max(4 * k, 50)


@dataclass(frozen=True)
class Hit:
    """A document found by a query.

    Attributes:
        id, title, lang: The document's.
        score: Ranking score (higher is better): cosine for dense, BM25 for lexical,
            the fused score for hybrid.
        passage: Text of the document's best chunk ``chunk_id``; ``start``/``end`` are
            its character offsets in the document text.
        scores: That chunk's ``dense`` (cosine) and ``lexical`` (BM25) scores; ``dense``
            is None in lexical mode, where the model is not loaded.
        metadata: The document's metadata (every field of its record beyond id, text,
            title and lang).
        highlights: ``[start, end)`` spans of ``passage`` whose words match the query's
            terms, in order (see :func:`search.highlight.highlights`).
    """

    id: str
    score: float
    title: str | None
    lang: str | None
    passage: str
    chunk_id: int
    start: int
    end: int
    scores: dict[str, float | None] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    highlights: list[tuple[int, int]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SearchResult:
    query: str
    mode: str
    hits: list[Hit]

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "mode": self.mode, "hits": [h.to_dict() for h in self.hits]}


def validate_query(query: str, k: int, mode: str, fusion: str, alpha: float,
                   filter: dict[str, Any] | None = None, offset: int = 0) -> None:
    """Raises QueryError naming the bad argument."""
    for key, value in (filter or {}).items():
        if not isinstance(key, str) or not isinstance(value, (str, int, float, bool)):
            raise QueryError(f"filter {key!r}: values must be strings, numbers or booleans")
    if not isinstance(query, str) or not query.strip():
        raise QueryError("query is empty")
    problem = text_problem(query, "query")
    if problem:
        raise QueryError(problem)
    if not 1 <= k <= MAX_K:
        raise QueryError(f"k must be between 1 and {MAX_K}, got {k}")
    if not 0 <= offset <= MAX_K - k:
        raise QueryError(f"offset must be between 0 and {MAX_K - k} (offset + k reaches at most hit {MAX_K}), "
                         f"got {offset}")
    if mode not in MODES:
        raise QueryError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if fusion not in FUSIONS:
        raise QueryError(f"unknown fusion {fusion!r}; choose one of {', '.join(FUSIONS)}")
    if not 0.0 <= alpha <= 1.0:
        raise QueryError(f"alpha must be between 0 and 1, got {alpha}")


class Searcher:
    """Answers queries over one index directory (sharded or not).

    The model is loaded on the first dense or hybrid query (lexical search needs
    none) and must be the one the index was built with. Each query first picks up
    the latest committed generation of the index.

    Args:
        directory: Index directory.
        model: Model name or directory; default: the index's own.
        layer: Layer to pool; default and only accepted value: the index's own.
        device: ``auto``, ``cpu`` or ``cuda``.
        encoder: A ready encoder (skips loading; still checked against the index).
        precision: Matmul precision of the encoder this loads; default and only accepted value: the
            index's own (``fp32``, ``bf16``, ``fp16`` or ``int8``).
        nprobe: Inverted lists scanned per query by an approximate dense index (``ivf-*``);
            default: the index's own choice (recall@10 >= 0.95 in ``bench/bench_dense.py``).
    """

    def __init__(self, directory: str | Path, model: str | None = None, layer: int | None = None,
                 device: str = "auto", encoder: TextEncoder | None = None, precision: str | None = None,
                 nprobe: int | None = None):
        self.index: IndexReader = open_index(directory)
        config = self.index.manifest.config
        try:
            check_compatible(self.index.manifest)
        except IndexMismatchError:
            self.index.close()
            raise
        if layer is not None and layer != config.layer:
            check_compatible(self.index.manifest, config=dataclasses.replace(config, layer=layer))
        self._model_name = model or config.model_name
        self._device = device
        self._precision = precision or config.precision
        self._encoder = encoder
        if encoder is not None:
            check_compatible(self.index.manifest, encoder)
        self._lock = threading.RLock()
        self.nprobe = nprobe
        self._auto_fusion: str | None = None

    @property
    def encoder(self) -> TextEncoder:
        """The query encoder, loaded and checked against the index on first use."""
        with self._lock:
            if self._encoder is None:
                from ..indexer.encoding.model import load_model

                loaded = load_model(self._model_name, self._device)  # an unreachable hub fails before torch loads
                from ..indexer.encoding.encoder import Encoder

                encoder = Encoder(loaded, batch_size=QUERY_BATCH, precision=self._precision)
                check_compatible(self.index.manifest, encoder)
                self._encoder = encoder
            return self._encoder

    @property
    def auto_fusion(self) -> str:
        """What fusion ``auto`` means for this index: ``backed`` when it holds the sentence embeddings its model
        was trained to produce (the dense side leads), else ``anchored`` (a raw encoder, or another layer)."""
        if self._auto_fusion is None:
            from ..indexer.encoding.sentence_config import pools_as_trained

            loaded = getattr(self.encoder, "loaded", None)
            trained = loaded is not None and pools_as_trained(self.index.manifest.config, loaded)
            self._auto_fusion = "backed" if trained else "anchored"
        return self._auto_fusion

    def close(self) -> None:
        self.index.close()

    def refresh(self) -> None:
        """Pick up the latest committed generation of the index now."""
        with self._lock, self.index.store.snapshot():
            self.index.refresh()

    def prepare(self) -> int:
        """Make the loaded segments' int8 copies for exact search and compile their scan now (a server
        starting), not at their second search (see :mod:`indexer.store.int8_scan`), and compile BM25's
        search loops; how many segments have an int8 copy."""
        compile_now()
        with self._lock:
            return sum(segment.dense.prepare_scan() for part in self.index.parts
                       for segment in part.segments.values())

    def search(self, query: str, k: int = 10, mode: str = "hybrid", fusion: str = DEFAULT_FUSION,
               alpha: float = 0.5, lang: str | None = None,
               filter: dict[str, str | int | float | bool] | None = None,
               query_lang: str | None = None, offset: int = 0) -> SearchResult:
        """Top-``k`` documents for ``query``, after the first ``offset``.

        Args:
            query: Query text in any language.
            k: Number of documents (1..1000).
            mode: ``hybrid`` (fuse dense and lexical), ``dense`` or ``lexical``.
            fusion: ``auto`` (default: :attr:`auto_fusion`) or a key of :data:`search.fusion.FUSIONS`:
                ``backed``, ``anchored``, ``evidence``, ``rrf`` (reciprocal rank, k=60), ``linear`` (min-max normalised
                scores), ``zscore``, ``dbsf``.
            alpha: Weight of the dense side in hybrid fusion (0..1); 0.5 weighs both equally.
            lang: Only documents whose ``lang`` is this.
            filter: Only documents whose metadata has exactly these values
                (``{"source": "wiki"}``). Filters apply before the top ``k`` is cut.
            query_lang: Language of the query, for indexes built with
                ``center_languages`` (default: detected from the query).
            offset: Hits to skip, for paging: ``offset=10, k=10`` is the second page
                (``offset + k`` at most 1000).

        All reads of one query come from one committed generation: the vectors,
        the postings and the documents of the same commit.

        Raises:
            QueryError: An argument is out of range.
            IndexFormatError: The index is damaged.
        """
        validate_query(query, k, mode, fusion, alpha, filter, offset)
        vectors = self._query_vectors([query]) if mode != "lexical" else [None]
        return self._answer([query], vectors, k, mode, fusion, alpha, lang, filter, query_lang, offset)[0]

    def search_many(self, queries: Sequence[str], k: int = 10, mode: str = "hybrid", fusion: str = DEFAULT_FUSION,
                    alpha: float = 0.5, lang: str | None = None,
                    filter: dict[str, str | int | float | bool] | None = None,
                    query_lang: str | None = None, offset: int = 0) -> list[SearchResult | QueryError]:
        """:meth:`search` for many queries with the same options, done together: their vectors encoded in
        length-sorted batches of :data:`QUERY_BATCH` (one forward pass per batch instead of one per query),
        and each batch of them searched in the dense index at once (one matrix product where it is exact),
        from one committed generation. The same results (up to the order of chunks whose dense scores tie
        within float rounding: a matrix product sums in another order), several times the queries per second.

        Returns:
            One item per query, in order: its result, or the QueryError that refused it.
        """
        refused: dict[int, QueryError] = {}
        for i, query in enumerate(queries):
            try:
                validate_query(query, k, mode, fusion, alpha, filter, offset)
            except QueryError as exc:
                refused[i] = exc
        asked = [i for i in range(len(queries)) if i not in refused]
        texts = [queries[i] for i in asked]
        vectors = self._query_vectors(texts) if mode != "lexical" and texts else [None] * len(texts)
        answers: dict[int, SearchResult] = {}
        for start in range(0, len(asked), QUERY_BATCH):
            batch = slice(start, start + QUERY_BATCH)
            found = self._answer(texts[batch], vectors[batch], k, mode, fusion, alpha, lang, filter, query_lang,
                                 offset)
            answers.update(zip(asked[batch], found))
        return [refused[i] if i in refused else answers[i] for i in range(len(queries))]

    def _answer(self, queries: Sequence[str], vectors: Sequence[np.ndarray | None], k: int, mode: str, fusion: str,
                alpha: float, lang: str | None, filter: dict | None, query_lang: str | None,
                offset: int) -> list[SearchResult]:
        """The hits of validated queries whose vectors (None for lexical) are given, all from one committed
        generation; the dense index searched for all of them at once."""
        tokens = [analyze(query) for query in queries]
        for attempt in range(SNAPSHOT_RETRIES):
            try:
                with self._lock, self.index.store.snapshot():
                    self.index.refresh()
                    if self.nprobe is not None:
                        for part in self.index.parts:
                            for segment in part.segments.values():
                                segment.dense.nprobe = self.nprobe
                    allowed = None
                    if lang is not None or filter:
                        allowed = np.asarray(self.index.store.chunk_ids_where(lang, filter), dtype=np.int64)
                    centered = [self._center_query(vector, query, query_lang)
                                for vector, query in zip(vectors, queries)]
                    depth = _first_depth(offset + k)
                    dense = (self.index.dense.search_many(np.stack(centered), depth, allowed)
                             if mode != "lexical" else [None] * len(queries))
                    return [SearchResult(query=query, mode=mode,
                                         hits=self._search(vector, words, offset + k, mode, fusion, alpha, allowed,
                                                           first)[offset:])
                            for query, vector, words, first in zip(queries, centered, tokens, dense)]
            except IndexFormatError:
                # Two commits landed while this snapshot was open and the generation it
                # names was cleaned up; a new snapshot sees the newest one.
                if attempt == SNAPSHOT_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def _query_vectors(self, queries: Sequence[str]) -> np.ndarray:
        """The queries' vectors ``(n, dim)``, embedded as the index's settings say."""
        encoder = self.encoder  # loads the model first: an unreachable hub fails before torch loads
        from ..indexer.encoding.encoder import encode_queries

        return encode_queries(encoder, list(queries), self.index.manifest.config)

    def _center_query(self, vector: np.ndarray | None, query: str, query_lang: str | None) -> np.ndarray | None:
        """The query vector centered by its language's mean, when the index centers languages."""
        centroids = self.index.centroids
        if vector is None or centroids is None:
            return vector
        lang = query_lang or detect_language(query)
        return center(vector[None, :], [lang], centroids)[0]

    def _search(self, vector, tokens, k, mode, fusion, alpha, allowed, first_dense=None) -> list[Hit]:
        """The top ``k`` documents of one query; ``first_dense``: its dense top :func:`_first_depth` (k), found
        already (deeper lists, when chunks of the same documents crowd the top, are searched here)."""
        index = self.index
        total = len(index.dense) if allowed is None else len(allowed)
        depth = _first_depth(k)
        while True:
            dense = lexical = {}
            if mode != "lexical":
                ids, scores = first_dense if first_dense is not None else index.dense.search(vector, depth, allowed)
                first_dense = None
                dense = dict(zip(ids.tolist(), scores.tolist()))
            if mode != "dense":
                ids, scores = index.lexical.search(tokens, depth, allowed, with_ties=mode == "hybrid")
                lexical = dict(zip(ids.tolist(), scores.tolist()))
            if mode == "hybrid":
                fused = self._fuse(dense, lexical, vector, tokens, fusion, alpha)
            else:
                fused = dense if mode == "dense" else lexical
            rows = self.index.store.chunks(list(fused))
            best = self._best_chunk_per_document(fused, rows)
            if len(best) >= k or depth >= total:
                break
            depth *= 4
        # Equal scores (common with RRF) rank by document id, whatever the index's layout.
        ranked = [best[d] for d in sorted(best, key=lambda d: (-best[d][1], d))[:k]]
        return self._hits(ranked, rows, vector, tokens)

    def _fuse(self, dense: dict[int, float], lexical: dict[int, float], vector, tokens, fusion: str,
              alpha: float) -> dict[int, float]:
        """Hybrid scores of the union of both candidate lists (each candidate scored by both sides,
        for the fusions that read both scores)."""
        index = self.index
        fusion = self.auto_fusion if fusion == AUTO else fusion
        candidates = Candidates(dense, lexical)
        if fusion in SCORE_BOTH_SIDES:
            candidates.query_weight = float(index.lexical.query_weights(tokens).sum())
            candidates.complete(lambda ids: index.dense.score_chunks(vector, ids),
                                lambda ids: index.lexical.score_chunks(tokens, ids))
        return fuse(fusion, candidates, alpha)

    @staticmethod
    def _best_chunk_per_document(chunk_scores: dict[int, float],
                                 rows: dict[int, ChunkRow]) -> dict[str, tuple[int, float]]:
        best: dict[str, tuple[int, float]] = {}
        for chunk_id, score in chunk_scores.items():
            row = rows.get(chunk_id)
            if row is not None and (row.doc_id not in best or score > best[row.doc_id][1]):
                best[row.doc_id] = (chunk_id, score)
        return best

    def _hits(self, ranked: list[tuple[int, float]], rows: dict[int, ChunkRow], vector, tokens) -> list[Hit]:
        chunk_ids = [c for c, _ in ranked]
        docs = self.index.store.documents(rows[c].doc_id for c in chunk_ids)
        lexical = self.index.lexical.score_chunks(tokens, chunk_ids)
        dense = self.index.dense.score_chunks(vector, chunk_ids) if vector is not None else [None] * len(ranked)
        hits = []
        for (chunk_id, score), lex, den in zip(ranked, lexical, dense):
            row = rows[chunk_id]
            doc = docs.get(row.doc_id)
            if doc is None:  # a chunk whose document row is gone: the store is damaged
                raise IndexFormatError(f"damaged index: chunk {chunk_id} belongs to document {row.doc_id!r}, "
                                       "which is not stored; run `xlsearch check`")
            hits.append(Hit(id=doc.id, score=float(score), title=doc.title, lang=doc.lang,
                            passage=row.text, chunk_id=chunk_id, start=row.start, end=row.end,
                            scores={"dense": None if den is None else float(den), "lexical": float(lex)},
                            metadata=doc.metadata, highlights=highlights(row.text, tokens)))
        return hits
