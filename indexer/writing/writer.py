"""Writing an index: chunk, embed and store documents, then commit atomically.

:class:`IndexWriter` holds the writer lock, keeps the dense and lexical indexes in
memory while documents are upserted or deleted, and :meth:`IndexWriter.commit`
publishes all three stores as one new generation (see ``indexer.storage``).
Nothing reaches readers before ``commit``; a failed run leaves the old index.
"""
from __future__ import annotations

import dataclasses
import logging
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..text.analysis import analyze
from ..store.centering import center, compute_centroids
from ..text.pieces import Piece, document_pieces, with_language
from ..compat import check_compatible
from ..config import IndexConfig, Manifest, utc_now
from ..store.dense import DenseIndex
from ..document import Document
from ..store.docstore import DOCS_FILE, ChunkRow, DocStore, delete_documents, set_meta, write_chunks, write_documents
from ..errors import IndexWriteError, XlsearchError
from ..store.lexical import BM25Index
from ..store.lexical_io import save_bm25
from ..store.shard_layout import index_directories
from ..store.storage import (
    WriterLock,
    centroids_path,
    committed_manifest,
    dense_path,
    digest_generation,
    fsync_dir,
    fsync_tree,
    index_exists,
    lexical_path,
    load_generation,
    open_docstore,
    raw_path,
    read_manifest_copy,
    remove_generations,
    write_manifest_copy,
)

if TYPE_CHECKING:
    from ..encoding.protocol import TextEncoder

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (documents done, chunks done) since the last call
ENCODE_GROUP = 512  # chunks encoded together, so length sorting has something to sort


@dataclass
class UpsertStats:
    added: int = 0
    replaced: int = 0
    unchanged: int = 0
    chunks: int = 0


def resolve_config(directory: str | Path, *, model_name: str | None = None, layer: int | None = None,
                   pooling: str | None = None, query_prompt: str | None = None, document_prompt: str | None = None,
                   chunk_tokens: int | None = None, chunk_overlap: int | None = None,
                   center_languages: bool | None = None, dense_index: str | None = None) -> IndexConfig:
    """The existing index's settings (or the defaults) with the given ones (not None) on top;
    a given setting that differs from an existing index's is refused when the writer opens it."""
    given = dict(model_name=model_name, layer=layer, pooling=pooling, query_prompt=query_prompt,
                 document_prompt=document_prompt, chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap,
                 center_languages=center_languages, dense_index=dense_index)
    base = IndexConfig()
    directory = index_directories(directory)[0]  # shard 0 of a sharded index
    if index_exists(directory):
        store, manifest = open_docstore(directory)
        store.close()
        base = manifest.config
    return dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})


