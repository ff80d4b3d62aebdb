"""Dense index kinds against exact search on real text vectors, one JSON line.

Vectors: real multilingual text encoded by the product's encoder (``load_model`` +
``Encoder.encode(texts, layer)``, mean-pooled, L2-normalised) with the model in
``--model``, by default ``/tmp/mdeberta-shape`` (the exact shape of
microsoft/mdeberta-v3-base with *random* weights, made by
``python bench/bench_api.py --exact-shape DIR``). The vectors therefore have the
shape, anisotropy and token statistics of real text, but are not semantically
trained: recall here measures how well each kind reproduces exact search on such
vectors, not retrieval quality.

* Collection: ``--docs`` sentences from ``../shared/benchmarks/tatoeba`` (all 112
  language pairs, both sides, taken round-robin across files so any prefix spans
  every language; duplicates dropped).
* Queries: ``--queries`` XQuAD questions, round-robin across its 12 languages.
* Encoded vectors are cached in ``/tmp`` (keyed by model fingerprint, layer and counts).

For each kind (``flat-ip`` is the reference): build/train seconds, recall@10 against
exact search at the default ``nprobe`` and over an ``nprobe`` sweep, p50 single-query
latency as a ratio to exact search (numpy fast path), recall after removing 10% of
the vectors, recall of a filtered search (German only, under 1% of the collection;
and a random 25%), and memory per vector: the file size, the resident memory taken by
reading the file, and the steady-state estimate (code + id + id map; the file and
resident figures also carry the ``nlist * dim * 4`` bytes of centroids, which
dominate at small sizes).

``--synthetic N`` adds a run on N vectors made from the real ones (each a real vector
plus Gaussian noise, renormalised), labelled ``synthetic`` in the output, to show
training time and latency at scale; it is not real text.

Usage: ``python bench/bench_dense.py [--model DIR] [--docs 10000] [--queries 300]
[--synthetic 0] [--kinds ivf-flat,ivf-sq8]`` The first run encodes
(about 4 min on 2 idle cores, 11 min measured under a load average of 6); with cached
vectors it takes under a minute, plus ~1.5 min for ``--synthetic 200000``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a plain checkout

from xlsearch.indexer.config import APPROXIMATE  # noqa: E402
from xlsearch.indexer.store.ann import bytes_per_vector, default_nprobe, nlist_for
from xlsearch.indexer.store.dense import DenseIndex

BENCHMARKS = REPO.parent / "shared" / "benchmarks"
SWEEP = (4, 8, 16, 32, 48, 64, 96)
K = 10


def round_robin(sources: list[list[str]], count: int) -> list[str]:
    """Up to ``count`` distinct texts, one from each source in turn."""
    seen: dict[str, None] = {}
    for row in range(max(map(len, sources))):
        for lines in sources:
            if row < len(lines) and lines[row].strip():
                seen.setdefault(lines[row].strip())
                if len(seen) >= count:
                    return list(seen)
    return list(seen)


def read_texts(docs: int, queries: int) -> tuple[list[str], list[str], list[str]]:
    """Collection sentences, their source file's language code, and query questions."""
    files = sorted((BENCHMARKS / "tatoeba").glob("tatoeba.*-eng.*"))
    sources = [f.read_text(encoding="utf-8").splitlines() for f in files]
    texts = round_robin(sources, docs)
    lang_of = {}
    for f, lines in zip(files, sources):
        for line in lines:
            lang_of.setdefault(line.strip(), f.suffix[1:])
    questions = []
    for f in sorted((BENCHMARKS / "xquad").glob("xquad.*.json")):
        data = json.loads(f.read_text(encoding="utf-8"))
        questions.append([qa["question"] for a in data["data"] for p in a["paragraphs"] for qa in p["qas"]])
    return texts, [lang_of[t] for t in texts], round_robin(questions, queries)


