"""Latency of POST /search over real HTTP, at 1 and 4 concurrent clients; one JSON line.

Indexes the shipped sample (52 documents, 12 languages) with the model into a
temporary directory, starts ``xlsearch serve`` on a free loopback port, warms it up,
then sends XQuAD questions (12 languages, from ``../shared/benchmarks/xquad``) as
hybrid queries (k=10) from N client threads, each with its own keep-alive
connection. Latency is client-side: request sent to response parsed.

Models:
    default                 a tiny seeded DeBERTa-v2 (3 layers, hidden 32; the test suite's)
    --model DIR             any model directory
    --exact-shape DIR       build (once) and use a DebertaV2Model with mdeberta-v3-base's exact
                            shape (251,000 x 768 embedding, 12 layers, 12 heads, 3072 inner,
                            relative attention with 256 buckets, p2c+c2p, shared keys) and random
                            weights, with a 32,000-piece SentencePiece tokenizer trained on XQuAD

    python bench/bench_api.py --queries 200
    python bench/bench_api.py --exact-shape /tmp/mdeberta-shape --queries 200 --threads 1
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a plain checkout

XQUAD = REPO.parent / "shared" / "benchmarks" / "xquad"
XQUAD_LANGS = ("ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh")
SAMPLE = REPO / "data" / "sample.jsonl"
MDEBERTA_SHAPE = {  # microsoft/mdeberta-v3-base's config.json, architecture fields
    "vocab_size": 251000, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "hidden_act": "gelu", "relative_attention": True, "position_buckets": 256,
    "pos_att_type": ["p2c", "c2p"], "share_att_key": True, "norm_rel_ebd": "layer_norm",
    "max_relative_positions": -1, "position_biased_input": False, "max_position_embeddings": 512,
    "type_vocab_size": 0, "layer_norm_eps": 1e-7, "pad_token_id": 0}


def xquad_texts() -> tuple[list[str], list[str]]:
    """(paragraphs, questions) of the 12 XQuAD languages, questions interleaved across languages."""
    paragraphs, per_lang = [], []
    for lang in XQUAD_LANGS:
        data = json.loads((XQUAD / f"xquad.{lang}.json").read_text(encoding="utf-8"))["data"]
        paragraphs += [p["context"] for a in data for p in a["paragraphs"]]
        per_lang.append([qa["question"] for a in data for p in a["paragraphs"] for qa in p["qas"]])
    questions = [q for group in zip(*per_lang) for q in group]
    return paragraphs, questions


def write_tokenizer(directory: Path, texts: list[str], vocab_size: int) -> None:
    """A DeBERTa-v2 SentencePiece tokenizer (``spm.model`` + ``tokenizer_config.json``) trained on ``texts``."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size, character_coverage=0.9995,
        byte_fallback=True, minloglevel=2, num_threads=os.cpu_count() or 1, pad_id=0, bos_id=1, eos_id=2,
        unk_id=3, pad_piece="[PAD]", bos_piece="[CLS]", eos_piece="[SEP]", unk_piece="[UNK]",
        user_defined_symbols=["[MASK]"])
    (directory / "spm.model").write_bytes(model.getvalue())
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "DebertaV2Tokenizer", "do_lower_case": False, "model_max_length": 512,
         "bos_token": "[CLS]", "eos_token": "[SEP]", "unk_token": "[UNK]", "sep_token": "[SEP]",
         "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"}))


def build_exact_shape(directory: Path) -> Path:
    """mdeberta-v3-base's architecture with seeded random weights, saved like the hub repository."""
    import torch
    from transformers import DebertaV2Config, DebertaV2Model

    if (directory / "config.json").is_file() and (directory / "spm.model").is_file():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    paragraphs, questions = xquad_texts()
    write_tokenizer(directory, paragraphs + questions, vocab_size=32000)
    torch.manual_seed(0)
    DebertaV2Model(DebertaV2Config(**MDEBERTA_SHAPE)).eval().save_pretrained(directory)
    return directory