class IndexWriter:
    """The one writer of an index directory (creates it when new).

    Args:
        directory: Index directory.
        encoder: Embeds chunk texts; must be the index's model for an existing index.
            May be None for an existing index when only deleting.
        config: Settings for a new index; for an existing one, only checked against it.
        chunk_ids: ``(first, step)`` of the chunk ids this writer hands out: a shard of
            a sharded index uses ``(shard, shards)`` so chunk ids are unique across shards.

    Raises:
        IndexLockedError: Another process is writing to the index.
        IndexNotFoundError: No index exists and no encoder and config were given to create one.
    """

    def __init__(self, directory: str | Path, encoder: TextEncoder | None = None,
                 config: IndexConfig | None = None, chunk_ids: tuple[int, int] = (0, 1)):
        self.directory = Path(directory)
        self.encoder = encoder
        self._first_chunk_id, self._chunk_id_step = chunk_ids
        if not self.directory.is_dir() and (encoder is None or config is None):
            open_docstore(self.directory)  # raises IndexNotFoundError
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise IndexWriteError(f"{self.directory}: cannot create the index ({exc.strerror})") from None
        self._lock = WriterLock(self.directory)
        try:
            self._open(config)
        except BaseException:
            self._lock.release()
            raise
        self._pending_docs: dict[str, Document] = {}
        self._pending_deletes: set[str] = set()
        self._pending_chunks: dict[str, list[ChunkRow]] = {}

    def _open(self, config: IndexConfig | None) -> None:
        committed = committed_manifest(self.directory)
        if committed is None and (self.encoder is None or config is None):
            open_docstore(self.directory)  # raises IndexNotFoundError or IndexFormatError
        if committed is not None:
            self.store, self.manifest = open_docstore(self.directory)
            check_compatible(self.manifest, self.encoder, config)
            self.dense, self.lexical = load_generation(self.directory, self.manifest)
            self.raw = (DenseIndex.load(raw_path(self.directory, self.manifest.generation), self.manifest.dim)
                        if self.manifest.config.center_languages else None)
            if read_manifest_copy(self.directory) != self.manifest.to_dict():
                write_manifest_copy(self.directory, self.manifest)  # a crash left it behind
            self.next_chunk_id = int(self.store.get_meta("next_chunk_id") or self._first_chunk_id)
            return
        from ..encoding.sentence_config import settle_config  # here: a writer that only deletes loads no torch

        config = settle_config(config, self.encoder.loaded)  # ConfigError for a layer the model lacks
        # The manifest names the model that made the vectors, whatever the config was built with.
        config = dataclasses.replace(config, model_name=self.encoder.loaded.name)
        # A new index (or one whose first commit never happened): start empty.
        self.store = DocStore(self.directory / DOCS_FILE, create=True)
        self.manifest = Manifest(config=config, model_fingerprint=self.encoder.loaded.fingerprint,
                                 dim=self.encoder.dim, num_layers=self.encoder.num_layers)
        self.dense = DenseIndex(self.encoder.dim, config.dense_index)
        self.raw = DenseIndex(self.encoder.dim) if config.center_languages else None
        self.lexical = BM25Index(k1=config.bm25_k1, b=config.bm25_b, epsilon=config.bm25_epsilon)
        self.next_chunk_id = self._first_chunk_id
        with self.store.transaction() as conn:  # leftovers of a first commit that never finished
            delete_documents(conn, [r[0] for r in conn.execute("SELECT id FROM documents")])

    # -- context manager ---------------------------------------------------
    def __enter__(self) -> IndexWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.store.close()
        self._lock.release()

    # -- changes -----------------------------------------------------------
    def _current(self, doc_id: str) -> Document | None:
        if doc_id in self._pending_docs:
            return self._pending_docs[doc_id]
        if doc_id in self._pending_deletes:
            return None
        return self.store.get_document(doc_id)

    def _drop(self, doc_id: str) -> None:
        """Remove a document's chunks (committed or pending) from the in-memory indexes."""
        pending = self._pending_chunks.pop(doc_id, None)
        ids = [c.chunk_id for c in pending] if pending is not None else []
        if doc_id not in self._pending_deletes and pending is None:
            ids += self.store.chunk_ids_of([doc_id])
        self.dense.remove(ids)
        self.lexical.remove(ids)
        if self.raw is not None:
            self.raw.remove(ids)
        self._pending_docs.pop(doc_id, None)
        self._pending_deletes.add(doc_id)

    def delete(self, doc_ids: Iterable[str]) -> list[str]:
        """Delete documents; returns the ids that existed."""
        found = []
        for doc_id in dict.fromkeys(doc_ids):
            if self._current(doc_id) is not None:
                self._drop(doc_id)
                found.append(doc_id)
        return found

    def upsert(self, docs: Iterable[Document], progress: Progress | None = None,
               commit_chunks: int | None = None) -> UpsertStats:
        """Add documents, replacing those with the same id; identical ones are skipped.

        A document without ``lang`` gets the language detected from its title and text.

        Args:
            docs: Documents, streamed.
            progress: Called with (documents, chunks) done since the last call.
            commit_chunks: Commit whenever this many new chunks are pending (and at
                least an eighth of the index, so commits stay cheap as it grows).
                None: only the caller commits.
        """
        if self.encoder is None:
            raise XlsearchError("IndexWriter was opened without an encoder; it can only delete")
        stats = UpsertStats()
        group: list[tuple[Document, list[ChunkRow], list[str]]] = []
        size = 0
        for doc in docs:
            doc = self._admit(with_language(doc), stats)
            if doc is None:
                if progress:
                    progress(1, 0)
                continue
            rows, texts = self._chunk(doc)
            group.append((doc, rows, texts))
            size += len(rows)
            if size >= min(ENCODE_GROUP, commit_chunks or ENCODE_GROUP):
                stats.chunks += self._embed(group, progress)
                group, size = [], 0
                self._maybe_commit(commit_chunks)
        stats.chunks += self._embed(group, progress)
        return stats

    def add_encoded(self, doc: Document, pieces: Sequence[Piece], vectors, stats: UpsertStats,
                    commit_chunks: int | None = None) -> None:
        """Add one document chunked and embedded elsewhere (by :func:`document_pieces` and the
        index's encoder, e.g. on Ray workers); same effect as :meth:`upsert` of ``doc``."""
        doc = self._admit(with_language(doc), stats)
        if doc is None:
            return
        rows = [self._new_row(doc.id, piece) for piece in pieces]
        self._store_group([(doc, rows, [p.input for p in pieces])], vectors)
        stats.chunks += len(rows)
        self._maybe_commit(commit_chunks)

    def _admit(self, doc: Document, stats: UpsertStats) -> Document | None:
        """Count ``doc`` and drop the version it replaces; None when it is unchanged."""
        old = self._current(doc.id)
        if old == doc:
            stats.unchanged += 1
            return None
        if old is not None:
            self._drop(doc.id)
            stats.replaced += 1
        else:
            stats.added += 1
        return doc

    def _maybe_commit(self, commit_chunks: int | None) -> None:
        if commit_chunks and self.pending_chunks() >= max(commit_chunks, len(self.dense) // 8):
            self.commit()

    def stored_checksums(self) -> np.ndarray:
        """Sorted uint64 checksums of the committed documents (each covers id and content)."""
        rows = self.store.db.execute("SELECT checksum FROM documents")
        return np.unique(np.array([int(c, 16) for (c,) in rows], dtype=np.uint64))

    def is_unchanged(self, doc: Document) -> bool:
        """Whether the index already holds exactly ``doc`` (language included)."""
        return self._current(doc.id) == doc

    def pending_chunks(self) -> int:
        return sum(len(rows) for rows in self._pending_chunks.values())

    def _chunk(self, doc: Document) -> tuple[list[ChunkRow], list[str]]:
        pieces = document_pieces(doc, self.encoder.tokenizer, self.manifest.config)
        return [self._new_row(doc.id, piece) for piece in pieces], [p.input for p in pieces]

    def _new_row(self, doc_id: str, piece: Piece) -> ChunkRow:
        row = ChunkRow(self.next_chunk_id, doc_id, piece.start, piece.end, piece.text)
        self.next_chunk_id += self._chunk_id_step
        return row

    def _embed(self, group: list[tuple[Document, list[ChunkRow], list[str]]],
               progress: Progress | None) -> int:
        from ..encoding.encoder import encode_documents

        texts = [t for _, _, ts in group for t in ts]
        vectors = encode_documents(self.encoder, texts, self.manifest.config,
                                   progress=(lambda n: progress(0, n)) if progress else None)
        self._store_group(group, vectors)
        if progress:
            progress(len(group), 0)
        return len(texts)

    def _store_group(self, group: list[tuple[Document, list[ChunkRow], list[str]]], vectors) -> None:
        ids = [r.chunk_id for _, rows, _ in group for r in rows]
        (self.raw if self.raw is not None else self.dense).add(ids, vectors)
        self.lexical.add(ids, [analyze(t) for _, _, ts in group for t in ts])
        for doc, rows, _ in group:
            self._pending_deletes.discard(doc.id)
            self._pending_docs[doc.id] = doc
            self._pending_chunks[doc.id] = rows

    # -- commit ------------------------------------------------------------
    def has_changes(self) -> bool:
        return bool(self._pending_docs or self._pending_deletes)

    def commit(self) -> Manifest:
        """Publish every pending change as the next generation, atomically."""
        if not self.has_changes() and self.manifest.generation > 0:
            return self.manifest
        old, new = self.manifest.generation, self.manifest.generation + 1
        try:
            if self.raw is not None:
                self._recenter(new)
            self.dense.save(dense_path(self.directory, new))
            save_bm25(self.lexical, lexical_path(self.directory, new))
            fsync_tree(lexical_path(self.directory, new))
            fsync_dir(self.directory)
            manifest = self._commit_store(new, digest_generation(self.directory, new))
        except (OSError, RuntimeError, sqlite3.Error) as exc:  # RuntimeError: FAISS I/O
            _discard_generation(self.directory, old)
            reason = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[-1]
            raise IndexWriteError(f"{self.directory}: could not commit ({reason}); "
                                  f"the index is unchanged") from exc
        except BaseException:
            _discard_generation(self.directory, old)
            raise
        self.manifest = manifest
        self._pending_docs.clear()
        self._pending_deletes.clear()
        self._pending_chunks.clear()
        write_manifest_copy(self.directory, manifest)
        remove_generations(self.directory, keep={old, new})
        return manifest

    def _recenter(self, generation: int) -> None:
        """Recompute language means over every raw vector and rebuild the centered dense index.

        Means move as documents come and go, so every vector is centered again with
        the current means (O(chunks x dim), cheap next to encoding); exact at every commit.
        """
        langs = dict(self.store.db.execute("SELECT c.chunk_id, d.lang FROM chunks c "
                                           "JOIN documents d ON d.id = c.doc_id").fetchall())
        for doc_id, rows in self._pending_chunks.items():
            langs.update((r.chunk_id, self._pending_docs[doc_id].lang) for r in rows)
        ids, vectors = self.raw.all_vectors()
        chunk_langs = [langs.get(int(i)) for i in ids]
        centroids = compute_centroids(vectors, chunk_langs)
        self.dense.replace_all(ids, center(vectors, chunk_langs, centroids))  # keeps a trained IVF's lists
        self.raw.save(raw_path(self.directory, generation))
        centroids.save(centroids_path(self.directory, generation))
        fsync_tree(centroids_path(self.directory, generation))

    def _commit_store(self, generation: int, files: dict) -> Manifest:
        with self.store.transaction() as conn:
            delete_documents(conn, sorted(self._pending_deletes | set(self._pending_docs)))
            write_documents(conn, list(self._pending_docs.values()))
            write_chunks(conn, [r for rows in self._pending_chunks.values() for r in rows])
            documents = conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
            manifest = self.manifest.replace(documents=int(documents), chunks=len(self.dense),
                                             generation=generation, updated=utc_now(), files=files)
            set_meta(conn, {"manifest": manifest.to_json(), "next_chunk_id": str(self.next_chunk_id)})
        return manifest


def _discard_generation(directory: Path, keep: int) -> None:
    """Remove the files of a commit that failed; best effort (the disk may be full or read-only)."""
    try:
        remove_generations(directory, keep={keep, keep - 1})
    except OSError as exc:
        log.warning("could not remove the files of a failed commit in %s: %s", directory, exc)
