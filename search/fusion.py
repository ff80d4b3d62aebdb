"""Fusion of ranked runs: plain functions over ``{id: score}`` dicts, no I/O.

Scores are "higher is better" everywhere. Ranks start at 1.
"""
from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

Run = dict[Hashable, float]
RRF_K = 60


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


# -- fusions of a dense and a lexical candidate list ----------------------------------------
@dataclass
class Candidates:
    """What a hybrid query knows about its candidate chunks, for the fusions below.

    Attributes:
        dense, lexical: The two ranked runs as retrieved (top ``depth`` chunks of each;
            cosine and BM25, higher is better).
        dense_all, lexical_all: Both scores of every chunk in either run (a chunk one side
            did not retrieve is scored by it exactly); filled by :meth:`complete`.
        query_weight: The query's IDF mass: the sum of the idf of its terms in the
            collection, a term the collection lacks counted as the rarest. An
            average-length chunk holding every query term once scores about this in BM25.
    """

    dense: Run
    lexical: Run
    dense_all: Run = field(default_factory=dict)
    lexical_all: Run = field(default_factory=dict)
    query_weight: float = 0.0

    def complete(self, dense_score, lexical_score) -> Candidates:
        """Fill ``dense_all``/``lexical_all``: ``dense_score(ids)``/``lexical_score(ids)`` score the chunks
        a run lacks (sequences of floats in the order of ``ids``)."""
        for run, scorer, target in ((self.dense, dense_score, "dense_all"), (self.lexical, lexical_score, "lexical_all")):
            missing = [key for key in {**self.dense, **self.lexical} if key not in run]
            scores = dict(run)
            if missing:
                scores.update(zip(missing, (float(s) for s in scorer(missing))))
            setattr(self, target, scores)
        return self


def _zscores(run: Run) -> Run:
    """(score - mean) / std over the run's own scores (all 0 when they are equal)."""
    if not run:
        return {}
    values = np.fromiter(run.values(), np.float64, len(run))
    std = float(values.std())
    mean = float(values.mean())
    return {key: 0.0 if std == 0 else (score - mean) / std for key, score in run.items()}


def _softmax(run: Run, temperature: float) -> Run:
    if not run:
        return {}
    values = np.fromiter(run.values(), np.float64, len(run)) / temperature
    weights = np.exp(values - values.max())
    weights /= weights.sum()
    return dict(zip(run, weights.tolist()))


def fuse_rrf(c: Candidates, alpha: float) -> Run:
    return rrf([c.dense, c.lexical], RRF_K, [2 * alpha, 2 * (1 - alpha)])


def fuse_linear(c: Candidates, alpha: float) -> Run:
    return linear([c.dense, c.lexical], [alpha, 1 - alpha])


def fuse_zscore(c: Candidates, alpha: float) -> Run:
    dense, lexical = _zscores(c.dense_all), _zscores(c.lexical_all)
    return {key: 2 * alpha * dense[key] + 2 * (1 - alpha) * lexical[key] for key in dense}


def fuse_dbsf(c: Candidates, alpha: float) -> Run:
    """Qdrant's distribution-based score fusion: each run scaled by mean -/+ 3 std to [0, 1], summed."""
    fused: Run = {}
    for run, weight in ((c.dense, 2 * alpha), (c.lexical, 2 * (1 - alpha))):
        if not run:
            continue
        values = np.fromiter(run.values(), np.float64, len(run))
        low, high = values.mean() - 3 * values.std(), values.mean() + 3 * values.std()
        for key, score in run.items():
            scaled = 0.5 if high == low else min(1.0, max(0.0, (score - low) / (high - low)))
            fused[key] = fused.get(key, 0.0) + weight * scaled
    return fused


def coverage(c: Candidates) -> Run:
    """BM25 of each candidate over the query's IDF mass: about the share of the query it covers."""
    scale = c.query_weight if c.query_weight > 0 else 1.0
    return {key: score / scale for key, score in c.lexical_all.items()}


EVIDENCE_DENSE_TEMPERATURE = 1.0  # softmax over z-scores of the cosines
EVIDENCE_LEXICAL_TEMPERATURE = 0.1  # softmax over coverage: 0.1 more of the query's IDF mass is e times likelier
EVIDENCE_CONFIDENT_Z = 3.0  # a dense winner this many standard deviations out halves the lexical vote
EVIDENCE_SLOPE = 2.0  # per standard deviation, in the logistic that scales the lexical vote


