"""One reader of record files: a file problem reads the same in every command that reads records."""
from __future__ import annotations

import pytest

from xlsearch.indexer.errors import CorpusError
from xlsearch.indexer.tasks.classify import read_labelled
from xlsearch.indexer.tasks.finetune import read_pairs
from xlsearch.indexer.text.corpus import read_documents

BAD_LINES = [
    ('{"x": NaN}\n', ":2: invalid JSON (NaN is not a number JSON allows)"),
    ("[1, 2]\n", ":2: expected a JSON object, got list"),
    ('{"x": ' + "[" * 5000 + "]" * 5000 + "}\n", ":2: invalid JSON (nested too deeply)"),
    (b'{"x": "\xff"}\n', ":2: invalid UTF-8 at byte 7"),
]
GOOD = {"documents": '{"id": "a", "text": "fine"}\n', "pairs": '{"query": "q", "positive": "p"}\n',
        "labelled": '{"text": "fine", "label": "x"}\n'}
READERS = {"documents": lambda path: list(read_documents([path])), "pairs": read_pairs,
           "labelled": lambda path: read_labelled(path, ["x"])}


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("line, message", BAD_LINES)
def test_each_reader_names_the_same_problem(tmp_path, reader, line, message):
    path = tmp_path / "in.jsonl"
    path.write_bytes(GOOD[reader].encode() + (line if isinstance(line, bytes) else line.encode()))
    with pytest.raises(CorpusError) as caught:
        READERS[reader](path)
    assert str(caught.value).startswith(str(path)) and message in str(caught.value)


@pytest.mark.parametrize("reader", sorted(READERS))
def test_an_unreadable_file_is_named(tmp_path, reader):
    path = tmp_path / "gone.jsonl"
    path.symlink_to(tmp_path / "nowhere.jsonl")  # listed, but nothing to read
    with pytest.raises(CorpusError, match="gone.jsonl: (no such file|cannot read it)"):
        READERS[reader](path)


def test_a_tsv_of_labels_keeps_quotes_as_text(tmp_path):
    path = tmp_path / "l.tsv"
    path.write_text('text\tcategory\n"quoted" words\tx\n\t\n', encoding="utf-8")
    assert read_labelled(path, ["x"]) == [('"quoted" words', "x")]
