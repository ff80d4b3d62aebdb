"""Lexical search: xlsearch's BM25Index against rank-bm25, tantivy and bm25s on real multilingual text.

Every engine indexes the same analyzed chunks (NTREX-128 lines of every second language, then
Tatoeba lines; tokens joined by spaces for tantivy's whitespace tokenizer) and runs the same XQuAD
questions in 12 languages. xlsearch's top 10 must equal rank-bm25's (ties aside). tantivy scores
with Lucene's BM25 (k1 1.2, its own idf) and bm25s with Robertson's idf, so their top 10 are
reported, not required, to agree. Time is CPU time per query (``time.process_time``), the median
of ``--repeats`` runs per query, engines interleaved query by query so load hits them alike; the
first pass over the queries (cold caches) is reported apart. The peers are installed by this
script into ``--peers`` (pinned versions, no dependencies of theirs beyond numpy and scipy).

    python bench/bench_bm25.py --chunks 120000 --queries 60
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine_facts import cpu_flags, cpu_name
from rank_bm25 import BM25Okapi

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout

from xlsearch.indexer.config import ANALYZER  # noqa: E402
from xlsearch.indexer.text.analysis import analyze  # noqa: E402
from xlsearch.indexer.store.lexical import BM25Index  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
PEERS = ("tantivy==0.27.0", "bm25s==0.3.16", "numba==0.68.1", "llvmlite==0.50.0")
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


def install_peers(target: Path) -> bool:
    """Make tantivy and bm25s (with numba) importable from ``target``, installing them there first."""
    sys.path.append(str(target))
    try:
        importlib.import_module("tantivy"), importlib.import_module("bm25s"), importlib.import_module("numba")
        return True
    except ImportError:
        pass
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                           *PEERS], capture_output=True, text=True)
    if done.returncode:
        print(f"peers not installed ({done.stderr.strip()[-300:]}); timing xlsearch and rank-bm25 only",
              file=sys.stderr)
        return False
    importlib.invalidate_caches()
    return True


class Tantivy:
    """tantivy-py over the same tokens: a whitespace-tokenized field, a boolean OR of term queries."""

    def __init__(self, tokens: list[list[str]]):
        import tantivy
        builder = tantivy.SchemaBuilder()
        builder.add_text_field("body", stored=False, tokenizer_name="whitespace")
        builder.add_integer_field("row", stored=False, fast=True)
        self.schema, self.tantivy = builder.build(), tantivy
        self.folder = tempfile.TemporaryDirectory(prefix="bench-bm25-tantivy-")
        index = tantivy.Index(self.schema, path=self.folder.name)
        writer = index.writer(heap_size=500_000_000, num_threads=1)
        for row, terms in enumerate(tokens):
            writer.add_document(tantivy.Document(body=" ".join(terms), row=row))
        writer.commit()
        writer.wait_merging_threads()
        index.reload()
        self.searcher = index.searcher()

    def search(self, query: list[str]) -> list[int]:
        t = self.tantivy
        found = self.searcher.search(t.Query.boolean_query(
            [(t.Occur.Should, t.Query.term_query(self.schema, "body", term)) for term in query]), TOP)
        return [address.doc for _, address in found.hits]


class Bm25s:
    """bm25s with its numba backend over the same tokens (Robertson idf, k1 1.5, b 0.75)."""

    def __init__(self, tokens: list[list[str]]):
        import bm25s
        self.vocab: dict[str, int] = {}
        ids = [[self.vocab.setdefault(term, len(self.vocab)) for term in terms] for terms in tokens]
        self.retriever = bm25s.BM25(k1=1.5, b=0.75, method="robertson", backend="numba")
        self.retriever.index(bm25s.tokenization.Tokenized(ids=ids, vocab=self.vocab), show_progress=False)

    def search(self, query: list[str]) -> list[int]:
        known = [term for term in query if term in self.vocab]
        if not known:
            return []
        rows, _ = self.retriever.retrieve([known], k=TOP, show_progress=False, n_threads=1)
        return rows[0].tolist()


def timed(search, query) -> tuple[float, float, object]:
    """(CPU ms, wall ms, result) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = search(query)
    return (time.process_time() - cpu) * 1e3, (time.perf_counter() - wall) * 1e3, result


