"""Fusion maths against hand-computed values."""
from __future__ import annotations

import pytest

from search.fusion import linear, min_max, ranks, rrf


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
