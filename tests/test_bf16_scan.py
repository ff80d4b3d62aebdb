"""Exact dense search through a bf16 copy of the vectors: the same top k and scores as the fp32 scan."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from xlsearch.indexer.store import dense
from xlsearch.indexer.store.bf16_scan import Bf16Scan
from xlsearch.indexer.store.dense import DenseIndex


def unit(rows: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def exact_top(vectors: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = vectors @ query
    top = np.argsort(-scores, kind="stable")[:k]
    return top, scores[top]


@pytest.mark.parametrize("dim", [64, 768])
@pytest.mark.parametrize("k", [1, 10, 100])
def test_top_k_equals_the_fp32_scan(dim, k):
    vectors = unit(5000, dim, seed=dim)
    scan = Bf16Scan.of(vectors)
    for seed in range(5):
        query = vectors[seed] * 0.5 + unit(1, dim, seed=100 + seed)[0] * 0.5  # near a stored vector, as queries are
        rows, scores = scan.top(vectors, query, k)
        expected_rows, expected_scores = exact_top(vectors, query, k)
        np.testing.assert_array_equal(rows, expected_rows)
        np.testing.assert_allclose(scores, expected_scores, rtol=1e-6)  # rescored in fp32 (BLAS may sum in another order)
        assert scan.rescored < len(vectors)  # it did not simply scan everything in fp32


def test_bf16_scores_stay_within_the_bound():
    vectors = unit(3000, 768, seed=1) * np.float32(1.5)  # not unit: the bound scales with the norms
    scan = Bf16Scan.of(vectors)
    for seed in range(10):
        query = unit(1, 768, seed=seed)[0] * 2
        approx = scan.scores(query)
        assert np.abs(approx - vectors @ query).max() <= scan.bound(query)
        np.testing.assert_allclose(approx, scan.floats() @ query, rtol=1e-5, atol=1e-6)  # the copy's own products


def test_the_copy_rounds_as_torch_does_to_bf16():
    """Nearest, ties to even: the rounding the bound assumes."""
    halfway = np.array([0x3F808000, 0x3F818000, 0x3F80_8001, 0xBF80_7FFF, 0x0000_8000, 0x7F7F_FFFF], np.uint32)
    values = np.concatenate([halfway.view(np.float32), unit(200, 16, seed=2).ravel() * np.float32(1e3),
                             np.float32([0.0, -0.0, 1e-40, 3.0e38])])
    expected = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(Bf16Scan.of(values.reshape(-1, 2)).matrix.ravel(), expected)


def test_crowded_vectors_fall_back_to_the_whole_fp32_scan():
    base = unit(1, 256, seed=0)
    vectors = base + 0.05 * unit(4000, 256, seed=1)  # every score within bf16's error of every other
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    scan = Bf16Scan.of(vectors)
    rows, scores = scan.top(vectors, base[0], 10)
    assert scan.rescored == len(vectors)
    np.testing.assert_array_equal(rows, exact_top(vectors, base[0], 10)[0])


@pytest.fixture
def small_min(monkeypatch):
    """The bf16 scan from 200 vectors of 32 dimensions (not 16 MiB)."""
    monkeypatch.setattr(dense, "BF16_SCAN_MIN_BYTES", 200 * 32 * 4)
    monkeypatch.delenv(dense.BF16_SCAN_ENV, raising=False)


def test_dense_index_uses_it_from_the_second_search_and_drops_it_on_change(small_min):
    vectors = unit(1000, 32, seed=3)
    index = DenseIndex(32)
    index.add(list(range(1000)), vectors)
    query = vectors[7]
    first = index.search(query, 5)
    assert index._scan[1] is None  # a one-query process never makes the copy
    second = index.search(query, 5)
    assert isinstance(index._scan[1], Bf16Scan)
    for got in (first, second):
        np.testing.assert_array_equal(got[0], exact_top(vectors, query, 5)[0])
    index.add([5000], -query[None, :])  # a change: the copy is remade from the new vectors
    assert index._scan is None
    index.search(-query, 3)
    ids, scores = index.search(-query, 3)
    assert isinstance(index._scan[1], Bf16Scan) and index._scan[1].rows == 1001
    assert ids[0] == 5000 and scores[0] == pytest.approx(1.0, abs=1e-6)
    index.remove([5000])
    assert isinstance(index._scan[1], Bf16Scan) and index._scan[1].rows == 1000  # compacted, not remade
    assert 5000 not in index.search(-query, 3)[0]


def test_removals_compact_the_copy_and_keep_results_exact(small_min):
    vectors = unit(2000, 32, seed=9)
    index = DenseIndex(32)
    index.add(list(range(2000)), vectors)
    index.search(vectors[0], 5)
    index.search(vectors[0], 5)
    copy = index._scan[1]
    gone = list(range(0, 2000, 3))
    assert index.remove(gone + [99999]) == len(gone)
    kept = np.setdiff1d(np.arange(2000), gone)
    assert index._scan[1].rows == len(kept)
    np.testing.assert_array_equal(index._scan[1].matrix, copy.matrix[kept])
    for row in (1, 500, 1999):
        ids, scores = index.search(vectors[row], 10)
        top = kept[np.argsort(-(vectors[kept] @ vectors[row]), kind="stable")[:10]]
        np.testing.assert_array_equal(ids, top)
    assert index.remove([123456]) == 0 and isinstance(index._scan[1], Bf16Scan)
    index.remove(kept.tolist())
    assert len(index) == 0 and index.search(vectors[1], 3)[0].size == 0


@pytest.mark.parametrize("why", ["XLSEARCH_BF16_SCAN=off", "under the minimum size"])
def test_fp32_stays_where_the_scan_is_off_or_the_vectors_few(why, small_min, monkeypatch):
    if why == "under the minimum size":
        monkeypatch.setattr(dense, "BF16_SCAN_MIN_BYTES", 500 * 32 * 4 + 1)
    else:
        monkeypatch.setenv(dense.BF16_SCAN_ENV, "off")
    index = DenseIndex(32)
    index.add(list(range(500)), unit(500, 32, seed=4))
    for _ in range(3):
        index.search(unit(1, 32, seed=5)[0], 5)
    assert index._scan is None


def test_no_copy_without_room_for_it(small_min, monkeypatch):
    monkeypatch.setattr(dense, "free_memory", lambda: 4 * 1000 * 32 * 2 - 4)  # a quarter is just too little
    vectors = unit(1000, 32, seed=8)
    index = DenseIndex(32)
    index.add(list(range(1000)), vectors)
    for _ in range(3):
        ids, _ = index.search(vectors[1], 4)
        np.testing.assert_array_equal(ids, exact_top(vectors, vectors[1], 4)[0])
    assert index._scan[1] is False  # declined once, not retried at every search


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="free memory is read from Linux's sysconf")
def test_free_memory_is_read_on_linux():
    assert 0 < dense.free_memory() < 1 << 50


def test_prepare_makes_the_copy_now(small_min):
    vectors = unit(1000, 32, seed=10)
    index = DenseIndex(32)
    assert index.prepare_scan() is False  # empty: nothing to copy
    index.add(list(range(1000)), vectors)
    assert index.prepare_scan() is True and isinstance(index._scan[1], Bf16Scan)
    copy = index._scan[1]
    ids, _ = index.search(vectors[2], 5)  # the first search already scans the copy
    assert index._scan[1] is copy
    np.testing.assert_array_equal(ids, exact_top(vectors, vectors[2], 5)[0])


def test_a_searcher_prepares_its_segments(small_min, monkeypatch, sample_index, encoder):
    from xlsearch.search.searcher import Searcher

    monkeypatch.setattr(dense, "BF16_SCAN_MIN_BYTES", 1)  # the sample's few chunks count as large
    searcher = Searcher(sample_index, encoder=encoder)
    try:
        prepared = searcher.prepare()
        segments = [s for part in searcher.index.parts for s in part.segments.values()]
        assert prepared == len(segments) > 0
        assert all(isinstance(s.dense._scan[1], Bf16Scan) for s in segments)
        assert searcher.search("green tea", k=3, mode="dense").hits
    finally:
        searcher.close()
