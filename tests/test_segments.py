"""Segments, tombstones and merges: an index changed step by step searches exactly as one rebuilt
from its final documents, small commits write only what they add, and readers re-open cheaply."""
from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import sib_sentences
from xlsearch.indexer.config import IndexConfig
from xlsearch.indexer.document import Document
from xlsearch.indexer.errors import IndexFormatError, IndexLockedError
from xlsearch.indexer.store import segment as segment_module
from xlsearch.indexer.store.check import check_index
from xlsearch.indexer.store.segment import plan_merge
from xlsearch.indexer.store.storage import committed_manifest
from xlsearch.indexer.text.analysis import analyze
from xlsearch.indexer.writing.writer import IndexWriter
from xlsearch.search.index.loader import load_index
from xlsearch.search.searcher import Searcher

LANGS = ("eng_Latn", "spa_Latn", "rus_Cyrl", "zho_Hans", "arb_Arab", "hin_Deva")
QUERIES = ("the city and the river", "ciudad del río", "город", "北京", "المدينة", "नदी")


def pool() -> list[list[str]]:
    """Two texts for each of 18 document ids (a document can be replaced by another text)."""
    texts = [s for lang in LANGS for s in sib_sentences(lang, "train", 12)]
    return [[" ".join(texts[i:i + 2]), " ".join(texts[i + 2:i + 4])] for i in range(0, 72, 4)]


TEXTS = pool()
OPS = st.one_of(
    st.tuples(st.just("upsert"), st.integers(0, len(TEXTS) - 1), st.integers(0, 1)),
    st.tuples(st.just("delete"), st.integers(0, len(TEXTS) - 1), st.just(0)),
    st.tuples(st.just("commit"), st.just(0), st.just(0)),
    st.tuples(st.just("optimize"), st.just(0), st.just(0)),
)


def config_for(encoder) -> IndexConfig:
    return IndexConfig(model_name=str(encoder.loaded.name), layer=2, chunk_tokens=32, chunk_overlap=4)


def by_key(index) -> dict[tuple, int]:
    """(document id, start, end) -> chunk id of every live chunk."""
    return {(doc, start, end): cid for cid, doc, start, end in
            index.store.db.execute("SELECT chunk_id, doc_id, start, end FROM chunks")}


def assert_same_search(changed: Path, rebuilt: Path, encoder) -> None:
    """Exact BM25 (rtol 1e-10) and dense scores of every chunk, and the same hybrid top 10."""
    a, b = load_index(changed), load_index(rebuilt)
    try:
        keys_a, keys_b = by_key(a), by_key(b)
        assert keys_a.keys() == keys_b.keys()
        keys = sorted(keys_a)
        ids_a, ids_b = [keys_a[k] for k in keys], [keys_b[k] for k in keys]
        assert len(a.dense) == len(b.dense) == len(keys)
        for query in QUERIES:
            tokens = analyze(query)
            np.testing.assert_allclose(a.lexical.score_chunks(tokens, ids_a), b.lexical.score_chunks(tokens, ids_b),
                                       rtol=1e-10, atol=0)
            np.testing.assert_allclose(a.lexical.query_weights(tokens), b.lexical.query_weights(tokens), rtol=1e-10)
            vector = encoder.encode([query], 2)[0]
            # the same vectors; BLAS may round a product of other shapes in the last bit
            np.testing.assert_allclose(a.dense.score_chunks(vector, ids_a), b.dense.score_chunks(vector, ids_b),
                                       rtol=1e-6, atol=1e-6)
            top_a, scores_a = a.dense.search(vector, 10)
            top_b, scores_b = b.dense.search(vector, 10)
            np.testing.assert_allclose(scores_a, scores_b, rtol=1e-6, atol=1e-6)
    finally:
        a.close()
        b.close()
    for query in QUERIES:
        hits = [sorted((h.id, h.score) for h in Searcher(d, encoder=encoder).search(query, k=10).hits)
                for d in (changed, rebuilt)]
        assert [i for i, _ in hits[0]] == [i for i, _ in hits[1]], query
        np.testing.assert_allclose([s for _, s in hits[0]], [s for _, s in hits[1]], rtol=1e-6, atol=1e-6)


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=st.lists(OPS, min_size=4, max_size=24))
def test_changes_in_any_order_search_as_a_rebuilt_index(ops, remembering_encoder, monkeypatch):
    """Random upserts, deletes, commits and merges (merge factor 3, so merges happen): the index
    searches as one built from its final documents, a reader kept open through every commit
    agrees with a fresh one, and check finds nothing."""
    monkeypatch.setattr(segment_module, "MERGE_FACTOR", 3)
    monkeypatch.setattr(segment_module, "MERGE_FLOOR", 1)
    encoder, config = remembering_encoder, config_for(remembering_encoder)
    with tempfile.TemporaryDirectory() as tmp:
        changed, rebuilt = Path(tmp) / "changed", Path(tmp) / "rebuilt"
        final: dict[str, str] = {}
        reader = None
        with IndexWriter(changed, encoder, config) as writer:
            writer.upsert([Document("seed", TEXTS[0][0], lang="en")])
            writer.commit()
            final["seed"] = TEXTS[0][0]
            reader = Searcher(changed, encoder=encoder)
            for op, n, variant in ops:
                if op == "upsert":
                    writer.upsert([Document(f"d{n}", TEXTS[n][variant])])
                    final[f"d{n}"] = TEXTS[n][variant]
                elif op == "delete":
                    writer.delete([f"d{n}"])
                    final.pop(f"d{n}", None)
                elif op == "commit":
                    writer.commit()
                else:
                    writer.optimize()
                if op in ("commit", "optimize"):
                    reader.search(QUERIES[0], k=5)  # re-opens incrementally
            writer.commit()
        segments = committed_manifest(changed).segments
        assert len(segments) <= 3 * 3, segments  # the policy keeps the count logarithmic
        assert check_index(changed) == []
        with IndexWriter(rebuilt, encoder, config) as writer:
            writer.upsert([Document(i, text, lang="en" if i == "seed" else None) for i, text in sorted(final.items())])
            writer.commit()
        assert_same_search(changed, rebuilt, encoder)
        kept = reader.search(QUERIES[1], k=10).hits
        fresh = Searcher(changed, encoder=encoder).search(QUERIES[1], k=10).hits
        assert [h.id for h in kept] == [h.id for h in fresh]
        np.testing.assert_allclose([h.score for h in kept], [h.score for h in fresh], rtol=1e-6, atol=1e-6)
        reader.close()


