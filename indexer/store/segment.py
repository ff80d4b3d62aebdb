"""Segments: the immutable parts an index is made of, and the policy that merges them.

A commit writes the chunks it adds as one new segment, a folder no later commit
rewrites::

    seg.<n>/dense.faiss   vectors of the segment's chunks (the index's dense kind)
    seg.<n>/bm25/         their postings and lengths (``indexer.store.lexical_io``)
    seg.<n>/raw.faiss     uncentered vectors (only indexes built with ``center_languages``)

A chunk deleted later stays in its segment's files; the document store records
its id as a tombstone, and every reader drops it from the loaded segment. A merge
writes the live chunks of several segments as one new segment (tombstones purged)
and retires them, as Lucene does; :func:`plan_merge` keeps the number of segments
logarithmic in the size of the index.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import IndexConfig
from .dense import DenseIndex
from .durable import fsync_tree
from .lexical import BM25Index
from .lexical_io import load_bm25, save_bm25

MERGE_FACTOR = 10  # segments of one size tier merged at once
MERGE_FLOOR = 1_000  # live chunks below which every segment counts as the smallest tier
DENSE, LEXICAL, RAW = "dense.faiss", "bm25", "raw.faiss"


@dataclass
class Segment:
    """One segment loaded in memory: its vectors, postings and (when centering) raw vectors.

    ``name`` is its folder in the index directory (``seg.<n>``); ``rows`` counts every chunk its
    files hold, live or not.
    """

    name: str
    dense: DenseIndex
    lexical: BM25Index
    raw: DenseIndex | None = None

    @classmethod
    def empty(cls, name: str, dim: int, config: IndexConfig) -> Segment:
        raw = DenseIndex(dim) if config.center_languages else None
        return cls(name, DenseIndex(dim, config.dense_index),
                   BM25Index(k1=config.bm25_k1, b=config.bm25_b, epsilon=config.bm25_epsilon), raw)

    def __len__(self) -> int:
        """Live chunks."""
        return len(self.lexical)

    def remove(self, chunk_ids: Sequence[int]) -> None:
        """Drop chunks (tombstones) from the loaded segment; ids of other segments are ignored."""
        if len(chunk_ids) == 0:
            return
        ids = np.asarray(chunk_ids, dtype=np.int64)
        mine = ids[self.lexical.contains(ids)]
        if len(mine):
            self.lexical.remove(mine)
            self.dense.remove(mine)
            if self.raw is not None:
                self.raw.remove(mine)

    def save(self, directory: Path) -> None:
        """Write the segment's folder and fsync every file in it and the folder itself."""
        folder = directory / self.name
        folder.mkdir()
        self.dense.save(folder / DENSE)
        if self.raw is not None:
            self.raw.save(folder / RAW)
        save_bm25(self.lexical, folder / LEXICAL)
        fsync_tree(folder)

    @classmethod
    def load(cls, directory: Path, name: str, dim: int, config: IndexConfig, with_raw: bool = False) -> Segment:
        """Read a segment written by :meth:`save` (files checked by the caller).

        Raises:
            IndexFormatError: A file is missing or unreadable, or its parts disagree.
        """
        from ..errors import IndexFormatError

        folder = directory / name
        dense = DenseIndex.load(folder / DENSE, dim, config.dense_index)
        lexical = load_bm25(folder / LEXICAL)
        raw = DenseIndex.load(folder / RAW, dim) if with_raw and config.center_languages else None
        if len(dense) != len(lexical):
            raise IndexFormatError(f"{folder}: {len(dense)} vectors but {len(lexical)} lexical entries")
        return cls(name, dense, lexical, raw)

    @classmethod
    def merged(cls, name: str, parts: Sequence[Segment], dim: int, config: IndexConfig) -> Segment:
        """One segment holding the live chunks of ``parts`` (in their order), tombstones purged.

        The dense vectors are copied as stored (an approximate kind trains on save once large
        enough); for a centering index the caller recenters from ``raw`` afterwards.
        """
        out = cls.empty(name, dim, config)
        for part in parts:
            for target, source in ((out.dense, part.dense), (out.raw, part.raw)):
                if target is not None and source is not None:
                    ids, vectors = source.all_vectors()
                    target.add(ids, vectors)
        out.lexical = BM25Index.concatenated([part.lexical for part in parts], config.bm25_k1,
                                             config.bm25_b, config.bm25_epsilon)
        return out


def segment_number(name: str) -> int:
    """``seg.<n>`` -> n."""
    return int(name.split(".", 1)[1])


def is_segment_name(name: str) -> bool:
    prefix, _, number = name.partition(".")
    return prefix == "seg" and number.isdigit()


def plan_merge(live: dict[str, int], rows: dict[str, int], factor: int | None = None,
               floor: int | None = None) -> list[str]:
    """The segments the next merge should combine, or ``[]`` when none need it.

    Tiered by size, as Lucene's log merge policy: a segment of ``n`` live chunks is in tier
    ``floor(log_factor(max(n, floor) / floor))``; the lowest tier holding ``factor`` segments
    is merged into one. So a segment is rewritten about once per tier it climbs (each chunk
    O(log_factor(N)) times) and at most about ``factor - 1`` segments sit in each tier. A
    segment more than half of whose rows are tombstones joins the merge of its tier, or is
    rewritten alone when its tier has nothing to merge. Segments with no live chunk are
    always retired.

    Args:
        live: Live chunks per segment name.
        rows: Rows (live and deleted) per segment name.
        factor, floor: Default :data:`MERGE_FACTOR` and :data:`MERGE_FLOOR`.
    """
    factor, floor = factor or MERGE_FACTOR, floor or MERGE_FLOOR
    dead = [name for name, n in live.items() if n == 0]
    tiers: dict[int, list[str]] = {}
    for name, n in live.items():
        if n:
            tiers.setdefault(int(math.log(max(n, floor) / floor, factor) + 1e-9), []).append(name)
    for tier in sorted(tiers):
        if len(tiers[tier]) >= factor:
            return dead + sorted(tiers[tier], key=segment_number)
    sparse = [name for name, n in live.items() if n and n * 2 < rows[name]]
    return dead + sparse[:1]


def live_counts(segments: Iterable[dict]) -> tuple[dict[str, int], dict[str, int]]:
    """``(live, rows)`` per segment name, from the manifest's segment list."""
    segments = list(segments)
    return {s["name"]: int(s["live"]) for s in segments}, {s["name"]: int(s["rows"]) for s in segments}