def encode(model_dir: str, layer: int, docs: int, queries: int) -> dict:
    """Encoded collection and queries, from the /tmp cache when present."""
    from xlsearch.indexer.encoding.encoder import Encoder
    from xlsearch.indexer.encoding.model import load_model

    loaded = load_model(model_dir, device="cpu")
    cache = Path(tempfile.gettempdir()) / f"xlsearch-bench-dense-{loaded.fingerprint[:16]}-L{layer}-{docs}-{queries}.npz"
    if cache.is_file():
        data = np.load(cache)
        return {key: data[key] for key in data.files} | {"cached": True, "encode_s": None}
    texts, langs, questions = read_texts(docs, queries)
    encoder = Encoder(loaded, batch_size=64)
    start = time.perf_counter()
    out = {"docs": encoder.encode(texts, layer), "queries": encoder.encode(questions, layer),
           "langs": np.array(langs)}
    seconds = time.perf_counter() - start
    np.savez(cache, **out)
    return out | {"cached": False, "encode_s": round(seconds, 1)}


def search_all(index: DenseIndex, queries: np.ndarray, allowed=None) -> tuple[list[np.ndarray], float]:
    """Top-K ids per query and the p50 single-query latency in milliseconds."""
    index.search(queries[0], K, allowed)  # warm-up
    results, times = [], []
    for query in queries:
        start = time.perf_counter()
        ids, _ = index.search(query, K, allowed)
        times.append(time.perf_counter() - start)
        results.append(ids)
    return results, statistics.median(times) * 1000


