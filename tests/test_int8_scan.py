"""Exact dense search through an int8 copy of the vectors: the same top k and scores as the fp32 scan."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from xlsearch.indexer.store import dense
from xlsearch.indexer.store.int8_scan import Int8Scan
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
    scan = Int8Scan.of(vectors)
    for seed in range(5):
        query = vectors[seed] * 0.5 + unit(1, dim, seed=100 + seed)[0] * 0.5  # near a stored vector, as queries are
        rows, scores = scan.top(vectors, query, k)
        expected_rows, expected_scores = exact_top(vectors, query, k)
        np.testing.assert_array_equal(rows, expected_rows)
        np.testing.assert_allclose(scores, expected_scores, rtol=1e-6)  # rescored in fp32 (BLAS may sum in another order)
        assert scan.rescored < len(vectors)  # it did not simply scan everything in fp32


def test_int8_scores_stay_within_each_rows_bounds():
    vectors = unit(3000, 768, seed=1) * np.linspace(0.2, 3.0, 3000, dtype=np.float32)[:, None]  # the bound scales
    vectors[::7, ::5] *= np.float32(40.0)  # a few large values: their rows' scale grows, and their error with it
    scan = Int8Scan.of(vectors)
    for seed in range(10):
        query = unit(1, 768, seed=seed)[0] * 2
        lower, upper = scan.bounds(query)
        exact = vectors @ query
        assert np.all(lower <= exact) and np.all(exact <= upper)
        approx = scan.scores(query)
        assert np.all(lower <= approx) and np.all(approx <= upper)
        np.testing.assert_allclose(approx, scan.floats() @ query, rtol=1e-5, atol=1e-5)  # the copy's own products


def test_the_copy_rounds_each_row_on_its_own_scale():
    values = np.float32([[0.5, -1.27, 0.0051, 0.00499, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0], [1e-40, 0, 0, 0, -2e-40],
                         [3.0e38, -3.0e38, 1.0, 0.0, 0.0]])
    scan = Int8Scan.of(values)
    np.testing.assert_allclose(scan.scales, [0.01, np.finfo(np.float32).tiny, np.finfo(np.float32).tiny,
                                             3.0e38 / 127], rtol=1e-7)
    np.testing.assert_array_equal(scan.codes[0], [50, -127, 1, 0, 100])  # nearest: 0.51 -> 1, 0.499 -> 0
    np.testing.assert_array_equal(scan.codes[1:3], 0)
    assert np.all(np.abs(scan.floats() - values) <= scan.scales[:, None] / 2 * (1 + 1e-6))
    expected = np.linalg.norm(values.astype(np.float64) - scan.floats().astype(np.float64), axis=1)
    assert np.all(scan.slack >= expected) and np.all(scan.slack <= expected * 1.01 + 1e-4 * np.abs(values).max(1))


def test_rows_with_a_nan_or_an_infinity_are_always_rescored():
    vectors = unit(400, 16, seed=6)
    vectors[3, 2], vectors[9, 0] = np.nan, np.inf
    scan = Int8Scan.of(vectors)
    assert np.isinf(scan.slack[[3, 9]]).all() and np.isfinite(np.delete(scan.slack, [3, 9])).all()
    query = np.abs(vectors[5])
    rows, scores = scan.top(vectors, query, 3)
    assert rows[0] == 9 and scores[0] == np.inf  # as the fp32 scan ranks it
    np.testing.assert_array_equal(rows, exact_top(vectors, query, 3)[0])  # the NaN row last, as numpy sorts it
    nan_query = vectors[5].copy()
    nan_query[0] = np.nan
    assert len(scan.top(vectors, nan_query, 3)[0]) == 3 and scan.rescored == len(vectors)  # the whole fp32 scan


def test_crowded_vectors_fall_back_to_the_whole_fp32_scan():
    base = unit(1, 256, seed=0)
    vectors = base + 0.03 * unit(4000, 256, seed=1)  # every score within int8's error of every other
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    scan = Int8Scan.of(vectors)
    rows, scores = scan.top(vectors, base[0], 10)
    assert scan.rescored == len(vectors)
    np.testing.assert_array_equal(scores, exact_top(vectors, base[0], 10)[1])  # rows of equal score may swap


@pytest.fixture
def small_min(monkeypatch):
    """The int8 scan from 200 vectors of 32 dimensions (not 16 MiB)."""
    monkeypatch.setattr(dense, "INT8_SCAN_MIN_BYTES", 200 * 32 * 4)
    monkeypatch.delenv(dense.INT8_SCAN_ENV, raising=False)
    monkeypatch.delenv(dense.FORMER_SCAN_ENV, raising=False)


def test_dense_index_uses_it_from_the_second_search_and_drops_it_on_change(small_min):
    vectors = unit(1000, 32, seed=3)
    index = DenseIndex(32)
    index.add(list(range(1000)), vectors)
    query = vectors[7]
    first = index.search(query, 5)
    assert index._scan[1] is None  # a one-query process never makes the copy
    second = index.search(query, 5)
    assert isinstance(index._scan[1], Int8Scan)
    for got in (first, second):
        np.testing.assert_array_equal(got[0], exact_top(vectors, query, 5)[0])
    index.add([5000], -query[None, :])  # a change: the copy is remade from the new vectors
    assert index._scan is None
    index.search(-query, 3)
    ids, scores = index.search(-query, 3)
    assert isinstance(index._scan[1], Int8Scan) and index._scan[1].rows == 1001
    assert ids[0] == 5000 and scores[0] == pytest.approx(1.0, abs=1e-6)
    index.remove([5000])
    assert isinstance(index._scan[1], Int8Scan) and index._scan[1].rows == 1000  # compacted, not remade
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
    np.testing.assert_array_equal(index._scan[1].codes, copy.codes[kept])
    np.testing.assert_array_equal(index._scan[1].slack, copy.slack[kept])
    for row in (1, 500, 1999):
        ids, scores = index.search(vectors[row], 10)
        top = kept[np.argsort(-(vectors[kept] @ vectors[row]), kind="stable")[:10]]
        np.testing.assert_array_equal(ids, top)
    assert index.remove([123456]) == 0 and isinstance(index._scan[1], Int8Scan)
    index.remove(kept.tolist())
    assert len(index) == 0 and index.search(vectors[1], 3)[0].size == 0


@pytest.mark.parametrize("why", ["XLSEARCH_INT8_SCAN=off", "XLSEARCH_BF16_SCAN=off", "under the minimum size"])
def test_fp32_stays_where_the_scan_is_off_or_the_vectors_few(why, small_min, monkeypatch):
    if why == "under the minimum size":
        monkeypatch.setattr(dense, "INT8_SCAN_MIN_BYTES", 500 * 32 * 4 + 1)
    else:
        monkeypatch.setenv(why.split("=")[0], "off")  # the variable's former name is still honoured
    index = DenseIndex(32)
    index.add(list(range(500)), unit(500, 32, seed=4))
    for _ in range(3):
        index.search(unit(1, 32, seed=5)[0], 5)
    assert index._scan is None


def test_no_copy_without_room_for_it(small_min, monkeypatch):
    monkeypatch.setattr(dense, "free_memory", lambda: 4 * 1000 * (32 + 8) - 4)  # a quarter is just too little
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
    assert index.prepare_scan() is True and isinstance(index._scan[1], Int8Scan)
    copy = index._scan[1]
    ids, _ = index.search(vectors[2], 5)  # the first search already scans the copy
    assert index._scan[1] is copy
    np.testing.assert_array_equal(ids, exact_top(vectors, vectors[2], 5)[0])


def test_a_searcher_prepares_its_segments(small_min, monkeypatch, sample_index, encoder):
    from xlsearch.search.searcher import Searcher

    monkeypatch.setattr(dense, "INT8_SCAN_MIN_BYTES", 1)  # the sample's few chunks count as large
    searcher = Searcher(sample_index, encoder=encoder)
    try:
        prepared = searcher.prepare()
        segments = [s for part in searcher.index.parts for s in part.segments.values()]
        assert prepared == len(segments) > 0
        assert all(isinstance(s.dense._scan[1], Int8Scan) for s in segments)
        assert searcher.search("green tea", k=3, mode="dense").hits
    finally:
        searcher.close()