def digests(directory: Path) -> dict[str, str]:
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_a_small_commit_writes_only_its_segment(sample_index, encoder):
    """No file of an earlier segment is rewritten; the new files are the new segment's."""
    before = digests(sample_index)
    with IndexWriter(sample_index, encoder) as writer:
        writer.delete(["en-tea-01"])
        writer.upsert([Document("new-one", "A short new document about green tea.", lang="en")])
        manifest = writer.commit()
    after = digests(sample_index)
    old_segment = {k: v for k, v in before.items() if k.startswith("seg.")}
    assert {k: after[k] for k in old_segment} == old_segment
    new = {k for k in after if k.startswith("seg.")} - set(old_segment)
    assert new and all(k.startswith("seg.2/") for k in new)
    assert [(s["name"], s["live"] < s["rows"]) for s in manifest.segments] == [("seg.1", True), ("seg.2", False)]
    searcher = Searcher(sample_index, encoder=encoder)
    ids = [h.id for h in searcher.search("green tea", k=5, mode="lexical").hits]
    assert "new-one" in ids and "en-tea-01" not in ids
    assert check_index(sample_index) == []


def test_a_reader_reopens_only_new_segments(sample_index, encoder):
    searcher = Searcher(sample_index, encoder=encoder)
    searcher.search("green tea", k=3)
    first = searcher.index.segments["seg.1"]
    with IndexWriter(sample_index, encoder) as writer:
        writer.delete(["en-tea-01"])
        writer.upsert([Document("new-one", "A short new document about green tea.", lang="en")])
        writer.commit()
    hits = searcher.search("green tea", k=5, mode="lexical").hits
    assert searcher.index.segments["seg.1"] is first  # kept, with the deleted chunks dropped
    assert list(searcher.index.segments) == ["seg.1", "seg.2"]
    assert "new-one" in [h.id for h in hits] and "en-tea-01" not in [h.id for h in hits]


def test_optimize_merges_into_one_segment_and_purges_tombstones(sample_index, encoder, capsys):
    from xlsearch.api.cli.main import main

    with IndexWriter(sample_index, encoder) as writer:
        for i in range(3):
            writer.upsert([Document(f"extra-{i}", f"Extra document number {i} about rivers.", lang="en")])
            writer.commit()
        writer.delete(["en-tea-01", "extra-1"])
        writer.commit()
    before = committed_manifest(sample_index)
    assert [s["name"] for s in before.segments] == ["seg.1", "seg.2", "seg.4"]  # seg.3: nothing live, retired
    assert main(["optimize", "--index", str(sample_index)]) == 0
    assert "in 1 segment(s)" in capsys.readouterr().out
    after = committed_manifest(sample_index)
    assert [(s["rows"], s["live"]) for s in after.segments] == [(after.chunks, after.chunks)]
    assert after.documents == before.documents and after.chunks == before.chunks
    store = load_index(sample_index).store
    assert store.count("tombstones") == 0
    assert check_index(sample_index) == []
    on_disk = lambda: sorted(p.name for p in sample_index.iterdir() if p.name.startswith("seg."))  # noqa: E731
    assert on_disk() == ["seg.1", "seg.2", "seg.4", "seg.6"]  # a reader re-opening now may still need them
    with IndexWriter(sample_index, encoder) as writer:
        writer.delete(["extra-0"])
        writer.commit()
    assert on_disk() == ["seg.6"]  # deleted once no manifest since the previous commit lists them


