"""Encoding speed: the fast DeBERTa-v2 path against transformers' eager forward, one JSON line.

Model: the exact shape of microsoft/mdeberta-v3-base (``DebertaV2Config`` with 251,000
tokens, 768 hidden, 12 layers, 12 heads, 256 position buckets, p2c+c2p, shared keys)
with seeded random weights, eval mode. Tokenizer: a SentencePiece model (32,000
pieces, ids < 251,000) trained here on the XQuAD texts used, so token ids and lengths
come from real multilingual text. Text: XQuAD paragraphs and questions from
``../shared/benchmarks/xquad`` in several languages.

Figures (each a ratio measured in this run, baseline and fast runs interleaved, medians):

* query: p50 latency of encoding one 8-32 token question (tokenise, forward, pool
  layer ``--layer``, normalise) with ``Encoder`` vs the eager HF forward (all 12 layers,
  ``output_hidden_states``, same pooling). Batch 1.
* bulk: documents/s on ``--docs`` texts (half paragraphs, half questions) with
  ``Encoder.encode`` vs a sentence-transformers-style loop (length-sorted batches of
  ``--batch-size``, dynamic padding, all 12 layers, eager fp32). Tokens/s, and its
  fraction of the matmul-bound limit: measured GFLOP/s of a 2048^3 fp32 matmul (the
  faster of MKL and oneDNN, both reported) divided by the useful FLOPs per token (linear layers plus QK, PV, c2p and p2c at
  each text's own length, up to the pooled layer).
* kernels: the fast path on the fp32 linear kernels chosen for this CPU
  (:mod:`indexer.encoding.linear_kernel`) against MKL for every linear, CPU time per query
  (p50) and per bulk run, interleaved; the choice and the timings it was made on.
* ``--onnx``: ONNX Runtime (installed by the bench into ``--peers``) on the same single
  queries, the first ``--layer`` layers exported in fp32: CPU time per query against the
  fast path's, interleaved, and the difference of their vectors.
* ``--precisions`` (bf16, int8): ``Encoder(precision=...)`` vs fp32 on the same queries and
  bulk texts, interleaved, in CPU time: speed-ups and the cosine of its vectors to fp32's
  (``native`` says whether the CPU has bf16 matmuls, or int8 dot products (VNNI/AMX)).
* Peak resident memory (VmHWM) during each bulk run; the 1-minute load average at
  start and end, since other processes on a shared machine skew wall-clock ratios.

Usage: ``python bench/bench_encode.py [--queries 16] [--docs 64] [--threads N]`` (~2.5 min on 2 cores)
"""
from __future__ import annotations

import argparse
import copy
import importlib
import io
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from machine_facts import cpu_flags, cpu_name

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a plain checkout

from xlsearch.indexer.allocator import retain_freed_memory  # noqa: E402
from xlsearch.indexer.encoding import int8_linear, linear_kernel  # noqa: E402
from xlsearch.indexer.encoding.encoder import PRECISIONS, Encoder, native_support  # noqa: E402
from xlsearch.indexer.config import MEAN  # noqa: E402
from xlsearch.indexer.encoding.model import LoadedModel

XQUAD = REPO.parent / "shared" / "benchmarks" / "xquad"
SHAPE = {"vocab_size": 251000, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
         "intermediate_size": 3072, "relative_attention": True, "position_buckets": 256,
         "pos_att_type": ["p2c", "c2p"], "share_att_key": True, "norm_rel_ebd": "layer_norm",
         "max_relative_positions": -1, "position_biased_input": False, "type_vocab_size": 0,
         "max_position_embeddings": 512}


def read_xquad(langs: list[str]) -> tuple[list[str], list[str]]:
    """All paragraphs and questions of ``langs``."""
    paragraphs, questions = [], []
    for lang in langs:
        data = json.loads((XQUAD / f"xquad.{lang}.json").read_text(encoding="utf-8"))
        for article in data["data"]:
            for paragraph in article["paragraphs"]:
                paragraphs.append(paragraph["context"])
                questions += [qa["question"] for qa in paragraph["qas"]]
    return paragraphs, questions


