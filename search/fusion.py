"""Fusion of ranked runs: plain functions over ``{id: score}`` dicts, no I/O.

Scores are "higher is better" everywhere. Ranks start at 1.
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence

Run = dict[Hashable, float]


def ranks(run: Run) -> dict[Hashable, int]:
    """1-based competition ranks by descending score: equal scores share the best rank
    ("1224"), so a fused score does not depend on how ties happened to be ordered
    (by row in one index, by chunk id across shards)."""
    ordered = sorted(run.items(), key=lambda item: -item[1])
    out: dict[Hashable, int] = {}
    previous, rank = None, 0
    for position, (key, score) in enumerate(ordered, 1):
        if score != previous:
            previous, rank = score, position
        out[key] = rank
    return out


def rrf(runs: Sequence[Run], k: int = 60, weights: Sequence[float] | None = None) -> Run:
    """Reciprocal rank fusion (Cormack et al. 2009): ``sum_i w_i / (k + rank_i(d))``.

    Args:
        runs: Ranked runs; an id missing from a run contributes nothing for it.
        k: Rank constant (60 in the paper).
        weights: One weight per run, default 1 each.

    Returns:
        Fused scores of every id in any run.
    """
    weights = weights if weights is not None else [1.0] * len(runs)
    fused: Run = {}
    for run, weight in zip(runs, weights):
        for key, rank in ranks(run).items():
            fused[key] = fused.get(key, 0.0) + weight / (k + rank)
    return fused


def min_max(run: Run) -> Run:
    """Scale scores to [0, 1] by the run's own min and max (all 1.0 when they are equal)."""
    if not run:
        return {}
    low, high = min(run.values()), max(run.values())
    if high == low:
        return {key: 1.0 for key in run}
    return {key: (score - low) / (high - low) for key, score in run.items()}


def linear(runs: Sequence[Run], weights: Sequence[float]) -> Run:
    """Weighted sum of min-max normalised scores; a missing id scores 0 in that run."""
    fused: Run = {}
    for run, weight in zip(runs, weights):
        for key, score in min_max(run).items():
            fused[key] = fused.get(key, 0.0) + weight * score
    return fused
