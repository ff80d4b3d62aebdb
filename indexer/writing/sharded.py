"""Sharded indexes: one directory holding N complete indexes, documents split by a hash of their id.

The directory layout and the hash are in ``indexer.shard_layout``. A document lives
in exactly one shard, :func:`shard_of` its id, so every upsert and delete of one
document is atomic as in an unsharded index. Shard ``s`` hands out the
chunk ids ``s, s + N, s + 2N, ...``: chunk ids are unique across the whole index and
``chunk_id % N`` names the shard that holds a chunk. Each shard commits on its own; a
change that spans shards becomes visible one shard at a time.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .writer import IndexWriter, Progress, UpsertStats

from ..text.pieces import Piece
from ..config import IndexConfig, Manifest
from ..document import Document
from ..errors import ConfigError, IndexMismatchError, IndexWriteError
from ..store.shard_layout import create_shards, read_shards, shard_dir, shard_of
from ..store.storage import index_exists, open_docstore

if TYPE_CHECKING:
    from ..encoding.protocol import TextEncoder


class ShardedWriter:
    """The one writer of a sharded index: an :class:`IndexWriter` per shard, changes routed by id.

    Same interface as :class:`IndexWriter` (``upsert``, ``add_encoded``, ``delete``,
    ``commit``, ``close``). Takes every shard's writer lock.
    """

    def __init__(self, directory: str | Path, shards: int, encoder: TextEncoder | None = None,
                 config: IndexConfig | None = None):
        self.directory = Path(directory)
        self.writers: list[IndexWriter] = []
        try:
            for s in range(shards):
                self.writers.append(IndexWriter(shard_dir(self.directory, s), encoder, config, chunk_ids=(s, shards)))
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> ShardedWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for writer in self.writers:
            writer.close()

    def _writer(self, doc_id: str) -> IndexWriter:
        return self.writers[shard_of(doc_id, len(self.writers))]

    @property
    def manifest(self) -> Manifest:
        """Shard 0's manifest (every shard has the same settings)."""
        return self.writers[0].manifest

    def upsert(self, docs: Iterable[Document], progress: Progress | None = None,
               commit_chunks: int | None = None, batch: int = 256) -> UpsertStats:
        """Route documents to their shards; a shard's writer gets them ``batch`` at a time, so it
        encodes groups as large as an unsharded writer would."""
        total = UpsertStats()
        routed: list[list[Document]] = [[] for _ in self.writers]
        for doc in docs:
            shard = shard_of(doc.id, len(self.writers))
            routed[shard].append(doc)
            if len(routed[shard]) >= batch:
                _add(total, self.writers[shard].upsert(routed[shard], progress, commit_chunks))
                routed[shard] = []
        for writer, pending in zip(self.writers, routed):
            _add(total, writer.upsert(pending, progress, commit_chunks))
        return total

    def add_encoded(self, doc: Document, pieces: Sequence[Piece], vectors: np.ndarray, stats: UpsertStats,
                    commit_chunks: int | None = None) -> None:
        self._writer(doc.id).add_encoded(doc, pieces, vectors, stats, commit_chunks)

    def stored_checksums(self) -> np.ndarray:
        return np.unique(np.concatenate([writer.stored_checksums() for writer in self.writers]))

    def is_unchanged(self, doc: Document) -> bool:
        return self._writer(doc.id).is_unchanged(doc)

    def delete(self, doc_ids: Iterable[str]) -> list[str]:
        return [doc_id for doc_id in dict.fromkeys(doc_ids) if self._writer(doc_id).delete([doc_id])]

    def has_changes(self) -> bool:
        return any(writer.has_changes() for writer in self.writers)

    def commit(self) -> Manifest:
        """Commit every shard (each atomically); returns shard 0's manifest with the summed counts.

        Raises:
            IndexWriteError: A shard could not commit; the message says which shards committed
                their part of the change before it (a change spanning shards is not atomic).
        """
        manifests, committed = [], []
        for s, writer in enumerate(self.writers):
            changed = writer.has_changes()
            try:
                manifests.append(writer.commit())
            except IndexWriteError as exc:
                self.rollback()
                message = str(exc).replace("; the index is unchanged", f"; shard {s} is unchanged")
                raise IndexWriteError(message + (f"; shards {', '.join(map(str, committed))} had committed their "
                                                 f"documents of this change" if committed else
                                                 "; no shard had committed any of this change")) from exc
            if changed:
                committed.append(s)
        return _summed(manifests)

    def rollback(self) -> None:
        for writer in self.writers:
            writer.rollback()

    def optimize(self) -> Manifest:
        """Merge each shard's segments into one (see :meth:`IndexWriter.optimize`)."""
        return _summed([writer.optimize() for writer in self.writers])


def _summed(manifests: list[Manifest]) -> Manifest:
    return manifests[0].replace(documents=sum(m.documents for m in manifests),
                                    chunks=sum(m.chunks for m in manifests),
                                    generation=max(m.generation for m in manifests))


def _add(total: UpsertStats, part: UpsertStats) -> None:
    for field in dataclasses.fields(UpsertStats):
        setattr(total, field.name, getattr(total, field.name) + getattr(part, field.name))


def open_writer(directory: str | Path, encoder: TextEncoder | None = None, config: IndexConfig | None = None,
                shards: int | None = None) -> IndexWriter | ShardedWriter:
    """The writer of the index in ``directory``, sharded or not, creating it when new.

    Args:
        shards: For a new index, build it in this many shards (None or 1: unsharded);
            for an existing one, must be None or its number of shards.

    Raises:
        IndexMismatchError: ``shards`` differs from the existing index's.
        ConfigError: A sharded index with ``center_languages`` (its means would differ per shard).
        IndexNotFoundError: No index, and no encoder and config to create one.
    """
    directory = Path(directory)
    listed = read_shards(directory)
    existing = listed if listed is not None else (1 if index_exists(directory) else None)
    if existing is not None and shards is not None and shards != existing:
        raise IndexMismatchError(f"{directory} holds an index in {existing} shard(s), not {shards}; "
                                 "resharding is not supported: build a new index")
    wanted = existing or shards or 1
    if wanted > 1 and config is not None and config.center_languages:
        raise ConfigError("--center-languages cannot be combined with --shards: "
                          "each shard would center with its own language means")
    if listed is None and wanted == 1:
        return IndexWriter(directory, encoder, config)
    if listed is not None:
        return ShardedWriter(directory, wanted, encoder, config)
    if encoder is None or config is None:
        open_docstore(directory)  # raises IndexNotFoundError: nothing to create the shards with
    # A new sharded index appears whole: every shard commits an empty first generation before
    # shards.json names them, so no moment shows a sharded index with a shard that cannot open.
    writer = ShardedWriter(directory, wanted, encoder, config)
    try:
        writer.commit()
        create_shards(directory, wanted)
    except BaseException:
        writer.close()
        raise
    return writer
