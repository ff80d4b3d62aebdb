"""Speed-up of indexing on Ray from 1 to 2 local workers, against one process; one JSON line.

Issue 8. Indexes the same real documents (XQuAD paragraphs, 12 languages, round robin)
with the exact-shape model (mdeberta-v3-base architecture, random weights; create it
once with ``python bench/bench_api.py --exact-shape DIR``) at the default layer (8) and
chunk size (256 tokens):

* ``local``: ``build_index`` in this process, torch on every core;
* ``ray_1`` / ``ray_2``: ``build_index_ray`` on a local Ray cluster (``ray.init(num_cpus=2)``)
  with 1 and 2 encoder actors of 1 CPU (1 torch thread) each.

Wall time covers the whole build (reading, actor start-up with the 1 GB model load,
chunking, encoding, commit), so small collections understate the speed-up; the
``encode_s`` figures subtract the time to the first encoded document.

    python bench/bench_ray.py --model /tmp/mdeberta-shape --docs 240
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from bench_api import xquad_texts  # noqa: E402

from xlsearch.indexer.config import IndexConfig  # noqa: E402
from xlsearch.indexer.encoding.encoder import Encoder  # noqa: E402
from xlsearch.indexer.writing.pipeline import build_index  # noqa: E402
from xlsearch.indexer.encoding.model import load_model  # noqa: E402
from xlsearch.indexer.writing.ray import RayOptions, build_index_ray  # noqa: E402


def timed(run) -> dict:
    """Wall time of ``run(progress_factory)`` and the time of its first encoded document."""
    marks: dict[str, float] = {}
    start = time.perf_counter()

    def factory(total: int):
        def progress(documents: int, chunks: int) -> None:
            if chunks and "first" not in marks:
                marks["first"] = time.perf_counter() - start
        return progress

    stats = run(factory)
    wall = time.perf_counter() - start
    first = marks.get("first", 0.0)
    return {"wall_s": round(wall, 2), "first_chunks_s": round(first, 2), "encode_s": round(wall - first, 2),
            "chunks": stats.chunks}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="/tmp/mdeberta-shape", help="exact-shape model directory")
    parser.add_argument("--docs", type=int, default=240, help="XQuAD paragraphs to index")
    args = parser.parse_args(argv)

    import ray

    paragraphs, _ = xquad_texts()
    per_lang = len(paragraphs) // 12
    mixed = [paragraphs[lang * per_lang + i] for i in range(per_lang) for lang in range(12)][:args.docs]
    work = Path(tempfile.mkdtemp(prefix="xlsearch-bench-ray-"))
    corpus = work / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t}, ensure_ascii=False) + "\n"
                              for i, t in enumerate(mixed)), encoding="utf-8")
    config = IndexConfig(model_name=args.model)
    result = {"bench": "ray_indexing", "machine": f"{platform.machine()} {os.cpu_count()} cpus",
              "model": "mdeberta-v3-base shape, random weights", "layer": config.layer,
              "chunk_tokens": config.chunk_tokens, "documents": len(mixed),
              "loadavg_1min_start": round(os.getloadavg()[0], 2)}
    try:
        encoder = Encoder(load_model(args.model, "cpu"))
        result["local"] = timed(lambda f: build_index([corpus], work / "local", encoder, config,
                                                      progress_factory=f)[0])
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        for workers in (1, 2):
            result[f"ray_{workers}"] = timed(lambda f: build_index_ray(
                [corpus], work / f"ray{workers}", config, RayOptions(workers=workers), device="cpu",
                progress_factory=f)[0])
        ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["speedup_wall_2_vs_1"] = round(result["ray_1"]["wall_s"] / result["ray_2"]["wall_s"], 2)
    result["speedup_encode_2_vs_1"] = round(result["ray_1"]["encode_s"] / result["ray_2"]["encode_s"], 2)
    result["ray_2_vs_local_wall"] = round(result["local"]["wall_s"] / result["ray_2"]["wall_s"], 2)
    result["loadavg_1min_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
