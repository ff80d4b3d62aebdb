"""Query-time cost of each hybrid fusion: two candidate lists of depth 200, half shared.

Times ``search.fusion.fuse`` alone (the candidates are already scored by both sides, as
the searcher hands them over) and prints one JSON line: per fusion the median and p99
microseconds per query and the ratio to RRF, measured in one run.

    python bench/bench_fusion.py [--depth 200] [--queries 2000]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xlsearch.search.fusion import FUSIONS, Candidates, fuse  # noqa: E402


def candidates(rng: np.random.Generator, depth: int) -> Candidates:
    dense_ids = rng.choice(100_000, depth, replace=False)
    lexical_ids = np.concatenate([dense_ids[: depth // 2], rng.choice(100_000, depth - depth // 2) + 100_000])
    dense = dict(zip(dense_ids.tolist(), np.sort(rng.uniform(0.6, 0.9, depth))[::-1].tolist()))
    lexical = dict(zip(lexical_ids.tolist(), np.sort(rng.gamma(2.0, 3.0, depth))[::-1].tolist()))
    c = Candidates(dense, lexical, query_weight=25.0)
    return c.complete(lambda ids: rng.uniform(0.5, 0.6, len(ids)), lambda ids: np.zeros(len(ids)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=200)
    parser.add_argument("--queries", type=int, default=2000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    queries = [candidates(rng, args.depth) for _ in range(args.queries)]
    result = {"depth": args.depth, "queries": args.queries, "load_average": os.getloadavg()[0], "fusions": {}}
    for name in FUSIONS:
        times = []
        for c in queries:
            started = time.perf_counter()
            fuse(name, c)
            times.append(time.perf_counter() - started)
        result["fusions"][name] = {"p50_us": round(float(np.median(times)) * 1e6, 1),
                                   "p99_us": round(float(np.percentile(times, 99)) * 1e6, 1)}
    rrf = result["fusions"]["rrf"]["p50_us"]
    for stats in result["fusions"].values():
        stats["vs_rrf"] = round(stats["p50_us"] / rrf, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
