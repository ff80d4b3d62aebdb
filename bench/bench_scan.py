"""Exact dense search: the fp32 scan against the int8 scan with fp32 rescoring, one JSON line.

Vectors: Tatoeba sentences (112 language pairs, round-robin) and XQuAD questions encoded by
``--model`` (default multilingual-e5-small, the real multilingual encoder; or the random-weight
mdeberta-v3-base shape, whose vectors crowd together), through ``bench_dense.encode`` (cached in
/tmp); ``--synthetic N`` adds N vectors resampled from them with noise (not real text). For k = 10
(one query's dense list) and k = 50 (the hybrid mode's depth at k = 10): CPU time per query at
one thread (p50, p99) of each scan, their ratio, the share of rows the int8 scan rescored in fp32
(median, max), whether every top k had the same scores (rows of equal score may swap), and whether
the index made its int8 copy (not under ``indexer.store.dense.INT8_SCAN_MIN_BYTES`` of vectors).
For batches of m = 2..64 queries at k = 50 (``DenseIndex.search_many``): CPU time per query of one
scan per query (the copy's, where it has one) and of one fp32 matrix product per batch, their ratio
and whether both gave the same top k scores; ``search_many`` takes the product from
``indexer.store.dense.PRODUCT_MIN_QUERIES`` queries (``PRODUCT_MIN_QUERIES_COPY`` over an int8 copy).

Usage: ``python bench/bench_scan.py [--model multilingual-e5-small] [--docs 20000] [--synthetic 100000]``
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a plain checkout
sys.path.insert(0, str(REPO / "bench"))

from bench_dense import encode, synthetic  # noqa: E402
from machine_facts import cpu_flags, cpu_name  # noqa: E402
from xlsearch.indexer.store import dense  # noqa: E402
from xlsearch.indexer.store.int8_scan import Int8Scan  # noqa: E402
from xlsearch.indexer.store.dense import DenseIndex  # noqa: E402


def timed_search(index: DenseIndex, queries: np.ndarray, k: int) -> tuple[list[np.ndarray], list[float], list[int]]:
    index.search(queries[0], k)
    index.search(queries[0], k)  # the int8 copy is made from the second search on
    tops, times, rescored = [], [], []
    for query in queries:
        started = time.process_time()
        _, scores = index.search(query, k)
        times.append(time.process_time() - started)
        tops.append(scores)
        scan = index._scan[1] if index._scan else None
        rescored.append(scan.rescored if scan is not None else len(index))
    return tops, times, rescored


def compare(vectors: np.ndarray, queries: np.ndarray) -> dict:
    index = DenseIndex(vectors.shape[1])
    index.add(list(range(len(vectors))), vectors)
    out = {"vectors": len(vectors)}
    for k in (10, 50):
        os.environ[dense.INT8_SCAN_ENV] = "off"
        exact, fp32_times, _ = timed_search(index, queries, k)
        os.environ[dense.INT8_SCAN_ENV] = "auto"
        got, int8_times, rescored = timed_search(index, queries, k)
        ms = lambda times, q: round(float(np.percentile(times, q)) * 1e3, 2)  # noqa: E731
        out[f"k{k}"] = {"fp32_cpu_ms": {"p50": ms(fp32_times, 50), "p99": ms(fp32_times, 99)},
                        "int8_cpu_ms": {"p50": ms(int8_times, 50), "p99": ms(int8_times, 99)},
                        "speedup_p50": round(float(np.median(fp32_times) / np.median(int8_times)), 2),
                        "int8_copy_kept": isinstance(index._scan[1], Int8Scan) if index._scan else False,
                        "rescored_share": {"median": round(float(np.median(rescored)) / len(vectors), 4),
                                           "max": round(max(rescored) / len(vectors), 4)},
                        # Scores, not ids: rows of equal score (duplicate texts) may come in either order.
                        "same_top_k_scores": all(np.allclose(a, b, rtol=1e-6, atol=0) for a, b in zip(exact, got))}
    out["batch_k50"] = batches(index, queries, 50)
    return out


def batches(index: DenseIndex, queries: np.ndarray, k: int) -> dict:
    """Per query CPU time (ms) of m scans against one product of m queries, m = 2..64."""
    out = {}
    for m in (2, 4, 8, 16, 32, 64):
        batch = queries[:m]
        started = time.process_time()
        scanned = [scores for _, scores in index._search_flat(batch, k, product=False)]
        scan = time.process_time() - started
        started = time.process_time()
        product = [scores for _, scores in index._search_flat(batch, k, product=True)]
        multiplied = time.process_time() - started
        out[m] = {"scans_ms": round(scan / m * 1e3, 2), "product_ms": round(multiplied / m * 1e3, 2),
                  "ratio": round(scan / multiplied, 2),
                  "same_top_k_scores": all(np.allclose(a, b, rtol=1e-5, atol=0) for a, b in zip(scanned, product))}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="multilingual-e5-small", help="encoder (name or directory)")
    parser.add_argument("--layer", type=int, default=12, help="pooled layer")
    parser.add_argument("--docs", type=int, default=20_000, help="collection sentences to encode")
    parser.add_argument("--queries", type=int, default=200, help="query questions to encode")
    parser.add_argument("--synthetic", type=int, default=100_000, help="also run on this many resampled vectors (0: no)")
    args = parser.parse_args(argv)
    import torch
    import threadpoolctl

    torch.set_num_threads(1)
    threadpoolctl.threadpool_limits(1)
    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    data = encode(args.model, args.layer, args.docs, args.queries)
    out = {"bench": "dense_scan", "model": args.model, "layer": args.layer, "threads": 1,
           "min_bytes": dense.INT8_SCAN_MIN_BYTES,
           "cpu": cpu_name(), "cpu_flags": cpu_flags(),
           "real": compare(data["docs"], data["queries"])}
    if args.synthetic:
        out["synthetic"] = compare(synthetic(data["docs"], args.synthetic), data["queries"])
    out["loadavg_1min"] = [load_start, os.getloadavg()[0]]
    out["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