def recall(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    """Mean fraction of the exact top-K found (recall@K)."""
    return round(float(np.mean([len(np.intersect1d(g, w)) / max(len(w), 1) for g, w in zip(got, want)])), 4)


def memory(index: DenseIndex) -> dict:
    """Bytes per vector: file size, resident memory taken by reading it (fresh process), estimate."""
    n = len(index)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "dense.faiss"
        faiss.write_index(index.index, str(path))
        size = path.stat().st_size
        resident = int(subprocess.run([sys.executable, "-c", RESIDENT, str(path)], check=True,
                                      capture_output=True, text=True).stdout)
    return {"file": round(size / n, 1), "resident": round(resident / n, 1),
            "steady_state_estimate": bytes_per_vector(index.index)}


RESIDENT = """import os, sys, faiss
def rss():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
before = rss()
index = faiss.read_index(sys.argv[1])
print(rss() - before)
"""  # resident memory taken by reading an index, in a fresh process


def measure_kind(kind: str, ids, vectors, queries, exact: dict, langs, sweep: bool) -> dict:
    """Every figure for one approximate kind on one collection."""
    index = DenseIndex(vectors.shape[1], kind)
    index.add(ids, vectors)
    start = time.perf_counter()
    index.train()
    out = {"kind": kind, "train_s": round(time.perf_counter() - start, 2), "nlist": index.nlist,
           "nprobe": index.effective_nprobe()}
    got, p50 = search_all(index, queries)
    out |= {"recall@10": recall(got, exact["top"]), "p50_ms": round(p50, 3),
            "p50_ratio_to_exact": round(p50 / exact["p50_ms"], 3), "bytes_per_vector": memory(index)}
    if sweep:
        curve = {}
        for nprobe in SWEEP:
            index.nprobe = nprobe
            got, p50 = search_all(index, queries)
            curve[nprobe] = {"recall@10": recall(got, exact["top"]), "p50_ratio_to_exact": round(p50 / exact["p50_ms"], 3)}
        out["nprobe_sweep"] = curve
        index.nprobe = None
    for name, allowed in exact["filters"].items():
        got, _ = search_all(index, queries, allowed)
        out[f"recall@10_filtered_{name}"] = recall(got, exact["filtered"][name])
    index.remove(exact["removed"])
    got, _ = search_all(index, queries)
    out["recall@10_after_removing_10pct"] = recall(got, exact["after_removal"])
    return out


def reference(ids, vectors, queries, langs) -> dict:
    """Exact top-K (plain, filtered, after removal) and exact latency."""
    rng = np.random.default_rng(0)
    exact = DenseIndex(vectors.shape[1])
    start = time.perf_counter()
    exact.add(ids, vectors)
    out = {"build_s": round(time.perf_counter() - start, 2)}
    out["top"], out["p50_ms"] = search_all(exact, queries)
    filters = {"random_25pct": np.sort(rng.choice(ids, len(ids) // 4, replace=False))}
    if langs is not None:
        filters["one_language_deu"] = ids[langs == "deu"]
    out["filters"] = filters
    out["filtered"] = {name: search_all(exact, queries, allowed)[0] for name, allowed in filters.items()}
    out["removed"] = rng.choice(ids, len(ids) // 10, replace=False)
    exact.remove(out["removed"])
    out["after_removal"] = search_all(exact, queries)[0]
    return out


def run(name: str, vectors, queries, langs, kinds: list[str], sweep: bool) -> dict:
    ids = np.random.default_rng(1).permutation(len(vectors) * 2)[:len(vectors)].astype(np.int64)
    exact = reference(ids, vectors, queries, langs)
    flat = DenseIndex(vectors.shape[1])
    flat.add(ids, vectors)
    result = {"collection": name, "vectors": len(vectors), "queries": len(queries),
              "filter_sizes": {k: len(v) for k, v in exact["filters"].items()},
              "flat-ip": {"build_s": exact["build_s"], "p50_ms": round(exact["p50_ms"], 3),
                          "bytes_per_vector": memory(flat)}}
    del flat
    for kind in kinds:
        result[kind] = measure_kind(kind, ids, vectors, queries, exact, langs, sweep)
    return result


def synthetic(vectors: np.ndarray, count: int, noise: float = 0.2) -> np.ndarray:
    """``count`` vectors, each a random real vector plus Gaussian noise, renormalised."""
    rng = np.random.default_rng(2)
    out = np.empty((count, vectors.shape[1]), np.float32)
    for start in range(0, count, 100_000):
        rows = rng.integers(0, len(vectors), min(100_000, count - start))
        block = vectors[rows] + (noise / np.sqrt(vectors.shape[1])) * rng.standard_normal(
            (len(rows), vectors.shape[1]), dtype=np.float32)
        out[start:start + len(rows)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="/tmp/mdeberta-shape", help="encoder directory (random-weight exact shape)")
    parser.add_argument("--layer", type=int, default=8, help="pooled layer")
    parser.add_argument("--docs", type=int, default=10_000, help="collection sentences to encode")
    parser.add_argument("--queries", type=int, default=300, help="query questions to encode")
    parser.add_argument("--synthetic", type=int, default=0, help="also run on this many synthetic vectors (0: no)")
    parser.add_argument("--kinds", default=",".join(APPROXIMATE), help="approximate kinds, comma-separated")
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    started = time.perf_counter()
    data = encode(args.model, args.layer, args.docs, args.queries)
    vectors, queries = data["docs"], data["queries"]
    out = {"bench": "dense_index_kinds", "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                                     "load_avg_1m_start": os.getloadavg()[0]},
           "faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads(),
           "model": {"dir": args.model, "shape": "mdeberta-v3-base (768 hidden, 12 layers)",
                     "weights": "random (real-text-shaped vectors, not semantically trained)",
                     "layer": args.layer, "dim": int(vectors.shape[1])},
           "text": {"collection": "Tatoeba sentences, 112 language pairs round-robin",
                    "queries": "XQuAD questions, 12 languages round-robin",
                    "encode_s": data["encode_s"], "cached": data["cached"]},
           "defaults": {"nlist": f"min(2*sqrt(n), n/39); {nlist_for(1_000_000)} at 1M",
                        "nprobe": f"ceil(2*nlist^0.6); {default_nprobe(nlist_for(1_000_000))} at 1M"},
           "real": run("real text vectors", vectors, queries, data["langs"], kinds, sweep=True)}
    if args.synthetic:
        out["synthetic"] = run(f"SYNTHETIC: {args.synthetic} = real vectors resampled + noise 0.2, renormalised",
                               synthetic(vectors, args.synthetic), queries, None, kinds, sweep=False)
    out["machine"]["load_avg_1m_end"] = os.getloadavg()[0]
    out["total_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
