"""Open an index directory for reading and keep it at the latest committed generation."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ...indexer.config import Manifest
from ...indexer.store.centering import Centroids
from ...indexer.store.docstore import DocStore
from ...indexer.store.lexical import Vocabulary
from ...indexer.store.segment import Segment
from ...indexer.errors import IndexFormatError
from ...indexer.store.storage import current_manifest, load_centroids, load_segments, open_docstore
from .merged import Merged, MergedLexical, route_by_membership, share_statistics

log = logging.getLogger(__name__)
SNAPSHOT_RETRIES = 3


@dataclass
class LoadedIndex:
    """One committed generation of an index: manifest, document store and its live segments.

    Implements :class:`~search.index.reader.IndexReader`: the store is its ChunkStore; ``dense``
    and ``lexical`` search every segment as one (a single segment directly).
    """

    directory: Path
    manifest: Manifest
    store: DocStore
    segments: dict[str, Segment]
    centroids: Centroids | None = None
    dense: object = field(init=False)
    lexical: object = field(init=False)
    vocabulary: Vocabulary = field(init=False, default_factory=Vocabulary)

    def __post_init__(self) -> None:
        self._compose()

    @property
    def parts(self) -> list[LoadedIndex]:
        """The complete indexes this one is made of: itself (a sharded index: its shards)."""
        return [self]

    def _compose(self, share: bool = True) -> None:
        segments = list(self.segments.values())
        if len(segments) == 1:
            self.dense, self.lexical = segments[0].dense, segments[0].lexical
        else:
            route = route_by_membership([s.lexical for s in segments])
            self.dense = Merged([s.dense for s in segments], route)
            self.lexical = MergedLexical([s.lexical for s in segments], route)
        if share:
            share_statistics([s.lexical for s in segments], self.vocabulary)

    def close(self) -> None:
        self.store.close()

    def refresh(self, share: bool = True) -> bool:
        """Load the generation the store's current snapshot records, if it is not the loaded one.

        Only new segments are read (and their files verified); the loaded ones drop the chunks
        deleted since. Call inside ``store.snapshot()`` so that the documents read afterwards
        belong to the same commit as the vectors and postings. Returns True if it reloaded.
        ``share=False`` leaves the BM25 statistics to the caller (a sharded index shares them
        across shards).
        """
        manifest = current_manifest(self.store)
        if manifest.generation == self.manifest.generation:
            return False
        self.segments = load_segments(self.directory, manifest, self.store, self.segments,
                                      since=self.manifest.generation)
        if manifest.centroids != self.manifest.centroids:
            self.centroids = load_centroids(self.directory, manifest)
        self.manifest = manifest
        self._compose(share)
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
        for attempt in range(SNAPSHOT_RETRIES):
            try:
                with store.snapshot():  # the manifest and the tombstones of one commit
                    manifest = current_manifest(store)
                    segments = load_segments(directory, manifest, store)
                break
            except IndexFormatError:
                if attempt == SNAPSHOT_RETRIES - 1:  # else: two commits retired those segments meanwhile
                    raise
        centroids = load_centroids(directory, manifest)
    except BaseException:
        store.close()
        raise
    return LoadedIndex(directory, manifest, store, segments, centroids)
