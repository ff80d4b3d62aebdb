"""Index the sample with the tiny model, then search, upsert, delete, re-open, refuse."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SAMPLE

from xlsearch.indexer.text.analysis import analyze
from xlsearch.indexer.writing.writer import IndexWriter
from xlsearch.indexer.config import IndexConfig
from xlsearch.indexer.document import Document
from xlsearch.indexer.encoding.encoder import Encoder, encode_queries
from xlsearch.indexer.errors import (
    CorpusError,
    IndexLockedError,
    IndexMismatchError,
    IndexNotFoundError,
    IndexWriteError,
    QueryError,
)
from xlsearch.indexer.writing.pipeline import build_index
from xlsearch.indexer.encoding.model import load_model
from xlsearch.indexer.store.storage import open_docstore
from xlsearch.search.fusion import Candidates, fuse
from xlsearch.search.index.loader import load_index
from xlsearch.indexer.store.dense import DenseIndex
from xlsearch.search import searcher as searcher_module
from xlsearch.search.searcher import Searcher

SAMPLE_DOCS = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]


def doc_ids(result):
    return [hit.id for hit in result.hits]


def test_manifest_records_the_build(sample_index, encoder):
    index = load_index(sample_index)
    m = index.manifest
    assert m.config.layer == 2
    assert (m.dim, m.num_layers, m.model_fingerprint) == (encoder.dim, encoder.num_layers, encoder.loaded.fingerprint)
    assert m.documents == len(SAMPLE_DOCS) == index.store.count("documents")
    assert m.chunks == len(index.dense) == len(index.lexical) == index.store.count("chunks") > m.documents
    on_disk = json.loads((sample_index / "manifest.json").read_text())
    assert on_disk["format_version"] == 2 and on_disk["generation"] == m.generation == 1
    assert [s["name"] for s in on_disk["segments"]] == ["seg.1"] and (sample_index / "seg.1" / "dense.faiss").is_file()
    assert on_disk["config"]["chunk_tokens"] == 64 and on_disk["config"]["pooling"] == "mean-tokens-no-special"
    index.close()


def test_same_chunk_ids_in_all_three_stores(sample_index):
    index = load_index(sample_index)
    stored = sorted(r[0] for r in index.store.db.execute("SELECT chunk_id FROM chunks"))
    assert sorted(index.lexical.chunk_ids.tolist()) == stored
    assert sorted(faiss_ids(index.dense)) == stored
    index.close()


def faiss_ids(dense):
    import faiss

    return faiss.vector_to_array(dense.index.id_map).tolist()


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_each_mode_returns_k_documents_with_passages(sample_index, encoder, mode):
    searcher = Searcher(sample_index, encoder=encoder)
    result = searcher.search("green tea water temperature", k=5, mode=mode)
    # Only 4 sample documents contain one of these English words; lexical finds just those.
    assert result.mode == mode and len(result.hits) == (4 if mode == "lexical" else 5)
    assert len(set(doc_ids(result))) == len(result.hits)
    scores = [h.score for h in result.hits]
    assert scores == sorted(scores, reverse=True)
    for hit in result.hits:
        doc = next(d for d in SAMPLE_DOCS if d["id"] == hit.id)
        assert doc["text"][hit.start:hit.end] == hit.passage and hit.lang == doc["lang"]
        assert hit.scores["lexical"] is not None
        assert (hit.scores["dense"] is None) == (mode == "lexical")
    searcher.close()


def test_dense_scores_are_exact_cosines(sample_index, encoder):
    searcher = Searcher(sample_index, encoder=encoder)
    result = searcher.search("How do volcanoes erupt?", k=52, mode="dense")
    query = encoder.encode(["How do volcanoes erupt?"], searcher.index.manifest.config.layer)[0]
    index = searcher.index
    # Brute force over every stored chunk: best chunk per document, as the searcher aggregates.
    rows = index.store.db.execute("SELECT chunk_id, doc_id FROM chunks").fetchall()
    vectors = index.dense.index.reconstruct_batch(np.array([r[0] for r in rows], dtype=np.int64))
    best = {}
    for (chunk_id, doc_id), score in zip(rows, vectors @ query):
        best[doc_id] = max(best.get(doc_id, -2.0), float(score))
    expected = sorted(best.items(), key=lambda item: -item[1])
    assert [h.id for h in result.hits] == [d for d, _ in expected]
    np.testing.assert_allclose([h.score for h in result.hits], [s for _, s in expected], atol=1e-5)
    np.testing.assert_allclose([h.scores["dense"] for h in result.hits], [s for _, s in expected], atol=1e-5)
    searcher.close()


def test_hybrid_default_fuses_both_scores_of_the_union(sample_index, encoder):
    """The default fusion sees both candidate lists (lexical ties at the cut included), each candidate
    scored by both sides, and the query's IDF mass: recomputed here from the indexes themselves."""
    searcher = Searcher(sample_index, encoder=encoder)
    query = "volcano lava eruption Vulkan"
    hits = searcher.search(query, k=3, mode="hybrid").hits
    index = searcher.index
    vector = encode_queries(encoder, [query], index.manifest.config)[0]
    tokens = analyze(query)
    dense_ids, dense_scores = index.dense.search(vector, 50)
    lexical_ids, lexical_scores = index.lexical.search(tokens, 50, with_ties=True)
    candidates = Candidates(dict(zip(dense_ids.tolist(), dense_scores.tolist())),
                            dict(zip(lexical_ids.tolist(), lexical_scores.tolist())),
                            query_weight=float(index.lexical.query_weights(tokens).sum()))
    candidates.complete(lambda ids: index.dense.score_chunks(vector, ids),
                        lambda ids: index.lexical.score_chunks(tokens, ids))
    assert searcher.auto_fusion == "anchored"  # a raw (random) encoder: the words lead where they match
    fused = fuse("anchored", candidates)
    assert set(fused) == set(dense_ids.tolist()) | set(lexical_ids.tolist())
    assert hits[0].chunk_id == max(fused, key=fused.get)
    assert [h.score for h in hits] == pytest.approx([fused[h.chunk_id] for h in hits])
    searcher.close()


