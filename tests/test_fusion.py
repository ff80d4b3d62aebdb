"""Fusion maths against hand-computed values."""
from __future__ import annotations

import typing

import pytest

from xlsearch.search.fusion import FUSIONS, Candidates, coverage, fuse, linear, min_max, ranks, rrf


def test_rrf_by_hand():
    dense = {"a": 0.9, "b": 0.8, "c": 0.1}
    lexical = {"c": 12.0, "a": 3.0}
    fused = rrf([dense, lexical], k=60)
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["b"] == pytest.approx(1 / 62)
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 61)


def test_weighted_rrf():
    fused = rrf([{"a": 1.0}, {"a": 1.0, "b": 0.5}], k=60, weights=[1.5, 0.5])
    assert fused["a"] == pytest.approx(1.5 / 61 + 0.5 / 61)
    assert fused["b"] == pytest.approx(0.5 / 62)


def test_ranks_order_by_score():
    assert ranks({"x": 0.1, "y": 0.7, "z": 0.4}) == {"y": 1, "z": 2, "x": 3}


def test_tied_scores_share_a_rank_whatever_their_order():
    assert ranks({"a": 2.0, "b": 1.0, "c": 2.0, "d": 0.5}) == {"a": 1, "c": 1, "b": 3, "d": 4}
    one = rrf([{"x": 3.0, "y": 3.0, "z": 1.0}, {"z": 1.0}])
    other = rrf([{"y": 3.0, "x": 3.0, "z": 1.0}, {"z": 1.0}])
    assert one == other and one["x"] == one["y"] == 1 / 61


def test_min_max_and_linear_by_hand():
    assert min_max({"a": 2.0, "b": 4.0, "c": 3.0}) == {"a": 0.0, "b": 1.0, "c": 0.5}
    assert min_max({"a": 5.0, "b": 5.0}) == {"a": 1.0, "b": 1.0}
    assert min_max({}) == {}
    fused = linear([{"a": 0.9, "b": 0.5}, {"b": 10.0, "c": 2.0}], [0.25, 0.75])
    assert fused == pytest.approx({"a": 0.25, "b": 0.75, "c": 0.0})


# -- fusions of a dense and a lexical candidate list ----------------------------------------
def _candidates(dense: dict, lexical: dict, query_weight: float = 10.0) -> Candidates:
    return Candidates(dense, lexical, query_weight=query_weight).complete(
        lambda ids: [0.0 for _ in ids], lambda ids: [0.0 for _ in ids])


def test_complete_scores_every_candidate_on_both_sides():
    seen = {}

    def dense_score(ids):
        seen["dense"] = list(ids)
        return [0.5 for _ in ids]

    def lexical_score(ids):
        seen["lexical"] = list(ids)
        return [2.0 for _ in ids]

    c = Candidates({1: 0.9, 2: 0.8}, {2: 7.0, 3: 4.0}).complete(dense_score, lexical_score)
    assert seen == {"dense": [3], "lexical": [1]}
    assert c.dense_all == {1: 0.9, 2: 0.8, 3: 0.5} and c.lexical_all == {2: 7.0, 3: 4.0, 1: 2.0}


def test_coverage_is_bm25_over_the_query_idf_mass():
    c = _candidates({1: 0.5}, {1: 4.0, 2: 1.0}, query_weight=8.0)
    assert coverage(c) == {1: 0.5, 2: 0.125}


def test_evidence_lets_the_words_decide_when_the_encoder_cannot_tell():
    dense = {i: 0.80 + 0.001 * (i % 3) for i in range(40)}  # no candidate stands out
    fused = fuse("evidence", _candidates(dense, {7: 6.0, 8: 1.0}))
    assert max(fused, key=fused.get) == 7


