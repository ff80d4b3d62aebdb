"""Hybrid fusion designs side by side on real benchmarks, with a real encoder.

Encodes each benchmark once (chunked and prompted exactly as ``xlsearch index`` does,
at every layer asked for, one forward pass) and caches the vectors; then, per
query, takes the dense and the BM25 candidate lists as the searcher does (top
``max(4 k, 50)`` chunks of each) and scores every fusion of ``search.fusion.FUSIONS``
on them, with the benchmark's own metrics. Prints one JSON line: for each
benchmark, layer and fusion the primary metric's means (XQuAD: monolingual,
cross-lingual and every pair), and for each fusion its worst margin to the better
of its two halves.

    python bench/fusion_study.py --model multilingual-e5-small --layers 4,12 \\
        --benchmarks xquad,xquad-r,tatoeba --cache /tmp/fusion-cache
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from xlsearch.indexer.text.analysis import analyze  # noqa: E402
from xlsearch.indexer.writing.writer import with_language  # noqa: E402
from xlsearch.indexer.text.pieces import document_pieces
from xlsearch.indexer.config import IndexConfig  # noqa: E402
from xlsearch.indexer.encoding.encoder import Encoder  # noqa: E402
from xlsearch.indexer.store.lexical import BM25Index  # noqa: E402
from xlsearch.indexer.encoding.model import load_model  # noqa: E402
from xlsearch.indexer.encoding.sentence_config import settle_config  # noqa: E402
from xlsearch.search.eval.benchmarks import load_benchmark  # noqa: E402
from xlsearch.search.fusion import Candidates, fuse  # noqa: E402
from xlsearch.search.eval.metrics import mean_metrics  # noqa: E402
from xlsearch.indexer.encoding.sentence_config import pools_as_trained  # noqa: E402
from xlsearch.search.options import AUTO, DEFAULT_FUSION, FUSIONS as CHOICES  # noqa: E402

DATA = ROOT.parent / "shared" / "benchmarks"
OPTIONS = {"xquad": {"pairs": "all"}, "tatoeba": {"langs": ["xtreme"]}, "xquad-r": {}}


def encode_benchmark(name: str, encoder: Encoder, layers: list[int], limit: int | None, cache: Path):
    """Benchmark, per-collection chunk arrays and vectors, query vectors; cached in ``cache``."""
    bench = load_benchmark(name, DATA / name, limit=limit, **OPTIONS[name])
    config = settle_config(IndexConfig(model_name=encoder.loaded.name), encoder.loaded)
    file = cache / f"{name}-{limit or 'all'}-{'_'.join(map(str, layers))}.npz"
    collections = {}
    for cname, docs in bench.collections.items():
        pieces = [(doc.id, p) for doc in docs for p in document_pieces(with_language(doc), encoder.tokenizer, config)]
        collections[cname] = {"doc": np.array([d for d, _ in pieces]), "input": [p.input for _, p in pieces]}
    queries = list(dict.fromkeys(q for t in bench.tasks for q in t.queries.values()))
    if file.exists():
        stored = np.load(file, allow_pickle=False)
        vectors = {key: stored[key] for key in stored.files}
    else:
        vectors = {}
        started = time.monotonic()
        for cname, col in collections.items():
            out = encoder.encode_layers(col["input"], layers, pooling=config.pooling, prompt=config.document_prompt)
            for layer in layers:
                vectors[f"c:{cname}:{layer}"] = out[layer]
        out = encoder.encode_layers(queries, layers, pooling=config.pooling, prompt=config.query_prompt)
        for layer in layers:
            vectors[f"q:{layer}"] = out[layer]
        print(f"{name}: encoded in {time.monotonic() - started:.0f} s", file=sys.stderr)
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(file, **vectors)
    return bench, config, collections, {q: i for i, q in enumerate(queries)}, vectors


def study(name: str, encoder: Encoder, layers: list[int], limit: int | None, cache: Path,
          fusions: list[str]) -> dict:
    bench, config, collections, query_row, vectors = encode_benchmark(name, encoder, layers, limit, cache)
    depth = max(4 * bench.depth, 50)
    lexical = {}
    for cname, col in collections.items():
        index = BM25Index(k1=config.bm25_k1, b=config.bm25_b, epsilon=config.bm25_epsilon)
        index.add(list(range(len(col["input"]))), [analyze(t) for t in col["input"]])
        lexical[cname] = index
    modes = ["dense", "lexical"] + fusions
    out: dict = {}
    for layer in layers:
        trained = pools_as_trained(dataclasses.replace(config, layer=layer), encoder.loaded)
        named = {mode: ("backed" if trained else "anchored") if mode == AUTO else mode for mode in modes}
        per_task: dict[str, dict[str, float]] = {m: {} for m in modes}
        for task in bench.tasks:
            col = collections[task.collection]
            chunk_vectors = vectors[f"c:{task.collection}:{layer}"]
            qids = list(task.queries)
            qv = vectors[f"q:{layer}"][[query_row[task.queries[q]] for q in qids]]
            dense_all = qv @ chunk_vectors.T
            runs: dict[str, dict[str, list[str]]] = {m: {} for m in modes}
            for row, qid in enumerate(qids):
                scores = dense_all[row]
                top = np.argsort(-scores, kind="stable")[:depth]
                tokens = analyze(task.queries[qid])
                lex_ids, lex_scores = lexical[task.collection].search(tokens, depth, with_ties=True)
                index = lexical[task.collection]
                cands = Candidates(dense=dict(zip(top.tolist(), scores[top].astype(float).tolist())),
                                   lexical=dict(zip(lex_ids.tolist(), lex_scores.tolist())),
                                   query_weight=float(index.query_weights(tokens).sum()))
                cands.complete(lambda ids: scores[ids].astype(float), partial(index.score_chunks, tokens))
                for mode in modes:
                    if mode == "dense":
                        fused = cands.dense
                    elif mode == "lexical":
                        fused = cands.lexical
                    else:
                        fused = fuse(named[mode], cands)
                    runs[mode][qid] = _documents(fused, col["doc"], bench.depth)
            for mode in modes:
                per_task[mode][task.key] = mean_metrics(runs[mode], task.qrels, [bench.primary])[bench.primary]
        out[str(layer)] = _summarise(bench, per_task)
    return out


def _documents(fused: dict[int, float], chunk_doc: np.ndarray, k: int) -> list[str]:
    """Best chunk per document, documents by score then id (as the searcher ranks them)."""
    best: dict[str, float] = {}
    for chunk, score in fused.items():
        doc = str(chunk_doc[chunk])
        if doc not in best or score > best[doc]:
            best[doc] = score
    return sorted(best, key=lambda d: (-best[d], d))[:k]


def _summarise(bench, per_task: dict[str, dict[str, float]]) -> dict:
    groups: dict[str, list[str]] = {}
    for task in bench.tasks:
        group = task.group or "all"
        if bench.name == "xquad":
            src, tgt = task.key.split("-")
            group = "mono" if src == tgt else "cross"
        groups.setdefault(group, []).append(task.key)
    summary = {}
    for mode, scores in per_task.items():
        summary[mode] = {"mean": round(float(np.mean(list(scores.values()))), 4),
                         **{g: round(float(np.mean([scores[k] for k in keys])), 4) for g, keys in groups.items()}}
        if bench.name == "xquad":
            summary[mode]["pairs"] = {k: round(v, 4) for k, v in scores.items()}
    for mode in per_task:
        if mode in ("dense", "lexical"):
            continue
        margins = [per_task[mode][k] - max(per_task["dense"][k], per_task["lexical"][k]) for k in per_task[mode]]
        summary[mode]["worst_task_margin"] = round(float(min(margins)), 4)
    return summary


def plot_margins(result: dict, fusion: str, out: Path) -> None:
    """Heatmaps of ``fusion`` minus the better of dense and lexical, per XQuAD pair, one panel per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = result["benchmarks"]["xquad"]
    langs = sorted({k.split("-")[0] for k in next(iter(layers.values()))["dense"]["pairs"]})
    fig, axes = plt.subplots(1, len(layers), figsize=(6.2 * len(layers), 5.4), squeeze=False)
    for ax, (layer, modes) in zip(axes[0], layers.items()):
        grid = np.full((len(langs), len(langs)), np.nan)
        for key, value in modes[fusion]["pairs"].items():
            q, d = key.split("-")
            grid[langs.index(q), langs.index(d)] = value - max(modes["dense"]["pairs"][key],
                                                               modes["lexical"]["pairs"][key])
        bound = max(0.02, float(np.nanmax(np.abs(grid))))
        image = ax.imshow(grid, cmap="RdBu", vmin=-bound, vmax=bound)
        ax.set_xticks(range(len(langs)), langs)
        ax.set_yticks(range(len(langs)), langs)
        ax.set_xlabel("paragraph language")
        ax.set_ylabel("question language")
        for i in range(len(langs)):
            for j in range(len(langs)):
                ax.text(j, i, f"{grid[i, j] * 100:+.1f}", ha="center", va="center", fontsize=6.5)
        ax.set_title(f"layer {layer}: {fusion} minus max(dense, lexical), MRR@10 x100", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle(f"XQuAD, {result['model']}, first {result['limit'] or 240} paragraphs per language", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="multilingual-e5-small")
    parser.add_argument("--layers", default="12")
    parser.add_argument("--benchmarks", default="xquad,xquad-r,tatoeba")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--fusions", default=",".join(CHOICES))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/xlsearch-fusion-study"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--plot", type=Path, help="PNG of the default fusion's margin per XQuAD pair")
    parser.add_argument("--from-json", type=Path, help="only plot, from an earlier run's output")
    args = parser.parse_args()
    if args.from_json:
        plot_margins(json.loads(args.from_json.read_text()), DEFAULT_FUSION, args.plot)
        return
    layers = [int(x) for x in args.layers.split(",")]
    encoder = Encoder(load_model(args.model, "cpu"), batch_size=args.batch_size)
    started = time.monotonic()
    result = {"model": args.model, "limit": args.limit, "layers": layers, "benchmarks": {}}
    for name in args.benchmarks.split(","):
        result["benchmarks"][name] = study(name, encoder, layers, args.limit, args.cache, args.fusions.split(","))
    result["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(result))
    if args.plot and "xquad" in result["benchmarks"]:
        plot_margins(result, DEFAULT_FUSION, args.plot)


if __name__ == "__main__":
    main()