def build_tiny(directory: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import build_tiny_deberta, training_sentences

    return build_tiny_deberta(directory, training_sentences())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(index: Path, model: Path, threads: int | None, log: Path,
                 timeout: float = 300, extra: list[str] | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "xlsearch.api.cli.main", "serve", "--index", str(index), "--port", str(port),
               "--model", str(model), "--device", "cpu"] + (["--threads", str(threads)] if threads else []) + \
        (extra or [])
    with open(log, "wb") as stderr:
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr,
                                   env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"server did not start in {timeout:.0f} s")


def run_clients(url: str, queries: list[str], clients: int) -> dict:
    """Send ``queries`` from ``clients`` threads (round robin); latencies in ms."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(slot: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            for query in queries[slot::clients]:
                start = time.perf_counter()
                response = http.post("/search", json={"query": query, "k": 10})
                response.json()
                elapsed = (time.perf_counter() - start) * 1000
                with lock:
                    latencies.append(elapsed)
                    if response.status_code != 200:
                        errors.append(response.text[:200])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    if errors:
        raise SystemExit(f"{len(errors)} failed requests, e.g. {errors[0]}")
    ordered = sorted(latencies)
    return {"requests": len(ordered), "p50_ms": round(statistics.median(ordered), 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2),
            "mean_ms": round(statistics.fmean(ordered), 2), "requests_per_s": round(len(ordered) / wall, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="model directory (default: build the tiny test model)")
    parser.add_argument("--exact-shape", type=Path, metavar="DIR",
                        help="build (if absent) and use an mdeberta-v3-base-shaped random model in DIR")
    parser.add_argument("--layer", type=int, help="layer to index (default: 8, or the last but one when fewer)")
    parser.add_argument("--queries", type=int, default=200, help="measured queries per concurrency level")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured queries first")
    parser.add_argument("--concurrency", default="1,4", help="client counts, comma-separated (default 1,4)")
    parser.add_argument("--threads", type=int, help="passed to `xlsearch serve --threads`")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        result = measure(args, Path(tmp))
    print(json.dumps(result))
    return 0


def measure(args: argparse.Namespace, work: Path) -> dict:
    from xlsearch.indexer.config import IndexConfig
    from xlsearch.indexer.encoding.encoder import Encoder
    from xlsearch.indexer.writing.pipeline import build_index
    from xlsearch.indexer.encoding.model import load_model

    model = args.model or (build_exact_shape(args.exact_shape) if args.exact_shape else build_tiny(work / "tiny"))
    loaded = load_model(str(model), "cpu")
    layer = args.layer if args.layer is not None else min(8, loaded.num_layers - 1)
    index = work / "index"
    build_index([SAMPLE], index, Encoder(loaded, batch_size=16), IndexConfig(model_name=str(model), layer=layer))
    del loaded
    _, questions = xquad_texts()
    process, url = start_server(index, model, args.threads, work / "server.log")
    try:
        run_clients(url, questions[:args.warmup], 1)
        results = {}
        offset = args.warmup
        for clients in (int(c) for c in args.concurrency.split(",")):
            results[f"clients_{clients}"] = run_clients(url, questions[offset:offset + args.queries], clients)
            offset += args.queries
    finally:
        process.terminate()
        process.wait(30)
    config = json.loads((Path(model) / "config.json").read_text())
    return {
        "bench": "api_search_latency", "model": "exact-shape mdeberta-v3-base" if args.exact_shape else str(args.model or "tiny test model"),
        "hidden": config["hidden_size"], "layers": config["num_hidden_layers"], "vocab": config["vocab_size"],
        "layer": layer, "mode": "hybrid", "k": 10, "documents": 52, "serve_threads": args.threads,
        **results, "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version()}


if __name__ == "__main__":
    sys.exit(main())
