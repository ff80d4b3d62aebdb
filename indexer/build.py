"""Writing an index: chunk, embed and store documents, then commit atomically.

:class:`IndexWriter` holds the writer lock, keeps the dense and lexical indexes in
memory while documents are upserted or deleted, and :meth:`IndexWriter.commit`
publishes all three stores as one new generation (see ``indexer.storage``).
Nothing reaches readers before ``commit``; a failed run leaves the old index.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path


from .analysis import analyze
from .chunking import chunk_text
from .config import IndexConfig, Manifest, utc_now
from .corpus import CorpusReport, read_documents
from .dense import DenseIndex
from .docstore import DOCS_FILE, ChunkRow, Document, DocStore
from .docstore import delete_documents, set_meta, write_chunks, write_documents
from .encoder import Encoder
from .errors import IndexMismatchError, XlsearchError
from .lexical import BM25Index
from .storage import (WriterLock, committed_manifest, dense_path, fsync_dir, fsync_tree, index_exists, lexical_path,
                      open_docstore, remove_generations, write_manifest_copy)

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (documents done, chunks done) since the last call
ENCODE_GROUP = 512  # chunks encoded together, so length sorting has something to sort


@dataclass
class UpsertStats:
    added: int = 0
    replaced: int = 0
    unchanged: int = 0
    chunks: int = 0


def check_compatible(manifest: Manifest, encoder: Encoder | None = None,
                     config: IndexConfig | None = None) -> None:
    """Refuse to use an index with another model, layer or build setting.

    Raises:
        IndexMismatchError: Naming the setting, the index's value and the asked one.
    """
    if encoder is not None and encoder.loaded.fingerprint != manifest.model_fingerprint:
        raise IndexMismatchError(
            f"the index was built with model {manifest.config.model_name!r} (fingerprint "
            f"{manifest.model_fingerprint}), not {encoder.loaded.name!r} ({encoder.loaded.fingerprint}); "
            "use the index's model, or build a new index")
    for field in dataclasses.fields(IndexConfig):
        ours, asked = getattr(manifest.config, field.name), getattr(config, field.name, None)
        if config is not None and field.name != "model_name" and ours != asked:
            raise IndexMismatchError(f"the index was built with {field.name}={ours!r}, not {asked!r}; "
                                     "drop the option or build a new index")


def resolve_config(directory: str | Path, **given) -> IndexConfig:
    """The existing index's settings (or the defaults) with the given non-None ones on top."""
    base = IndexConfig()
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

    Raises:
        IndexLockedError: Another process is writing to the index.
        IndexNotFoundError: No index exists and no encoder and config were given to create one.
    """

    def __init__(self, directory: str | Path, encoder: Encoder | None = None,
                 config: IndexConfig | None = None):
        self.directory = Path(directory)
        if committed_manifest(self.directory) is None and (encoder is None or config is None):
            open_docstore(self.directory)  # raises IndexNotFoundError or IndexFormatError
        self.directory.mkdir(parents=True, exist_ok=True)
        self.encoder = encoder
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
        if committed_manifest(self.directory) is not None:
            self.store, self.manifest = open_docstore(self.directory)
            check_compatible(self.manifest, self.encoder, config)
            generation = self.manifest.generation
            self.dense = DenseIndex.load(dense_path(self.directory, generation), self.manifest.dim)
            self.lexical = BM25Index.load(lexical_path(self.directory, generation))
            self.next_chunk_id = int(self.store.get_meta("next_chunk_id") or 0)
            return
        if config.layer > self.encoder.num_layers:
            raise IndexMismatchError(f"layer {config.layer} does not exist: {self.encoder.loaded.name} "
                                     f"has layers 0..{self.encoder.num_layers}")
        # A new index (or one whose first commit never happened): start empty.
        self.store = DocStore(self.directory / DOCS_FILE, create=True)
        self.manifest = Manifest(config=config, model_fingerprint=self.encoder.loaded.fingerprint,
                                 dim=self.encoder.dim, num_layers=self.encoder.num_layers)
        self.dense = DenseIndex(self.encoder.dim)
        self.lexical = BM25Index(k1=config.bm25_k1, b=config.bm25_b, epsilon=config.bm25_epsilon)
        self.next_chunk_id = 0
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

    def upsert(self, docs: Iterable[Document], progress: Progress | None = None) -> UpsertStats:
        """Add documents, replacing those with the same id; identical ones are skipped."""
        if self.encoder is None:
            raise XlsearchError("IndexWriter was opened without an encoder; it can only delete")
        stats = UpsertStats()
        group: list[tuple[Document, list[ChunkRow], list[str]]] = []
        size = 0
        for doc in docs:
            old = self._current(doc.id)
            if old == doc:
                stats.unchanged += 1
                if progress:
                    progress(1, 0)
                continue
            if old is not None:
                self._drop(doc.id)
                stats.replaced += 1
            else:
                stats.added += 1
            rows, texts = self._chunk(doc)
            group.append((doc, rows, texts))
            size += len(rows)
            if size >= ENCODE_GROUP:
                stats.chunks += self._embed(group, progress)
                group, size = [], 0
        stats.chunks += self._embed(group, progress)
        return stats

    def _chunk(self, doc: Document) -> tuple[list[ChunkRow], list[str]]:
        config, tokenizer = self.manifest.config, self.encoder.tokenizer
        prefix = title_prefix(doc.title, tokenizer, config.chunk_tokens // 4)
        prefix_tokens = len(tokenizer(prefix, add_special_tokens=False)["input_ids"]) if prefix else 0
        budget = config.chunk_tokens - tokenizer.num_special_tokens_to_add(pair=False) - prefix_tokens
        rows, texts = [], []
        for chunk in chunk_text(doc.text, tokenizer, budget, config.chunk_overlap):
            rows.append(ChunkRow(self.next_chunk_id, doc.id, chunk.start, chunk.end, chunk.text))
            texts.append(prefix + chunk.text)
            self.next_chunk_id += 1
        return rows, texts

    def _embed(self, group: list[tuple[Document, list[ChunkRow], list[str]]],
               progress: Progress | None) -> int:
        texts = [t for _, _, ts in group for t in ts]
        ids = [r.chunk_id for _, rows, _ in group for r in rows]
        vectors = self.encoder.encode(texts, self.manifest.config.layer,
                                      progress=(lambda n: progress(0, n)) if progress else None)
        self.dense.add(ids, vectors)
        self.lexical.add(ids, [analyze(t) for t in texts])
        for doc, rows, _ in group:
            self._pending_deletes.discard(doc.id)
            self._pending_docs[doc.id] = doc
            self._pending_chunks[doc.id] = rows
            if progress:
                progress(1, 0)
        return len(ids)

    # -- commit ------------------------------------------------------------
    def has_changes(self) -> bool:
        return bool(self._pending_docs or self._pending_deletes)

    def commit(self) -> Manifest:
        """Publish every pending change as the next generation, atomically."""
        if not self.has_changes() and self.manifest.generation > 0:
            return self.manifest
        old, new = self.manifest.generation, self.manifest.generation + 1
        try:
            self.dense.save(dense_path(self.directory, new))
            self.lexical.save(lexical_path(self.directory, new))
            fsync_tree(lexical_path(self.directory, new))
            fsync_dir(self.directory)
            manifest = self._commit_store(new)
        except BaseException:
            remove_generations(self.directory, keep={old})
            raise
        self.manifest = manifest
        self._pending_docs.clear()
        self._pending_deletes.clear()
        self._pending_chunks.clear()
        write_manifest_copy(self.directory, manifest)
        remove_generations(self.directory, keep={old, new})
        return manifest

    def _commit_store(self, generation: int) -> Manifest:
        with self.store.transaction() as conn:
            delete_documents(conn, sorted(self._pending_deletes | set(self._pending_docs)))
            write_documents(conn, list(self._pending_docs.values()))
            write_chunks(conn, [r for rows in self._pending_chunks.values() for r in rows])
            documents = conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
            manifest = self.manifest.replace(documents=int(documents), chunks=len(self.dense),
                                             generation=generation, updated=utc_now())
            set_meta(conn, {"manifest": manifest.to_json(), "next_chunk_id": str(self.next_chunk_id)})
        return manifest


def title_prefix(title: str | None, tokenizer, max_tokens: int) -> str:
    """``"<title>\\n"`` cut to at most ``max_tokens`` tokens, or "" without a title."""
    if not title or not title.strip():
        return ""
    title = " ".join(title.split())
    offsets = tokenizer(title, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    if len(offsets) > max_tokens:
        title = title[:offsets[max_tokens - 1][1]]
    return title + "\n"


def build_index(paths: Sequence[str | Path], directory: str | Path, encoder: Encoder,
                config: IndexConfig, skip_bad: bool = False,
                progress_factory: Callable[[int], Progress] | None = None) -> tuple[UpsertStats, CorpusReport]:
    """Index every document of ``paths`` into ``directory`` in one atomic commit.

    The inputs are read twice: a first pass validates every record (so a bad one
    stops the run before anything changes) and counts documents for the progress
    bar; the second chunks, embeds and stores them.

    Raises:
        CorpusError: A bad record, unless ``skip_bad``.
        IndexMismatchError: ``directory`` holds an index of another model or setting.
    """
    report = CorpusReport()
    for _ in read_documents(paths, skip_bad, report):
        pass
    with IndexWriter(directory, encoder, config) as writer:
        progress = progress_factory(report.documents) if progress_factory else None
        stats = writer.upsert(read_documents(paths, skip_bad), progress)
        writer.commit()
    return stats, report
