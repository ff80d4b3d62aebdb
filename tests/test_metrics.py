"""Metrics (through ir-measures) against values computed by hand on toy runs."""
from __future__ import annotations

import math

import pytest

from xlsearch.indexer.errors import XlsearchError
from xlsearch.search.eval.metrics import MetricError, judged_queries, mean_metrics, per_query, write_trec_run

QRELS = {
    "q1": {"d1": 1, "d3": 1, "d7": 0},
    "q2": {"d9": 1},
    "q3": {"d5": 1},  # judged but never retrieved: scores 0, is not skipped
    "q4": {"d2": 0},  # no relevant document: not a judged query
}
RUN = {
    "q1": ["d2", "d1", "d4", "d3"],
    "q2": ["d9"],
    "q4": ["d2"],
    "q5": ["d1"],  # not judged: ignored
}


def test_per_query_values_by_hand():
    values = per_query(RUN, QRELS, ["mrr@10", "recall@1", "recall@5", "precision@2", "accuracy@1", "map@20",
                                    "ndcg@10"])
    assert judged_queries(QRELS) == ["q1", "q2", "q3"]
    assert values["mrr@10"] == pytest.approx({"q1": 1 / 2, "q2": 1.0, "q3": 0.0})
    assert values["recall@1"] == pytest.approx({"q1": 0.0, "q2": 1.0, "q3": 0.0})
    assert values["recall@5"] == pytest.approx({"q1": 1.0, "q2": 1.0, "q3": 0.0})
    assert values["precision@2"] == pytest.approx({"q1": 1 / 2, "q2": 1 / 2, "q3": 0.0})
    assert values["accuracy@1"] == pytest.approx({"q1": 0.0, "q2": 1.0, "q3": 0.0})
    assert values["map@20"] == pytest.approx({"q1": (1 / 2 + 2 / 4) / 2, "q2": 1.0, "q3": 0.0})
    dcg = 1 / math.log2(3) + 1 / math.log2(5)  # relevant at ranks 2 and 4
    ideal = 1 / math.log2(2) + 1 / math.log2(3)
    assert values["ndcg@10"] == pytest.approx({"q1": dcg / ideal, "q2": 1.0, "q3": 0.0})


def test_means_count_unretrieved_queries_as_zero():
    means = mean_metrics(RUN, QRELS, ["mrr@10", "recall@5"])
    assert means == pytest.approx({"mrr@10": (0.5 + 1 + 0) / 3, "recall@5": (1 + 1 + 0) / 3})
    assert mean_metrics({}, QRELS, ["mrr@10"]) == {"mrr@10": 0.0}
    assert mean_metrics({}, {}, ["mrr@10"]) == {"mrr@10": 0.0}


def test_cutoffs_and_graded_relevance():
    qrels = {"q": {"rel": 2, "half": 1}}
    ranked = [f"x{i}" for i in range(10)] + ["rel"]  # relevant only at rank 11
    assert per_query({"q": ranked}, qrels, ["mrr@10", "recall@20"]) == {"mrr@10": {"q": 0.0},
                                                                         "recall@20": {"q": 0.5}}
    # trec_eval's nDCG uses the relevance as the gain: DCG = 1/log2(2) + 2/log2(3), ideal = 2 + 1/log2(3)
    value = per_query({"q": ["half", "rel"]}, qrels, ["ndcg@10"])["ndcg@10"]["q"]
    assert value == pytest.approx((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)))


def test_our_order_is_scored_not_trec_evals_tie_break():
    qrels = {"q": {"a": 1}}
    assert per_query({"q": ["b", "a"]}, qrels, ["mrr@10"])["mrr@10"]["q"] == 0.5
    assert per_query({"q": ["a", "b"]}, qrels, ["mrr@10"])["mrr@10"]["q"] == 1.0
    assert per_query({"q": ["b", "b", "a"]}, qrels, ["mrr@10"])["mrr@10"]["q"] == 0.5  # repeats dropped


def lareqa_average_precision(targets: set[str], ranked: list[str], k: int) -> float:
    """LAReQA's AP@k (google-research-datasets/lareqa), written out for the comparison."""
    hits = score = 0.0
    for i, doc in enumerate(ranked[:k]):
        if doc in targets and doc not in ranked[:i]:
            hits += 1
            score += hits / (i + 1)
    return score / min(len(targets), k)


@pytest.mark.parametrize("ranked", [["a", "x", "b", "y", "z"], ["x"] * 0 + ["y", "c", "b", "a"],
                                    [f"n{i}" for i in range(19)] + ["a"], ["n1", "n2"]])
def test_map_at_20_equals_lareqa(ranked):
    targets = {"a", "b", "c"}
    value = per_query({"q": ranked}, {"q": dict.fromkeys(targets, 1)}, ["map@20"])["map@20"]["q"]
    assert value == pytest.approx(lareqa_average_precision(targets, ranked, 20))


def test_map_example_by_hand():
    value = per_query({"q": ["a", "x", "b"]}, {"q": {"a": 1, "b": 1, "c": 1}}, ["map@20"])["map@20"]["q"]
    assert value == pytest.approx((1 / 1 + 2 / 3) / 3)


@pytest.mark.parametrize("name", ["foo@10", "ndcg", "ndcg@0", "NDCG@10", "mrr@x"])
def test_bad_metric_names(name):
    with pytest.raises(MetricError, match="unknown metric"):
        per_query(RUN, QRELS, [name])


def test_trec_run_file(tmp_path):
    path = tmp_path / "run.trec"
    write_trec_run(path, {"xlsearch-lexical": {"t/q1": [("d1", 2.5), ("d2", 1.0)]},
                          "xlsearch-dense-L8": {"t/q1": [("d2", 0.9)]}})
    assert path.read_text().splitlines() == ["t/q1 Q0 d1 1 2.5 xlsearch-lexical", "t/q1 Q0 d2 2 1 xlsearch-lexical",
                                             "t/q1 Q0 d2 1 0.9 xlsearch-dense-L8"]
    with pytest.raises(XlsearchError, match="whitespace"):
        write_trec_run(path, {"tag": {"q 1": [("d1", 1.0)]}})