def build_tokenizer(texts: list[str], directory: Path, vocab_size: int = 32000):
    """A DeBERTa-v2 (SentencePiece) fast tokenizer trained on ``texts``."""
    import sentencepiece as spm
    from transformers import AutoTokenizer

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size, character_coverage=0.9995,
        byte_fallback=True, minloglevel=2, num_threads=2, pad_id=0, bos_id=1, eos_id=2, unk_id=3,
        pad_piece="[PAD]", bos_piece="[CLS]", eos_piece="[SEP]", unk_piece="[UNK]", user_defined_symbols=["[MASK]"])
    (directory / "spm.model").write_bytes(model.getvalue())
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "DebertaV2Tokenizer", "do_lower_case": False, "model_max_length": 512,
         "bos_token": "[CLS]", "eos_token": "[SEP]", "unk_token": "[UNK]", "sep_token": "[SEP]",
         "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"}))
    return AutoTokenizer.from_pretrained(directory)


def build_model():
    from transformers import DebertaV2Config, DebertaV2Model

    torch.manual_seed(0)
    return DebertaV2Model(DebertaV2Config(**SHAPE)).eval()


class Baseline:
    """sentence-transformers-style encoding: sorted batches, dynamic padding, full eager forward."""

    def __init__(self, model, tokenizer, batch_size: int):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    @torch.inference_mode()
    def encode(self, texts: list[str], layer: int) -> np.ndarray:
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # as sentence-transformers: by characters
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            batch = self.tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=512,
                                   return_tensors="pt", return_special_tokens_mask=True)
            states = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                output_hidden_states=True).hidden_states
            mask = (batch["attention_mask"] * (1 - batch["special_tokens_mask"])).unsqueeze(-1).float()
            pooled = (states[layer] * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[rows] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
        return out


def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def matmul_rates(size: int = 2048, repeats: int = 3) -> dict[str, float]:
    """GFLOP/s of a ``size``-cubed fp32 product on each library the encoder may use (MKL through
    ``torch.matmul``; oneDNN through its linear op, when this torch has it)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    products = {"mkl": lambda: a @ b}
    if linear_kernel.onednn_available():
        packed = torch.ops.mkldnn._reorder_linear_weight(b)
        products["onednn"] = lambda: torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [], "")
    rates = {}
    for name, product in products.items():
        product()
        seconds, _ = timed(lambda: [product() for _ in range(repeats)])
        rates[name] = repeats * 2 * size ** 3 / seconds / 1e9
    return rates


def matmul_gflops() -> float:
    """The fp32 matmul limit: the faster library's rate."""
    return max(matmul_rates().values())


def query_cpu_ms(encoder: Encoder, queries: list[str], layer: int) -> float:
    """Median CPU time of encoding each of ``queries`` alone, in ms."""
    times = []
    for query in queries:
        started = time.process_time()
        encoder.encode([query], layer)
        times.append(time.process_time() - started)
    return 1e3 * statistics.median(times)


def bulk_cpu_s(encoder: Encoder, docs: list[str], layer: int) -> float:
    """CPU time of encoding ``docs`` in one call, in s."""
    started = time.process_time()
    encoder.encode(docs, layer)
    return time.process_time() - started


def bench_kernels(encoder: Encoder, queries: list[str], docs: list[str], layer: int, repeats: int) -> dict:
    """The fast path on the kernels :mod:`indexer.encoding.linear_kernel` chose against MKL for every
    linear (torch's default), interleaved: CPU time per query (p50) and per bulk run (median)."""
    chosen_q, mkl_q, chosen_b, mkl_b = [], [], [], []
    for _ in range(repeats):
        chosen_q.append(query_cpu_ms(encoder, queries, layer))
        chosen_b.append(bulk_cpu_s(encoder, docs, layer))
        with linear_kernel.forced(linear_kernel.MKL):
            mkl_q.append(query_cpu_ms(encoder, queries, layer))
            mkl_b.append(bulk_cpu_s(encoder, docs, layer))
    q, qm, b, bm = (statistics.median(x) for x in (chosen_q, mkl_q, chosen_b, mkl_b))
    return {"linear_kernel": linear_kernel.choice(), "query_cpu_ms_p50_fast": round(q, 2),
            "query_cpu_ms_p50_fast_on_mkl": round(qm, 2), "kernel_query_speedup": round(qm / q, 2),
            "bulk_cpu_s_fast": round(b, 3), "bulk_cpu_s_fast_on_mkl": round(bm, 3),
            "kernel_bulk_speedup": round(bm / b, 2)}


def useful_flops(lengths: list[int], layers: int, hidden: int, inner: int) -> float:
    """Linear layers plus QK^T, PV, c2p and p2c over each text's own tokens, ``layers`` layers."""
    per_token_linear = 2 * (4 * hidden * hidden + 2 * hidden * inner)
    return float(sum(n * layers * (per_token_linear + 8 * n * hidden) for n in lengths))


def bench_queries(encoder: Encoder, baseline: Baseline, queries: list[str], layer: int) -> dict:
    fast_times, base_times, diffs = [], [], []
    encoder.encode(queries[:2], layer), baseline.encode(queries[:2], layer)  # warm-up, fills the caches
    for query in queries:
        base_s, base_v = timed(baseline.encode, [query], layer)
        fast_s, fast_v = timed(encoder.encode, [query], layer)
        base_times.append(base_s)
        fast_times.append(fast_s)
        diffs.append(float(np.abs(base_v - fast_v).max()))
    lengths = [len(ids) for ids in encoder.tokenizer(queries)["input_ids"]]
    return {"queries": len(queries), "query_tokens_min_median_max": [min(lengths), statistics.median(lengths),
                                                                     max(lengths)],
            "query_p50_ms_hf_eager": round(1e3 * statistics.median(base_times), 2),
            "query_p50_ms_fast": round(1e3 * statistics.median(fast_times), 2),
            "query_speedup_p50": round(statistics.median(base_times) / statistics.median(fast_times), 2),
            "query_speedup_median_of_pairs": round(statistics.median(
                [base / fast for base, fast in zip(base_times, fast_times)]), 2),
            "query_max_abs_diff": max(diffs)}


def bench_bulk(encoder: Encoder, baseline: Baseline, docs: list[str], layer: int, repeats: int) -> dict:
    lengths = [len(ids) for ids in encoder.tokenizer(docs, truncation=True, max_length=512)["input_ids"]]
    flops = useful_flops(lengths, layer, encoder.dim, encoder.loaded.model.config.intermediate_size)
    fast_times, base_times, gflops, fast_rss, base_rss = [], [], [], [], []
    for _ in range(repeats):
        gflops.append(matmul_gflops())
        reset_peak_rss()
        base_s, base_v = timed(baseline.encode, docs, layer)
        base_rss.append(peak_rss_mb())
        reset_peak_rss()
        fast_s, fast_v = timed(encoder.encode, docs, layer)
        fast_rss.append(peak_rss_mb())
        base_times.append(base_s)
        fast_times.append(fast_s)
    gflops.append(matmul_gflops())
    fast_s, base_s, limit = statistics.median(fast_times), statistics.median(base_times), statistics.median(gflops)
    tokens_per_s = sum(lengths) / fast_s
    return {"docs": len(docs), "doc_tokens_mean": round(sum(lengths) / len(lengths), 1),
            "doc_tokens_max": max(lengths), "batch_size": encoder.batch_size,
            "bulk_docs_per_s_baseline": round(len(docs) / base_s, 2), "bulk_docs_per_s_fast": round(len(docs) / fast_s, 2),
            "bulk_speedup": round(base_s / fast_s, 2), "bulk_max_abs_diff": float(np.abs(base_v - fast_v).max()),
            "bulk_tokens_per_s_fast": round(tokens_per_s, 1),
            "useful_gflop_per_s_fast": round(flops / fast_s / 1e9, 1), "matmul_fp32_gflop_per_s": round(limit, 1),
            "fraction_of_matmul_limit": round(flops / fast_s / 1e9 / limit, 3),
            "peak_rss_mb_fast": max(fast_rss) if fast_rss[0] else None,
            "peak_rss_mb_baseline": max(base_rss) if base_rss[0] else None}


def bench_allocator(encoder: Encoder, docs: list[str], layer: int) -> dict:
    """Bulk CPU time with glibc's default allocator settings, then as the command line runs (freed memory
    retained, :mod:`indexer.allocator`); every later measurement in this run uses the latter."""
    def run() -> tuple[float, int]:
        before, faults = resource.getrusage(resource.RUSAGE_SELF), None
        encoder.encode(docs, layer)
        after = resource.getrusage(resource.RUSAGE_SELF)
        faults = after.ru_minflt - before.ru_minflt
        return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, faults

    run()
    default_s, default_faults = run()
    retained = retain_freed_memory()
    run()  # the heap grows to the working set once
    retained_s, retained_faults = run()
    return {"allocator_retains_freed_memory": retained, "bulk_cpu_s_default_allocator": round(default_s, 2),
            "bulk_cpu_s_retained": round(retained_s, 2), "bulk_page_faults_default_allocator": default_faults,
            "bulk_page_faults_retained": retained_faults, "allocator_speedup": round(default_s / retained_s, 2)}


def bench_reduced(loaded: LoadedModel, fp32: Encoder, queries: list[str], docs: list[str], layer: int,
                  repeats: int, precision: str) -> dict:
    """``Encoder(precision=...)`` against fp32, interleaved, in CPU time: p50 per single query and the median
    bulk run over ``docs``; the cosine of its vectors to fp32's; whether the CPU has the instructions."""
    reduced = Encoder(loaded, batch_size=fp32.batch_size, precision=precision)
    reduced.encode(docs[:2], layer), reduced.encode(queries[:2], layer)  # warm-up: casts, int8 weights
    times: dict[str, list[float]] = {"fq": [], "rq": [], "fb": [], "rb": []}
    for _ in range(repeats):
        times["fq"].append(query_cpu_ms(fp32, queries, layer))
        times["rq"].append(query_cpu_ms(reduced, queries, layer))
        times["fb"].append(bulk_cpu_s(fp32, docs, layer))
        times["rb"].append(bulk_cpu_s(reduced, docs, layer))
    fq, rq, fb, rb = (statistics.median(times[key]) for key in ("fq", "rq", "fb", "rb"))
    cosine = (fp32.encode(docs + queries, layer) * reduced.encode(docs + queries, layer)).sum(1)
    native = int8_linear.native_support() if precision == "int8" else native_support(PRECISIONS[precision],
                                                                                      loaded.device)
    return {precision: {"native": native, "query_cpu_ms_p50": round(rq, 2), "query_cpu_ms_p50_fp32": round(fq, 2),
                        "query_speedup": round(fq / rq, 2), "bulk_cpu_s": round(rb, 3),
                        "bulk_cpu_s_fp32": round(fb, 3), "bulk_speedup": round(fb / rb, 2),
                        "cosine_to_fp32_median": round(float(np.median(cosine)), 5),
                        "cosine_to_fp32_min": round(float(cosine.min()), 5)}}


ONNX_PEERS = ["onnxruntime==1.32.0", "onnx==1.23.2", "protobuf==7.36.2", "flatbuffers==25.12.19", "ml_dtypes==0.7.0"]


def install_onnx(target: Path) -> bool:
    """Make ONNX Runtime importable from ``target``, installing it there first (pinned, no other dependencies)."""
    sys.path.append(str(target))
    try:
        importlib.import_module("onnxruntime")
        return True
    except ImportError:
        pass
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                           *ONNX_PEERS], capture_output=True, text=True)
    if done.returncode:
        print(f"ONNX Runtime not installed ({done.stderr.strip()[-300:]}); no ONNX peer", file=sys.stderr)
        return False
    importlib.invalidate_caches()
    return True


