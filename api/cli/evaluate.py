"""Subcommand evaluate: run a benchmark through xlsearch and report the numbers.

Prints a table; ``--out`` writes the JSON, ``--report`` a Markdown report,
``--plot`` a PNG and ``--run-file`` the ranked lists in TREC format.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ...indexer.config import DEFAULT_MODEL
from ...indexer.errors import XlsearchError
from ...search.eval.benchmarks import BENCHMARKS, load_benchmark
from ...search.options import DEFAULT_FUSION, FUSIONS, MODES

if TYPE_CHECKING:  # the harness loads the stores; the parser needs none of it
    from ...search.eval.harness import Evaluation

from .options import (add_batch_size_option, add_chunk_options, add_embedding_options, add_model_options,
                      add_precision_option, layers_option, positive_int, unit_float)
from ..settings import requested_model


def add_parsers(subparsers) -> None:
    """Register ``evaluate`` on the ``xlsearch`` parser."""
    parser = subparsers.add_parser(
        "evaluate", help="measure retrieval quality on a benchmark",
        description="Index a benchmark with xlsearch's own code, run its queries in every mode and layer "
        "asked for, and report the metrics (tatoeba: accuracy@1; xquad: MRR@10, nDCG@10, Recall@1/5/20; "
        "xquad-r: mAP@20; beir: nDCG@10, Recall@100, MRR@10). Lexical mode needs no model.")
    parser.add_argument("benchmark", choices=BENCHMARKS, help="benchmark kind")
    parser.add_argument("--data", required=True, metavar="PATH",
                        help="the benchmark's folder (e.g. ../shared/benchmarks/xquad, or a BEIR dataset folder)")
    add_model_options(parser)
    add_precision_option(parser)
    parser.add_argument("--layers", type=layers_option, default=[], metavar="L1,L2,...",
                        help="layers to sweep for dense and hybrid, e.g. 4,6,8,10,12; one forward pass pools "
                        "them all (default auto: the model's own layer, as xlsearch index picks it)")
    add_embedding_options(parser)
    parser.add_argument("--modes", type=_modes, metavar="M1,M2",
                        help="comma list of dense, lexical, hybrid (default: all three with a model, "
                        "else lexical)")
    parser.add_argument("--fusion", default=DEFAULT_FUSION, choices=list(FUSIONS),
                        help=f"hybrid fusion (default {DEFAULT_FUSION}; see xlsearch search --help)")
    parser.add_argument("--alpha", type=unit_float, default=0.5,
                        help="weight of the dense side in hybrid fusion, 0..1 (default 0.5)")
    parser.add_argument("--langs", nargs="+", metavar="LANG",
                        help="languages to evaluate (default all found); tatoeba takes ISO 639-3 codes "
                        "or the preset xtreme (XTREME's 36 languages)")
    parser.add_argument("--pairs", default="all",
                        help="xquad: question-paragraph language pairs: all (12x12 matrix), mono, cross, "
                        "or a list like ar-en,de-en (default all)")
    parser.add_argument("--split", default="test", help="beir: qrels split, qrels/SPLIT.tsv (default test)")
    parser.add_argument("--limit", type=positive_int, metavar="N",
                        help="evaluate a slice: the first N sentence pairs (tatoeba) or paragraphs (xquad, "
                        "xquad-r) per language, or the first N queries (beir)")
    parser.add_argument("--index", type=Path, metavar="DIR",
                        help="keep the evaluation indexes in DIR and reuse them next time (default: a temporary "
                        "folder); if DIR is an xlsearch index, search it as it is")
    add_chunk_options(parser, set_defaults=True, of=" of the evaluation indexes")
    parser.add_argument("--center-languages", action="store_true",
                        help="build the evaluation indexes with language centering; run once with and once "
                        "without to compare")
    add_batch_size_option(parser)
    parser.add_argument("--out", type=Path, metavar="FILE", help="write the results as one JSON object")
    parser.add_argument("--report", type=Path, metavar="FILE", help="write a Markdown report")
    parser.add_argument("--plot", type=Path, metavar="FILE",
                        help="draw a PNG (needs matplotlib: pip install 'xlsearch[eval]')")
    parser.add_argument("--run-file", type=Path, metavar="FILE", help="write every ranked list in TREC run format")
    parser.set_defaults(handler=run_evaluate)


def _modes(text: str) -> list[str]:
    modes = [part.strip() for part in text.split(",") if part.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise argparse.ArgumentTypeError(f"unknown mode {', '.join(bad) or text!r}; choose from {', '.join(MODES)}")
    return list(dict.fromkeys(modes))


def _progress_factory():
    """``progress(stage, done, total)`` drawing one tqdm bar per stage; silent when stderr is no terminal."""
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}
    units = {"encoding": "text", "indexing": "doc", "searching": "query"}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            bars[stage] = tqdm(total=total, desc=stage, unit=units.get(stage, "it"), disable=None,
                               file=sys.stderr, leave=False)
        bars[stage].update(done)

    def close() -> None:
        for bar in bars.values():
            bar.close()

    return progress, close


def run_evaluate(args: argparse.Namespace) -> int:
    from ...search.eval.harness import EvalSettings, evaluate

    model_name = requested_model(args.model)
    existing = args.index is not None and _is_index(args.index)
    modes = args.modes or (["dense", "lexical", "hybrid"] if model_name or existing else ["lexical"])
    if args.plot:
        require_matplotlib()
    langs = [lang for item in args.langs or [] for lang in item.split(",") if lang]
    benchmark = load_benchmark(args.benchmark, args.data, langs=langs or None, limit=args.limit,
                               pairs=args.pairs, split=args.split)
    encoder = None
    needs_model = any(mode != "lexical" for mode in modes)
    if args.precision and existing and needs_model and not model_name:
        model_name = _index_model(args.index)  # loaded here in the precision asked for, then checked against the index
    if args.model or (needs_model and (model_name or not existing)):  # else an index's own model, or none
        from ...indexer.encoding.encoder import Encoder
        from ...indexer.encoding.model import load_model

        encoder = Encoder(load_model(model_name or DEFAULT_MODEL, args.device), batch_size=args.batch_size,
                          precision=args.precision or "fp32")
    settings = EvalSettings(modes=tuple(modes), layers=tuple(args.layers), fusion=args.fusion, alpha=args.alpha,
                            pooling=args.pooling, query_prompt=args.query_prompt,
                            document_prompt=args.document_prompt,
                            chunk_tokens=args.chunk_tokens, chunk_overlap=args.chunk_overlap,
                            center_languages=args.center_languages, index_dir=args.index,
                            keep_runs=args.run_file is not None)
    from ...indexer.writing.pipeline import index_documents

    progress, close = _progress_factory()
    try:
        evaluation = evaluate(benchmark, encoder, settings, progress, build=index_documents)
    finally:
        close()
    print(format_tables(evaluation))
    write_outputs(evaluation, args.out, args.report, args.plot, args.run_file)
    return 0


def _index_model(directory: Path) -> str:
    from ...indexer.store.shard_layout import index_directories
    from ...indexer.store.storage import committed_manifest

    return committed_manifest(index_directories(directory)[0]).config.model_name


def _is_index(directory: Path) -> bool:
    from ...indexer.store.storage import index_exists

    return index_exists(directory)


def write_outputs(evaluation: Evaluation, out: Path | None, report: Path | None, plot: Path | None,
                  run_file: Path | None) -> None:
    """Write whichever of the JSON, Markdown, PNG and TREC run files were asked for."""
    from ...search.eval.metrics import write_trec_run

    if out:
        _write(out, json.dumps(evaluation.to_dict(), indent=1, ensure_ascii=False) + "\n")
    if report:
        _write(report, markdown_report(evaluation))
    if plot:
        draw_plot(evaluation, plot)
    if run_file:
        write_trec_run(run_file, evaluation.runs)


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise XlsearchError(f"{path}: cannot write ({exc.strerror})") from None


def require_matplotlib():
    """Import matplotlib with the Agg backend, or say how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise XlsearchError("--plot needs matplotlib: pip install 'xlsearch[eval]' (or pip install matplotlib)") \
            from None
    matplotlib.use("Agg")
    return matplotlib


