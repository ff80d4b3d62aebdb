"""FAISS index of chunk vectors, addressed by chunk id.

Vectors are L2-normalised, so the inner-product score is cosine similarity (higher
is better). Kinds (``IndexConfig.dense_index``, see :mod:`indexer.ann`):

* ``flat-ip`` (default): exact search, an ``IndexFlatIP`` inside an ``IndexIDMap2``
  that maps chunk ids to rows, supports ``remove_ids`` and reconstructs vectors. Large ones
  are scanned through an int8 copy with exact fp32 rescoring (:mod:`.int8_scan`).
* ``ivf-flat`` / ``ivf-sq8``: approximate inverted-file search for large collections.
  Such an index stays exact (flat) until it holds ``train_min`` vectors; then
  :meth:`DenseIndex.train_if_needed` (called by :meth:`DenseIndex.save`) trains it
  once, and again whenever it has grown about 16-fold. ``nprobe`` trades speed for
  recall. Adding, removing and reconstructing by chunk id work at every stage.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import faiss
import numpy as np

from ..config import APPROXIMATE, EXACT, check_kind
from .ann import TRAIN_MIN, build_ivf, default_nprobe, ivf_ids, kind_of, needs_training
from ..errors import ConfigError, IndexFormatError
from .topk import best_first

if TYPE_CHECKING:  # numba compiles the scan only when a large exact segment is searched
    from .int8_scan import Int8Scan

log = logging.getLogger(__name__)

INT8_SCAN_MIN_BYTES = 16 << 20  # exact search of fewer fp32 bytes reads them as they are (cached; no second copy)
# search_many: from this many queries, one fp32 matrix product per block instead of one scan per query
# (bench/bench_scan.py, k = 50, one thread: over fp32 vectors 0.86-0.9x at 8 queries and 1.15-1.2x at 16 at
# 3,000 x 384, 1.8x and 2.8x at 5,000 x 768; over an int8 copy, which reads a quarter of the bytes, 0.82-1.14x
# at 32 and 0.87-1.33x at 64, from 20,000 x 384 to 100,000 x 768)
PRODUCT_MIN_QUERIES = 16
PRODUCT_MIN_QUERIES_COPY = 64
PRODUCT_BYTES = 64 << 20  # at most this much of scores per product (queries in a block x vectors x 4 B)
INT8_SCAN_ENV = "XLSEARCH_INT8_SCAN"  # "off" keeps every exact search in fp32 (benches, tests)
FORMER_SCAN_ENV = "XLSEARCH_BF16_SCAN"  # its name while the copy was bf16: "off" is still honoured


class DenseIndex:
    """Chunk vectors of one index.

    Args:
        dim: The encoder's hidden size.
        kind: ``flat-ip``, ``ivf-flat`` or ``ivf-sq8`` (see the module docstring).
        index: A FAISS index to wrap (from :meth:`load`); default a new empty one.
        nprobe: Inverted lists scanned per query by an approximate index; None picks
            :func:`indexer.ann.default_nprobe` (recall@10 >= 0.95). May be changed later.
        train_min: Vectors an approximate index needs before it trains.

    Raises:
        ValueError: Unknown kind, or nprobe below 1.
    """

    def __init__(self, dim: int, kind: str = EXACT, index: faiss.Index | None = None,
                 nprobe: int | None = None, train_min: int = TRAIN_MIN):
        if nprobe is not None and nprobe < 1:
            raise ConfigError(f"nprobe must be >= 1, got {nprobe}")
        self.dim = dim
        self.kind = check_kind(kind)
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.nprobe = nprobe
        self.train_min = train_min
        # (what of, copy; None: searched once; False: no room)
        self._scan: tuple[tuple, Int8Scan | bool | None] | None = None
        self._scan_lock = threading.Lock()

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def _ivf(self) -> faiss.IndexIVF | None:
        """The IVF index once trained; None while the index is exact."""
        index = faiss.downcast_index(self.index)
        return index if isinstance(index, faiss.IndexIVF) else None

    @property
    def nlist(self) -> int | None:
        """Inverted lists of a trained approximate index; None while search is exact."""
        ivf = self._ivf()
        return None if ivf is None else int(ivf.nlist)

    def add(self, chunk_ids: Sequence[int], vectors: np.ndarray) -> None:
        """Add ``(n, dim)`` float32 vectors under ``n`` new chunk ids."""
        if len(chunk_ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self._scan = None
        self.index.add_with_ids(vectors, np.asarray(chunk_ids, dtype=np.int64))

    def remove(self, chunk_ids: Sequence[int]) -> int:
        """Remove chunk ids (unknown ones are ignored); returns how many were removed."""
        if len(chunk_ids) == 0:
            return 0
        ids = np.asarray(chunk_ids, dtype=np.int64)
        if self._ivf() is not None:  # its id hash table removes only by an explicit array
            return int(self.index.remove_ids(faiss.IDSelectorArray(ids)))
        scan = (self._scan[1] or None) if self._scan is not None else None
        keep = ~np.isin(self.chunk_ids(), ids) if scan is not None else None
        removed = int(self.index.remove_ids(ids))
        self._scan = None
        if scan is not None:  # FAISS compacts the kept rows in order: the copy follows, not remade
            self._scan = (_scan_key(self._flat_vectors()), scan.keep(keep) if removed else scan)
        return removed

    def search(self, query: np.ndarray, k: int,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` chunks by inner product with one ``(dim,)`` query vector.

        Exact for ``flat-ip`` and an untrained approximate index. A trained one scans
        ``nprobe`` lists; with ``allowed`` it scans proportionally more (all lists when
        few ids are allowed), so the filter is applied before the cut either way.

        Args:
            query: Normalised query vector.
            k: How many chunks at most.
            allowed: Optional chunk ids to search among (filter applied before the cut).

        Returns:
            ``(chunk_ids int64, scores float32)``, best first, at most ``k`` each.
        """
        return self.search_many(np.asarray(query, dtype=np.float32).reshape(1, -1), k, allowed)[0]

    def search_many(self, queries: np.ndarray, k: int,
                    allowed: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`search` for each row of ``queries`` ``(m, dim)``: one FAISS call for all of them, or for an
        exact unfiltered index, one matrix product per block of enough queries (see :meth:`_search_flat`).
        The same top k as one search per query; a score may differ in its last bits (another order of
        summation)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"query vectors of shape {queries.shape}; this index holds {self.dim} dimensions")
        if len(self) == 0 or k <= 0 or (allowed is not None and len(allowed) == 0):
            return [(np.empty(0, np.int64), np.empty(0, np.float32)) for _ in queries]
        k = min(k, len(self))
        ivf = self._ivf()
        selector = None if allowed is None else faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
        if ivf is not None:
            nprobe = self.effective_nprobe()
            if allowed is not None:
                nprobe = min(ivf.nlist, math.ceil(nprobe * len(self) / len(allowed)))
            params = faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)
        else:
            flat = faiss.downcast_index(self.index.index)
            if selector is None and isinstance(flat, faiss.IndexFlat):
                return self._search_flat(queries, k)
            params = None if selector is None else faiss.SearchParameters(sel=selector)
        scores, ids = self.index.search(queries, k, params=params)
        keep = ids >= 0
        return [(ids[i][keep[i]], scores[i][keep[i]]) for i in range(len(queries))]

    def effective_nprobe(self) -> int:
        """Lists an unfiltered query scans (``nprobe`` or the default, at most ``nlist``)."""
        nlist = self.nlist
        if nlist is None:
            return 0
        return min(nlist, self.nprobe or default_nprobe(nlist))

    def _search_flat(self, queries: np.ndarray, k: int,
                     product: bool | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Queries ``(m, dim)`` against the stored vectors, exact, the same top k either way:

        * one scan per query: numpy's BLAS (about twice as fast as FAISS's flat search for a single
          query), or from :data:`INT8_SCAN_MIN_BYTES` of vectors, an int8 scan with fp32 rescoring
          (:mod:`.int8_scan`);
        * or one fp32 matrix product per block of queries (its scores kept under :data:`PRODUCT_BYTES`),
          which reads every vector once per block instead of once per query; from
          :data:`PRODUCT_MIN_QUERIES` queries, or :data:`PRODUCT_MIN_QUERIES_COPY` where the scans read an
          int8 copy (a quarter of the bytes), if a block holds that many (up to some millions of vectors), unless
          ``product`` says which.
        """
        n = len(self)
        vectors = self._flat_vectors()
        ids = faiss.rev_swig_ptr(self.index.id_map.data(), n)
        scan = self._int8_scan(vectors)
        if product is None:
            block = product_block(len(queries), n, scan is not None)
        else:
            block = max(1, PRODUCT_BYTES // (4 * n)) if product else 0
        if not block:
            found = [scan.top(vectors, query, k) if scan is not None else _top(vectors @ query, k)
                     for query in queries]
        else:
            found = [_top(row, k) for start in range(0, len(queries), block)
                     for row in queries[start:start + block] @ vectors.T]  # (block, n): each query's row contiguous
        return [(ids[top].astype(np.int64), scores) for top, scores in found]

    def _flat_vectors(self) -> np.ndarray:
        """The stored vectors of an exact index, ``(n, dim)``, as a view of FAISS's own array."""
        n = len(self)
        if n == 0:
            return np.zeros((0, self.dim), np.float32)
        flat = faiss.downcast_index(self.index.index)
        return faiss.rev_swig_ptr(flat.get_xb(), n * self.dim).reshape(n, self.dim)

    def prepare_scan(self) -> bool:
        """Make the int8 copy of an exact index and compile its scan now rather than at its second search (a
        server starting); whether it has one. Where it does not apply, nothing happens."""
        if self._ivf() is not None or len(self) == 0 or self._int8_scan(self._flat_vectors(), now=True) is None:
            return False
        from .int8_scan import compile_now

        compile_now()
        return True

    def _int8_scan(self, vectors: np.ndarray, now: bool = False) -> Int8Scan | None:
        """The int8 copy of ``vectors``, made at the second search (a one-query process never pays for it)
        or ``now``, and remade after any change, if it takes at most a quarter of the memory free then;
        None where it does not apply."""
        if vectors.nbytes < INT8_SCAN_MIN_BYTES or scan_off():
            return None
        from . import int8_scan  # numba

        key = _scan_key(vectors)
        cached = self._scan
        if cached is None or cached[0] != key or cached[1] is None:
            with self._scan_lock:
                cached = self._scan
                seen = cached is not None and cached[0] == key
                if not seen and not now:
                    cached = self._scan = (key, None)  # searched once
                elif not seen or cached[1] is None:
                    # no copy that would take more than a quarter of the free memory: it would crowd the machine
                    room = vectors.nbytes // 4 + 8 * len(vectors) <= free_memory() // 4
                    cached = self._scan = (key, int8_scan.Int8Scan.of(vectors) if room else False)
        return cached[1] or None  # the copy; not if searched once, or False: no room for it

    def chunk_ids(self) -> np.ndarray:
        """Every stored chunk id (int64), in storage order."""
        ivf = self._ivf()
        return ivf_ids(ivf) if ivf is not None else faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Every stored ``(chunk_ids (n,), vectors (n, dim))``; ``ivf-sq8`` vectors are decoded."""
        if len(self) == 0:
            return np.empty(0, np.int64), np.zeros((0, self.dim), np.float32)
        ids = self.chunk_ids()
        if self._ivf() is not None:
            return ids, self.index.reconstruct_batch(ids)
        return ids, self.index.index.reconstruct_n(0, len(self))

    def score_chunks(self, query: np.ndarray, chunk_ids: Sequence[int]) -> np.ndarray:
        """Inner products of ``query`` with stored vectors of ``chunk_ids`` (exact, or
        within about 1e-3 for ``ivf-sq8``, whose vectors are stored in 8 bits)."""
        if len(chunk_ids) == 0:
            return np.empty(0, np.float32)
        vectors = self.index.reconstruct_batch(np.asarray(chunk_ids, dtype=np.int64))
        return vectors @ np.asarray(query, dtype=np.float32).ravel()

    def replace_all(self, chunk_ids: Sequence[int], vectors: np.ndarray) -> None:
        """Replace every stored vector; a trained index keeps its lists (no retraining),
        and the old vectors are freed before the new ones are stored."""
        self.index.reset()
        self._scan = None
        self.add(chunk_ids, vectors)

    def train_if_needed(self) -> bool:
        """Train an approximate index that has reached ``train_min`` vectors, or retrain
        one that has grown about 16-fold since (more lists); returns whether it did.

        Takes about a minute for 1M vectors of 768 dimensions on 2 cores; search
        results before and after are both correct (exact before).
        """
        if self.kind not in APPROXIMATE or not needs_training(len(self), self.nlist, self.train_min):
            return False
        self.train()
        return True

    def train(self, nlist: int | None = None) -> None:
        """(Re)build as a trained ``kind`` index over every stored vector.

        Args:
            nlist: Inverted lists; default :func:`indexer.ann.nlist_for` of the size.

        Raises:
            ValueError: The kind is exact, or the index is empty.
        """
        if self.kind not in APPROXIMATE:
            raise ValueError(f"a {self.kind} index needs no training")
        if len(self) == 0:
            raise ValueError("cannot train an empty dense index")
        start = time.perf_counter()
        ids, vectors = self.all_vectors()
        self.index = build_ivf(self.kind, ids, vectors, nlist)
        self._scan = None
        log.info("trained %s dense index: %d vectors, %d lists, %.1f s",
                 self.kind, len(self), self.index.nlist, time.perf_counter() - start)

    def save(self, path: str | Path) -> None:
        """Train if needed (see :meth:`train_if_needed`), write to ``path`` and fsync it.

        FAISS writes through a Python file, so a full disk or a file-size limit raises
        OSError at the write or the close; ``faiss.write_index`` to a path only prints
        ``close error`` when its last buffer cannot be written, and returns.
        """
        self.train_if_needed()
        with open(path, "wb") as handle:
            writer = faiss.PyCallbackIOWriter(handle.write)
            faiss.write_index(self.index, writer)
            del writer  # flushes FAISS's buffer into the file before it is closed
            handle.flush()
            os.fsync(handle.fileno())

    @classmethod
    def load(cls, path: str | Path, dim: int, kind: str | None = None,
             nprobe: int | None = None) -> DenseIndex:
        """Read an index written by :meth:`save`; checks the dimension and kind.

        Args:
            path: The ``.faiss`` file.
            dim: Dimension the manifest records.
            kind: Kind the manifest records; None takes it from the file (an approximate
                index saved before training then reads as ``flat-ip``).
            nprobe: See the class.

        Raises:
            IndexFormatError: Missing or unreadable file, another dimension or kind.
        """
        if not Path(path).is_file():
            raise IndexFormatError(f"{path}: dense index file is missing")
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise IndexFormatError(f"{path}: cannot read the FAISS index ({str(exc).splitlines()[0]})") from None
        if index.d != dim:
            raise IndexFormatError(f"{path}: vectors have dimension {index.d}, manifest says {dim}")
        found = kind_of(index)
        if found is None:
            raise IndexFormatError(f"{path}: unsupported FAISS index {type(faiss.downcast_index(index)).__name__}; "
                                   f"rebuild it with `xlsearch index`")
        if kind is not None and kind != found and not (found == EXACT and kind in APPROXIMATE):
            raise IndexFormatError(f"{path}: holds a {found} index, manifest says {kind}")
        return cls(dim, kind or found, index, nprobe=nprobe)


def product_block(queries: int, rows: int, copy: bool) -> int:
    """Queries per matrix product for ``queries`` searched together over ``rows`` stored vectors (the block's
    scores under :data:`PRODUCT_BYTES`); 0: one scan per query instead, for fewer queries than pay for a
    product, or a block too small to hold that many."""
    fewest = PRODUCT_MIN_QUERIES_COPY if copy else PRODUCT_MIN_QUERIES
    block = PRODUCT_BYTES // (4 * rows)
    return block if queries >= fewest and block >= fewest else 0


def _top(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the ``k`` highest ``scores`` and those scores, best first."""
    top = best_first(scores, k)
    return top, scores[top]


def _scan_key(vectors: np.ndarray) -> tuple[int, int]:
    """What an int8 copy was made of: the stored vectors' count and address (add and remove also drop or
    update the copy themselves)."""
    return len(vectors), vectors.ctypes.data


def scan_off() -> bool:
    """Whether the environment keeps every exact search in fp32 (:data:`INT8_SCAN_ENV` or its former name
    set to ``off``)."""
    return "off" in (os.environ.get(INT8_SCAN_ENV), os.environ.get(FORMER_SCAN_ENV))


def free_memory() -> int:
    """Bytes of memory free now (Linux: free pages, not counting the page cache); 0 where unknown."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0
