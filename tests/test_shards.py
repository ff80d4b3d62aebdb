"""Sharded indexes: routing by id, global top k and global BM25 statistics, same results as unsharded."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import xquad_documents
from fastapi.testclient import TestClient

from xlsearch.api.http.app import create_app
from xlsearch.api.cli.main import main
from xlsearch.api.settings import Settings
from xlsearch.indexer.config import IndexConfig
from xlsearch.indexer.document import Document
from xlsearch.indexer.errors import IndexMismatchError
from xlsearch.indexer.writing.pipeline import build_index
from xlsearch.indexer.store.shard_layout import read_shards, shard_dir, shard_of
from xlsearch.indexer.writing.sharded import ShardedWriter, open_writer
from xlsearch.indexer.store.check import check_any
from xlsearch.indexer.store.shard_layout import sharded_info
from xlsearch.search.searcher import Searcher
from xlsearch.search.index.sharded import ShardedIndex

SHARDS = 3


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[str]]:
    docs, questions = xquad_documents()
    path = tmp_path_factory.mktemp("xquad") / "docs.jsonl"
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    return path, questions


@pytest.fixture(scope="module")
def config(encoder) -> IndexConfig:
    return IndexConfig(model_name=encoder.loaded.name, layer=2, chunk_tokens=64, chunk_overlap=8)


@pytest.fixture(scope="module")
def cli_corpus(tmp_path_factory, corpus) -> Path:
    """The first 10 documents of each language of ``corpus`` (60), for the command-line tests."""
    docs = [json.loads(line) for line in corpus[0].read_text(encoding="utf-8").splitlines()]
    path = tmp_path_factory.mktemp("xquad-cli") / "docs.jsonl"
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs
                            if int(d["id"].split("-")[1]) < 10), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def pair(tmp_path_factory, corpus, remembering_encoder, config) -> tuple[Path, Path]:
    """The same collection as one index and as a 3-shard index, each built through build_index; the
    collection is embedded once (the second build gets the first one's vectors)."""
    root = tmp_path_factory.mktemp("pair")
    build_index([corpus[0]], root / "one", remembering_encoder, config, commit_chunks=200)
    embedded = len(remembering_encoder.vectors)
    build_index([corpus[0]], root / "sharded", remembering_encoder, config, commit_chunks=200, shards=SHARDS)
    assert len(remembering_encoder.vectors) == embedded  # the same chunks, so nothing new was embedded
    return root / "one", root / "sharded"


def top(searcher: Searcher, query: str, **options) -> list[tuple[str, float]]:
    return [(h.id, h.score) for h in searcher.search(query, k=10, **options).hits]


def assert_same_results(one: Path, sharded: Path, encoder, questions: list[str]) -> None:
    a, b = Searcher(one, encoder=encoder), Searcher(sharded, encoder=encoder)
    try:
        assert isinstance(b.index, ShardedIndex) and not isinstance(a.index, ShardedIndex)
        for query in questions:
            for options in ({"mode": "dense"}, {"mode": "lexical"}, {"mode": "hybrid"},
                            {"mode": "hybrid", "fusion": "linear", "alpha": 0.3}, {"mode": "hybrid", "lang": "de"}):
                ours, theirs = top(a, query, **options), top(b, query, **options)
                assert [i for i, _ in ours] == [i for i, _ in theirs], (query, options, ours, theirs)
                np.testing.assert_allclose([s for _, s in ours], [s for _, s in theirs], rtol=1e-6, atol=1e-7)
        # Many queries at once (each shard's dense index searched once for all of them): the same hits.
        for options in ({"mode": "dense"}, {"mode": "hybrid"}, {"mode": "hybrid", "lang": "de"}):
            for query, many in zip(questions, b.search_many(questions, k=10, **options)):
                alone = top(b, query, **options)
                assert [h.id for h in many.hits] == [i for i, _ in alone], (query, options)
                np.testing.assert_allclose([h.score for h in many.hits], [s for _, s in alone], rtol=1e-5)
    finally:
        a.close()
        b.close()


def test_sharded_index_returns_the_unsharded_top_10(pair, corpus, encoder):
    one, sharded = pair
    assert_same_results(one, sharded, encoder, corpus[1])


def test_documents_live_in_the_shard_of_their_id(pair):
    one, sharded = pair
    assert read_shards(sharded) == SHARDS and read_shards(one) is None
    assert check_any(sharded) == []
    info = sharded_info(sharded)
    assert info["documents"] == sharded_info(one)["documents"] == 240
    assert info["chunks"] == sharded_info(one)["chunks"]
    searcher = Searcher(sharded)
    try:
        for s, shard in enumerate(searcher.index.shards):
            ids = [r[0] for r in shard.store.db.execute("SELECT id FROM documents")]
            chunk_ids = [r[0] for r in shard.store.db.execute("SELECT chunk_id FROM chunks")]
            assert ids and all(shard_of(doc_id, SHARDS) == s for doc_id in ids)
            assert chunk_ids and all(c % SHARDS == s for c in chunk_ids)
            assert info["shards"][s]["documents"] == len(ids)
    finally:
        searcher.close()


def test_check_finds_a_document_in_the_wrong_shard(pair, tmp_path, encoder, config):
    _, sharded = pair
    doc = Document("misplaced", "Ein Dokument im falschen Shard.", lang="de")
    wrong = (shard_of(doc.id, SHARDS) + 1) % SHARDS
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(sharded, copy)
    from xlsearch.indexer.writing.writer import IndexWriter
    with IndexWriter(shard_dir(copy, wrong), encoder, config, chunk_ids=(wrong, SHARDS)) as writer:
        writer.upsert([doc])
        writer.commit()
    assert any("'misplaced' belongs in shard" in p for p in check_any(copy))


def test_updates_route_to_their_shard_and_match_unsharded(pair, corpus, encoder, config, tmp_path):
    import shutil
    one, sharded = (shutil.copytree(p, tmp_path / p.name) for p in pair)
    new = [Document(f"new-{i}", f"Neues Dokument Nummer {i} über Vulkane und grünen Tee.", lang="de")
           for i in range(12)]
    for directory in (one, sharded):
        with open_writer(directory, encoder, config) as writer:
            assert writer.upsert(new).added == 12
            assert writer.delete(["en-3", "de-5", "nope"]) == ["en-3", "de-5"]
            writer.commit()
    assert check_any(sharded) == []
    assert_same_results(one, sharded, encoder, corpus[1][:4] + ["Vulkane grüner Tee"])
    with open_writer(sharded, encoder, config) as writer:
        assert isinstance(writer, ShardedWriter)
        assert writer.upsert(new).unchanged == 12  # found in their shards: not re-embedded


def test_shard_count_is_fixed_and_centering_is_refused(pair, encoder, config, tmp_path):
    _, sharded = pair
    with pytest.raises(IndexMismatchError, match="3 shard"):
        open_writer(sharded, encoder, config, shards=2)
    with pytest.raises(ValueError, match="center-languages"):
        open_writer(tmp_path / "new", encoder, IndexConfig(**{**config.__dict__, "center_languages": True}), shards=2)


def test_cli_builds_searches_and_checks_a_sharded_index(tmp_path, corpus, cli_corpus, tiny_deberta_dir, monkeypatch,
                                                       capsys):
    monkeypatch.setenv("XLSEARCH_MODEL", str(tiny_deberta_dir))
    index = str(tmp_path / "index")
    assert main(["index", str(cli_corpus), "--index", index, "--layer", "2", "--chunk-tokens", "64", "--chunk-overlap", "8",
                 "--shards", "2"]) == 0
    assert main(["search", "--index", index, corpus[1][0], "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out.splitlines()[-1])["hits"]) == 10
    assert main(["info", "--index", index, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["documents"] == 60 and len(info["shards"]) == 2
    assert main(["check", "--index", index]) == 0
    assert main(["delete", "--index", index, "en-0", "zh-1"]) == 0
    assert "deleted 2 of 2" in capsys.readouterr().out
    assert main(["index", str(cli_corpus), "--index", index, "--shards", "4"]) == 1
    assert "resharding is not supported" in capsys.readouterr().err


def test_api_routes_documents_of_a_sharded_index(pair, tiny_deberta_dir, tmp_path):
    import shutil
    index = shutil.copytree(pair[1], tmp_path / "index")
    with TestClient(create_app(Settings(index=index, model=str(tiny_deberta_dir), device="cpu"))) as client:
        assert client.get("/documents/ru-7").json()["id"] == "ru-7"
        body = [{"id": "api-1", "text": "Документ о вулканах.", "lang": "ru"}]
        assert client.post("/documents", json=body).status_code == 200
        assert client.get("/documents/api-1").status_code == 200
        hits = client.post("/search", json={"query": "вулканах", "mode": "lexical", "k": 3}).json()["hits"]
        assert hits[0]["id"] == "api-1"
        assert client.delete("/documents/api-1").status_code == 200
        assert client.get("/documents/api-1").status_code == 404
        assert client.get("/info").json()["documents"] == 240
    assert check_any(index) == []


def test_cli_reports_bad_settings_without_a_traceback(tmp_path, corpus, tiny_deberta_dir, monkeypatch, capsys):
    monkeypatch.setenv("XLSEARCH_MODEL", str(tiny_deberta_dir))
    index = str(tmp_path / "index")
    assert main(["index", str(corpus[0]), "--index", index, "--chunk-tokens", "64"]) == 1
    assert "chunk_overlap must be in [0, chunk_tokens/2), got 32" in capsys.readouterr().err
    assert main(["index", str(corpus[0]), "--index", index, "--shards", "2", "--center-languages"]) == 1
    assert "cannot be combined with --shards" in capsys.readouterr().err
    assert not (tmp_path / "index" / "shards.json").exists()
    assert main(["index", str(corpus[0]), "--index", index, "--workers", "2"]) == 1
    assert "--workers needs --ray" in capsys.readouterr().err


def test_a_new_sharded_index_is_whole_or_absent_at_every_moment(tmp_path, corpus, encoder, config, tiny_deberta_dir,
                                                                 monkeypatch, capsys):
    """A first sharded run that fails early leaves no sharded index; one that is killed right after
    opening leaves an empty index every command can read, not shards without a manifest."""
    monkeypatch.setenv("XLSEARCH_MODEL", str(tiny_deberta_dir))
    failed = tmp_path / "failed"
    assert main(["index", str(corpus[0]), "--index", str(failed), "--shards", "3", "--layer", "99"]) == 1
    assert "layer" in capsys.readouterr().err and read_shards(failed) is None
    assert main(["info", "--index", str(failed)]) == 1  # no index there: said in one line
    assert "not an xlsearch index" in capsys.readouterr().err
    opened = tmp_path / "opened"
    writer = open_writer(opened, encoder, config, shards=3)
    writer.close()  # as if killed before its first real commit
    assert read_shards(opened) == 3 and check_any(opened) == []
    assert sharded_info(opened)["documents"] == 0
    assert Searcher(opened, encoder=encoder).search("anything", k=3).hits == []


def test_a_shard_that_cannot_commit_says_which_shards_did(tmp_path, encoder, config, monkeypatch):
    from xlsearch.indexer.errors import IndexWriteError
    from xlsearch.indexer.writing.writer import IndexWriter

    directory = tmp_path / "sharded"
    with open_writer(directory, encoder, config, shards=3) as writer:
        ids = {shard_of(f"doc-{i}", 3): f"doc-{i}" for i in range(20)}  # one document per shard
        writer.upsert([Document(ids[s], f"Document for shard {s}.", lang="en") for s in range(3)])
        original = IndexWriter.commit

        def commit(self):
            if self.directory == shard_dir(directory, 1):
                raise IndexWriteError(f"{self.directory}: could not commit (No space left on device); "
                                      "the index is unchanged")
            return original(self)

        monkeypatch.setattr(IndexWriter, "commit", commit)
        with pytest.raises(IndexWriteError, match=r"shard 1 is unchanged; shards 0 had committed their documents"):
            writer.commit()
    assert sharded_info(directory)["documents"] == 1  # shard 0's document; shards 1 and 2 unchanged