def test_plan_merge_is_tiered():
    same = {f"seg.{i}": 100 for i in range(1, 10)}
    assert plan_merge(same, same, factor=10, floor=1000) == []  # 9 of one tier: not yet
    ten = same | {"seg.10": 500}
    assert plan_merge(ten, ten, factor=10, floor=1000) == [f"seg.{i}" for i in range(1, 11)]
    mixed = {"seg.1": 50_000, **{f"seg.{i}": 100 for i in range(2, 11)}}
    assert "seg.1" not in plan_merge(mixed, mixed, factor=10, floor=1000)  # the big one waits for its tier
    sparse = {"seg.1": 40_000, "seg.2": 100}
    assert plan_merge(sparse, {"seg.1": 100_000, "seg.2": 100}) == ["seg.1"]  # mostly tombstones
    assert plan_merge({"seg.1": 0, "seg.2": 5}, {"seg.1": 3, "seg.2": 5}) == ["seg.1"]  # nothing live


def test_an_index_of_the_old_format_asks_for_a_rebuild(sample_index):
    store = load_index(sample_index).store
    manifest = json.loads(store.get_meta("manifest"))
    manifest["format_version"] = 1
    with store.transaction() as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'manifest'", [json.dumps(manifest)])
    with pytest.raises(IndexFormatError, match="index format 1, this xlsearch reads format 2. Rebuild"):
        load_index(sample_index)


def test_the_server_keeps_one_writer_and_optimizes(sample_index, tiny_deberta_dir):
    from fastapi.testclient import TestClient

    from test_api import make_settings
    from xlsearch.api.http.app import create_app

    with TestClient(create_app(make_settings(sample_index, tiny_deberta_dir))) as client:
        for i in range(2):
            added = client.post("/documents", json=[{"id": f"srv-{i}", "text": f"River number {i}.", "lang": "en"}])
            assert added.status_code == 200, added.text
        with pytest.raises(IndexLockedError):
            IndexWriter(sample_index)  # the server holds the writer lock between requests
        done = client.post("/optimize")
        assert done.status_code == 200 and done.json()["segments"] == 1, done.text
        hits = client.post("/search", json={"query": "River number 1", "mode": "lexical", "k": 3}).json()["hits"]
        assert hits[0]["id"] == "srv-1"
    with IndexWriter(sample_index) as writer:  # released when the server stops
        assert writer.manifest.documents == committed_manifest(sample_index).documents


def test_a_commit_that_went_through_is_not_reported_as_failed(sample_index, encoder, monkeypatch, caplog):
    """A full disk after the commit point (refreshing manifest.json) is logged; the write stands."""
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with IndexWriter(sample_index, encoder) as writer:
        writer.upsert([Document("late", "Written before the disk filled up.", lang="en")])
        monkeypatch.setattr("xlsearch.indexer.writing.writer.write_manifest_copy", full)
        manifest = writer.commit()
    assert manifest.generation == 2 and committed_manifest(sample_index).generation == 2
    assert "generation 2 is committed, but tidying up after it failed (No space left on device)" in caplog.text
    monkeypatch.undo()
    with IndexWriter(sample_index, encoder):  # the next writer brings manifest.json up to date
        pass
    assert check_index(sample_index) == []
    assert Searcher(sample_index).search("disk filled", k=1, mode="lexical").hits[0].id == "late"


def test_files_left_by_a_killed_commit_do_not_block_the_next(sample_index, encoder):
    """A process killed inside a commit leaves the folder of a segment no commit lists; the next
    writer removes it and commits under that name."""
    leftover = sample_index / "seg.2"
    (leftover / "bm25").mkdir(parents=True)
    (leftover / "dense.faiss").write_bytes(b"half written")
    with IndexWriter(sample_index, encoder) as writer:
        writer.upsert([Document("after-crash", "Written after a crash.", lang="en")])
        manifest = writer.commit()
    assert [s["name"] for s in manifest.segments] == ["seg.1", "seg.2"]
    assert check_index(sample_index) == []


def test_readers_and_check_open_an_index_while_commits_merge_it(sample_index, encoder, monkeypatch):
    """Opening an index reads one commit's manifest and tombstones even while a writer commits,
    merges and retires segments; check does not report files a commit retired meanwhile."""
    import threading

    monkeypatch.setattr(segment_module, "MERGE_FACTOR", 3)
    monkeypatch.setattr(segment_module, "MERGE_FLOOR", 1)
    done, failures = threading.Event(), []

    def write() -> None:
        try:
            with IndexWriter(sample_index, encoder) as writer:
                for i in range(24):
                    writer.upsert([Document(f"busy-{i % 5}", f"Busy document {i} about rivers.", lang="en")])
                    writer.commit()
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=write)
    thread.start()
    opened = 0
    while not done.is_set():
        index = load_index(sample_index)
        assert len(index.dense) == index.manifest.chunks
        index.close()
        assert check_index(sample_index) == []
        opened += 1
    thread.join()
    assert not failures and opened > 0