def fuse_evidence(c: Candidates, alpha: float) -> Run:
    """Each side votes with a probability over the candidates, the lexical vote scaled by the dense side's doubt.

    Dense: a softmax of the cosines' z-scores; lexical: a softmax of each chunk's query coverage (BM25
    over the query's IDF mass) at temperature 0.1. The lexical vote is multiplied by a logistic in how
    far the dense side's best candidate stands out (half at 3 standard deviations), so a confident
    encoder keeps its order and an unsure one lets the query's words decide. ``alpha`` 0.5 weighs
    the two votes as described; larger favours the dense side.
    """
    if not c.dense_all:
        return {}
    dense_z = _zscores(c.dense_all)
    dense = _softmax(dense_z, EVIDENCE_DENSE_TEMPERATURE)
    lexical = _softmax(coverage(c), EVIDENCE_LEXICAL_TEMPERATURE)
    lead = max(dense_z.values())
    doubt = 1.0 / (1.0 + math.exp(min(50.0, (lead - EVIDENCE_CONFIDENT_Z) * EVIDENCE_SLOPE)))
    return {key: 2 * alpha * dense[key] + 2 * (1 - alpha) * doubt * lexical[key] for key in dense}


BACKED_SHARE = 0.1  # of the vote that goes to the lexical side, backed by the dense side


def fuse_backed(c: Candidates, alpha: float) -> Run:
    """The dense side leads; the lexical side may only reorder what the dense side believes in.

    Dense votes with the same softmax of the cosines' z-scores as :func:`fuse_evidence`; a tenth of
    the vote goes to the lexical softmax of query coverage multiplied by the dense probability of each
    candidate and renormalised, so a chunk the encoder ranks far down cannot be lifted by shared words
    alone (a same-language sentence that shares the question's words but is not its answer). ``alpha``
    scales the lexical share from 0.1 (at 0.5) towards 0 (at 1) or 0.2 (at 0).
    """
    if not c.dense_all:
        return {}
    dense = _softmax(_zscores(c.dense_all), EVIDENCE_DENSE_TEMPERATURE)
    backed = _backed(_softmax(coverage(c), EVIDENCE_LEXICAL_TEMPERATURE), dense)
    share = 2 * (1 - alpha) * BACKED_SHARE
    return {key: (1 - share) * dense[key] + share * backed[key] for key in dense}


def _backed(lexical: Run, dense: Run) -> Run:
    """The lexical probabilities multiplied by the dense ones and renormalised (all 0 when nothing is left)."""
    product = {key: lexical[key] * dense[key] for key in dense}
    total = sum(product.values())
    return {key: value / total if total > 0 else 0.0 for key, value in product.items()}


ANCHORED_TEMPERATURE = 0.05  # softmax over coverage: 0.05 more of the query's IDF mass is e times likelier
ANCHORED_BACKED_SHARE = 0.3  # of the lexical lead, given to lexical x dense probabilities
ANCHORED_FULL_COVERAGE = 0.15  # the best lexical hit covering this much of the query gives the words their full lead


def fuse_anchored(c: Candidates, alpha: float) -> Run:
    """The query's words lead where they find something; the dense side decides where they find nothing.

    For raw encoders, which are often worse than BM25 within one language. The lexical vote is a softmax
    of each chunk's query coverage at temperature 0.05, seven tenths of it as it is and three tenths
    multiplied by the dense probability (as in :func:`fuse_backed`) and renormalised, so the encoder
    orders what the words support. That vote's share grows linearly with the coverage of the best
    lexical hit, to all of it at 0.15 of the query's IDF mass; the rest goes to the dense probabilities,
    so a query whose words match nothing (another script) keeps the encoder's order. ``alpha`` 0.5 as
    described; larger shrinks the words' share (none at 1).
    """
    if not c.dense_all:
        return {}
    dense = _softmax(_zscores(c.dense_all), EVIDENCE_DENSE_TEMPERATURE)
    covered = coverage(c)
    lexical = _softmax(covered, ANCHORED_TEMPERATURE)
    backed = _backed(lexical, dense)
    lead = min(1.0, max(0.0, max(covered.values()) / ANCHORED_FULL_COVERAGE)) * min(1.0, 2 * (1 - alpha))
    share = ANCHORED_BACKED_SHARE
    return {key: (1 - lead) * dense[key] + lead * ((1 - share) * lexical[key] + share * backed[key])
            for key in dense}


SCORE_BOTH_SIDES = frozenset({"zscore", "evidence", "backed", "anchored"})  # fusions that read dense_all / lexical_all / query_weight
FUSIONS = {"rrf": fuse_rrf, "linear": fuse_linear, "zscore": fuse_zscore, "dbsf": fuse_dbsf,
           "evidence": fuse_evidence, "backed": fuse_backed, "anchored": fuse_anchored}


def fuse(name: str, candidates: Candidates, alpha: float = 0.5) -> Run:
    """Fused scores of every candidate by the fusion ``name`` (a key of :data:`FUSIONS`)."""
    return FUSIONS[name](candidates, alpha)
