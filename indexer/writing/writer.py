"""Writing an index: chunk, embed and store documents, then commit atomically.

:class:`IndexWriter` holds the writer lock and keeps in memory only what changed since the
last commit: a new segment of the chunks added, and the ids of committed chunks deleted.
:meth:`IndexWriter.commit` writes that segment (and a merged one when the merge policy asks),
then publishes documents, chunks, tombstones and the segment list in one SQLite transaction
(see ``indexer.store.storage``). A small commit costs what it changes, not the index's size.
Nothing reaches readers before ``commit``; a failed commit leaves the old index.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import sqlite3
from collections import Counter
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
from ..document import Document
from ..store.docstore import (
    DOCS_FILE,
    ChunkRow,
    DocStore,
    delete_documents,
    retire_segments,
    set_meta,
    write_chunks,
    write_documents,
    write_tombstones,
)
from ..errors import IndexWriteError, XlsearchError
from ..store.segment import Segment, is_segment_name, live_counts, plan_merge
from ..store.shard_layout import index_directories
from ..store.storage import (
    WriterLock,
    centroids_path,
    committed_manifest,
    damaged,
    digest_files,
    fsync_dir,
    fsync_tree,
    index_exists,
    listed_names,
    load_segments,
    open_docstore,
    read_manifest_copy,
    remove_unlisted,
    verify_files,
    write_manifest_copy,
)

if TYPE_CHECKING:
    from ..encoding.protocol import TextEncoder

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (documents done, chunks done) since the last call
ENCODE_GROUP = 512  # chunks encoded together, so length sorting has something to sort
FULL_DISK_BYTES = 1 << 20  # less free space than this after a short write: the disk is full


@dataclass
class UpsertStats:
    added: int = 0
    replaced: int = 0
    unchanged: int = 0
    chunks: int = 0


def resolve_config(directory: str | Path, *, model_name: str | None = None, layer: int | None = None,
                   pooling: str | None = None, query_prompt: str | None = None, document_prompt: str | None = None,
                   chunk_tokens: int | None = None, chunk_overlap: int | None = None,
                   center_languages: bool | None = None, dense_index: str | None = None,
                   precision: str | None = None) -> IndexConfig:
    """The existing index's settings (or the defaults) with the given ones (not None) on top;
    a given setting that differs from an existing index's is refused when the writer opens it."""
    given = dict(model_name=model_name, layer=layer, pooling=pooling, query_prompt=query_prompt,
                 document_prompt=document_prompt, chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap,
                 center_languages=center_languages, dense_index=dense_index, precision=precision)
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
        self._tombstones: dict[int, str] = {}  # committed chunk id -> segment, deleted since the last commit
        self._merge_all = False

    def _open(self, config: IndexConfig | None) -> None:
        committed = committed_manifest(self.directory)
        if committed is None and (self.encoder is None or config is None):
            open_docstore(self.directory)  # raises IndexNotFoundError or IndexFormatError
        if committed is not None:
            self.store, self.manifest = open_docstore(self.directory)
            check_compatible(self.manifest, self.encoder, config)
            problems = verify_files(self.directory, self.manifest, hashes=False)  # a merge hashes what it reads
            if problems:
                self.store.close()
                raise damaged(self.directory, problems)
            if read_manifest_copy(self.directory) != self.manifest.to_dict():
                write_manifest_copy(self.directory, self.manifest)  # a crash left it behind
            self.next_chunk_id = int(self.store.get_meta("next_chunk_id") or self._first_chunk_id)
            self.next_segment = int(self.store.get_meta("next_segment") or 1)
            self.pending = Segment.empty("", self.manifest.dim, self.manifest.config)
            _remove_uncommitted(self.directory, self.next_segment, self.manifest.generation)
            return
        from ..encoding.sentence_config import settle_config  # here: a writer that only deletes loads no torch

        config = settle_config(config, self.encoder.loaded)  # ConfigError for a layer the model lacks
        # The manifest names the model (and precision) that made the vectors, whatever the config was built with.
        config = dataclasses.replace(config, model_name=self.encoder.loaded.name, precision=self.encoder.precision)
        # A new index (or one whose first commit never happened): start empty.
        self.store = DocStore(self.directory / DOCS_FILE, create=True)
        self.manifest = Manifest(config=config, model_fingerprint=self.encoder.loaded.fingerprint,
                                 dim=self.encoder.dim, num_layers=self.encoder.num_layers)
        self.pending = Segment.empty("", self.encoder.dim, config)
        self.next_chunk_id = self._first_chunk_id
        self.next_segment = 1
        with self.store.transaction() as conn:  # leftovers of a first commit that never finished
            delete_documents(conn, [r[0] for r in conn.execute("SELECT id FROM documents")])
            conn.execute("DELETE FROM tombstones")

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
        """Remove a document's chunks: pending ones from the new segment, committed ones by tombstone."""
        pending = self._pending_chunks.pop(doc_id, None)
        if pending is not None:
            self.pending.remove([c.chunk_id for c in pending])
        elif doc_id not in self._pending_deletes:
            self._tombstones.update(self.store.chunk_segments_of([doc_id]))
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
            commit_chunks: Commit whenever this many new chunks are pending (a commit costs
                what it adds, whatever the size of the index). None: only the caller commits.
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
        if commit_chunks and self.pending_chunks() >= commit_chunks:
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
        (self.pending.raw if self.pending.raw is not None else self.pending.dense).add(ids, vectors)
        self.pending.lexical.add(ids, [analyze(t) for _, _, ts in group for t in ts])
        for doc, rows, _ in group:
            self._pending_deletes.discard(doc.id)
            self._pending_docs[doc.id] = doc
            self._pending_chunks[doc.id] = rows

    def rollback(self) -> None:
        """Forget every change since the last commit (after a failed commit, say)."""
        self._pending_docs.clear()
        self._pending_deletes.clear()
        self._pending_chunks.clear()
        self._tombstones.clear()
        self.pending = Segment.empty("", self.manifest.dim, self.manifest.config)

    # -- commit ------------------------------------------------------------
    def has_changes(self) -> bool:
        return bool(self._pending_docs or self._pending_deletes)

    def commit(self) -> Manifest:
        """Publish every pending change as the next generation, atomically.

        Writes the new segment (and merges segments when :func:`plan_merge` asks, or always for
        a centering index, whose language means move with every change), then records the
        change in one transaction. Once that transaction is done the commit stands: a failure
        to refresh ``manifest.json`` or to delete retired segments afterwards is only logged.
        """
        if not self.has_changes() and self.manifest.generation > 0 and not self._merge_all:
            return self.manifest
        generation = self.manifest.generation + 1
        written: list[Path] = []
        try:
            plan = self._write_segments(generation, written)
            fsync_dir(self.directory)
            manifest = self._commit_store(generation, plan, digest_files(self.directory, written))
        except (OSError, RuntimeError, sqlite3.Error) as exc:  # RuntimeError: FAISS I/O
            reason = _failure(exc, self.directory)
            _discard(written)
            raise IndexWriteError(f"{self.directory}: could not commit ({reason}); "
                                  f"the index is unchanged") from exc
        except BaseException:
            _discard(written)
            raise
        previous, self.manifest = self.manifest, manifest
        self.rollback()  # everything pending is committed now
        try:
            write_manifest_copy(self.directory, manifest)
            remove_unlisted(self.directory, keep=listed_names(manifest) | listed_names(previous))
        except OSError as exc:
            log.warning("%s: generation %d is committed, but tidying up after it failed (%s); the next "
                        "writer finishes it", self.directory, generation, exc.strerror or exc)
        return manifest

    def optimize(self) -> Manifest:
        """Merge every segment into one, purging tombstones (``xlsearch optimize``); pending
        changes are committed with it. A no-op on an index of one segment without tombstones."""
        segments = self.manifest.segments
        if not self.has_changes() and len(segments) <= 1 and all(s["live"] == s["rows"] for s in segments):
            return self.manifest
        self._merge_all = True
        try:
            return self.commit()
        finally:
            self._merge_all = False

    def _new_segment_name(self) -> str:
        name = f"seg.{self.next_segment}"
        self.next_segment += 1
        return name

    def _write_segments(self, generation: int, written: list[Path]) -> _Plan:
        """Write the pending segment, or the merge it joins; returns what the commit records."""
        segments = [dict(s) for s in self.manifest.segments]
        deleted = Counter(self._tombstones.values())
        for entry in segments:
            entry["live"] -= deleted[entry["name"]]
        live, rows = live_counts(segments)
        flushed = None
        if len(self.pending):
            flushed = self.pending.name = self._new_segment_name()
            live[flushed] = rows[flushed] = len(self.pending)
        center = self.manifest.config.center_languages
        merge = list(live) if center or self._merge_all else plan_merge(live, rows)
        plan = _Plan(segments=[e for e in segments if e["name"] not in merge], merged=[n for n in merge if n != flushed],
                     flushed=None if flushed in merge else flushed, centroids=None)
        if plan.flushed is not None:
            self._save(self.pending, written)
            plan.segments.append({"name": flushed, "rows": rows[flushed], "live": live[flushed],
                                  "created": generation})
        if merge:
            out, plan.centroids = self._merge(merge, generation, written)
            if out is not None:
                plan.segments.append({"name": out.name, "rows": len(out), "live": len(out), "created": generation})
                plan.into = out.name
        return plan

    def _save(self, segment: Segment, written: list[Path]) -> None:
        written.append(self.directory / segment.name)  # first: a failed save removes what it wrote
        segment.save(self.directory)

    def _merge(self, names: list[str], generation: int, written: list[Path]) -> tuple[Segment | None, str | None]:
        """Write one segment of the live chunks of ``names`` (the pending one included by name);
        returns it (None when no chunk is live) and the new centroids file of a centering index."""
        center = self.manifest.config.center_languages
        on_disk = load_segments(self.directory, self.manifest.replace(segments=[
            e for e in self.manifest.segments if e["name"] in names]), self.store, with_raw=center)
        parts = []
        for name in names:
            if name == self.pending.name:
                parts.append(self.pending)
                continue
            segment = on_disk[name]
            segment.remove([i for i, s in self._tombstones.items() if s == name])
            parts.append(segment)
        merged = Segment.merged(self._new_segment_name(), parts, self.manifest.dim, self.manifest.config)
        centroids = self._recenter(merged, generation, written) if center else None
        if len(merged) == 0:
            return None, centroids
        self._save(merged, written)
        return merged, centroids

    def _recenter(self, segment: Segment, generation: int, written: list[Path]) -> str:
        """Recompute language means over every raw vector and center the segment's dense vectors.

        Means move as documents come and go, so every vector is centered again with the
        current means (O(chunks x dim), cheap next to encoding): a centering index is merged
        into one segment at every commit, and its search is exact at every commit.
        """
        langs = dict(self.store.db.execute("SELECT c.chunk_id, d.lang FROM chunks c "
                                           "JOIN documents d ON d.id = c.doc_id").fetchall())
        for doc_id, rows in self._pending_chunks.items():
            langs.update((r.chunk_id, self._pending_docs[doc_id].lang) for r in rows)
        ids, vectors = segment.raw.all_vectors()
        chunk_langs = [langs.get(int(i)) for i in ids]
        centroids = compute_centroids(vectors, chunk_langs)
        segment.dense.replace_all(ids, center(vectors, chunk_langs, centroids))
        path = centroids_path(self.directory, generation)
        written.append(path)
        centroids.save(path)
        fsync_tree(path)
        return path.name

    def _commit_store(self, generation: int, plan: _Plan, files: dict) -> Manifest:
        kept = {path: entry for path, entry in self.manifest.files.items()
                if path.split("/", 1)[0] in {e["name"] for e in plan.segments} and "/" in path}
        if plan.centroids is None and self.manifest.centroids is not None:
            kept[self.manifest.centroids] = self.manifest.files[self.manifest.centroids]
        with self.store.transaction() as conn:
            delete_documents(conn, sorted(self._pending_deletes | set(self._pending_docs)))
            write_documents(conn, list(self._pending_docs.values()))
            write_chunks(conn, [r for rows in self._pending_chunks.values() for r in rows],
                         plan.flushed or plan.into or "")  # not flushed alone: merged (or none pending)
            write_tombstones(conn, self._tombstones, generation)
            if plan.merged:
                retire_segments(conn, plan.merged, plan.into)
            documents = conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
            chunks = conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
            manifest = self.manifest.replace(documents=int(documents), chunks=int(chunks), generation=generation,
                                             updated=utc_now(), files=kept | files, segments=plan.segments)
            set_meta(conn, {"manifest": manifest.to_json(), "next_chunk_id": str(self.next_chunk_id),
                            "next_segment": str(self.next_segment)})
        return manifest


