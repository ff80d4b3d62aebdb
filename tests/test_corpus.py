"""Corpus readers: every format, and every bad record named as file:line."""
from __future__ import annotations

import json

import pytest

from conftest import SAMPLE
from xlsearch.indexer.text.corpus import CorpusReport, read_documents
from xlsearch.indexer.errors import CorpusError


def read(paths, **kwargs):
    return list(read_documents(paths, **kwargs))


def test_sample_collection_reads_with_metadata():
    docs = read([SAMPLE])
    assert len(docs) >= 40
    assert len({d.lang for d in docs}) >= 8
    assert {"zh", "ar", "ru", "hi"} <= {d.lang for d in docs}
    assert all(d.metadata.get("source") for d in docs)


def test_jsonl_fields_and_beir_ids(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"_id": 7, "title": "", "text": "Seven", "url": "u"}\n\n'
                    '{"id": "b", "text": "Bee", "lang": "en", "title": "B"}\n', encoding="utf-8")
    first, second = read([path])
    assert (first.id, first.title, first.text, first.metadata) == ("7", None, "Seven", {"url": "u"})
    assert (second.id, second.title, second.lang) == ("b", "B", "en")


def test_csv_and_tsv(tmp_path):
    (tmp_path / "a.csv").write_text('id,text,title,source\n1,"Hello, world",Greeting,web\n', encoding="utf-8")
    (tmp_path / "b.tsv").write_text("id\ttext\tlang\n2\tПривет\tru\n", encoding="utf-8")
    docs = read([tmp_path / "a.csv", tmp_path / "b.tsv"])
    assert [(d.id, d.text, d.lang) for d in docs] == [("1", "Hello, world", None), ("2", "Привет", "ru")]
    assert docs[0].metadata == {"source": "web"} and docs[0].title == "Greeting"


def test_folder_of_text_files(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("plain text", encoding="utf-8")
    (tmp_path / "sub" / "b.md").write_text("intro\n# The Title\nbody", encoding="utf-8")
    (tmp_path / "skip.bin").write_bytes(b"\x00\x01")
    docs = read([tmp_path])
    assert [(d.id, d.title) for d in docs] == [("a.txt", None), ("sub/b.md", "The Title")]


def test_a_folder_without_text_files_names_the_record_files_it_holds(tmp_path):
    """``xlsearch index data/`` on a folder of JSONL and TSV files: an error, not an empty index (its TSV may
    be queries)."""
    (tmp_path / "sample.jsonl").write_text('{"id": "a", "text": "x"}\n', encoding="utf-8")
    (tmp_path / "queries.tsv").write_text("q\ta\n", encoding="utf-8")
    (tmp_path / "notes.bin").write_bytes(b"\x00")
    with pytest.raises(CorpusError, match=r"no \.txt or \.md file below it; record files are read when named: "
                                          r"\S*queries\.tsv \S*sample\.jsonl$"):
        read([tmp_path])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match=r"empty: no \.txt or \.md file below it$"):
        read([tmp_path / "empty"])
    report = CorpusReport()  # a bad input as any other: --skip-bad lists it and goes on
    docs = list(read_documents([tmp_path / "empty", tmp_path / "sample.jsonl"], skip_bad=True, report=report))
    assert [d.id for d in docs] == ["a"] and report.bad == [f"{tmp_path / 'empty'}: no .txt or .md file below it"]


@pytest.mark.parametrize("content, message", [
    ('{"text": "no id"}\n', ":1: record has no id"),
    ('{"id": "a"}\n', ":1: record 'a' has no text"),
    ('{"id": "a", "text": "   "}\n', ":1: record 'a' has no text"),
    ('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', ":2: duplicate id 'a'"),
    ('{"id": "a", "text": "x"}\n{oops\n', ":2: invalid JSON"),
    ('[1, 2]\n', ":1: expected a JSON object"),
    ('{"id": "a", "text": "x", "title": 5}\n', ":1: field 'title' must be a string"),
])
def test_bad_jsonl_records_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(CorpusError) as error:
        read([path])
    assert str(error.value).startswith(str(path)) and message in str(error.value)


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"id": "a", "text": "ok"}\n{"id": "b", "text": "\xff"}\n')
    with pytest.raises(CorpusError, match=r"bad.jsonl:2: invalid UTF-8"):
        read([path])


def test_csv_without_required_columns(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("name,body\nx,y\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad.csv:1: header needs 'id' and 'text'"):
        read([path])


def test_csv_bad_row_line_number(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text('id,text\n1,"multi\nline"\n2,\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad.csv:4: record '2' has no text"):
        read([path])


def test_skip_bad_counts_and_keeps_the_good(tmp_path):
    path = tmp_path / "mixed.jsonl"
    lines = [{"id": "a", "text": "ok"}, {"id": "a", "text": "dup"}, {"text": "no id"}, {"id": "b", "text": "ok"}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n{bad\n", encoding="utf-8")
    report = CorpusReport()
    docs = read([path], skip_bad=True, report=report)
    assert [d.id for d in docs] == ["a", "b"]
    assert report.documents == 2 and len(report.bad) == 3
    assert all(str(path) in message for message in report.bad)


def test_missing_path_and_unknown_format(tmp_path):
    with pytest.raises(CorpusError, match="no such file or directory"):
        read([tmp_path / "missing.jsonl"])
    (tmp_path / "x.xml").write_text("<a/>")
    with pytest.raises(CorpusError, match="unknown corpus format"):
        read([tmp_path / "x.xml"])
