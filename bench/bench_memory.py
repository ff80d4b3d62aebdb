"""Peak resident memory while indexing 200,000 chunks of real text; one JSON line.

Issue 5, item 7: peak RSS of a fresh process that loads the model and runs
``indexer.indexing.build_index`` on a JSONL corpus must stay below model parameter
bytes + chunks x dim x 4 (the vectors) + 1 GiB.

Corpus: multi-sentence documents of 2-24 consecutive lines of one source (one
NTREX-128 file, i.e. consecutive news sentences in one language, or one Tatoeba
file), about 13 lines and 3 chunks of up to 256 tokens per document on average,
no ``lang`` field (so languages are detected), written once as a JSONL file under
``--work`` and reused. The 400,000 distinct lines are cycled when more are needed
(a document never repeats, but the BM25 vocabulary stops growing after one cycle).
The document count is chosen from a token-count estimate; the JSON gives the chunks
actually indexed.

Indexing runs in a child interpreter through ``build_index`` (the product's whole path): the validation
pass and the streaming pass of ``read_documents``, chunking, language detection,
``IndexWriter.upsert`` with a commit every 4,096 new chunks (each a new segment; the merge
policy merges them in tiers), FAISS flat-ip, BM25 and the SQLite store. The child loads the exact-shape model
(mdeberta-v3-base architecture, random weights), so its bytes are in the RSS, but
reads every weight once (safetensors weights may be mapped lazily; encoding
reads them all), then embeds with bench_e2e's ``StandInEncoder`` (same tokenizer and fingerprint,
768-d random projections of token counts): encoding 200k chunks with the model takes
hours on 2 cores and does not change what the index keeps. The stand-in's projection
table (vocab x 768 float32) is counted in the peak and reported apart.

The child samples its VmRSS every 50 ms (peak per phase), and records memory at every
commit; the peak is the kernel's VmHWM, checked against ``ru_maxrss`` of the child.

    python bench/bench_api.py --exact-shape /tmp/mdeberta-shape --queries 1   # creates the model once
    python bench/bench_memory.py                      # 200,000 chunks
    python bench/bench_memory.py --chunks 50000
    python bench/bench_memory.py --center-languages   # the centering build path
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

from bench_e2e import StandInEncoder, read_lines

MIB = 1 << 20
GIB = 1 << 30
POOL_LINES = 400_000  # distinct NTREX-128 + Tatoeba lines cycled through
DOC_LINES = (2, 24)  # lines per document, uniform
CHUNK_STEP = 190  # new tokens per extra chunk (budget 254 - overlap ~32, cut at sentence ends)


# -- corpus (parent) ----------------------------------------------------------
def write_corpus(path: Path, chunks: int, model: Path, seed: int = 0) -> dict:
    """Write documents expected to give about ``chunks`` chunks; returns what was written."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model))
    sources: dict[str, list[str]] = {}
    for source, line in read_lines(POOL_LINES):
        sources.setdefault(source, []).append(line)
    names = list(sources)
    rng = np.random.default_rng(seed)
    expected, documents, lines_used, position = 0, 0, 0, {name: 0 for name in names}
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        while expected < chunks:
            batch = []
            for _ in range(1000):
                name = names[documents % len(names)]
                lines, start = sources[name], position[name]
                count = int(rng.integers(DOC_LINES[0], DOC_LINES[1] + 1))
                text = "\n".join(lines[(start + i) % len(lines)] for i in range(count))
                position[name] = start + count
                batch.append({"id": f"mem-{documents}", "text": text, "source": name})
                documents += 1
                lines_used += count
            lengths = map(len, tokenizer([d["text"] for d in batch], add_special_tokens=False)["input_ids"])
            for doc, tokens in zip(batch, lengths):
                if expected >= chunks:
                    documents -= 1
                    continue
                expected += 1 + max(0, -(-(tokens - 254) // CHUNK_STEP))
                handle.write(json.dumps(doc, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return {"documents": documents, "expected_chunks": expected, "bytes": path.stat().st_size}


# -- measurement (child) --------------------------------------------------------
def status_kib(field: str, pid: str = "self") -> int:
    """One ``/proc/<pid>/status`` field in KiB (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class Sampler(threading.Thread):
    """VmRSS every ``interval`` seconds; the peak and time of the peak per phase."""

    def __init__(self, interval: float = 0.05):
        super().__init__(daemon=True)
        self.interval, self.phase, self.start_time = interval, "import", time.perf_counter()
        self.peaks: dict[str, list[float]] = {}  # phase -> [peak MiB, seconds spent]
        self._stop_event = threading.Event()

    def run(self) -> None:
        last = time.perf_counter()
        while not self._stop_event.wait(self.interval):
            now = time.perf_counter()
            rss = status_kib("VmRSS") / 1024
            peak = self.peaks.setdefault(self.phase, [0.0, 0.0])
            peak[0], peak[1] = max(peak[0], rss), peak[1] + now - last
            last = now

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]


def malloc_mib() -> dict[str, float]:
    """glibc heap: bytes in use from the brk heap and in mmap'd blocks (numpy, FAISS, torch)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2
        info = libc.mallinfo2()
    except (OSError, AttributeError):
        return {}
    return {"heap_in_use_mib": round(info.uordblks / MIB, 1), "heap_free_mib": round(info.fordblks / MIB, 1),
            "mmap_blocks_mib": round(info.hblkhd / MIB, 1)}


def sqlite_mib() -> dict[str, float]:
    """SQLite's own heap (all connections of the process): now and high-water."""
    try:
        lib = ctypes.CDLL("libsqlite3.so.0")
        lib.sqlite3_memory_used.restype = lib.sqlite3_memory_highwater.restype = ctypes.c_int64
        return {"sqlite_heap_mib": round(lib.sqlite3_memory_used() / MIB, 1),
                "sqlite_heap_peak_mib": round(lib.sqlite3_memory_highwater(0) / MIB, 1)}
    except OSError:
        return {}


def deep_size(container) -> int:
    """Bytes of a dict or list plus its keys and values (str and int objects)."""
    items = container.items() if isinstance(container, dict) else ((x, None) for x in container)
    size = sys.getsizeof(container)
    for key, value in items:
        size += sys.getsizeof(key) + (sys.getsizeof(value) if value is not None else 0)
    return size


def bm25_bytes(lexical) -> dict[str, float]:
    """Arrays (postings, row ids, lengths) and Python containers (vocabulary, id -> row) of a BM25Index."""
    lexical._flush()
    matrix = lexical._matrix
    arrays = sum(a.nbytes for a in (matrix.data, matrix.indices, matrix.indptr, lexical._row_ids,
                                    lexical._doc_len, lexical._alive))
    vocab = deep_size(lexical._vocab) + sys.getsizeof(lexical._terms)  # _terms shares the strings
    row_of = deep_size(lexical._row_of)
    return {"arrays_mib": round(arrays / MIB, 1), "vocabulary_mib": round(vocab / MIB, 1),
            "row_of_mib": round(row_of / MIB, 1), "terms": len(lexical._terms), "postings": int(matrix.nnz)}


def faiss_bytes(dense) -> dict[str, float]:
    """Vector bytes stored and allocated (std::vector capacity) in the flat index, and the id maps."""
    import faiss

    flat = faiss.downcast_index(dense.index.index)
    out = {"vectors_mib": round(flat.codes.size() / MIB, 1)}
    try:
        out["allocated_mib"] = round(flat.codes.owned_data.capacity() / MIB, 1)
    except AttributeError:
        pass
    out["id_maps_mib"] = round(len(dense) * (8 + 40) / MIB, 1)  # id_map int64 + rev_map hash node (approx.)
    return out


def child(args: argparse.Namespace) -> None:
    """Load the model, index the corpus with ``build_index``, write the figures to ``args.child_out``."""
    sampler = Sampler()
    sampler.start()
    started = time.perf_counter()
    marks: dict = {"rss_start_mib": round(status_kib("VmRSS") / 1024, 1)}

    import xlsearch.indexer.writing.writer as build
    from xlsearch.indexer.allocator import retain_freed_memory
    from xlsearch.indexer.config import IndexConfig
    from xlsearch.indexer.writing.pipeline import build_index
    from xlsearch.indexer.encoding.model import load_model

    marks["rss_after_imports_mib"] = round(status_kib("VmRSS") / 1024, 1)
    marks["allocator_retains_freed_memory"] = retain_freed_memory()  # as `xlsearch index` does
    sampler.phase = "load_model"
    loaded = load_model(str(args.model), "cpu")
    model_bytes = sum(t.numel() * t.element_size() for t in (*loaded.model.parameters(), *loaded.model.buffers()))
    marks["rss_after_model_mib"] = round(status_kib("VmRSS") / 1024, 1)
    for tensor in (*loaded.model.parameters(), *loaded.model.buffers()):
        float(tensor.detach().sum())  # page in every weight (safetensors may be mapped lazily), as encoding would
    marks["rss_after_model_touched_mib"] = round(status_kib("VmRSS") / 1024, 1)
    encoder = StandInEncoder(loaded)
    marks["rss_after_stand_in_mib"] = round(status_kib("VmRSS") / 1024, 1)
    commits: list[dict] = []
    writers: list = []
    original_commit = build.IndexWriter.commit

    def commit(writer):
        previous, sampler.phase = sampler.phase, "commit"
        begin = time.perf_counter()
        manifest = original_commit(writer)
        commits.append({"chunks": manifest.chunks, "segments": len(manifest.segments),
                        "s": round(time.perf_counter() - begin, 1),
                        "rss_mib": round(status_kib("VmRSS") / 1024), "hwm_mib": round(status_kib("VmHWM") / 1024)})
        sampler.phase = previous
        if not writers:
            writers.append(writer)  # kept for the breakdown after the build
        return manifest

    def progress_factory(documents: int):
        sampler.phase = "index"  # the validation pass is over
        return None

    build.IndexWriter.commit = commit
    sampler.phase = "validate"
    config = IndexConfig(model_name=str(args.model), layer=8, center_languages=args.center_languages)
    build_start = time.perf_counter()
    stats, report = build_index([args.corpus], args.index, encoder, config,
                                      progress_factory=progress_factory)
    build_s = time.perf_counter() - build_start
    sampler.phase = "after"
    writer = writers[0]
    breakdown = {"model_mib": round(model_bytes / MIB, 1),
                 "stand_in_projection_mib": round(encoder._projection.nbytes / MIB, 1),
                 "pending": {"faiss": faiss_bytes(writer.pending.dense), "bm25": bm25_bytes(writer.pending.lexical),
                             "docs": len(writer._pending_docs)},
                 "segments": len(writer.manifest.segments), **malloc_mib(), **sqlite_mib()}
    sampler.stop()
    result = {"documents": report.documents, "chunks": stats.chunks, "dim": encoder.dim,
              "model_bytes": model_bytes, "build_s": round(build_s, 1),
              "child_s": round(time.perf_counter() - started, 1),
              "peak_rss_mib": round(status_kib("VmHWM") / 1024, 1),
              "rss_end_mib": round(status_kib("VmRSS") / 1024, 1), **marks,
              "phase_peak_rss_mib": {k: round(v[0]) for k, v in sampler.peaks.items()},
              "phase_s": {k: round(v[1], 1) for k, v in sampler.peaks.items()},
              "commits": commits, "breakdown": breakdown}
    Path(args.child_out).write_text(json.dumps(result))


# -- driver (parent) --------------------------------------------------------------
def run_child(args: argparse.Namespace, out: Path) -> tuple[dict, float]:
    """Run the indexing child; return its figures and its ru_maxrss in MiB."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child-out", str(out), "--corpus", str(args.corpus),
               "--index", str(args.index), "--model", str(args.model)]
    if args.center_languages:
        command.append("--center-languages")
    subprocess.run(command, check=True)
    max_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    return json.loads(out.read_text()), max_rss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=200_000, help="chunks to index, about (default 200000)")
    parser.add_argument("--model", type=Path, default=Path("/tmp/mdeberta-shape"),
                        help="exact-shape model directory (default /tmp/mdeberta-shape)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/xlsearch-memory"),
                        help="folder for the corpus (kept) and the index (removed) (default /tmp/xlsearch-memory)")
    parser.add_argument("--center-languages", action="store_true", help="build with center_languages=True")
    parser.add_argument("--keep-index", action="store_true", help="keep the index directory after the run")
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--index", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_out:
        child(args)
        return 0
    if not (args.model / "config.json").is_file():
        raise SystemExit(f"no model in {args.model}; create the exact-shape model with "
                         f"`python bench/bench_api.py --exact-shape {args.model} --queries 1`")
    args.work.mkdir(parents=True, exist_ok=True)
    args.corpus = args.work / f"corpus-{args.chunks}.jsonl"
    corpus = {"cached": args.corpus.is_file()}
    if not corpus["cached"]:
        corpus.update(write_corpus(args.corpus, args.chunks, args.model))
    corpus["bytes"] = args.corpus.stat().st_size
    args.index = args.work / f"index-{args.chunks}{'-centered' if args.center_languages else ''}"
    if args.index.exists():
        shutil.rmtree(args.index)
    load_start = os.getloadavg()
    try:
        figures, max_rss = run_child(args, args.work / "child.json")
    finally:
        if not args.keep_index and args.index.exists():
            shutil.rmtree(args.index)
    vectors = figures["chunks"] * figures["dim"] * 4
    bound = figures["model_bytes"] + vectors + GIB
    peak = figures["peak_rss_mib"] * MIB
    config = json.loads((args.model / "config.json").read_text())
    print(json.dumps({
        "bench": "index_memory", "chunks": figures["chunks"], "documents": figures["documents"],
        "corpus": {"file": str(args.corpus), "mib": round(corpus["bytes"] / MIB, 1), "cached": corpus["cached"],
                   "lines_per_doc": list(DOC_LINES), "text": "NTREX-128 (129 files) + Tatoeba lines, 400k cycled"},
        "peak_rss_mib": figures["peak_rss_mib"], "ru_maxrss_mib": round(max_rss, 1),
        "bound_mib": round(bound / MIB, 1), "met": peak < bound, "headroom_mib": round((bound - peak) / MIB, 1),
        "bound_terms_mib": {"model": round(figures["model_bytes"] / MIB, 1), "vectors": round(vectors / MIB, 1),
                            "allowance": 1024},
        "build_s": figures["build_s"], "child_s": figures["child_s"],
        "rss_mib": {k: v for k, v in figures.items() if k.startswith("rss_")},
        "phase_peak_rss_mib": figures["phase_peak_rss_mib"], "phase_s": figures["phase_s"],
        "commits": len(figures["commits"]),
        "commit_rss_mib": [[c["chunks"], c["rss_mib"], c["hwm_mib"], c["s"]] for c in figures["commits"]],
        "breakdown_at_end": figures["breakdown"],
        "config": {"center_languages": args.center_languages, "chunk_tokens": 256, "commit_chunks": 4096},
        "chunk_vectors": "stand-in (bench_e2e.StandInEncoder, 768-d); model loaded but not run",
        "model": {"path": str(args.model), "hidden": config["hidden_size"], "layers": config["num_hidden_layers"],
                  "vocab": config["vocab_size"], "weights": "random"},
        "loadavg_start": [round(x, 2) for x in load_start], "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
        "python": platform.python_version()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