@dataclass
class _Plan:
    """What one commit changes in the segment list."""

    segments: list[dict]  # the live segments after the commit, in order
    merged: list[str]  # committed segments merged away
    flushed: str | None  # the pending segment, written as it is
    centroids: str | None  # the new language means' file
    into: str | None = None  # the segment a merge wrote


def _remove_uncommitted(directory: Path, next_segment: int, generation: int) -> None:
    """Delete what a commit killed before its commit point left: segment folders numbered from
    ``next_segment`` on and centroid files of later generations (no commit ever listed them)."""
    for item in directory.iterdir():
        number = item.name.split(".")[1] if item.name.count(".") >= 1 else ""
        if not number.isdigit():
            continue
        if (is_segment_name(item.name) and int(number) >= next_segment) or (
                item.name.startswith("centroids.") and int(number) > generation):
            log.info("removing %s, left by a commit that did not finish", item)
            shutil.rmtree(item) if item.is_dir() else item.unlink()


def _failure(exc: BaseException, directory: Path) -> str:
    """Why a write failed, in the OS's words where it gave any. numpy and FAISS report a full disk as a
    short write without an errno ("1040 requested and 1008 written"): that is named for what it is."""
    reason = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[-1]
    if getattr(exc, "errno", None) is None and " written" in reason:
        try:
            full = shutil.disk_usage(directory).free < FULL_DISK_BYTES
        except OSError:
            full = False
        if full:
            return f"No space left on device: {reason}"
    return reason


def _discard(written: list[Path]) -> None:
    """Remove the files of a commit that failed; best effort (the disk may be full or read-only)."""
    for path in written:
        try:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not remove %s, written by a failed commit: %s", path, exc)
