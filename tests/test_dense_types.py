"""Dense index kinds (flat-ip, ivf-flat, ivf-sq8) against exact search, before and after training."""
from __future__ import annotations

import numpy as np
import pytest

from xlsearch.indexer.config import APPROXIMATE, KINDS
from xlsearch.indexer.store.ann import nlist_for
from xlsearch.indexer.config import IndexConfig, Manifest
from xlsearch.indexer.store.dense import DenseIndex
from xlsearch.indexer.errors import IndexFormatError

DIM = 32


def clustered(n: int, seed: int = 0, centers: int = 40) -> np.ndarray:
    """``n`` unit vectors around ``centers`` random directions."""
    rng = np.random.default_rng(seed)
    middle = rng.standard_normal((centers, DIM)).astype(np.float32)
    vectors = middle[rng.integers(0, centers, n)] + 0.4 * rng.standard_normal((n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def exact_top(ids: np.ndarray, vectors: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    return ids[np.argsort(-(vectors @ query), kind="stable")[:k]]


def recall(dense: DenseIndex, ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray, k: int = 10) -> float:
    hits = [len(np.intersect1d(dense.search(q, k)[0], exact_top(ids, vectors, q, k))) / k for q in queries]
    return float(np.mean(hits))


def filled(kind: str, n: int = 3000, train_min: int = 1000) -> tuple[DenseIndex, np.ndarray, np.ndarray]:
    vectors = clustered(n)
    ids = np.random.default_rng(1).permutation(10 * n)[:n].astype(np.int64)
    dense = DenseIndex(DIM, kind, train_min=train_min)
    dense.add(ids, vectors)
    return dense, ids, vectors


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_add_remove_search_score_save_load(kind, tmp_path):
    dense, ids, vectors = filled(kind)
    assert dense.remove(ids[:300]) == 300
    assert dense.remove([-5]) == 0  # unknown ids are ignored
    dense.save(tmp_path / "dense.faiss")  # approximate kinds train here (3000 >= train_min)
    assert (dense.nlist is None) == (kind == "flat-ip")
    loaded = DenseIndex.load(tmp_path / "dense.faiss", DIM, kind)
    assert loaded.kind == kind and len(loaded) == len(dense) == 2700
    assert DenseIndex.load(tmp_path / "dense.faiss", DIM).kind == kind  # the file says which kind
    query = vectors[500]
    got_ids, got_scores = loaded.search(query, 10)
    np.testing.assert_array_equal(got_ids, dense.search(query, 10)[0])
    assert not set(got_ids) & set(ids[:300].tolist())
    assert np.all(np.diff(got_scores) <= 1e-6)
    np.testing.assert_allclose(loaded.score_chunks(query, ids[300:310]), vectors[300:310] @ query, atol=1e-2)
    stored_ids, stored = loaded.all_vectors()
    np.testing.assert_array_equal(loaded.chunk_ids(), stored_ids)
    assert sorted(stored_ids.tolist()) == sorted(ids[300:].tolist())
    np.testing.assert_allclose(stored[np.argsort(stored_ids)], vectors[300:][np.argsort(ids[300:])], atol=1e-2)


@pytest.mark.parametrize("kind", APPROXIMATE)
def test_approximate_kind_is_exact_until_it_trains(kind, tmp_path):
    dense, ids, vectors = filled(kind, n=800, train_min=1000)
    assert not dense.train_if_needed()
    dense.save(tmp_path / "dense.faiss")
    assert dense.nlist is None
    for query in vectors[:5]:
        np.testing.assert_array_equal(dense.search(query, 10)[0], exact_top(ids, vectors, query, 10))
    loaded = DenseIndex.load(tmp_path / "dense.faiss", DIM, kind)
    assert loaded.kind == kind and loaded.nlist is None
    assert DenseIndex.load(tmp_path / "dense.faiss", DIM).kind == "flat-ip"  # untrained: the manifest says
    loaded.train_min = 1000  # a setting, not stored in the file
    loaded.add(np.arange(10**6, 10**6 + 400), clustered(400, seed=5))
    assert loaded.train_if_needed() and loaded.nlist == nlist_for(1200)


@pytest.mark.parametrize("kind", APPROXIMATE)
def test_recall_at_10_against_exact_after_training(kind):
    dense, ids, vectors = filled(kind)
    dense.train()
    queries = clustered(200, seed=7)
    assert recall(dense, ids, vectors, queries) >= 0.95
    dense.nprobe = 1
    assert dense.effective_nprobe() == 1
    assert recall(dense, ids, vectors, queries) < 0.95  # the knob matters


@pytest.mark.parametrize("kind", KINDS)
def test_filtered_search_returns_only_allowed_ids_and_finds_them(kind):
    dense, ids, vectors = filled(kind)
    dense.train_if_needed()
    rng = np.random.default_rng(3)
    for size in (15, 1200):
        rows = rng.choice(len(ids), size, replace=False)
        for query in clustered(20, seed=size):
            got, _ = dense.search(query, 10, ids[rows])
            assert set(got.tolist()) <= set(ids[rows].tolist())
            want = exact_top(ids[rows], vectors[rows], query, 10)
            assert len(np.intersect1d(got, want)) >= 9  # ivf-sq8 may swap near ties
    assert len(dense.search(vectors[0], 10, np.array([], np.int64))[0]) == 0


@pytest.mark.parametrize("kind", APPROXIMATE)
def test_remove_and_add_after_training(kind):
    dense, ids, vectors = filled(kind)
    dense.train()
    assert dense.remove(ids[::2]) == 1500 and len(dense) == 1500
    gone = set(ids[::2].tolist())
    for query in vectors[:20]:
        assert not set(dense.search(query, 50)[0].tolist()) & gone
    new = clustered(10, seed=9)
    dense.add(np.arange(10**6, 10**6 + 10), new)  # an upsert after training
    assert dense.search(new[4], 1)[0][0] == 10**6 + 4
    assert recall(dense, ids[1::2], vectors[1::2], vectors[1:200:2]) >= 0.9


def test_retrains_with_more_lists_once_grown():
    dense, _, _ = filled("ivf-flat", n=300, train_min=200)
    assert dense.train_if_needed() and dense.nlist == nlist_for(300)
    assert not dense.train_if_needed()
    dense.add(np.arange(10**6, 10**6 + 2700), clustered(2700, seed=4))
    assert dense.train_if_needed() and dense.nlist == nlist_for(3000)


def test_load_refuses_another_kind(tmp_path):
    dense, _, _ = filled("ivf-sq8")
    dense.save(tmp_path / "dense.faiss")
    for other in ("flat-ip", "ivf-flat"):
        with pytest.raises(IndexFormatError, match="holds a ivf-sq8 index"):
            DenseIndex.load(tmp_path / "dense.faiss", DIM, other)


def test_invalid_kinds_and_settings_are_refused():
    with pytest.raises(ValueError, match="flat-ip, ivf-flat, ivf-sq8"):
        IndexConfig(dense_index="hnsw")
    with pytest.raises(ValueError, match="choose one of"):
        DenseIndex(DIM, "ivf-pq")
    with pytest.raises(ValueError, match="nprobe"):
        DenseIndex(DIM, "ivf-sq8", nprobe=0)
    with pytest.raises(ValueError, match="no training"):
        DenseIndex(DIM).train()
    with pytest.raises(ValueError, match="empty"):
        DenseIndex(DIM, "ivf-flat").train()
    text = Manifest(config=IndexConfig(), model_fingerprint="x", dim=DIM, num_layers=2).to_json()
    with pytest.raises(IndexFormatError, match="ivf-flat"):
        Manifest.from_json(text.replace('"flat-ip"', '"hnsw"'), "manifest.json")


def test_cli_records_the_kind_and_refuses_another(tmp_path, tiny_deberta_dir, monkeypatch, capsys):
    import json

    from conftest import SAMPLE

    from xlsearch.api.cli.main import main

    monkeypatch.setenv("XLSEARCH_MODEL", str(tiny_deberta_dir))
    index = str(tmp_path / "index")
    common = ["--layer", "2", "--chunk-tokens", "64", "--chunk-overlap", "8"]
    assert main(["index", str(SAMPLE), "--index", index, "--dense-index", "ivf-sq8", *common]) == 0
    capsys.readouterr()
    assert main(["info", "--index", index, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["dense_index"] == "ivf-sq8"
    assert main(["search", "--index", index, "green tea", "--nprobe", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hits"]
    assert main(["index", str(SAMPLE), "--index", index, "--dense-index", "flat-ip"]) == 1
    assert "dense_index='ivf-sq8'" in capsys.readouterr().err


@pytest.mark.parametrize("kind", KINDS)
def test_replace_all_keeps_the_training(kind):
    dense, ids, vectors = filled(kind)
    if kind != "flat-ip":
        dense.train()
    lists = dense.nlist
    shifted = vectors - 0.1 * vectors.mean(axis=0)  # what recentering does: a small common shift
    shifted /= np.linalg.norm(shifted, axis=1, keepdims=True)
    dense.replace_all(ids, shifted)
    assert len(dense) == len(ids) and dense.nlist == lists
    np.testing.assert_allclose(dense.score_chunks(shifted[0], ids[:5]), shifted[:5] @ shifted[0], atol=2e-2)
    queries = clustered(30, seed=6)
    assert recall(dense, ids, shifted, queries) >= (1.0 if kind == "flat-ip" else 0.95)
    assert dense.remove(ids[:10]) == 10 and len(dense) == len(ids) - 10
