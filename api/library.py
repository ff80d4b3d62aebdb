"""The Python API behind ``import xlsearch``: open or create an index, add, delete, search.

::

    import xlsearch
    with xlsearch.open_index("my-index", model="multilingual-e5-small") as index:
        index.add([{"id": "a1", "text": "Neil Armstrong pisó la Luna en 1969.", "lang": "es"}])
        hits = index.search("Who first walked on the Moon?", k=5)

The model is named once: a new index records it, an existing one keeps its own. It
is loaded on the first call that embeds (``add``, or a dense or hybrid ``search``);
lexical search and ``delete`` never load it. Each ``add`` or ``delete`` is one commit,
durable when it returns, as ``xlsearch index`` and ``POST /documents`` are.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..indexer.writing.writer import UpsertStats
from ..indexer.compat import check_compatible
from ..indexer.config import BATCH_SIZE, DEFAULT_MODEL, IndexConfig
from ..indexer.document import Document
from ..indexer.errors import ConfigError, QueryError
from ..indexer.store.shard_layout import any_index_exists, index_directories
from ..indexer.store.storage import open_docstore
from ..indexer.text.corpus import document_from_record
from ..search.options import DEFAULT_FUSION
from ..search.searcher import Hit, Searcher

if TYPE_CHECKING:
    from ..indexer.encoding.encoder import Encoder

SETTINGS = tuple(f.name for f in dataclasses.fields(IndexConfig) if f.name != "model_name")


class Index:
    """One index directory, read and written from Python (see :func:`open_index`)."""

    def __init__(self, path: str | Path, model: str | None = None, device: str = "auto", batch_size: int = BATCH_SIZE,
                 **settings: Any):
        self.path = Path(path)
        self._device, self._batch_size = device, batch_size
        self._encoder: Encoder | None = None
        self._searcher: Searcher | None = None
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise ConfigError(f"unknown index setting {unknown[0]!r}; the settings are {', '.join(SETTINGS)}")
        if any_index_exists(self.path):
            store, manifest = open_docstore(index_directories(self.path)[0])
            store.close()
            check_compatible(manifest, config=dataclasses.replace(manifest.config, **settings))
            self.config = manifest.config
            self.model = model or manifest.config.model_name
        else:
            self.model = model or DEFAULT_MODEL
            self.config = IndexConfig(model_name=self.model, **settings)

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._searcher is not None:
            self._searcher.close()
            self._searcher = None

    @property
    def encoder(self) -> Encoder:
        """The model, loaded on first use (shared by writes and searches)."""
        if self._encoder is None:
            if self._searcher is not None:
                self._encoder = self._searcher.encoder  # checked against the index when it loaded
            else:
                from ..indexer.encoding.model import load_model

                loaded = load_model(self.model, self._device)  # an unreachable hub fails before torch loads
                from ..indexer.encoding.encoder import Encoder

                self._encoder = Encoder(loaded, batch_size=self._batch_size, precision=self.config.precision)
        return self._encoder

    def add(self, documents: Iterable[Document | Mapping[str, Any]]) -> UpsertStats:
        """Add or replace documents in one commit.

        Args:
            documents: :class:`Document` objects, or records shaped like a JSONL line
                (``id``, ``text``, optional ``title`` and ``lang``; other fields become metadata).

        Raises:
            CorpusError: A record is invalid (naming its position and field); nothing is written.
        """
        from ..indexer.writing.sharded import open_writer

        docs = [d if isinstance(d, Document) else document_from_record(dict(d), f"document {i}")
                for i, d in enumerate(documents)]
        with open_writer(self.path, self.encoder, self.config) as writer:
            stats = writer.upsert(docs)
            writer.commit()
        return stats

    def delete(self, doc_ids: Iterable[str]) -> list[str]:
        """Remove documents by id in one commit; returns the ids that were there."""
        from ..indexer.writing.sharded import open_writer

        with open_writer(self.path) as writer:
            found = writer.delete(list(doc_ids))
            writer.commit()
        return found

    def optimize(self) -> None:
        """Merge the index's segments into one and purge deleted chunks (``xlsearch optimize``)."""
        from ..indexer.writing.sharded import open_writer

        with open_writer(self.path) as writer:
            writer.optimize()

    def search(self, query: str, k: int = 10, mode: str = "hybrid", lang: str | None = None,
               filter: dict[str, str | int | float | bool] | None = None, fusion: str = DEFAULT_FUSION,
               alpha: float = 0.5, offset: int = 0) -> list[Hit]:
        """The top ``k`` documents for ``query``, best first (see :meth:`Searcher.search`).

        Raises:
            QueryError: An argument is out of range.
            IndexNotFoundError: Nothing was added yet.
        """
        return self._search_with().search(query, k=k, mode=mode, fusion=fusion, alpha=alpha, lang=lang,
                                          filter=filter, offset=offset).hits

    def search_many(self, queries: Sequence[str], k: int = 10, mode: str = "hybrid", lang: str | None = None,
                    filter: dict[str, str | int | float | bool] | None = None, fusion: str = DEFAULT_FUSION,
                    alpha: float = 0.5, offset: int = 0) -> list[list[Hit]]:
        """:meth:`search` for each of ``queries``, with the same options, done together: several times the
        queries per second (see :meth:`Searcher.search_many`). One list of hits per query, in order.

        Raises:
            TypeError: ``queries`` is one string, not a sequence of them.
            QueryError: An argument is out of range, or a query cannot be asked (naming its position).
            IndexNotFoundError: Nothing was added yet.
        """
        if isinstance(queries, str):
            raise TypeError("search_many takes a list of query strings; use search() for one")
        answers = self._search_with().search_many(list(queries), k=k, mode=mode, fusion=fusion, alpha=alpha,
                                                  lang=lang, filter=filter, offset=offset)
        for position, answer in enumerate(answers):
            if isinstance(answer, QueryError):
                raise QueryError(f"query {position}: {answer}") from answer
        return [answer.hits for answer in answers]

    def _search_with(self) -> Searcher:
        if self._searcher is None:
            self._searcher = Searcher(self.path, model=self.model, device=self._device, encoder=self._encoder)
        return self._searcher


def open_index(path: str | Path, model: str | None = None, **settings: Any) -> Index:
    """Open the index in ``path``, or prepare a new one there (created by the first ``add``).

    Args:
        path: Index directory.
        model: Hub id, local directory or ``multilingual-e5-small``; default: an existing
            index's own model, else ``microsoft/mdeberta-v3-base``.
        settings: :class:`IndexConfig` fields for a new index (``layer``, ``chunk_tokens``,
            ``pooling``, ...); for an existing one they must match what it was built with.
            Also ``device`` (``auto``, ``cpu``, ``cuda``) and ``batch_size``.

    Raises:
        ConfigError: An unknown setting. IndexMismatchError: A setting the index was built otherwise.
    """
    return Index(path, model, **settings)