def bench_onnx(encoder: Encoder, queries: list[str], layer: int, threads: int, peers: Path) -> dict:
    """ONNX Runtime as a peer on single queries: the model's first ``layer`` layers exported to ONNX (fp32,
    all graph optimisations, ``threads`` intra-op threads), the same tokenizer and mean pooling; CPU time
    per query (p50) interleaved with the fast path's, and the largest difference of their vectors."""
    if not install_onnx(peers):
        return {}
    import warnings

    import onnxruntime

    model = encoder.loaded.model
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = layer
    truncated = type(model)(config).eval()
    truncated.load_state_dict(model.state_dict(), strict=False)

    class LastHidden(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    sample = encoder.tokenizer(queries[:1], return_tensors="pt")
    axes = {0: "batch", 1: "tokens"}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = str(Path(tmp) / "encoder.onnx")
        torch.onnx.export(LastHidden(truncated), (sample["input_ids"], sample["attention_mask"]), path,
                          input_names=["input_ids", "attention_mask"], output_names=["hidden"], dynamo=False,
                          dynamic_axes={"input_ids": axes, "attention_mask": axes, "hidden": axes}, opset_version=17)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def onnx_encode(query: str) -> np.ndarray:
        inputs = encoder.tokenizer([query], return_tensors="np")
        mask = inputs["attention_mask"].astype(np.float32)[..., None]
        hidden = session.run(None, {"input_ids": inputs["input_ids"].astype(np.int64),
                                    "attention_mask": inputs["attention_mask"].astype(np.int64)})[0]
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    onnx_times, fast_times, diffs = [], [], []
    for query in queries[:2]:
        onnx_encode(query), encoder.encode([query], layer, pooling=MEAN)
    for query in queries:
        started = time.process_time()
        theirs = onnx_encode(query)
        onnx_times.append(time.process_time() - started)
        started = time.process_time()
        ours = encoder.encode([query], layer, pooling=MEAN)
        fast_times.append(time.process_time() - started)
        diffs.append(float(np.abs(theirs - ours).max()))
    onnx_ms, fast_ms = 1e3 * statistics.median(onnx_times), 1e3 * statistics.median(fast_times)
    return {"onnxruntime": onnxruntime.__version__, "query_cpu_ms_p50_onnxruntime": round(onnx_ms, 2),
            "query_cpu_ms_p50_fast_beside_onnx": round(fast_ms, 2),
            "query_speedup_vs_onnxruntime": round(onnx_ms / fast_ms, 2), "onnx_max_abs_diff": max(diffs)}


LINEAR_OP, POSITION_PRODUCT = "mkldnn::_linear_pointwise", "position product"
PROFILE_GROUPS = {  # aten op -> where its time goes in the fast forward
    "linear": ("aten::addmm", "aten::mm", LINEAR_OP),
    "attention": ("aten::_scaled_dot_product_flash_attention_for_cpu", "aten::bmm", "aten::gather",
                  "aten::masked_fill", "aten::masked_fill_", "aten::_softmax", "aten::baddbmm", POSITION_PRODUCT),
    "layer_norm": ("aten::native_layer_norm",),
    "gelu": ("aten::gelu",),
    "packing": ("aten::index", "aten::index_put_", "aten::copy_", "aten::cat", "aten::zero_", "aten::fill_",
                "aten::clone", "aten::masked_select", "aten::nonzero"),
    "residual_add": ("aten::add", "aten::add_"),
    "embeddings": ("aten::embedding", "aten::index_select"),
}


def bench_profile(encoder: Encoder, docs: list[str], layer: int, limit_gflops: float) -> dict:
    """Where the bulk forward spends its CPU time: each group's share of the profiled self time, and the
    linear layers' own rate against the matmul limit."""
    from torch.profiler import ProfilerActivity, profile

    lengths = [len(ids) for ids in encoder.tokenizer(docs, truncation=True, max_length=512)["input_ids"]]
    hidden, inner = encoder.dim, encoder.loaded.model.config.intermediate_size
    linear_flops = float(sum(lengths)) * layer * 2 * (4 * hidden * hidden + 2 * hidden * inner)
    encoder.encode(docs[:2], layer)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        encoder.encode(docs, layer)
    self_us: dict[str, float] = {}
    for event in prof.key_averages(group_by_input_shape=True):
        # DeBERTa's position products run on the linear kernel too, on inputs of head_size columns (the first
        # matrix of a product, skipping MKL's bias column)
        matrices = [shape for shape in event.input_shapes or [] if len(shape) == 2 and 1 not in shape]
        position = event.key in PROFILE_GROUPS["linear"] and bool(matrices) and matrices[0][-1] not in (hidden, inner)
        key = POSITION_PRODUCT if position else event.key
        self_us[key] = self_us.get(key, 0.0) + event.self_cpu_time_total
    total = sum(self_us.values())
    shares = {group: sum(self_us.get(op, 0.0) for op in ops) / total for group, ops in PROFILE_GROUPS.items()}
    shares["other"] = 1.0 - sum(shares.values())
    linear_s = sum(self_us.get(op, 0.0) for op in PROFILE_GROUPS["linear"]) / 1e6
    return {"profile_share_of_forward": {group: round(share, 3) for group, share in shares.items()},
            "profile_linear_gflop_per_s": round(linear_flops / linear_s / 1e9, 1),
            "profile_linear_fraction_of_matmul_limit": round(linear_flops / linear_s / 1e9 / limit_gflops, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=16, help="questions timed one by one (default 16)")
    parser.add_argument("--docs", type=int, default=64, help="texts in the bulk run, half paragraphs (default 64)")
    parser.add_argument("--precisions", default="bf16,int8",
                        help="reduced precisions compared with fp32 on the same queries and texts, comma-separated; "
                        "'' skips them (default bf16,int8)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved bulk runs of each side (default 2)")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default 32)")
    parser.add_argument("--layer", type=int, default=8, help="pooled layer (default 8)")
    parser.add_argument("--langs", default="en,de,es,ru,zh,ar,hi,th", help="XQuAD languages")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    parser.add_argument("--onnx", action="store_true",
                        help="also time ONNX Runtime (installed into --peers) on the same single queries")
    parser.add_argument("--peers", type=Path, default=Path(tempfile.gettempdir()) / "xlsearch-bench-peers",
                        help="where the ONNX Runtime peer is installed (default: a folder in the temp directory)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one bulk run: time per group of ops (linear, attention, layer norm, ...)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    paragraphs, questions = read_xquad(args.langs.split(","))
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_tokenizer(paragraphs + questions, Path(tmp))
    model = build_model()
    loaded = LoadedModel("mdeberta-v3-base-shape", model, tokenizer, "bench", torch.device("cpu"))
    encoder = Encoder(loaded, batch_size=args.batch_size)
    baseline = Baseline(model, tokenizer, args.batch_size)
    short = [q for q in questions if 8 <= len(tokenizer(q)["input_ids"]) <= 32]
    queries = rng.sample(short, args.queries)
    half = args.docs // 2
    docs = rng.sample(paragraphs, half) + rng.sample(questions, args.docs - half)
    rng.shuffle(docs)
    result = {"bench": "encode", "machine": f"{platform.machine()} {os.cpu_count()} cpus", "torch": torch.__version__,
              "threads": torch.get_num_threads(), "loadavg_1min_start": round(os.getloadavg()[0], 2),
              "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu": cpu_name(), "cpu_flags": cpu_flags(),
              "model": "DebertaV2Model mdeberta-v3-base shape (random weights, fp32, eval)",
              "tokenizer": "SentencePiece 32k trained on the XQuAD texts", "langs": args.langs, "layer": args.layer,
              "uses_fast_path": encoder.uses_fast_path}
    result.update(bench_queries(encoder, baseline, queries, args.layer))
    result.update(bench_allocator(encoder, docs, args.layer))
    result.update(bench_kernels(encoder, queries, docs, args.layer, args.repeats))
    result.update(bench_bulk(encoder, baseline, docs, args.layer, args.repeats))
    result["matmul_fp32_gflop_per_s_by_library"] = {k: round(v, 1) for k, v in matmul_rates().items()}
    if args.onnx:
        result.update(bench_onnx(encoder, queries, args.layer, torch.get_num_threads(), args.peers))
    if args.profile:
        result.update(bench_profile(encoder, docs, args.layer, result["matmul_fp32_gflop_per_s"]))
    for precision in filter(None, args.precisions.split(",")):
        result.update(bench_reduced(loaded, encoder, queries, docs, args.layer, args.repeats, precision))
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["loadavg_1min_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