# -- tables ----------------------------------------------------------------------
Config = tuple[str, "int | None"]


def _label(config: Config) -> str:
    mode, layer = config
    return mode if layer is None else f"{mode} L{layer}"


def _best_configs(evaluation: Evaluation) -> list[Config]:
    return [(row["mode"], row["layer"]) for row in evaluation.best()]


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], markdown: bool) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
              for row in cells]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def summary_table(evaluation: Evaluation, markdown: bool = False) -> str:
    """Macro averages: one row per mode, layer and scope, one column per metric."""
    metrics = list(evaluation.benchmark.metrics)
    rows: dict[tuple, dict[str, float]] = {}
    for row in evaluation.summary():
        rows.setdefault((row["mode"], row["layer"], row["scope"]), {})[row["metric"]] = row["value"]
    body = [[_label((mode, layer)), scope] + [values.get(m) for m in metrics]
            for (mode, layer, scope), values in rows.items()]
    return _table(["configuration", "scope"] + metrics, body, markdown)


def _values(evaluation: Evaluation, metric: str) -> dict[tuple, float]:
    return {(s.mode, s.layer, s.key): s.value for s in evaluation.scores if s.metric == metric}


def detail_tables(evaluation: Evaluation, configs: Sequence[Config], markdown: bool = False) -> list[tuple[str, str]]:
    """(title, table) pairs of the primary metric per language or pair for ``configs``."""
    benchmark, metric = evaluation.benchmark, evaluation.benchmark.primary
    values = _values(evaluation, metric)
    keys = list(dict.fromkeys(t.key for t in benchmark.tasks))
    if benchmark.name == "xquad":
        questions = list(dict.fromkeys(k.split("-")[0] for k in keys))
        paragraphs = list(dict.fromkeys(k.split("-")[1] for k in keys))
        mono = [q for q in questions if f"{q}-{q}" in keys]
        tables = []
        if mono:
            rows = [[q] + [values.get((*c, f"{q}-{q}")) for c in configs] for q in mono]
            tables.append((f"{metric}, monolingual (questions and paragraphs in one language)",
                           _table(["lang"] + [_label(c) for c in configs], rows, markdown)))
        if len(mono) < len(keys):
            tables += [(f"{metric}, {_label(c)}: questions (rows) x paragraphs (columns)",
                        _table(["q \\ p"] + paragraphs, [[q] + [values.get((*c, f"{q}-{p}")) for p in paragraphs]
                                                         for q in questions], markdown)) for c in configs]
        return tables
    if benchmark.name == "tatoeba":
        langs = list(dict.fromkeys(k.split("-")[0] for k in keys if k.endswith("-eng")))
        headers = ["lang"] + [f"{_label(c)} {d}" for c in configs for d in ("xx-eng", "eng-xx")]
        rows = [[lang] + [values.get((*c, k)) for c in configs for k in (f"{lang}-eng", f"eng-{lang}")]
                for lang in langs]
        return [(f"{metric} per language", _table(headers, rows, markdown))]
    headers = [benchmark.tasks[0].kind] + [_label(c) for c in configs]
    return [(f"{metric} per {benchmark.tasks[0].kind}",
             _table(headers, [[k] + [values.get((*c, k)) for c in configs] for k in keys], markdown))]


