"""Queries per second answered one at a time and in batches (``Searcher.search_many``); one JSON line.

Indexes (once, cached under /tmp) ``--paragraphs`` XQuAD paragraphs per language (12
languages) with the real multilingual encoder (multilingual-e5-small, through xlsearch's
loader), then answers ``--queries`` XQuAD questions in hybrid mode twice: one ``search``
call per query (the model runs once per query) and one ``search_many`` call (queries
encoded in length-sorted batches of 32), as ``xlsearch search --queries`` does. Reports
wall and CPU time of each, their ratio, and whether both gave the same top 10.

    python bench/bench_batch_search.py
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "xquad"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def xquad(paragraphs: int) -> tuple[list, list[str]]:
    from xlsearch.indexer.document import Document

    docs, questions = [], []
    for path in sorted(DATA.glob("xquad.*.json")):
        lang = path.name.split(".")[1]
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
        contexts = [p for article in data for p in article["paragraphs"]][:paragraphs]
        docs += [Document(f"{lang}-{i}", p["context"], lang=lang) for i, p in enumerate(contexts)]
        questions += [qa["question"] for p in contexts for qa in p["qas"][:1]]
    return docs, questions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--paragraphs", type=int, default=20, help="XQuAD paragraphs per language (default 20)")
    parser.add_argument("--queries", type=int, default=200, help="questions asked (default 200)")
    parser.add_argument("--index", type=Path, default=Path("/tmp/xlsearch-batch-search"))
    args = parser.parse_args(argv)
    from xlsearch.indexer.config import IndexConfig
    from xlsearch.indexer.encoding.encoder import Encoder
    from xlsearch.indexer.encoding.model import load_model
    from xlsearch.indexer.writing.writer import IndexWriter
    from xlsearch.search.searcher import Searcher

    docs, questions = xquad(args.paragraphs)
    questions = (questions * (args.queries // max(len(questions), 1) + 1))[:args.queries]
    if not (args.index / "manifest.json").is_file():
        encoder = Encoder(load_model("multilingual-e5-small", "cpu"))
        with IndexWriter(args.index, encoder, IndexConfig(model_name="multilingual-e5-small")) as writer:
            writer.upsert(docs)
            writer.commit()
    searcher = Searcher(args.index)
    searcher.search(questions[0], k=10)  # loads the model
    timings, tops = {}, {}
    for name in ("one_at_a_time", "batched"):
        wall, cpu = time.perf_counter(), cpu_seconds()
        if name == "batched":
            results = searcher.search_many(questions, k=10)
        else:
            results = [searcher.search(q, k=10) for q in questions]
        timings[name] = {"wall_s": round(time.perf_counter() - wall, 2), "cpu_s": round(cpu_seconds() - cpu, 2),
                         "queries_per_s": round(len(questions) / (time.perf_counter() - wall), 1)}
        tops[name] = [[h.id for h in r.hits] for r in results]
    searcher.close()
    print(json.dumps({
        "bench": "batch_search", "model": "multilingual-e5-small", "mode": "hybrid", "k": 10,
        "documents": len(docs), "queries": len(questions), **timings,
        "ratio_wall": round(timings["one_at_a_time"]["wall_s"] / timings["batched"]["wall_s"], 2),
        "ratio_cpu": round(timings["one_at_a_time"]["cpu_s"] / timings["batched"]["cpu_s"], 2),
        "same_top10": tops["one_at_a_time"] == tops["batched"],
        "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
        "loadavg": [round(x, 2) for x in os.getloadavg()]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
