"""Options and argument types shared by the subcommands, and the model they ask for."""
from __future__ import annotations

import argparse
import json
import math
import os

from ...indexer.config import DEFAULT_MODEL, POOLINGS
from ...indexer.encoding.layers import parse_layer, parse_layers
from ...indexer.errors import LayerError

MODEL_ENV = "XLSEARCH_MODEL"


def requested_model(option: str | None) -> str | None:
    """The model a command was asked for: ``--model``, else ``$XLSEARCH_MODEL``, else None."""
    return option or os.environ.get(MODEL_ENV) or None


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
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="where the encoder runs (default: auto = cuda when available)")


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
