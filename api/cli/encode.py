"""Subcommands embed and fill-mask: the encoder itself, without an index.

Each ``run_*`` takes parsed arguments and returns the exit code.
"""
from __future__ import annotations

import json
import sys

from ...indexer.config import DEFAULT_MODEL
from ...indexer.errors import XlsearchError
from ...indexer.encoding.layers import parse_layers
from ...indexer.tasks.embed import OUTPUT_SUFFIXES, POOLINGS, Embeddings, embed_texts, read_texts, write_embeddings

from .options import add_batch_size_option, add_device_option, add_precision_option, positive_int
from ..settings import MODEL_ENV, requested_model


def add_parsers(subparsers) -> None:
    """Register embed and fill-mask on the ``xlsearch`` parser."""
    embed = subparsers.add_parser(
        "embed", help="write embeddings of texts from one or more layers",
        description="Embed a text file (one text per line; ids are line numbers) or a corpus (JSONL, CSV/TSV, "
        "folder; ids are record ids). Several layers come from one forward pass; rows keep input order. "
        ".npy: one layer, ids in <name>.ids.json beside it; .npz: arrays 'ids' and 'layer_<L>'; "
        ".parquet: columns 'id' and 'layer_<L>' (needs pyarrow).")
    embed.add_argument("input", metavar="INPUT", help="text file (one text per line) or corpus file/folder")
    embed.add_argument("--model", help=f"hub id or local model directory (default: ${MODEL_ENV}, else {DEFAULT_MODEL})")
    embed.add_argument("--layers", default="auto", help="comma-separated hidden layers, 0 = embeddings (default "
                       "auto: the layer xlsearch index would pool, e.g. 8 of mdeberta-v3-base, 12 of e5-small)")
    embed.add_argument("--pooling", default="auto", choices=["auto", *POOLINGS],
                       help="mean over real tokens, the first ([CLS]) token, or mean-tokens (special tokens "
                       "included); L2-normalised (default auto: as xlsearch index would pool)")
    embed.add_argument("--input-type", default="document", choices=["document", "query"],
                       help="which of the model's prompts goes before each text (E5: 'passage: ' or 'query: '; "
                       "none for models without prompts; default document)")
    embed.add_argument("--out", help=f"output file, one of {', '.join(OUTPUT_SUFFIXES)} "
                       "(default vectors.npy for one layer, vectors.npz for several)")
    add_batch_size_option(embed)
    add_device_option(embed)
    add_precision_option(embed, default="fp32")  # no index to take it from
    embed.set_defaults(handler=run_embed)

    fill = subparsers.add_parser(
        "fill-mask", help="predict the token behind [MASK] with a trained masked-LM head",
        description="Predict masked tokens. Uses the generator checkpoint when the model ships one "
        "(mdeberta-v3-base: generator_config.json + pytorch_model.generator.bin), else the main weights, and "
        "refuses when the masked-LM head would be randomly initialised.")
    fill.add_argument("text", help='text with one or more [MASK], e.g. "Paris is the [MASK] of France."')
    fill.add_argument("--top-k", type=positive_int, default=5, help="predictions per mask (default 5)")
    fill.add_argument("--model", help=f"hub id or local model directory (default: ${MODEL_ENV}, else {DEFAULT_MODEL})")
    add_device_option(fill, "the model runs")
    fill.add_argument("--json", action="store_true", help="print one JSON object")
    fill.set_defaults(handler=run_fill_mask)


def _model_name(args) -> str:
    return requested_model(args.model) or DEFAULT_MODEL


def run_embed(args) -> int:
    from ...indexer.encoding.encoder import Encoder
    from ...indexer.encoding.model import load_model

    from ...indexer.encoding.sentence_config import model_defaults

    layers = parse_layers(args.layers)
    ids, texts = read_texts(args.input)
    encoder = Encoder(load_model(_model_name(args), args.device), batch_size=args.batch_size,
                      precision=args.precision)
    defaults = model_defaults(encoder.loaded)
    layers = layers or [defaults.layer]
    pooling = defaults.pooling if args.pooling == "auto" else args.pooling
    if pooling is None:
        raise XlsearchError(f"{encoder.loaded.name} pools in a way xlsearch cannot; give --pooling "
                            f"{' or '.join(POOLINGS)}")
    prompt = defaults.query_prompt if args.input_type == "query" else defaults.document_prompt
    out = args.out or ("vectors.npy" if len(layers) == 1 else "vectors.npz")
    vectors = embed_texts(encoder, texts, layers, pooling, prompt)
    written = write_embeddings(Embeddings(ids, vectors), out)
    print(f"embedded {len(texts)} texts, layers {','.join(map(str, layers))} ({pooling} pooling, prompt {prompt!r}, "
          f"dim {encoder.dim}, {encoder.precision}) -> {', '.join(map(str, written))}", file=sys.stderr)
    return 0


def run_fill_mask(args) -> int:
    from ...indexer.tasks.fillmask import fill_mask, load_masked_lm

    masked = load_masked_lm(_model_name(args), args.device)
    results = fill_mask(masked, args.text, args.top_k)
    if args.json:
        print(json.dumps({"text": args.text, "model": masked.name, "checkpoint": masked.checkpoint,
                          "masks": [[{"token": p.token, "token_id": p.token_id, "score": p.score} for p in preds]
                                    for preds in results]}, ensure_ascii=False))
        return 0
    print(f"# {masked.name} ({masked.checkpoint} checkpoint)")
    for number, preds in enumerate(results, start=1):
        if len(results) > 1:
            print(f"[MASK] {number}:")
        for rank, p in enumerate(preds, start=1):
            print(f"{rank:>3}  {p.score:.4f}  {p.token}")
    return 0