def _heading(evaluation: Evaluation) -> str:
    benchmark = evaluation.benchmark
    queries = sum(len(t.queries) for t in benchmark.tasks)
    documents = sum(len(d) for d in benchmark.collections.values())
    model = evaluation.model or "none (lexical only)"
    return (f"{benchmark.name}: {len(benchmark.tasks)} tasks, {queries:,} queries, {documents:,} documents; "
            f"model {model}; {evaluation.seconds:.1f} s")


def format_tables(evaluation: Evaluation) -> str:
    """The summary table and the per-language (or per-pair) table of each mode's best layer."""
    parts = [_heading(evaluation), "", summary_table(evaluation)]
    for title, table in detail_tables(evaluation, _best_configs(evaluation)):
        parts += ["", title, table]
    return "\n".join(parts)


def _setting(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def markdown_report(evaluation: Evaluation) -> str:
    """A Markdown report: settings, the summary table and every configuration's detail table."""
    settings = evaluation.to_dict()["summary"]["settings"]
    parts = [f"# xlsearch evaluate {evaluation.benchmark.name}", "", _heading(evaluation), "",
             "Settings: " + ", ".join(f"{k} `{_setting(v)}`" for k, v in settings.items() if v is not None), "",
             "## Summary (macro averages over tasks)", "", summary_table(evaluation, markdown=True)]
    best = ", ".join(f"{_label((b['mode'], b['layer']))} {b['value']:.3f}" for b in evaluation.best())
    parts += ["", f"Best layer per mode by {evaluation.benchmark.primary}: {best}"]
    for title, table in detail_tables(evaluation, evaluation.configs, markdown=True):
        parts += ["", f"## {title}", "", table]
    return "\n".join(parts) + "\n"


# -- plot ------------------------------------------------------------------------
def draw_plot(evaluation: Evaluation, path: Path) -> None:
    """A PNG: the xquad matrix as heatmaps, or bars per language; beside it a line per mode across layers."""
    require_matplotlib()
    import matplotlib.pyplot as plt

    benchmark, configs = evaluation.benchmark, _best_configs(evaluation)
    layered = [c for c in evaluation.configs if c[1] is not None]
    panels = (len(configs) if benchmark.name == "xquad" else 1) + (1 if layered else 0)
    keys = list(dict.fromkeys(t.key for t in benchmark.tasks))
    width = max(6.0, 0.12 * len(keys)) if benchmark.name != "xquad" else 5.0 * (panels - bool(layered))
    fig, axes = plt.subplots(1, panels, figsize=(width + (5 if layered else 0), 4.8), squeeze=False)
    axes = list(axes[0])
    if benchmark.name == "xquad":
        for ax, config in zip(axes, configs):
            _heatmap(ax, fig, evaluation, config)
    else:
        _bars(axes[0], evaluation, configs)
    if layered:
        _lines(axes[-1], evaluation)
    fig.suptitle(f"xlsearch evaluate {benchmark.name} ({evaluation.model or 'lexical only'})", fontsize=10)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=120)
    except OSError as exc:
        raise XlsearchError(f"{path}: cannot write the plot ({exc.strerror})") from None
    finally:
        plt.close(fig)


