"""Hostile input: random Unicode records, huge lines, strange runs. Never a crash, nothing lost."""
from __future__ import annotations

import csv
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xlsearch.indexer.text.chunking import chunk_text
from xlsearch.indexer.text.corpus import CorpusReport, read_documents
from xlsearch.indexer.errors import CorpusError
from xlsearch.search.fusion import linear, rrf

# Any code point, surrogates included (JSON escapes can carry them), plus the nasty classics.
TEXT = st.text(alphabet=st.characters(codec=None), max_size=200) | st.sampled_from(
    ["", " ", "\u200f\u202e abc", "e\u0301\u0301", "🙂👍🏽", "\x00\x01", "../x", "\ud800", "x" * 2000])
VALUE = st.one_of(st.none(), st.integers(), st.booleans(), TEXT, st.lists(st.integers(), max_size=3))
RECORD = st.fixed_dictionaries({}, optional={"id": VALUE, "_id": VALUE, "text": VALUE, "title": VALUE,
                                             "lang": VALUE, "extra": VALUE})

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(st.lists(RECORD, max_size=12))
def test_jsonl_records_are_read_or_refused_and_none_is_lost(tmp_path, records):
    path = tmp_path / "random.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    report = CorpusReport()
    docs = list(read_documents([path], skip_bad=True, report=report))
    assert report.documents == len(docs) and len(docs) + len(report.bad) == len(records)
    for doc in docs:
        sources = [r for r in records if str(r.get("id", r.get("_id"))) == doc.id]  # ids may repeat
        assert any(r.get("text") == doc.text for r in sources) and doc.text.strip()
    for message in report.bad:
        assert message.startswith(f"{path}:")
    try:
        assert len(list(read_documents([path]))) == len(records)
    except CorpusError as exc:
        assert str(exc).startswith(f"{path}:") and report.bad


@SETTINGS
@given(st.lists(st.tuples(TEXT, TEXT), max_size=8))
def test_csv_rows_are_read_or_refused(tmp_path, rows):
    path = tmp_path / "random.csv"
    with open(path, "w", encoding="utf-8", newline="", errors="surrogatepass") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerows(rows)
    report = CorpusReport()
    docs = list(read_documents([path], skip_bad=True, report=report))
    assert len(docs) + len(report.bad) == len(rows)  # every row is read or reported, none lost
    assert all(d.text.strip() and d.id.strip() for d in docs)
    assert all(message.startswith(f"{path}:") for message in report.bad)


def test_a_one_megabyte_line_is_read_whole(tmp_path):
    text = ("Lorem ipsum dolor sit amet. " * 40000)[:1_000_000]
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps({"id": "big", "text": text}) + "\n", encoding="utf-8")
    (doc,) = read_documents([path])
    assert doc.text == text


@pytest.mark.slow
def test_a_very_long_document_chunks_completely(tiny_model):
    text = " ".join(["Der Vulkan bricht aus. 火山が噴火した。 Вулкан проснулся!"] * 3000)
    chunks = chunk_text(text, tiny_model.tokenizer, budget=254, overlap=32)
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    assert all(text[a.end:b.start].strip() == "" for a, b in zip(chunks, chunks[1:]) if b.start > a.end)


RUN = st.dictionaries(st.integers(0, 30), st.floats(-1e6, 1e6, allow_nan=False), max_size=15)


@settings(max_examples=300, deadline=None)
@given(st.lists(RUN, min_size=1, max_size=3), st.integers(1, 100))
def test_rrf_is_finite_covers_every_id_and_rewards_rank(runs, k):
    fused = rrf(runs, k=k)
    assert set(fused) == set().union(*runs)
    assert all(0 < score <= len(runs) / (k + 1) + 1e-12 for score in fused.values())
    if len(runs) == 1 and runs[0]:
        best = max(runs[0].values())
        assert all(fused[key] == max(fused.values()) for key, score in runs[0].items() if score == best
                   and key == next(k_ for k_, s in runs[0].items() if s == best))


@settings(max_examples=300, deadline=None)
@given(st.lists(RUN, min_size=1, max_size=3), st.floats(0, 1))
def test_linear_stays_within_its_weights(runs, alpha):
    weights = [alpha] + [1 - alpha] * (len(runs) - 1)
    fused = linear(runs, weights)
    assert set(fused) == set().union(*runs)
    assert all(math.isfinite(v) and -1e-9 <= v <= sum(weights) + 1e-9 for v in fused.values())


WORST_RUNS = [".", "!", "?", "…", "?!", "。", "।", "\n", "\"", "😀", "e\u0301", "\u0301", "/", "ا\u064b", "\u200b"]


