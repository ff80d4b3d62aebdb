"""What loading a model costs a fresh process, read without transformers and through it. One JSON line.

A command that encodes starts a process, imports torch, loads the model and its tokenizer, and
encodes. For a local BERT-family directory (multilingual-e5-small's converted copy by default)
``load_model`` reads the weights and ``tokenizer.json`` without transformers
(``indexer/encoding/native_bert.py``, ``native_tokenizer.py``); ``load_model(..., train=True)``
goes through transformers' ``AutoModel`` and ``AutoTokenizer``. Each side runs in ``--runs``
fresh processes, interleaved, each loading the model and encoding one query; the bench reports
the median wall and CPU seconds of each side (whole process, start-up included), their ratio,
and checks that both sides' vectors are identical.

    python bench/bench_load.py [--model multilingual-e5-small] [--runs 5]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from machine_facts import cpu_flags, cpu_name  # noqa: E402

CHILD = """
import sys
from xlsearch.indexer.encoding.encoder import Encoder
from xlsearch.indexer.encoding.model import load_model
loaded = load_model(sys.argv[1], "cpu", train=sys.argv[2] == "transformers")
vector = Encoder(loaded).encode(["query: 谁第一个登上了月球？"], loaded.num_layers)[0]
print(type(loaded.model).__name__, "transformers" in sys.modules, ",".join(f"{x:.9g}" for x in vector))
"""


def run(model: str, side: str) -> tuple[float, float, list[str]]:
    """(wall s, CPU s, its output's words) of one fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, model, side], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, out.stdout.split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="multilingual-e5-small")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    sides = ("native", "transformers")
    times = {side: {"wall": [], "cpu": []} for side in sides}
    seen = {}
    run(args.model, "native")  # converts e5 once, warms the page cache
    for _ in range(args.runs):
        for side in sides:
            wall, cpu, words = run(args.model, side)
            times[side]["wall"].append(wall)
            times[side]["cpu"].append(cpu)
            seen[side] = words
    median = {side: {kind: statistics.median(v) for kind, v in t.items()} for side, t in times.items()}
    print(json.dumps({
        "bench": "load", "model": args.model, "runs": args.runs,
        "native": {**{f"{k}_s": round(v, 2) for k, v in median["native"].items()},
                   "model_class": seen["native"][0], "imported_transformers": seen["native"][1] == "True"},
        "transformers": {**{f"{k}_s": round(v, 2) for k, v in median["transformers"].items()},
                         "model_class": seen["transformers"][0]},
        "native_over_transformers": {k: round(median["native"][k] / median["transformers"][k], 3)
                                     for k in ("wall", "cpu")},
        "same_vector": seen["native"][2] == seen["transformers"][2],
        "load_average": [round(x, 2) for x in os.getloadavg()], "cpu": cpu_name(), "cpu_flags": cpu_flags(),
    }))


if __name__ == "__main__":
    main()