def _heatmap(ax, fig, evaluation: Evaluation, config: Config) -> None:
    import numpy as np

    values = _values(evaluation, evaluation.benchmark.primary)
    keys = list(dict.fromkeys(t.key for t in evaluation.benchmark.tasks))
    rows = list(dict.fromkeys(k.split("-")[0] for k in keys))
    cols = list(dict.fromkeys(k.split("-")[1] for k in keys))
    grid = np.array([[values.get((*config, f"{q}-{p}"), np.nan) for p in cols] for q in rows])
    image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(cols)), cols, fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xlabel("paragraph language")
    ax.set_ylabel("question language")
    ax.set_title(f"{evaluation.benchmark.primary}, {_label(config)}", fontsize=9)
    if grid.size <= 225:
        for (i, j), value in np.ndenumerate(grid):
            if not np.isnan(value):
                ax.text(j, i, f"{value:.2f}"[1:] if value < 1 else "1", ha="center", va="center", fontsize=5,
                        color="white" if value < 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)


def _bars(ax, evaluation: Evaluation, configs: Sequence[Config]) -> None:
    import numpy as np

    benchmark = evaluation.benchmark
    values = _values(evaluation, benchmark.primary)
    keys = list(dict.fromkeys(t.key for t in benchmark.tasks))
    if benchmark.name == "tatoeba":  # one bar per language: mean of both directions
        labels = list(dict.fromkeys(k.split("-")[0] for k in keys if k.endswith("-eng")))
        series = {c: [np.nanmean([values.get((*c, f"{lang}-eng"), np.nan), values.get((*c, f"eng-{lang}"), np.nan)])
                      for lang in labels] for c in configs}
    else:
        labels = keys
        series = {c: [values.get((*c, k), np.nan) for k in labels] for c in configs}
    width = 0.8 / max(len(configs), 1)
    for i, (config, heights) in enumerate(series.items()):
        ax.bar(np.arange(len(labels)) + i * width, heights, width, label=_label(config))
    ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels, rotation=90, fontsize=6)
    ax.set_ylim(0, 1)
    ax.set_ylabel(benchmark.primary + (" (mean of both directions)" if benchmark.name == "tatoeba" else ""))
    ax.legend(fontsize=7)


def _lines(ax, evaluation: Evaluation) -> None:
    metric = evaluation.benchmark.primary
    means = [r for r in evaluation.summary() if r["metric"] == metric and r["scope"] == "mean"]
    for mode in dict.fromkeys(r["mode"] for r in means):
        points = sorted((r["layer"], r["value"]) for r in means if r["mode"] == mode and r["layer"] is not None)
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=mode)
        else:
            ax.axhline(next(r["value"] for r in means if r["mode"] == mode), linestyle="--", color="grey",
                       label=f"{mode} (no layer)")
    ax.set_xticks(sorted({r["layer"] for r in means if r["layer"] is not None}))
    ax.set_xlabel("layer")
    ax.set_ylabel(f"{metric} (mean over tasks)")
    ax.set_title("layer sweep", fontsize=9)
    ax.legend(fontsize=7)
