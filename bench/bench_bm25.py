"""Benchmark xlsearch's BM25Index against rank-bm25's BM25Okapi on real multilingual text.

Builds both on the same analyzed chunks (NTREX-128 lines of every second language,
then Tatoeba lines), runs XQuAD questions in 12 languages through both, checks that
the top 10 agree (ties aside) and prints one JSON line with latencies.

    python bench/bench_bm25.py --chunks 120000 --queries 60
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from rank_bm25 import BM25Okapi

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout

from xlsearch.indexer.config import ANALYZER  # noqa: E402
from xlsearch.indexer.text.analysis import analyze  # noqa: E402
from xlsearch.indexer.store.lexical import BM25Index  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
XQUAD_LANGS = ("ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh")
TOP = 10


def read_chunks(data: Path, count: int) -> list[str]:
    """Return ``count`` lines: NTREX-128 (every second language), then Tatoeba."""
    ntrex = sorted((data / "ntrex" / "NTREX-128").glob("*.txt"))[::2]
    tatoeba = sorted((data / "tatoeba").glob("tatoeba.*-eng.*"))
    lines: list[str] = []
    for path in ntrex + tatoeba:
        lines.extend(line for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
        if len(lines) >= count:
            return lines[:count]
    raise SystemExit(f"only {len(lines)} lines in {data}; ask for fewer --chunks")


def read_queries(data: Path, count: int) -> list[str]:
    """Return ``count`` XQuAD questions, spread over 12 languages."""
    per_lang = -(-count // len(XQUAD_LANGS))
    queries = []
    for lang in XQUAD_LANGS:
        articles = json.loads((data / "xquad" / f"xquad.{lang}.json").read_text(encoding="utf-8"))["data"]
        questions = [qa["question"] for a in articles for p in a["paragraphs"] for qa in p["qas"]]
        queries.extend(questions[:: max(1, len(questions) // per_lang)][:per_lang])
    return queries[:count]


def same_top(ids: np.ndarray, scores: np.ndarray, reference: np.ndarray) -> bool:
    """True if ``(ids, scores)`` is rank-bm25's top 10 up to the order of tied scores."""
    expected = np.sort(reference[reference > 0])[::-1][:TOP]
    if len(ids) != len(expected) or not np.allclose(scores, expected, rtol=1e-10, atol=0):
        return False
    if not np.allclose(reference[ids], scores, rtol=1e-10, atol=0):
        return False
    order = np.argsort(reference)[::-1][:TOP]
    strict = order[reference[order] > (expected[-1] if len(expected) else 0)]
    return set(strict.tolist()) <= set(ids.tolist())


def machine() -> str:
    """Describe the CPU and library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cpus, Python {platform.python_version()}, numpy {np.__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=120_000, help="number of chunks to index")
    parser.add_argument("--queries", type=int, default=60, help="number of XQuAD questions to run")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared/benchmarks directory")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        parser.error(f"benchmark data not found: {args.data}")

    texts = read_chunks(args.data, args.chunks)
    queries = [analyze(q) for q in read_queries(args.data, args.queries)]
    start = time.perf_counter()
    tokens = [analyze(t) for t in texts]
    tokenize_s = time.perf_counter() - start

    start = time.perf_counter()
    index = BM25Index()
    index.add(np.arange(len(tokens)), tokens)
    index.search(queries[0], TOP)  # merges the added block and computes idf
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    reference = BM25Okapi(tokens)
    reference_build_s = time.perf_counter() - start

    ours_ms, theirs_ms, identical = [], [], True
    for query in queries:
        start = time.perf_counter()
        ids, scores = index.search(query, TOP)
        ours_ms.append((time.perf_counter() - start) * 1e3)
        start = time.perf_counter()
        ref_scores = reference.get_scores(query)
        np.argsort(ref_scores)[::-1][:TOP]
        theirs_ms.append((time.perf_counter() - start) * 1e3)
        identical &= same_top(ids, scores, ref_scores)

    p50_ours, p50_theirs = statistics.median(ours_ms), statistics.median(theirs_ms)
    print(json.dumps({
        "bench": "bm25", "chunks": len(tokens), "queries": len(queries), "analyzer": ANALYZER,
        "rank_bm25_ms_p50": round(p50_theirs, 3), "xlsearch_ms_p50": round(p50_ours, 3),
        "rank_bm25_ms_mean": round(statistics.fmean(theirs_ms), 3),
        "xlsearch_ms_mean": round(statistics.fmean(ours_ms), 3),
        "speedup_p50": round(p50_theirs / p50_ours, 1),
        "speedup_mean": round(statistics.fmean(theirs_ms) / statistics.fmean(ours_ms), 1),
        "top10_identical": bool(identical), "build_s": round(build_s, 3),
        "rank_bm25_build_s": round(reference_build_s, 3), "tokenize_s": round(tokenize_s, 3),
        "vocabulary": index.vocabulary_size, "machine": machine(),
    }))
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
