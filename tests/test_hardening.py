"""Exact filter semantics, `check` never loading a damaged file, and a client abort that is no 500."""
from __future__ import annotations

import pytest

from xlsearch.indexer.config import IndexConfig
from xlsearch.indexer.document import Document
from xlsearch.indexer.errors import IndexFormatError
from xlsearch.indexer.store import check
from xlsearch.indexer.store.check import check_index
from xlsearch.indexer.writing.writer import IndexWriter
from xlsearch.search.searcher import Searcher

DOCS = [
    Document("quoted", "alpha text", metadata={'say "hi"': "yes", "n": 1}),
    Document("listed", "alpha text", metadata={"tags": ["x", "y"], "tag": "x", "n": 1.0}),
    Document("flags", "alpha text", metadata={"ok": True, "n": "1", "zero": 0}),
    Document("nested", "alpha text", metadata={"o": {"k": "v"}, "ok": False}),
]


@pytest.fixture(scope="module")
def index(tmp_path_factory, encoder):
    directory = tmp_path_factory.mktemp("filters") / "i"
    with IndexWriter(directory, encoder, IndexConfig(layer=2)) as writer:
        writer.upsert(DOCS)
        writer.commit()
    return directory


@pytest.mark.parametrize("filter, expected", [
    ({'say "hi"': "yes"}, {"quoted"}),  # a key with a quote matches
    ({"tags": '["x", "y"]'}, set()),  # a string never matches a list's JSON text
    ({"tags": "x"}, set()),  # nor an element of it: lists match no filter
    ({"tag": "x"}, {"listed"}),
    ({"n": 1}, {"quoted", "listed"}),  # numbers by value: 1 == 1.0, the string "1" is not a number
    ({"n": "1"}, {"flags"}),
    ({"ok": True}, {"flags"}),
    ({"ok": False}, {"nested"}),
    ({"zero": False}, set()),  # 0 is a number, not false
    ({"o": '{"k": "v"}'}, set()),
])
def test_filters_match_one_json_type_exactly(index, filter, expected):
    searcher = Searcher(index)
    try:
        found = {hit.id for hit in searcher.search("alpha", k=10, mode="lexical", filter=filter).hits}
    finally:
        searcher.close()
    assert found == expected


def test_check_never_loads_a_file_that_failed_its_checksum(tmp_path, index, monkeypatch):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(index, copy)
    (dense,) = copy.glob("seg.*/dense.faiss")
    data = bytearray(dense.read_bytes())
    data[-1] ^= 0xFF  # same size, other content
    dense.write_bytes(bytes(data))

    def refuse(*args, **kwargs):
        raise AssertionError("a damaged file was handed to FAISS")

    monkeypatch.setattr(check.Segment, "load", refuse)
    problems = check_index(copy)
    assert any("does not match the manifest's SHA-256" in p and "dense.faiss" in p for p in problems)


def test_a_client_that_goes_away_is_logged_as_499_not_500(caplog):
    """The body limit stops reading when the client disconnects; that is no server error."""
    import asyncio
    import logging

    from xlsearch.api.http.middleware import BodyLimitMiddleware, RequestLogMiddleware

    async def app(scope, receive, send):  # never reached: the body never arrives
        raise AssertionError("the app ran without a body")

    async def receive():
        return {"type": "http.disconnect"}

    async def send(message):
        raise AssertionError("nothing should be sent to a client that left")

    stack = RequestLogMiddleware(BodyLimitMiddleware(app, max_bytes=1024))
    scope = {"type": "http", "method": "POST", "path": "/documents", "headers": []}
    with caplog.at_level(logging.INFO, logger="xlsearch.api.http.middleware"):
        asyncio.run(stack(scope, receive, send))
    assert [r.getMessage().split()[:3] for r in caplog.records] == [["POST", "/documents", "499"]]


def test_a_document_over_the_size_limit_is_a_bad_record(tmp_path):
    """Every input path refuses a document longer than the limit, naming it, before any work."""
    import json

    from xlsearch.indexer.errors import CorpusError
    from xlsearch.indexer.text.corpus import CorpusReport, read_documents

    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps({"id": "small", "text": "a few words"}) + "\n"
                    + json.dumps({"id": "big", "text": "word " * 300}) + "\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"big.jsonl:2: record 'big' has 1,500 characters of text, over the "
                                          r"limit of 1,000 \(--max-document-chars\)"):
        list(read_documents([path], max_chars=1000))
    report = CorpusReport()
    assert [d.id for d in read_documents([path], skip_bad=True, report=report, max_chars=1000)] == ["small"]
    assert len(report.bad) == 1
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "long.txt").write_text("x" * 2000, encoding="utf-8")
    with pytest.raises(CorpusError, match="long.txt:1: record 'long.txt' has 2,000 characters"):
        list(read_documents([tmp_path / "folder"], max_chars=1000))
    assert len(list(read_documents([path]))) == 2  # the default limit is far above both


def test_the_cli_limit_is_checked_before_the_model_loads(tmp_path, capsys):
    from xlsearch.api.cli.main import main

    path = tmp_path / "d.jsonl"
    path.write_text('{"id": "big", "text": "' + "word " * 300 + '"}\n', encoding="utf-8")
    code = main(["index", str(path), "--index", str(tmp_path / "i"), "--model", str(tmp_path / "no-model"),
                 "--max-document-chars", "1000"])
    assert code == 1 and "over the limit of 1,000" in capsys.readouterr().err


def test_a_folder_input_does_not_follow_links_out_of_the_folder(tmp_path, caplog):
    import logging

    from xlsearch.indexer.text.corpus import read_documents

    outside = tmp_path / "private.txt"
    outside.write_text("a secret outside the folder", encoding="utf-8")
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("inside text", encoding="utf-8")
    (folder / "sub" / "inner-link.txt").symlink_to(folder / "a.txt")  # stays inside: followed
    (folder / "leak.txt").symlink_to(outside)
    with caplog.at_level(logging.WARNING):
        ids = [d.id for d in read_documents([folder])]
    assert ids == ["a.txt", "sub/inner-link.txt"]
    assert any("leak.txt" in r.getMessage() and "outside" in r.getMessage() for r in caplog.records)


def test_a_chunk_whose_document_row_is_gone_is_a_damaged_index_not_a_crash(sample_index, tiny_deberta_dir):
    import sqlite3

    from fastapi.testclient import TestClient

    from test_api import make_settings
    from xlsearch.api.http.app import create_app

    with sqlite3.connect(sample_index / "docs.sqlite") as conn:
        conn.execute("DELETE FROM documents WHERE id = 'en-tea-01'")
    with pytest.raises(IndexFormatError, match="belongs to document 'en-tea-01', which is not stored"):
        Searcher(sample_index).search("green tea", k=3, mode="lexical")
    with TestClient(create_app(make_settings(sample_index, tiny_deberta_dir))) as client:
        response = client.post("/search", json={"query": "green tea", "mode": "lexical"})
    assert response.status_code == 503 and response.json()["error"] == "index_damaged"
