"""What one small write costs as the index grows, and what the next search pays; one JSON line.

Builds (once, cached under /tmp) two indexes of real multilingual one-line documents
(NTREX-128 and Tatoeba, as ``bench_e2e.py``) through the product's writer with the
stand-in encoder of ``bench_e2e.py`` (same tokenizer and dimension as the exact-shape
mdeberta model, fast vectors: write and reload costs do not depend on vector values):
a small one (``--small`` chunks) and a large one (``--chunks``). On each it measures,
``--writes`` times, through the Python API:

- ``upsert_ms``: one document upserted and committed by a writer kept open for the run
  (as the HTTP server keeps one): the cost of the commit itself;
- ``open_upsert_ms``: the same with a writer opened and closed around it (one CLI call);
- ``bytes_written``: bytes of the files the commit added to the index directory;
- ``first_search_ms`` / ``steady_search_ms``: a hybrid search right after that commit
  (the searcher picks up the new commit) and the same query again.

Ratios within the one run: large/small upsert, first search/steady search.

    python bench/bench_api.py --exact-shape /tmp/mdeberta-shape --queries 1   # creates the model once
    python bench/bench_upsert.py                  # 100,000 and 1,000 chunks
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from bench_e2e import StandInEncoder, read_lines  # noqa: E402


def build(index: Path, encoder, model: Path, chunks: int) -> None:
    from xlsearch.indexer.config import IndexConfig
    from xlsearch.indexer.document import Document
    from xlsearch.indexer.writing.writer import IndexWriter

    if (index / "manifest.json").is_file():
        return
    shutil.rmtree(index, ignore_errors=True)
    with IndexWriter(index, encoder, IndexConfig(model_name=str(model), layer=8)) as writer:
        writer.upsert((Document(id=f"doc-{i}", text=text, metadata={"source": source})
                       for i, (source, text) in enumerate(read_lines(chunks))), commit_chunks=20_000)
        writer.commit()


def files_of(directory: Path) -> dict[str, int]:
    return {str(p): p.stat().st_size for p in directory.rglob("*") if p.is_file()}


def measure(index: Path, encoder, writes: int, texts: list[str]) -> dict:
    from xlsearch.indexer.document import Document
    from xlsearch.indexer.writing.writer import IndexWriter
    from xlsearch.search.searcher import Searcher

    searcher = Searcher(index, encoder=encoder)
    query = texts[0]
    searcher.search(query, k=10, mode="hybrid")
    kept, opened, written, first, steady = [], [], [], [], []
    writer = IndexWriter(index, encoder)
    try:
        for i in range(writes):
            before = files_of(index)
            doc = Document(id=f"bench-upsert-{i % 3}", text=texts[1 + i % (len(texts) - 1)] + f" ({i})")
            start = time.perf_counter()
            writer.upsert([doc])
            writer.commit()
            kept.append(time.perf_counter() - start)
            after = files_of(index)
            written.append(sum(size for path, size in after.items() if before.get(path) != size))
            start = time.perf_counter()
            searcher.search(query, k=10, mode="hybrid")
            first.append(time.perf_counter() - start)
            start = time.perf_counter()
            searcher.search(query, k=10, mode="hybrid")
            steady.append(time.perf_counter() - start)
    finally:
        writer.close()
    for i in range(max(3, writes // 3)):
        doc = Document(id=f"bench-open-{i % 3}", text=texts[-1 - i % (len(texts) - 1)] + f" ({i})")
        start = time.perf_counter()
        with IndexWriter(index, encoder) as opened_writer:
            opened_writer.upsert([doc])
            opened_writer.commit()
        opened.append(time.perf_counter() - start)
    searcher.close()
    ms = lambda values: round(1000 * statistics.median(values), 2)  # noqa: E731
    return {"chunks": searcher.index.manifest.chunks, "upsert_ms": ms(kept), "open_upsert_ms": ms(opened),
            "bytes_written": int(statistics.median(written)), "first_search_ms": ms(first),
            "steady_search_ms": ms(steady)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=100_000, help="documents in the large index")
    parser.add_argument("--small", type=int, default=1_000, help="documents in the small index")
    parser.add_argument("--writes", type=int, default=15, help="measured upserts per index")
    parser.add_argument("--model", type=Path, default=Path("/tmp/mdeberta-shape"))
    parser.add_argument("--tag", default="", help="suffix of the cached index directories (e.g. a format)")
    args = parser.parse_args(argv)
    if not (args.model / "config.json").is_file():
        raise SystemExit(f"no model in {args.model}; create it with "
                         f"`python bench/bench_api.py --exact-shape {args.model} --queries 1`")
    from xlsearch.indexer.encoding.model import load_model

    encoder = StandInEncoder(load_model(str(args.model), "cpu"))
    texts = [text for _, text in read_lines(args.chunks + 200)[args.chunks:]]
    results = {}
    for name, size in (("small", args.small), ("large", args.chunks)):
        index = Path(f"/tmp/xlsearch-upsert-{size}{args.tag}")
        start = time.perf_counter()
        build(index, encoder, args.model, size)
        built = time.perf_counter() - start
        results[name] = measure(index, encoder, args.writes, texts) | {"build_s": round(built, 1)}
    large, small = results["large"], results["small"]
    print(json.dumps({
        "bench": "upsert", **results,
        "ratios": {"upsert_large_over_small": round(large["upsert_ms"] / small["upsert_ms"], 2),
                   "first_over_steady_search_large": round(large["first_search_ms"] / large["steady_search_ms"], 2),
                   "bytes_large_over_small": round(large["bytes_written"] / max(small["bytes_written"], 1), 2)},
        "targets": {"upsert_ms_large": 50, "upsert_large_over_small": 3, "first_over_steady_search": 1.5},
        "encoder": "stand-in (random projection of token counts, 768-d)",
        "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
        "loadavg": [round(x, 2) for x in os.getloadavg()]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
