"""Retrieval metrics of ranked runs against relevance judgments, computed by ir-measures.

Metric names are lower-case strings with a cutoff, as in ranx: ``mrr@10``,
``ndcg@10``, ``recall@100``, ``map@20``, ``precision@5``, ``accuracy@1``. They map to
ir-measures' ``RR@k``, ``nDCG@k``, ``R@k``, ``AP@k``, ``P@k`` and ``Success@k``,
which ir-measures computes with trec_eval (through pytrec_eval). ``accuracy@1`` is
``Success@1``: 1 when the top document is relevant (bitext retrieval accuracy when
each query has one relevant document). ``map@k`` is trec_eval's ``map_cut``: the sum
of precision at each relevant document in the top k, divided by the number of
relevant documents R. LAReQA's mAP@20 divides by ``min(R, 20)``, so the two agree
whenever a query has at most 20 relevant documents (XQuAD-R questions have 11).

Two things trec_eval does that a caller would not expect are undone here:

* It orders a run by score and breaks ties by document id. Runs are passed here as
  ranked lists and given strictly decreasing scores, so our ranking order is the one
  scored, ties included.
* It skips queries that have no retrieved document. Means here are over every
  judged query that has at least one relevant document; a query missing from the run
  scores 0.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ...indexer.errors import MetricError, XlsearchError

Run = Mapping[str, Sequence[str]]  # query id -> document ids, best first
Qrels = Mapping[str, Mapping[str, int]]  # query id -> document id -> relevance (> 0 relevant)

_FAMILIES = {"mrr": "RR", "ndcg": "nDCG", "recall": "R", "map": "AP", "precision": "P", "accuracy": "Success"}
_NAME = re.compile(r"^([a-z]+)@([1-9][0-9]*)$")



def measure(name: str):
    """The ir-measures measure of a metric name such as ``ndcg@10``.

    Raises:
        MetricError: Unknown family or missing cutoff; the message lists the valid ones.
    """
    import ir_measures

    match = _NAME.match(name)
    if match is None or match.group(1) not in _FAMILIES:
        raise MetricError(f"unknown metric {name!r}; use one of {', '.join(f'{f}@K' for f in _FAMILIES)}")
    return ir_measures.parse_measure(f"{_FAMILIES[match.group(1)]}@{match.group(2)}")


def judged_queries(qrels: Qrels) -> list[str]:
    """Query ids with at least one relevant document, in qrels order."""
    return [qid for qid, docs in qrels.items() if any(rel > 0 for rel in docs.values())]


def per_query(run: Run, qrels: Qrels, metrics: Sequence[str]) -> dict[str, dict[str, float]]:
    """Each metric for each judged query: ``{metric: {query_id: value}}``, 0 for unretrieved queries.

    Args:
        run: Ranked document ids per query, best first (repeated ids are dropped).
        qrels: Relevance judgments; documents with relevance <= 0 are not relevant.
        metrics: Metric names (see the module docstring).
    """
    import ir_measures

    measures = {name: measure(name) for name in metrics}
    queries = judged_queries(qrels)
    wanted = set(queries)
    scored = {qid: _scores(docs) for qid, docs in run.items() if qid in wanted and docs}
    judged = {qid: {doc: int(rel) for doc, rel in qrels[qid].items()} for qid in queries}
    values: dict[str, dict[str, float]] = {name: dict.fromkeys(queries, 0.0) for name in metrics}
    by_measure = {str(m): name for name, m in measures.items()}
    if scored:
        for result in ir_measures.iter_calc(list(measures.values()), judged, scored):
            values[by_measure[str(result.measure)]][result.query_id] = float(result.value)
    return values


def mean_metrics(run: Run, qrels: Qrels, metrics: Sequence[str]) -> dict[str, float]:
    """Each metric averaged over every judged query (see :func:`per_query`); 0.0 with no query."""
    values = per_query(run, qrels, metrics)
    return {name: (sum(v.values()) / len(v) if v else 0.0) for name, v in values.items()}


def _scores(docs: Sequence[str]) -> dict[str, float]:
    """Strictly decreasing scores that keep the given order (first occurrence of a repeated id wins)."""
    ranked = list(dict.fromkeys(docs))
    return {doc: float(len(ranked) - rank) for rank, doc in enumerate(ranked)}


def trec_lines(run: Mapping[str, Sequence[tuple[str, float]]], tag: str) -> Iterable[str]:
    """TREC run lines ``qid Q0 docid rank score tag`` (rank from 1) of scored, ranked hits."""
    for qid, hits in run.items():
        for rank, (doc, score) in enumerate(hits, 1):
            yield f"{qid} Q0 {doc} {rank} {score:.6g} {tag}"


def write_trec_run(path: str | Path, runs: Mapping[str, Mapping[str, Sequence[tuple[str, float]]]]) -> None:
    """Write runs (``{tag: {qid: [(docid, score), ...]}}``) to one TREC run file.

    Raises:
        XlsearchError: An id contains whitespace (the format is whitespace-separated),
            or the file cannot be written.
    """
    lines = []
    for tag, run in runs.items():
        for line in trec_lines(run, tag):
            if len(line.split()) != 6:
                raise XlsearchError(f"cannot write a TREC run: an id in {line!r} contains whitespace")
            lines.append(line)
    try:
        Path(path).write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
    except OSError as exc:
        raise XlsearchError(f"{path}: cannot write the run file ({exc.strerror})") from None