def summary(cpu_ms: list[float]) -> dict[str, float]:
    values = np.asarray(cpu_ms)
    return {"p50": round(float(np.percentile(values, 50)), 4), "p99": round(float(np.percentile(values, 99)), 4),
            "mean": round(float(values.mean()), 4)}


def machine() -> str:
    """Describe the CPU and library versions."""
    return f"{cpu_name()}, {os.cpu_count()} cpus, Python {platform.python_version()}, numpy {np.__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=120_000, help="number of chunks to index")
    parser.add_argument("--queries", type=int, default=60, help="number of XQuAD questions to run")
    parser.add_argument("--repeats", type=int, default=5, help="runs per query after the first; the median counts")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared/benchmarks directory")
    parser.add_argument("--peers", type=Path, default=Path(tempfile.gettempdir()) / "xlsearch-bench-peers",
                        help="where tantivy and bm25s are installed")
    parser.add_argument("--no-peers", action="store_true", help="time xlsearch and rank-bm25 only")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        parser.error(f"benchmark data not found: {args.data}")
    load_start = os.getloadavg()

    texts = read_chunks(args.data, args.chunks)
    queries = [analyze(q) for q in read_queries(args.data, args.queries)]
    start = time.perf_counter()
    tokens = [analyze(t) for t in texts]
    tokenize_s = time.perf_counter() - start

    builds, engines = {}, {}
    start = time.perf_counter()
    index = BM25Index()
    index.add(np.arange(len(tokens)), tokens)
    index.search(queries[0], TOP)  # merges the added block and computes idf
    builds["xlsearch"] = time.perf_counter() - start
    engines["xlsearch"] = lambda q: index.search(q, TOP)
    start = time.perf_counter()
    reference = BM25Okapi(tokens)
    builds["rank_bm25"] = time.perf_counter() - start
    if not args.no_peers and install_peers(args.peers):
        for name, engine in (("tantivy", Tantivy), ("bm25s", Bm25s)):
            start = time.perf_counter()
            built = engine(tokens)
            builds[name] = time.perf_counter() - start
            engines[name] = built.search
            built.search(queries[0])  # numba compiles on the first call

    cold = {name: [] for name in engines}
    steady = {name: [] for name in [*engines, "rank_bm25"]}
    identical, agree = True, {name: [] for name in engines if name != "xlsearch"}
    for query in queries:
        ref_cpu, _, ref_scores = timed(reference.get_scores, query)
        np.argsort(ref_scores)[::-1][:TOP]
        steady["rank_bm25"].append(ref_cpu)
        truth = set(np.argsort(ref_scores)[::-1][:TOP][ref_scores[np.argsort(ref_scores)[::-1][:TOP]] > 0].tolist())
        for name, search in engines.items():
            cpu, _, result = timed(search, query)
            cold[name].append(cpu)
            if name == "xlsearch":
                identical &= same_top(result[0], result[1], ref_scores)
            elif truth:
                agree[name].append(len(truth & set(result)) / len(truth))
        for name, search in engines.items():
            steady[name].append(float(np.median([timed(search, query)[0] for _ in range(args.repeats)])))

    result = {"bench": "bm25", "chunks": len(tokens), "queries": len(queries), "analyzer": ANALYZER,
              "cpu_ms_per_query": {name: summary(values) for name, values in steady.items()},
              "cpu_ms_first_pass": {name: summary(values) for name, values in cold.items()}}
    ours = result["cpu_ms_per_query"]["xlsearch"]
    result["peer_over_xlsearch"] = {  # above 1: xlsearch is faster
        name: {stat: round(result["cpu_ms_per_query"][name][stat] / ours[stat], 2) for stat in ("p50", "p99", "mean")}
        for name in steady if name != "xlsearch"}
    result.update({
        "top10_identical_to_rank_bm25": bool(identical),
        "peer_top10_overlap_with_rank_bm25": {name: round(float(np.mean(v)), 3) for name, v in agree.items() if v},
        "build_s": {name: round(seconds, 2) for name, seconds in builds.items()}, "tokenize_s": round(tokenize_s, 2),
        "vocabulary": index.vocabulary_size, "machine": machine(), "cpu_flags": cpu_flags(),
        "loadavg_start": [round(x, 2) for x in load_start], "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    })
    print(json.dumps(result))
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