def test_evidence_keeps_a_confident_encoder_s_order():
    dense = {i: 0.50 for i in range(40)} | {0: 0.95}  # one candidate 6 standard deviations out
    lexical = {5: 6.0, 6: 5.5}  # the words point elsewhere
    fused = fuse("evidence", _candidates(dense, lexical))
    assert max(fused, key=fused.get) == 0
    assert fused[5] > fused[1]  # the lexical evidence still orders the rest


@pytest.mark.parametrize("name", ["evidence", "backed", "anchored"])
def test_the_dense_order_stands_where_the_words_match_nothing(name):
    dense = {i: 0.9 - 0.01 * i for i in range(20)}
    nothing = {i: 0.0 for i in range(20)}  # another script: no query word in any chunk
    for found in ({}, nothing):
        fused = fuse(name, _candidates(dense, found, query_weight=10.0))
        assert sorted(fused, key=fused.get, reverse=True) == sorted(dense, key=dense.get, reverse=True)
    assert fuse(name, Candidates({}, {})) == {}


def test_backed_lets_the_words_reorder_only_what_the_encoder_believes_in():
    dense = {i: 0.50 + 0.001 * i for i in range(40)} | {1: 0.80, 2: 0.79}  # two candidates stand out, 1 first
    fused = fuse("backed", _candidates(dense, {2: 6.0, 30: 9.0}))  # the words back 2, and a chunk dense ranks low
    assert sorted(fused, key=fused.get, reverse=True)[:2] == [2, 1]  # backed by both: 2 moves up
    assert fused[30] < fused[1]  # shared words alone do not lift a chunk the encoder ranks far down
    evidence = fuse("evidence", _candidates(dense, {2: 6.0, 30: 9.0}))
    assert evidence[30] > fused[30]


def test_anchored_lets_words_that_cover_the_query_lead():
    dense = {i: 0.50 + 0.001 * i for i in range(40)} | {1: 0.80}  # a raw encoder's confident pick, 1
    fused = fuse("anchored", _candidates(dense, {7: 8.0, 1: 1.0}, query_weight=10.0))  # 7 covers 0.8 of the query
    assert max(fused, key=fused.get) == 7
    assert fused[1] > fused[2]  # the dense side still orders what the words do not decide


def test_anchored_lead_grows_with_the_best_hit_s_coverage():
    dense = {i: 0.9 - 0.01 * i for i in range(20)}
    ranks, scores = [], []
    for bm25 in (0.3, 0.9, 1.5, 3.0):  # the dense side's last chunk covers 0.03, 0.09, 0.15, 0.3 of the query
        fused = fuse("anchored", _candidates(dense, {19: bm25}, query_weight=10.0))
        ranks.append(sorted(fused, key=fused.get, reverse=True).index(19))
        scores.append(fused[19])
    assert scores == sorted(scores) and ranks == sorted(ranks, reverse=True)
    assert ranks[0] > 0 and ranks[-1] == 0  # a few shared words do not overturn the encoder; a covered query does
    alpha_one = fuse("anchored", _candidates(dense, {19: 3.0}, query_weight=10.0), alpha=1.0)
    assert sorted(alpha_one, key=alpha_one.get, reverse=True) == sorted(dense, key=dense.get, reverse=True)


@pytest.mark.parametrize("name", sorted(FUSIONS))
def test_every_fusion_scores_the_union_deterministically(name):
    dense, lexical = {1: 0.9, 2: 0.7, 3: 0.6}, {3: 9.0, 4: 2.0}
    one, two = fuse(name, _candidates(dense, lexical)), fuse(name, _candidates(dense, lexical))
    assert one == two and set(one) == {1, 2, 3, 4}


def test_the_api_offers_exactly_the_searcher_s_fusions():
    from xlsearch.api.http.schemas import Fusion
    from xlsearch.search.options import DEFAULT_FUSION
    from xlsearch.search.options import FUSIONS as SEARCH_FUSIONS

    assert set(typing.get_args(Fusion)) == set(SEARCH_FUSIONS) == {"auto", *FUSIONS}
    assert DEFAULT_FUSION == "auto"