def test_hybrid_rrf_score_by_hand(sample_index, encoder):
    searcher = Searcher(sample_index, encoder=encoder)
    query = "volcano lava eruption"
    top = searcher.search(query, k=1, mode="hybrid", fusion="rrf").hits[0]
    index = searcher.index
    vector = encoder.encode([query], index.manifest.config.layer)[0]
    dense_ids, _ = index.dense.search(vector, len(index.dense))
    lexical_ids, _ = index.lexical.search(analyze(query), len(index.dense))
    expected = 1 / (60 + dense_ids.tolist().index(top.chunk_id) + 1)
    if top.chunk_id in lexical_ids:
        expected += 1 / (60 + lexical_ids.tolist().index(top.chunk_id) + 1)
    assert top.score == pytest.approx(expected)
    linear = searcher.search(query, k=3, mode="hybrid", fusion="linear", alpha=0.0)
    lexical = searcher.search(query, k=3, mode="lexical")
    assert doc_ids(linear)[:len(lexical.hits)] == doc_ids(lexical)
    assert linear.hits[0].score == pytest.approx(1.0)
    searcher.close()


@pytest.mark.parametrize("doc_id, query", [("zh-tea-01", "绿茶 水温"), ("th-rain-01", None), ("th-tomyum-01", None)])
def test_chinese_and_thai_lexical_queries_find_their_document(sample_index, doc_id, query):
    doc = next(d for d in SAMPLE_DOCS if d["id"] == doc_id)
    query = query or doc["text"].split(" ")[0][:12]
    searcher = Searcher(sample_index)
    result = searcher.search(query, k=3, mode="lexical")
    assert result.hits and result.hits[0].id == doc_id
    searcher.close()


def test_language_filter_applies_before_the_cut(sample_index, encoder):
    searcher = Searcher(sample_index, encoder=encoder)
    japanese = [d["id"] for d in SAMPLE_DOCS if d["lang"] == "ja"]
    result = searcher.search("tea", k=len(japanese), mode="dense", lang="ja")
    assert sorted(doc_ids(result)) == sorted(japanese)
    assert searcher.search("tea", k=3, mode="hybrid", lang="xx").hits == []
    searcher.close()


def test_metadata_filter_applies_before_the_cut(sample_index, encoder):
    searcher = Searcher(sample_index, encoder=encoder)
    howto = {d["id"] for d in SAMPLE_DOCS if d["source"] == "howto"}
    result = searcher.search("water", k=len(howto), mode="hybrid", filter={"source": "howto"})
    assert {h.id for h in result.hits} == howto
    both = searcher.search("water", k=50, mode="dense", filter={"source": "howto"}, lang="zh")
    assert {h.id for h in both.hits} == {d["id"] for d in SAMPLE_DOCS if d["source"] == "howto" and d["lang"] == "zh"}
    assert searcher.search("water", k=5, filter={"source": "nowhere"}).hits == []
    with pytest.raises(QueryError, match="filter 'source'"):
        searcher.search("water", filter={"source": ["a", "b"]})
    searcher.close()


