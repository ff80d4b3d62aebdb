"""Approximate dense index kinds: inverted files (IVF) over chunk vectors.

An IVF index clusters the vectors into ``nlist`` lists with k-means and, per query,
scans only the ``nprobe`` lists whose centroids score highest. ``ivf-flat`` keeps
full float32 vectors in the lists (scores exact, memory as ``flat-ip``);
``ivf-sq8`` keeps each dimension of the residual to its centroid in 8 bits
(a quarter of the memory; scores within about 1e-3 of exact). Both map chunk ids
to list entries with a hash table, so ``remove`` and reconstructing a stored vector
by id work, as they do for the exact index.

These are plain functions; :class:`indexer.dense.DenseIndex` holds the state.
"""
from __future__ import annotations

import math

import faiss
import numpy as np

from ..config import APPROXIMATE, EXACT
from ..errors import ConfigError


TRAIN_MIN = 50_000
"""Vectors an approximate index needs before it trains; below that it stays exact
(flat search over 50k vectors takes a few milliseconds)."""

MIN_POINTS_PER_LIST = 39  # FAISS warns below this many training points per centroid
TRAIN_POINTS_PER_LIST = 64  # k-means sample: enough for stable centroids, cheap at 1M
MAX_NLIST = 65_536
HASH_ENTRY_BYTES = 40  # std::unordered_map<int64, int64> node plus bucket, typical
RETRAIN_GROWTH = 4  # retrain once the list count suited to the size is 4x the current one


def nlist_for(n: int) -> int:
    """Inverted lists for ``n`` vectors: about ``2 * sqrt(n)`` (2,000 at 1M), at least
    39 training points per list, between 1 and 65,536."""
    return max(1, min(int(2 * math.sqrt(n)), n // MIN_POINTS_PER_LIST, MAX_NLIST))


def default_nprobe(nlist: int) -> int:
    """Lists scanned per query unless set: ``ceil(2 * nlist ** 0.6)``, at most ``nlist``
    (49 of 200 lists, 73 of 400, 192 of 2,000: 25%, 18%, 10% of the vectors).

    Measured by ``bench/bench_dense.py`` on real-text vectors (XQuAD questions against
    Tatoeba sentences): recall@10 against exact search reached 0.95 at about
    ``1.5 * nlist ** 0.62`` lists for nlist 50-400, so this keeps a margin (~0.97).
    """
    return min(nlist, math.ceil(2 * nlist ** 0.6))


def needs_training(n: int, nlist: int | None, train_min: int) -> bool:
    """Whether an approximate index with ``n`` vectors should (re)train now.

    Args:
        n: Stored vectors.
        nlist: Lists of the current IVF index, or None while it is still exact.
        train_min: Vectors needed for the first training.
    """
    if nlist is None:
        return n >= max(train_min, 1)
    return nlist_for(n) >= RETRAIN_GROWTH * nlist


def build_ivf(kind: str, ids: np.ndarray, vectors: np.ndarray,
              nlist: int | None = None, seed: int = 1234) -> faiss.IndexIVF:
    """Train an IVF index of ``kind`` on ``vectors`` and add them under ``ids``.

    Args:
        kind: ``ivf-flat`` or ``ivf-sq8``.
        ids: ``(n,)`` int64 chunk ids.
        vectors: ``(n, dim)`` float32, L2-normalised (scores are inner products).
        nlist: Lists; default :func:`nlist_for` ``(n)`` (capped at ``n``).
        seed: Seed of the k-means sample and initialisation (builds are reproducible).
    """
    n, dim = vectors.shape
    nlist = min(nlist or nlist_for(n), max(n, 1))
    quantizer = faiss.IndexFlatIP(dim)
    if kind == "ivf-flat":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    elif kind == "ivf-sq8":
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                                              faiss.METRIC_INNER_PRODUCT)
    else:
        raise ConfigError(f"{kind!r} is not an approximate kind; choose one of {', '.join(APPROXIMATE)}")
    index.own_fields = True
    quantizer.this.disown()  # the IVF index frees its quantizer
    index.cp.seed = seed
    index.cp.max_points_per_centroid = TRAIN_POINTS_PER_LIST
    sample = vectors
    if n > TRAIN_POINTS_PER_LIST * nlist:
        rows = np.random.default_rng(seed).choice(n, TRAIN_POINTS_PER_LIST * nlist, replace=False)
        sample = vectors[np.sort(rows)]
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    index.set_direct_map_type(faiss.DirectMap.Hashtable)
    index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))
    return index


def kind_of(index: faiss.Index) -> str | None:
    """The kind a FAISS index read from disk was built as; None if it is no kind of ours."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIDMap2) and isinstance(faiss.downcast_index(index.index), faiss.IndexFlatIP):
        return EXACT
    if isinstance(index, faiss.IndexIVFScalarQuantizer) and index.metric_type == faiss.METRIC_INNER_PRODUCT:
        return "ivf-sq8"
    if isinstance(index, faiss.IndexIVFFlat) and index.metric_type == faiss.METRIC_INNER_PRODUCT:
        return "ivf-flat"
    return None


def ivf_ids(index: faiss.IndexIVF) -> np.ndarray:
    """Every chunk id stored in an IVF index, list by list."""
    lists = index.invlists
    parts = []
    for number in range(index.nlist):
        size = lists.list_size(number)
        if size:
            parts.append(faiss.rev_swig_ptr(lists.get_ids(number), size).copy())
    return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, np.int64)


def bytes_per_vector(index: faiss.Index) -> int:
    """Estimated memory per stored vector: its code, its 8-byte id and about 40 bytes
    of the hash map from id to entry (both kinds keep one). IVF centroids add
    ``nlist * dim * 4`` bytes in all, which is not counted here."""
    index = faiss.downcast_index(index)
    code = index.code_size if isinstance(index, faiss.IndexIVF) else index.d * 4
    return int(code) + 8 + HASH_ENTRY_BYTES