def test_no_regex_of_the_product_backtracks_on_long_runs():
    """Each pattern on 200,000-character runs of the characters it treats specially, in a child
    process: linear matching takes well under a second; the quadratic sentence split this
    replaced needed about an hour for 200,000 dots, so a 120 s limit cannot be met by it."""
    import subprocess
    import sys

    script = """
import sys
from xlsearch.indexer.text.analysis import analyze
from xlsearch.indexer.text.chunking import _SENTENCE_END
from xlsearch.api.http.errors import _ABSOLUTE_PATH
from xlsearch.indexer.text.records import _INVALID_BYTE
from xlsearch.indexer.text.validation import _CONTROL, _SURROGATE
for unit in %r:
    text = unit * (200_000 // len(unit))
    for tail in ("", "x", " "):
        for pattern in (_SENTENCE_END, _ABSOLUTE_PATH, _INVALID_BYTE, _CONTROL, _SURROGATE):
            sum(1 for _ in pattern.finditer(text + tail))
        analyze(text[:50_000] + tail)
print("ok")
""" % (WORST_RUNS,)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.parametrize("unit", [".", "?!", "…", "。"])
def test_a_run_of_sentence_ends_without_space_is_one_boundary_at_most(unit):
    from xlsearch.indexer.text.chunking import _SENTENCE_END

    assert list(_SENTENCE_END.finditer(unit * 5000 + "x")) == [] or unit == "。"
    matches = [m.span() for m in _SENTENCE_END.finditer("a" + unit * 5000 + " b")]
    assert matches == [(1, 2 + len(unit) * 5000)]


@pytest.mark.parametrize("line, message", [
    ('{"id": "a", "text": "t", "score": NaN}', "NaN is not a number JSON allows"),
    ('{"id": "a", "text": "t", "score": -Infinity}', "-Infinity is not a number JSON allows"),
    ('{"id": "a", "text": "t", "n": ' + "9" * 5000 + "}", "invalid JSON"),
    ('{"id": "a", "text": "t", "deep": ' + "[" * 5000 + "]" * 5000 + "}", "nested too deeply"),
])
def test_json_that_only_python_accepts_is_a_line_error(tmp_path, line, message):
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "ok", "text": "fine"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=f"{path}:2: .*{message}"):
        list(read_documents([path]))
    report = CorpusReport()
    assert [d.id for d in read_documents([path], skip_bad=True, report=report)] == ["ok"]
    assert len(report.bad) == 1


def test_check_reports_stored_metadata_that_is_not_json(sample_index):
    import sqlite3

    from xlsearch.indexer.store.check import check_index

    assert check_index(sample_index) == []
    db = sqlite3.connect(sample_index / "docs.sqlite")
    doc_id = db.execute("SELECT id FROM documents LIMIT 1").fetchone()[0]
    db.execute("UPDATE documents SET metadata = ? WHERE id = ?", ('{"score": NaN}', doc_id))
    db.commit()
    db.close()
    assert any(f"document {doc_id!r}: stored metadata is not valid JSON" in p for p in check_index(sample_index))


def test_a_document_with_non_finite_metadata_is_never_serialised():
    from xlsearch.indexer.document import Document

    with pytest.raises(ValueError):
        Document("a", "text", metadata={"x": math.nan}).row()


def test_a_csv_field_over_the_csv_module_limit_is_a_line_error(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id,text\nok,fine\nbig," + "x" * 200_000 + "\nafter,also fine\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=f"{path}:3: field larger than field limit"):
        list(read_documents([path]))
    report = CorpusReport()
    assert [d.id for d in read_documents([path], skip_bad=True, report=report)] == ["ok", "after"]
    assert len(report.bad) == 1


def test_an_unreadable_file_in_a_folder_is_a_file_error(tmp_path, monkeypatch):
    from pathlib import Path

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("readable", encoding="utf-8")
    (folder / "d.txt").write_text("secret", encoding="utf-8")
    read_bytes = Path.read_bytes

    def refuse(self):  # root reads a mode-0 file, so the refusal is simulated
        if self.name == "d.txt":
            raise PermissionError(13, "Permission denied")
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", refuse)
    report = CorpusReport()
    assert [d.text for d in read_documents([folder], skip_bad=True, report=report)] == ["readable"]
    assert len(report.bad) == 1
    with pytest.raises(CorpusError, match="d.txt: cannot read it \\(Permission denied\\)"):
        list(read_documents([folder]))


def test_a_byte_order_mark_on_the_first_jsonl_line_is_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + '{"id": "a", "text": "first"}\n{"id": "b", "text": "second"}\n'.encode())
    assert [d.id for d in read_documents([path])] == ["a", "b"]
