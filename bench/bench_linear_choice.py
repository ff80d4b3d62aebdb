"""Does the fp32 linear kernel probe pick the library that encodes faster? One JSON line.

``indexer/encoding/linear_kernel.py`` times MKL and oneDNN once per process and regime (few rows:
queries; many: batches of documents) and keeps the faster. This bench checks that choice for bulk
encoding against the whole thing it stands for, at one thread:

- bulk: ``--docs`` XQuAD paragraphs (8 languages, ``passage: ``, batch 32) through the model's packed
  forward with every fp32 linear forced to MKL and to oneDNN, interleaved ``--repeats`` times; CPU
  time of each side's best pass, and which is faster;
- ``--probes`` fresh processes, each loading the model and encoding one batch of paragraphs as
  ``xlsearch index`` does, report what their own probe chose for many rows (and its timings): the
  share that chose the faster library is the probe's hit rate.

    python bench/bench_linear_choice.py [--model multilingual-e5-small] [--probes 8]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from bench_bert_forward import xquad_texts  # noqa: E402
from machine_facts import cpu_flags, cpu_name  # noqa: E402


def load(model: str):
    import torch

    from xlsearch.indexer.encoding.encoder import Encoder
    from xlsearch.indexer.encoding.model import load_model

    torch.set_num_threads(1)
    return Encoder(load_model(model, "cpu"), batch_size=32)


def probe(model: str, layer: int) -> dict:
    """What a fresh process's probe chooses for many rows (this process is that fresh one)."""
    from xlsearch.indexer.encoding import linear_kernel

    load(model).encode(["passage: " + p for p in xquad_texts(4)[0]], layer)
    chosen = linear_kernel.choice()
    return {"many": chosen["many"], "ms": chosen["ms"].get("many")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="multilingual-e5-small", help="model name or directory")
    parser.add_argument("--layer", type=int, default=12, help="pooled layer (default 12)")
    parser.add_argument("--docs", type=int, default=64, help="paragraphs in the bulk pass (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved passes of each library (default 3)")
    parser.add_argument("--probes", type=int, default=8, help="fresh processes whose choice is read (default 8)")
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)  # a child: print its choice
    args = parser.parse_args(argv)
    if args.probe:
        print(json.dumps(probe(args.model, args.layer)))
        return 0
    load_start = os.getloadavg()
    from xlsearch.indexer.encoding import linear_kernel

    if not linear_kernel.onednn_available():
        raise SystemExit("this torch build has no oneDNN linear ops: MKL is the only choice")
    encoder = load(args.model)
    docs = ["passage: " + p for p in xquad_texts(args.docs // 8 + 1)[0][:args.docs]]
    encoder.encode(docs[:4], args.layer)  # warm-up
    seconds: dict[str, list[float]] = {linear_kernel.MKL: [], linear_kernel.ONEDNN: []}
    for _ in range(args.repeats):
        for kernel, times in seconds.items():
            with linear_kernel.forced(kernel):
                started = time.process_time()
                encoder.encode(docs, args.layer)
                times.append(time.process_time() - started)
    best = {kernel: min(times) for kernel, times in seconds.items()}
    faster = min(best, key=best.get)
    choices = []
    for _ in range(args.probes):
        done = subprocess.run([sys.executable, __file__, "--probe", "--model", args.model, "--layer", str(args.layer)],
                              capture_output=True, text=True, check=True, cwd=REPO,
                              env={k: v for k, v in os.environ.items() if k != linear_kernel.ENV})
        choices.append(json.loads(done.stdout.strip().splitlines()[-1]))
    ratios = [c["ms"]["onednn"] / c["ms"]["mkl"] for c in choices if c["ms"]]
    print(json.dumps({
        "bench": "linear_choice", "model": args.model, "layer": args.layer, "threads": 1, "docs": len(docs),
        "bulk_cpu_s": {kernel: round(s, 2) for kernel, s in best.items()},
        "bulk_onednn_speedup_over_mkl": round(best[linear_kernel.MKL] / best[linear_kernel.ONEDNN], 3),
        "faster": faster, "probes": len(choices),
        "probes_choosing_faster": sum(c["many"] == faster for c in choices),
        "probe_onednn_over_mkl_time": [round(r, 3) for r in ratios],
        "probe_median_ratio": round(statistics.median(ratios), 3) if ratios else None,
        "cpu": cpu_name(), "cpu_flags": cpu_flags(), "cpus": os.cpu_count(),
        "loadavg_start": [round(x, 2) for x in load_start], "loadavg_end": [round(x, 2) for x in os.getloadavg()]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
