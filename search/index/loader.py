"""Open an index directory for reading and keep it at the latest committed generation."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ...indexer.store.centering import Centroids
from ...indexer.config import Manifest
from ...indexer.store.dense import DenseIndex
from ...indexer.store.docstore import DocStore
from ...indexer.store.lexical import BM25Index
from ...indexer.store.storage import load_centroids, load_generation, open_docstore

log = logging.getLogger(__name__)


@dataclass
class LoadedIndex:
    """One generation of an index: manifest, document store, dense and lexical indexes.

    Implements :class:`~search.index.reader.IndexReader`: the stores are its ChunkStore,
    DenseRetriever and LexicalRetriever.
    """

    directory: Path
    manifest: Manifest
    store: DocStore
    dense: DenseIndex
    lexical: BM25Index
    centroids: Centroids | None = None

    @property
    def parts(self) -> list[LoadedIndex]:
        """The complete indexes this one is made of: itself (a sharded index: its shards)."""
        return [self]

    def close(self) -> None:
        self.store.close()

    def refresh(self) -> bool:
        """Load the generation the store's current snapshot records, if it is not the loaded one.

        Call inside ``store.snapshot()`` so that the documents read afterwards belong
        to the same commit as the vectors and postings. Returns True if it reloaded.
        """
        text = self.store.get_meta("manifest")
        manifest = Manifest.from_json(text or "{}", str(self.directory / "docs.sqlite"))
        if manifest.generation == self.manifest.generation:
            return False
        self.dense, self.lexical = load_generation(self.directory, manifest)
        self.centroids = load_centroids(self.directory, manifest)
        self.manifest = manifest
        return True


def load_index(directory: str | Path) -> LoadedIndex:
    """Open the committed generation of the index in ``directory``.

    Raises:
        IndexNotFoundError: No index there.
        IndexFormatError: Another format version, a missing or damaged file, or
            stores that disagree on the number of chunks.
    """
    directory = Path(directory)
    store, manifest = open_docstore(directory)
    try:
        dense, lexical = load_generation(directory, manifest)
        centroids = load_centroids(directory, manifest)
    except BaseException:
        store.close()
        raise
    return LoadedIndex(directory, manifest, store, dense, lexical, centroids)
