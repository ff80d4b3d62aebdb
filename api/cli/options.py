"""Options and argument types shared by the subcommands, and the model they ask for."""
from __future__ import annotations

import argparse
import json
import math

from ...indexer.config import BATCH_SIZE, DEFAULT_MODEL, DEVICES, POOLINGS, PRECISIONS, IndexConfig
from ...indexer.encoding.layers import parse_layer, parse_layers
from ...indexer.errors import LayerError




def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def unit_float(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--model`` and ``--device``, shared by every subcommand that loads the encoder."""
    parser.add_argument("--model", help="hub id or local model directory (default: $XLSEARCH_MODEL, "
                        f"else the index's own model, else {DEFAULT_MODEL})")
    add_device_option(parser)


def add_device_option(parser: argparse.ArgumentParser, runs: str = "the encoder runs") -> None:
    parser.add_argument("--device", default="auto", choices=list(DEVICES),
                        help=f"where {runs} (default: auto = cuda when available)")


def add_precision_option(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """``--precision``; None (the default) means the index's own, else fp32."""
    parser.add_argument("--precision", default=default, choices=list(PRECISIONS),
                        help="encoder matmul precision: fp32 (exact), bf16 (CPUs with AVX512-BF16/AMX, or CUDA; the "
                        "fastest with AMX), fp16 (CUDA) or int8 (linear layers, CPU; with VNNI/AMX); reduced precision "
                        "changes vectors slightly, and an index records its own (default: "
                        + (f"{default})" if default else "the index's, else fp32)"))


def add_batch_size_option(parser: argparse.ArgumentParser, unit: str = "texts per forward pass") -> None:
    parser.add_argument("--batch-size", type=positive_int, default=BATCH_SIZE, help=f"{unit} (default {BATCH_SIZE})")


def add_chunk_options(parser: argparse.ArgumentParser, *, set_defaults: bool, of: str = "") -> None:
    """``--chunk-tokens`` and ``--chunk-overlap``; without ``set_defaults`` they stay None (an existing
    index keeps its own), and the help still gives :class:`IndexConfig`'s defaults."""
    tokens, overlap = IndexConfig.chunk_tokens, IndexConfig.chunk_overlap
    parser.add_argument("--chunk-tokens", type=positive_int, default=tokens if set_defaults else None,
                        help=f"max tokens per chunk{of} (default {tokens})")
    parser.add_argument("--chunk-overlap", type=int, default=overlap if set_defaults else None,
                        help=f"tokens shared by consecutive chunks (default {overlap})")


def layer_option(text: str) -> int | None:
    """``auto`` -> None (the model's own layer), else a layer number >= 0."""
    try:
        return parse_layer(text)
    except LayerError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def layers_option(text: str) -> list[int]:
    """``auto`` -> ``[]`` (the model's own layer), else a comma-separated list of layer numbers >= 0."""
    try:
        return parse_layers(text) or []
    except LayerError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_embedding_options(parser: argparse.ArgumentParser) -> None:
    """``--pooling``, ``--query-prompt`` and ``--document-prompt``: how texts become vectors (recorded in the index)."""
    parser.add_argument("--pooling", choices=list(POOLINGS),
                        help="how token vectors become one vector (default: the model's sentence-transformers "
                        "pooling, else mean-tokens-no-special)")
    parser.add_argument("--query-prompt", metavar="TEXT",
                        help="put before every query when embedding it (default: the model's own, e.g. "
                        "'query: ' for E5; '' for none)")
    parser.add_argument("--document-prompt", metavar="TEXT",
                        help="put before every chunk when embedding it (default: the model's own, e.g. "
                        "'passage: ' for E5; '' for none); BM25 never sees prompts")


def filter_option(text: str) -> tuple[str, str | int | float | bool]:
    """``KEY=VALUE`` -> ``(key, value)``: VALUE as a JSON number or boolean when it reads as one
    (``year=2019``, ``draft=false``), else the string itself (``source=wiki``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    if not isinstance(value, (int, float, bool)) or (isinstance(value, float) and not math.isfinite(value)):
        value = raw
    return key, value
