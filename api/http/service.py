"""What the server loads once: the encoder, the searcher over the index, and the write path.

Each method is blocking (model forward passes, disk, SQLite); routes call them in
the thread pool. Reads go through :class:`search.searcher.Searcher`, which picks up
every committed generation on its next query (reading only its new segments). Writes go
through one :class:`indexer.writing.writer.IndexWriter`, opened at the first write and held
(with the index's writer lock) until the server stops; each request commits before it
answers, so a 200 means durable, and a failed request's changes are rolled back.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...indexer.config import BATCH_SIZE
from ...indexer.document import Document
from ...indexer.encoding.encoder import Encoder, encode_documents, encode_queries
from ...indexer.errors import DocumentNotFoundError
from ...indexer.encoding.model import load_model
from ...indexer.store.shard_layout import document_directory, index_directories
from ...indexer.writing.sharded import open_writer
from ...indexer.store.shard_layout import list_documents, sharded_info
from ...indexer.store.storage import open_docstore
from ...indexer.threads import CoreShare, limit_threads
from ...search.searcher import Searcher

log = logging.getLogger(__name__)


class IndexService:
    """The model and index one server serves.

    Args:
        directory: Index directory (must hold an index).
        model: Model name or directory; None: the index's own.
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: Texts per forward pass when documents are added.
        precision: The encoder's matmul precision (``indexer.config.PRECISIONS``); None: the index's own.
        threads: Caps torch's threads in one request, and numpy's BLAS and FAISS for the process
            (``xlsearch serve --threads``); None: every core. Requests running at once share the cores
            (:class:`indexer.threads.CoreShare`): a search counts from its start to its end, waits for the
            index and dense scan included, since whatever it runs then takes a core too.

    Raises:
        IndexNotFoundError, IndexFormatError: No readable index in ``directory``.
        ModelLoadError: The model cannot be loaded.
        IndexMismatchError: The model is not the one the index was built with.
    """

    def __init__(self, directory: str | Path, model: str | None = None, device: str = "auto",
                 batch_size: int = BATCH_SIZE, precision: str | None = None, threads: int | None = None):
        self.directory = Path(directory)
        self.cores = CoreShare(threads)  # torch's own count, read before the cap
        if threads:
            limit_threads(threads)
        store, manifest = open_docstore(index_directories(self.directory)[0])
        store.close()
        self.config = manifest.config
        self.encoder = Encoder(load_model(model or manifest.config.model_name, device), batch_size=batch_size,
                               precision=precision or manifest.config.precision)
        self.searcher = Searcher(self.directory, encoder=self.encoder)
        self.searcher.prepare()  # a server's first queries scan large segments through their int8 copies too
        self.encoder.warm_up(self.config.layer, pooling=self.config.pooling, prompt=self.config.query_prompt)
        self.write_lock = asyncio.Lock()  # one writer of this process at a time; others wait their turn
        self._writer = None

    def close(self) -> None:
        self.searcher.close()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _write(self, change):
        """Run ``change(writer)`` on the server's writer, then commit; on any failure roll back."""
        if self._writer is None:
            self._writer = open_writer(self.directory, self.encoder, self.config)
        try:
            return change(self._writer)
        except BaseException:
            self._writer.rollback()
            raise

    # -- reads -------------------------------------------------------------
    def search(self, query: str, k: int, mode: str, fusion: str, alpha: float, lang: str | None,
               filter: dict[str, str | int | float | bool] | None, query_lang: str | None = None,
               offset: int = 0) -> dict[str, Any]:
        """The same object ``xlsearch search --json`` prints."""
        with self.cores.threads_for_request():
            found = self.searcher.search(query, k=k, mode=mode, fusion=fusion, alpha=alpha, lang=lang,
                                         filter=filter, query_lang=query_lang, offset=offset)
        return found.to_dict()

    def get_document(self, doc_id: str) -> Document:
        """Raises DocumentNotFoundError."""
        store, _ = open_docstore(document_directory(self.directory, doc_id))
        try:
            doc = store.get_document(doc_id)
        finally:
            store.close()
        if doc is None:
            raise DocumentNotFoundError(f"no document with id {shorten(doc_id)!r}")
        return doc

    def list_documents(self, offset: int, limit: int) -> dict[str, Any]:
        """A page of the stored documents in id order, and how many there are, from one snapshot."""
        docs, total = list_documents(self.directory, offset, limit)
        return {"documents": [document_out(doc) for doc in docs], "offset": offset, "limit": limit, "total": total}

    def info(self) -> dict[str, Any]:
        """The committed manifest plus the counts in the document store, as ``xlsearch info --json``
        prints, but naming a local model by its folder's name: no path of the server's disk goes out."""
        info = sharded_info(self.directory)
        model = info["config"]["model_name"]
        if Path(model).is_absolute():
            info["config"]["model_name"] = Path(model).name
        return info

    def embed(self, texts: Sequence[str], layer: int, input_type: str = "document") -> np.ndarray:
        """``(len(texts), dim)`` unit vectors, pooled and prompted as the index does for documents
        (or queries); raises XlsearchError for a layer the model lacks."""
        config = dataclasses.replace(self.config, layer=layer)
        encode = encode_queries if input_type == "query" else encode_documents
        with self.cores.threads_for_request():
            return encode(self.encoder, list(texts), config)

    # -- writes (callers hold ``write_lock``) ---------------------------------
    def upsert(self, docs: Sequence[Document]) -> dict[str, int]:
        """Add or replace ``docs`` in one commit; returns the counts and the new generation."""
        def change(writer):
            return writer.upsert(docs), writer.commit()

        with self.cores.threads_for_request():
            stats, manifest = self._write(change)
        log.info("upserted %d documents (%d added, %d replaced, %d unchanged), generation %d",
                 len(docs), stats.added, stats.replaced, stats.unchanged, manifest.generation)
        return {"added": stats.added, "replaced": stats.replaced, "unchanged": stats.unchanged,
                "chunks": stats.chunks, "documents": manifest.documents, "generation": manifest.generation}

    def delete(self, doc_id: str) -> dict[str, Any]:
        """Remove one document in one commit. Raises DocumentNotFoundError."""
        def change(writer):
            if not writer.delete([doc_id]):
                raise DocumentNotFoundError(f"no document with id {shorten(doc_id)!r}")
            return writer.commit()

        manifest = self._write(change)
        return {"deleted": doc_id, "documents": manifest.documents, "generation": manifest.generation}

    def optimize(self) -> dict[str, Any]:
        """Merge the index's segments into one (``xlsearch optimize``)."""
        manifest = self._write(lambda writer: writer.optimize())
        return {"documents": manifest.documents, "chunks": manifest.chunks,
                "segments": len(manifest.segments), "generation": manifest.generation}


def document_out(doc: Document) -> dict[str, Any]:
    return {"id": doc.id, "text": doc.text, "title": doc.title, "lang": doc.lang, "metadata": doc.metadata}


def shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