def test_bad_queries_are_refused(sample_index):
    searcher = Searcher(sample_index)
    for kwargs, message in [({"query": "  "}, "query is empty"), ({"query": "a", "k": 0}, "k must be"),
                            ({"query": "a", "mode": "fuzzy"}, "unknown mode"),
                            ({"query": "a", "fusion": "max"}, "unknown fusion"),
                            ({"query": "a", "alpha": 2.0}, "alpha must be")]:
        with pytest.raises(QueryError, match=message):
            searcher.search(**kwargs)
    searcher.close()


def test_upsert_replaces_and_skips_unchanged(sample_index, encoder):
    config = load_index(sample_index).manifest.config
    changed = Document(id="en-tea-01", text="Kombucha is a fermented drink made with a scoby.",
                       title="Kombucha", lang="en")
    unchanged = Document(**{k: v for k, v in SAMPLE_DOCS[1].items() if k != "source"},
                         metadata={"source": SAMPLE_DOCS[1]["source"]})
    with IndexWriter(sample_index, encoder, config) as writer:
        stats = writer.upsert([changed, unchanged, Document(id="new-1", text="Brand new kombucha text.")])
        writer.commit()
    assert (stats.added, stats.replaced, stats.unchanged) == (1, 1, 1)
    searcher = Searcher(sample_index, encoder=encoder)
    hits = searcher.search("kombucha scoby", k=3, mode="lexical").hits
    assert [h.id for h in hits[:2]] == ["en-tea-01", "new-1"] and hits[0].title == "Kombucha"
    assert all(h.id != "en-tea-01" for h in searcher.search("Celsius teaspoon", k=10, mode="lexical").hits)
    index = searcher.index
    assert index.manifest.documents == len(SAMPLE_DOCS) + 1 and index.manifest.generation == 2
    assert len(index.dense) == len(index.lexical) == index.store.count("chunks") == index.manifest.chunks
    searcher.close()


def test_delete_removes_from_all_three_stores(sample_index):
    before = load_index(sample_index)
    chunks = before.store.chunk_ids_of(["ru-moon-01"])
    with IndexWriter(sample_index) as writer:
        assert writer.delete(["ru-moon-01", "missing"]) == ["ru-moon-01"]
        writer.commit()
    after = load_index(sample_index)
    assert after.store.get_document("ru-moon-01") is None and after.store.chunk_ids_of(["ru-moon-01"]) == []
    assert len(after.dense) == len(before.dense) - len(chunks) == len(after.lexical)
    assert not set(chunks) & set(after.lexical.chunk_ids.tolist())
    before.close(), after.close()


def test_searcher_picks_up_new_commits_and_reopens(sample_index, encoder):
    searcher = Searcher(sample_index, encoder=encoder)
    assert searcher.search("zanzibar clove", k=1, mode="lexical").hits == []
    with IndexWriter(sample_index, encoder, searcher.index.manifest.config) as writer:
        writer.upsert([Document(id="cloves", text="Zanzibar is famous for its clove plantations.")])
        writer.commit()
    assert doc_ids(searcher.search("zanzibar clove", k=1, mode="lexical")) == ["cloves"]
    searcher.close()
    reopened = Searcher(sample_index, encoder=encoder)
    assert doc_ids(reopened.search("zanzibar clove", k=1, mode="lexical")) == ["cloves"]
    reopened.close()


def test_mismatched_model_or_layer_is_refused(sample_index, tiny_bert_dir):
    bert = Encoder(load_model(str(tiny_bert_dir), "cpu"))
    with pytest.raises(IndexMismatchError, match="built with model"):
        Searcher(sample_index, encoder=bert)
    with pytest.raises(IndexMismatchError, match="built with model"):
        Searcher(sample_index, model=str(tiny_bert_dir)).search("tea", mode="dense")
    with pytest.raises(IndexMismatchError, match="layer=2, not 1"):
        Searcher(sample_index, layer=1)
    config = load_index(sample_index).manifest.config
    with pytest.raises(IndexMismatchError, match="built with model"):
        IndexWriter(sample_index, bert, config)


def test_index_of_another_analyzer_is_refused(sample_index, encoder):
    store, manifest = open_docstore(sample_index)
    old = manifest.replace(config=IndexConfig(**{**vars(manifest.config), "analyzer": "unicode-bigram-v0"}))
    with store.transaction() as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'manifest'", [old.to_json()])
    store.close()
    with pytest.raises(IndexMismatchError, match="analyzer 'unicode-bigram-v0'.*Rebuild it"):
        Searcher(sample_index)
    with pytest.raises(IndexMismatchError, match="analyzer 'unicode-bigram-v0'"):
        IndexWriter(sample_index, encoder, old.config)


def test_changed_build_setting_is_refused(sample_index, encoder):
    config = load_index(sample_index).manifest.config
    with pytest.raises(IndexMismatchError, match="chunk_tokens=64, not 128"):
        IndexWriter(sample_index, encoder, IndexConfig(**{**vars(config), "chunk_tokens": 128}))


