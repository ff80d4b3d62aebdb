"""Language centering: the maths on hand-built vectors, and an index built with it."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import SAMPLE

from xlsearch.indexer.writing.writer import IndexWriter
from xlsearch.indexer.store.centering import center, compute_centroids
from xlsearch.indexer.store.check import check_index
from xlsearch.indexer.config import IndexConfig
from xlsearch.indexer.document import Document
from xlsearch.indexer.writing.pipeline import build_index
from xlsearch.search.index.loader import load_index
from xlsearch.search.searcher import Searcher


def test_centroids_and_centering_by_hand():
    vectors = np.array([[1, 0], [3, 0], [0, 2], [0, 4], [2, 2]], dtype=np.float32)
    langs = ["a", "a", "b", "b", "c"]
    centroids = compute_centroids(vectors, langs, min_chunks=2)
    assert centroids.langs == ("a", "b")
    np.testing.assert_allclose(centroids.means, [[2, 0], [0, 3]])
    np.testing.assert_allclose(centroids.global_mean, [6 / 5, 8 / 5])
    np.testing.assert_allclose(centroids.mean_of("c"), centroids.global_mean)
    np.testing.assert_allclose(centroids.mean_of(None), centroids.global_mean)
    centered = center(vectors, langs, centroids)
    # a: (1,0)-(2,0) = (-1,0); b: (0,4)-(0,3) = (0,1); c: (2,2)-(1.2,1.6) = (0.8,0.4) -> unit length.
    np.testing.assert_allclose(centered[0], [-1, 0])
    np.testing.assert_allclose(centered[3], [0, 1])
    np.testing.assert_allclose(centered[4], np.array([0.8, 0.4]) / np.hypot(0.8, 0.4), rtol=1e-6)
    assert center(np.zeros((0, 2), np.float32), [], centroids).shape == (0, 2)


@pytest.fixture(scope="module")
def centered_master(tmp_path_factory, encoder):
    """The sample built with centering, once for this module."""
    directory = tmp_path_factory.mktemp("centered") / "index"
    config = IndexConfig(model_name=encoder.loaded.name, layer=2, chunk_tokens=64, chunk_overlap=8,
                         center_languages=True)
    build_index([SAMPLE], directory, encoder, config)
    return directory


@pytest.fixture
def centered_index(centered_master, tmp_path):
    """A private copy of the centered index for one test."""
    copy = tmp_path / "centered"
    shutil.copytree(centered_master, copy)
    (copy / ".lock").unlink(missing_ok=True)
    return copy


def stored_vectors(index):
    ids, vectors = index.dense.all_vectors()
    return dict(zip(ids.tolist(), vectors))


def expected_centered(index, encoder):
    """Re-embed every chunk, center with means computed here, compare with the index's."""
    rows = index.store.db.execute("SELECT c.chunk_id, c.text, d.title, d.lang FROM chunks c "
                                  "JOIN documents d ON d.id = c.doc_id ORDER BY c.chunk_id").fetchall()
    from xlsearch.indexer.text.pieces import title_prefix

    texts = [title_prefix(r[2], encoder.tokenizer, 16) + r[1] for r in rows]
    raw = encoder.encode(texts, 2)
    langs = [r[3] for r in rows]
    centroids = compute_centroids(raw, langs)
    return [r[0] for r in rows], center(raw, langs, centroids), centroids


def test_index_stores_centered_vectors_and_means(centered_index, encoder):
    index = load_index(centered_index)
    assert index.manifest.config.center_languages
    assert any(name.endswith("/raw.faiss") for name in index.manifest.files)
    assert len(index.manifest.segments) == 1  # a centering index is one segment: every commit recenters
    ids, expected, centroids = expected_centered(index, encoder)
    stored = stored_vectors(index)
    np.testing.assert_allclose(np.stack([stored[i] for i in ids]), expected, atol=1e-5)
    assert index.centroids.langs == centroids.langs
    np.testing.assert_allclose(index.centroids.means, centroids.means, atol=1e-5)
    assert check_index(centered_index) == []
    index.close()


def test_means_follow_updates(centered_index, encoder):
    config = load_index(centered_index).manifest.config
    with IndexWriter(centered_index, encoder, config) as writer:
        writer.delete(["en-tea-01", "en-bees-01"])
        writer.upsert([Document(id=f"new-{i}", text=f"Brand new English text number {i}.", lang="en")
                       for i in range(20)])
        writer.commit()
    index = load_index(centered_index)
    ids, expected, centroids = expected_centered(index, encoder)
    assert "en" in centroids.langs
    np.testing.assert_allclose(index.centroids.mean_of("en"), centroids.mean_of("en"), atol=1e-5)
    stored = stored_vectors(index)
    np.testing.assert_allclose(np.stack([stored[i] for i in ids]), expected, atol=1e-5)
    index.close()


def test_queries_are_centered_by_their_language(centered_index, encoder):
    searcher = Searcher(centered_index, encoder=encoder)
    query = "Как заваривать зелёный чай"
    result = searcher.search(query, k=3, mode="dense", query_lang="en")
    centroids = searcher.index.centroids
    vector = center(encoder.encode([query], 2), ["en"], centroids)[0]
    stored = stored_vectors(searcher.index)
    best = max(stored, key=lambda i: float(stored[i] @ vector))
    assert result.hits[0].chunk_id == best
    assert result.hits[0].score == pytest.approx(float(stored[best] @ vector), abs=1e-5)
    detected = searcher.search(query, k=3, mode="dense")  # detected as ru: another mean
    ru_vector = center(encoder.encode([query], 2), ["ru"], centroids)[0]
    assert detected.hits[0].score == pytest.approx(max(float(v @ ru_vector) for v in stored.values()), abs=1e-5)
    searcher.close()


def test_cli_flag_is_recorded_and_kept(tmp_path, tiny_deberta_dir, monkeypatch, capsys):
    from xlsearch.api.cli.main import main

    monkeypatch.setenv("XLSEARCH_MODEL", str(tiny_deberta_dir))
    index = str(tmp_path / "idx")
    assert main(["index", str(SAMPLE), "--index", index, "--layer", "2", "--center-languages"]) == 0
    assert main(["index", str(SAMPLE), "--index", index]) == 0
    assert "52 unchanged" in capsys.readouterr().out
    assert json.loads((tmp_path / "idx" / "manifest.json").read_text())["config"]["center_languages"] is True
    assert main(["search", "--index", index, "tea", "--mode", "dense", "--query-lang", "en", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["hits"]) == 10
