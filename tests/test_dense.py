"""The dense index against FAISS's own exact search, as faiss/contrib checks against IndexFlat."""
from __future__ import annotations

import faiss
import numpy as np

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
