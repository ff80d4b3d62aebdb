"""Read a sharded index as one: global top k from the shards' top k, BM25 with global statistics.

:class:`ShardedIndex` offers what :class:`search.searcher.Searcher` uses of a
:class:`search.index.loader.LoadedIndex` (``manifest``, ``store``, ``dense``, ``lexical``,
``refresh``), so the searcher fuses the *merged* dense and lexical candidate lists exactly as
for an unsharded index; the merge is the one that joins the segments of one index
(:mod:`search.index.merged`), and every segment of every shard scores BM25 with the
statistics of the whole collection.

Chunk ids are unique across shards and ``chunk_id % shards`` is the shard of a chunk;
``shard_of(doc_id)`` that of a document (see ``indexer.store.shard_layout``).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from ...indexer.config import Manifest
from ...indexer.document import Document
from ...indexer.store.docstore import ChunkRow
from ...indexer.errors import IndexFormatError
from ...indexer.store.lexical import Vocabulary
from ...indexer.store.shard_layout import index_directories, read_shards, shard_of

from .loader import LoadedIndex, load_index
from .merged import Merged, MergedLexical, route_by_modulo, share_statistics
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
        self.centroids = None  # sharded indexes do not center languages
        self.vocabulary = Vocabulary()
        self._compose()

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
        changed = [shard.refresh(share=False) for shard in self.shards]
        if any(changed):
            self._compose()
        return any(changed)

    def _compose(self) -> None:
        route = route_by_modulo(len(self.shards))
        self.dense = Merged([shard.dense for shard in self.shards], route)
        self.lexical = MergedLexical([shard.lexical for shard in self.shards], route)
        share_statistics([segment.lexical for shard in self.shards for segment in shard.segments.values()],
                         self.vocabulary)


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
        for shard, (_, ids) in zip(self.shards, route_by_modulo(len(self.shards))(chunk_ids)):
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
