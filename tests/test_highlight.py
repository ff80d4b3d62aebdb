"""Highlights: the spans of a passage that matched the query's terms, in any script."""
from __future__ import annotations

import json

from xlsearch.api.cli.main import main
from xlsearch.indexer.text.analysis import analyze
from xlsearch.search.highlight import highlights

PASSAGE = "谁第一个登上了月球？ Neil Armstrong walked on the MOON; universities, الكتاب, co-operation"


def _marked(query: str) -> list[str]:
    return [PASSAGE[a:b] for a, b in highlights(PASSAGE, analyze(query))]


def test_words_match_as_bm25_matches_them():
    assert _marked("moon") == ["MOON"]  # case and width folded as the analyzer folds them
    assert _marked("University") == ["universities"]  # the five-letter prefix BM25 also matches
    assert _marked("كتاب") == ["الكتاب"]  # the Arabic article, as the analyzer strips it
    assert _marked("月球 第一个") == ["第一个", "月球"]  # CJK bigrams, adjacent ones merged
    assert _marked("operation") == ["operation"]
    assert _marked("volcano") == [] and highlights(PASSAGE, []) == []


def test_hits_carry_highlights_in_json(sample_index, capsys):
    assert main(["search", "--index", str(sample_index), "volcano eruption", "--mode", "lexical", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert hits and all(h["highlights"] == sorted(h["highlights"]) for h in hits)
    top = hits[0]
    words = {top["passage"][a:b].casefold() for a, b in top["highlights"]}
    assert words and all(w.startswith(("volca", "erupt")) for w in words)