def test_bad_record_leaves_the_index_as_it_was(sample_index, encoder, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "fresh", "text": "fine"}\n{"id": "x"}\n', encoding="utf-8")
    config = load_index(sample_index).manifest.config
    before = sorted(p.name for p in sample_index.iterdir())
    with pytest.raises(CorpusError, match="bad.jsonl:2"):
        build_index([bad], sample_index, encoder, config)
    store, manifest = open_docstore(sample_index)
    assert manifest.generation == 1 and store.get_document("fresh") is None
    assert sorted(p.name for p in sample_index.iterdir()) == before
    store.close()


def test_failed_commit_keeps_the_old_generation(sample_index, encoder, monkeypatch):
    config = load_index(sample_index).manifest.config
    writer = IndexWriter(sample_index, encoder, config)
    writer.upsert([Document(id="doomed", text="This write will fail.")])
    monkeypatch.setattr("xlsearch.indexer.writing.writer.write_chunks", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(IndexWriteError, match="could not commit \\(disk full\\); the index is unchanged"):
        writer.commit()
    writer.close()
    index = load_index(sample_index)
    assert index.manifest.generation == 1 and index.store.get_document("doomed") is None
    assert not (sample_index / "dense.2.faiss").exists() and not (sample_index / "bm25.2").exists()
    index.close()


def test_one_writer_at_a_time(sample_index, encoder):
    config = load_index(sample_index).manifest.config
    with IndexWriter(sample_index, encoder, config):
        with pytest.raises(IndexLockedError, match="another process is writing"):
            IndexWriter(sample_index, encoder, config)


def test_missing_index_directory(tmp_path):
    with pytest.raises(IndexNotFoundError, match="no such index directory"):
        Searcher(tmp_path / "nothing")
    with pytest.raises(IndexNotFoundError, match="not an xlsearch index"):
        Searcher(tmp_path)
    with pytest.raises(IndexNotFoundError):
        IndexWriter(tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()


def test_search_many_answers_as_search_does_and_refuses_in_place(sample_index, encoder):
    searcher = Searcher(sample_index, encoder=encoder)
    queries = ["green tea", "  ", "la luna", "月亮", "\t\n"]
    answers = searcher.search_many(queries, k=5)
    assert [type(a).__name__ for a in answers] == ["SearchResult", "QueryError", "SearchResult", "SearchResult",
                                                   "QueryError"]
    for query, answer in zip(queries, answers):
        if not isinstance(answer, QueryError):
            one = searcher.search(query, k=5)
            assert [h.id for h in answer.hits] == [h.id for h in one.hits]
            np.testing.assert_allclose([h.score for h in answer.hits], [h.score for h in one.hits], rtol=1e-5)


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_search_many_searches_the_dense_index_once_per_batch(sample_index, encoder, monkeypatch, mode):
    """40 queries: two batches (32 + 8), each one search_many of every segment, no search of one query
    (the first depth holds enough documents here), and each answer what search gives."""
    searcher = Searcher(sample_index, encoder=encoder)
    words = ["green tea", "la luna", "月亮", "water", "mountain", "Tee", "lune", "night", "cat", "book"]
    queries = [f"{w} {i}" for i in range(4) for w in words]
    batches, singles = [], []
    many, one = DenseIndex.search_many, DenseIndex.search
    monkeypatch.setattr(DenseIndex, "search_many", lambda self, q, *a: batches.append(len(q)) or many(self, q, *a))
    monkeypatch.setattr(DenseIndex, "search", lambda self, *a: singles.append(1) or one(self, *a))
    answers = searcher.search_many(queries, k=5, mode=mode)
    segments = sum(len(part.segments) for part in searcher.index.parts)
    assert searcher_module.QUERY_BATCH == 32
    assert sorted(batches) == sorted([32] * segments + [8] * segments) and not singles
    monkeypatch.setattr(DenseIndex, "search_many", many)
    paged = searcher.search_many(queries, k=3, mode=mode, offset=2)
    for query, answer, page in zip(queries, answers, paged):
        alone = searcher.search(query, k=5, mode=mode)
        assert [h.id for h in answer.hits] == [h.id for h in alone.hits]
        np.testing.assert_allclose([h.score for h in answer.hits], [h.score for h in alone.hits], rtol=1e-5)
        assert [h.id for h in page.hits] == [h.id for h in searcher.search(query, k=3, mode=mode, offset=2).hits]
    assert searcher.search_many([], mode=mode) == []
    refused = searcher.search_many(["  ", "\t"], mode=mode)
    assert [type(r).__name__ for r in refused] == ["QueryError", "QueryError"]
