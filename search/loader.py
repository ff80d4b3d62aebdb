"""Open an index directory for reading and keep it at the latest committed generation."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from indexer.config import Manifest
from indexer.dense import DenseIndex
from indexer.docstore import DocStore
from indexer.errors import IndexFormatError
from indexer.lexical import BM25Index
from indexer.storage import dense_path, lexical_path, open_docstore

log = logging.getLogger(__name__)


@dataclass
class LoadedIndex:
    """One generation of an index: manifest, document store, dense and lexical indexes."""

    directory: Path
    manifest: Manifest
    store: DocStore
    dense: DenseIndex
    lexical: BM25Index

    def close(self) -> None:
        self.store.close()

    def committed_generation(self) -> int:
        """Generation recorded by the last commit (may be newer than the loaded one)."""
        text = self.store.get_meta("manifest")
        return Manifest.from_json(text or "{}", str(self.directory)).generation


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
        generation = manifest.generation
        dense = DenseIndex.load(dense_path(directory, generation), manifest.dim)
        lexical = BM25Index.load(lexical_path(directory, generation))
        if not len(dense) == len(lexical) == manifest.chunks:
            raise IndexFormatError(
                f"{directory}: generation {generation} is inconsistent: {len(dense)} vectors, "
                f"{len(lexical)} lexical entries, manifest says {manifest.chunks} chunks")
    except BaseException:
        store.close()
        raise
    return LoadedIndex(directory, manifest, store, dense, lexical)
