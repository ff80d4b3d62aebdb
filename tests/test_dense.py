"""The dense index against FAISS's own exact search, as faiss/contrib checks against IndexFlat."""
from __future__ import annotations

import faiss
import numpy as np
import pytest

from xlsearch.indexer.store import dense as store_dense
from xlsearch.indexer.store.dense import DenseIndex


def test_numpy_single_query_path_equals_faiss_exact_search():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3000, 48)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = rng.permutation(10_000)[:3000].astype(np.int64)
    dense = DenseIndex(48)
    dense.add(ids, vectors)
    dense.remove(ids[:500])
    reference = faiss.IndexFlatIP(48)
    reference.add(vectors[500:])
    for query in vectors[:20] + 0.1 * rng.standard_normal((20, 48)).astype(np.float32):
        got_ids, got_scores = dense.search(query, 10)
        want_scores, want_rows = reference.search(query[None, :], 10)
        np.testing.assert_array_equal(got_ids, ids[500:][want_rows[0]])
        np.testing.assert_allclose(got_scores, want_scores[0], atol=1e-5)
    assert len(dense.search(vectors[0], 5000)[0]) == 2500


def test_filtered_search_stays_exact_and_inside_the_filter():
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((500, 16)).astype(np.float32)
    dense = DenseIndex(16)
    dense.add(np.arange(500), vectors)
    allowed = np.arange(0, 500, 7)
    got_ids, got_scores = dense.search(vectors[3], 5, allowed)
    expected = allowed[np.argsort(-(vectors[allowed] @ vectors[3]))[:5]]
    np.testing.assert_array_equal(got_ids, expected)


@pytest.mark.parametrize("case", ["flat", "int8-copy", "blocks", "filtered", "ivf-flat"])
def test_search_many_equals_one_search_per_query(case, monkeypatch):
    """One matrix product (or FAISS call) for a batch gives every query the top k of its own search."""
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((3000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = rng.permutation(30_000)[:3000].astype(np.int64)
    dense = DenseIndex(32, "ivf-flat" if case == "ivf-flat" else "flat-ip", train_min=1000)
    dense.add(ids, vectors)
    if case == "ivf-flat":
        dense.train()
    if case == "int8-copy":
        monkeypatch.setattr(store_dense, "INT8_SCAN_MIN_BYTES", 1000 * 32 * 4)
        dense.search(vectors[0], 1), dense.search(vectors[0], 1)  # the copy is made at the second search
        assert dense._scan[1] is not None
    if case == "blocks":  # 16 queries per product: 40 in three blocks
        monkeypatch.setattr(store_dense, "PRODUCT_BYTES", 16 * 3000 * 4)
    allowed = ids[::3] if case == "filtered" else None
    queries = vectors[:40] + 0.2 * rng.standard_normal((40, 32)).astype(np.float32)
    for m in (1, 5, 40):  # 40: one product per block; 5 (fewer than PRODUCT_MIN_QUERIES): one scan each
        found = dense.search_many(queries[:m], 20, allowed)
        assert len(found) == m
        for query, (got_ids, got_scores) in zip(queries, found):
            want_ids, want_scores = dense.search(query, 20, allowed)
            np.testing.assert_array_equal(got_ids, want_ids)
            np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5)
            if allowed is not None:
                assert np.isin(got_ids, allowed).all()
    if case != "ivf-flat":  # and every query's exact answer, computed here
        rows = np.flatnonzero(np.isin(ids, ids if allowed is None else allowed))
        for query, (got_ids, got_scores) in zip(queries, dense.search_many(queries, 20, allowed)):
            exact = vectors[rows] @ query
            best = np.argsort(-exact)[:20]
            np.testing.assert_array_equal(got_ids, ids[rows[best]])
            np.testing.assert_allclose(got_scores, exact[best], rtol=1e-5)
    nothing = dense.search_many(queries[:3], 5, np.array([], np.int64))  # no chunk allowed: three empty lists
    assert [len(found_ids) for found_ids, _ in nothing] == [0, 0, 0]


def test_search_many_refuses_vectors_of_another_length_and_keeps_products_in_bounds(monkeypatch):
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((500, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    dense = DenseIndex(8)
    dense.add(np.arange(500), vectors)
    with pytest.raises(ValueError, match="8 dimensions"):
        dense.search(np.ones(16, np.float32), 5)  # not two queries of 8
    with pytest.raises(ValueError, match="8 dimensions"):
        dense.search_many(np.ones((3, 7), np.float32), 5)
    # One product per block of queries only where it pays and the block's scores stay in bounds.
    assert store_dense.product_block(40, 3000, copy=False) >= 40
    assert store_dense.product_block(8, 3000, copy=False) == 0  # too few queries
    assert store_dense.product_block(40, 100_000, copy=True) == 0  # too few over an int8 copy
    assert store_dense.product_block(64, 100_000, copy=True) >= 64
    assert store_dense.product_block(40, 2_000_000, copy=True) == 0  # 8 queries' scores = 64 MiB
    assert store_dense.product_block(40, 5_000_000, copy=False) == 0
    monkeypatch.setattr(store_dense, "PRODUCT_BYTES", 4 * 500 * 4)  # so here: one scan each, same answers
    assert [int(i[0]) for i, _ in dense.search_many(vectors[:20], 5)] == list(range(20))
