"""xlsearch search --queries: many queries in one process, and a TREC run."""
from __future__ import annotations

import pytest

from xlsearch.api.cli.main import main
from xlsearch.indexer.errors import CorpusError
from xlsearch.search.queries import read_queries

TOPICS = """<top>
<num> Number: 301
<title> Topic: volcano
   eruption

<desc> Description:
Documents about volcanoes.
</top>

<top>
<num> 302
<title> green tea
</top>
"""


def test_three_formats_read_the_same_queries(tmp_path):
    (tmp_path / "q.jsonl").write_text('{"id": "301", "query": "volcano eruption"}\n\n'
                                      '{"_id": 302, "text": "green tea"}\n', encoding="utf-8")
    (tmp_path / "q.tsv").write_text('301\tvolcano eruption\n302\t"green" tea\n', encoding="utf-8")
    (tmp_path / "q.trec").write_text(TOPICS, encoding="utf-8")
    assert read_queries(tmp_path / "q.jsonl") == [("301", "volcano eruption"), ("302", "green tea")]
    assert read_queries(tmp_path / "q.tsv") == [("301", "volcano eruption"), ("302", '"green" tea')]
    assert read_queries(tmp_path / "q.trec") == [("301", "volcano eruption"), ("302", "green tea")]


@pytest.mark.parametrize("name, content, message", [
    ("q.jsonl", '{"id": "a", "query": "x"}\n{"id": "a", "query": "y"}\n', "q.jsonl:2: query id 'a' appears twice"),
    ("q.jsonl", '{"query": "x"}\n', "q.jsonl:1: a query needs an id"),
    ("q.tsv", "a\tx\nb\n", "q.tsv:2: query 'b' has no text"),
    ("q.trec", "\n\n<top>\n<num> 7\n</top>\n", "q.trec:3: topic 7 has no <title>"),
    ("q.trec", "", "q.trec: no queries found"),
])
def test_bad_query_files_are_named(tmp_path, name, content, message):
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(CorpusError, match=message):
        read_queries(tmp_path / name)


def test_batch_search_writes_a_trec_run(tmp_path, sample_index, capsys):
    topics = tmp_path / "topics.trec"
    topics.write_text(TOPICS, encoding="utf-8")
    run = tmp_path / "run.txt"
    assert main(["search", "--index", str(sample_index), "--queries", str(topics), "--mode", "lexical",
                 "-k", "3", "--run", str(run)]) == 0
    assert "answered 2 of 2 queries" in capsys.readouterr().out
    lines = [line.split() for line in run.read_text(encoding="utf-8").splitlines()]
    assert {line[0] for line in lines} == {"301", "302"} and all(len(line) == 6 for line in lines)
    ranks = [int(line[3]) for line in lines if line[0] == "301"]
    assert ranks == list(range(1, len(ranks) + 1))
    assert any(line[0] == "301" and "volcano" in line[2] for line in lines)
    assert {line[5] for line in lines} == {"xlsearch-lexical"}
    # one query per line as JSON without --run; a query and --queries together are refused
    assert main(["search", "--index", str(sample_index), "--queries", str(topics), "--mode", "lexical",
                 "--json"]) == 0
    assert [line[:14] for line in capsys.readouterr().out.splitlines()] == ['{"qid": "301",', '{"qid": "302",']
    assert main(["search", "--index", str(sample_index), "tea", "--queries", str(topics)]) == 1
    assert "one of them" in capsys.readouterr().err
