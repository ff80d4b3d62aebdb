"""Subcommands ``finetune retrieval``, ``finetune classify`` and ``classify``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ...indexer.config import DEFAULT_LAYER

from .options import add_batch_size_option, add_device_option, positive_int, unit_float



def _labels(text: str) -> list[str]:
    labels = [label.strip() for label in text.split(",") if label.strip()]
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise argparse.ArgumentTypeError(f"need at least 2 distinct comma-separated labels, got {text!r}")
    return labels


def _held_out(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _training_options(parser: argparse.ArgumentParser, lr: float, epochs: int) -> None:
    parser.add_argument("--model", required=True, help="base model: hub id or local model directory")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="where the fine-tuned model directory is written")
    parser.add_argument("--layer", type=positive_int, default=DEFAULT_LAYER,
                        help=f"hidden layer to pool and train; use the layer you index with (default {DEFAULT_LAYER})")
    parser.add_argument("--epochs", type=positive_int, default=epochs, help=f"passes over the data (default {epochs})")
    add_batch_size_option(parser, "examples per step")
    parser.add_argument("--lr", type=_positive_float, default=lr, help=f"peak encoder learning rate (default {lr})")
    parser.add_argument("--warmup", type=unit_float, default=0.1,
                        help="fraction of steps of linear learning-rate warm-up, then linear decay (default 0.1)")
    parser.add_argument("--max-steps", type=positive_int, help="stop after this many steps (default: all epochs)")
    parser.add_argument("--max-tokens", type=positive_int, default=128,
                        help="truncate each text to this many tokens while training (default 128)")
    add_device_option(parser, "training runs")
    parser.add_argument("--seed", type=int, default=0, help="seed of shuffling, split and initialisation (default 0)")


def add_parsers(subparsers) -> None:
    """Register ``finetune`` (with ``retrieval`` and ``classify``) and ``classify``."""
    finetune = subparsers.add_parser("finetune", help="adapt the encoder to your data",
                                     description="Fine-tune the encoder for retrieval or add a classification head.")
    kinds = finetune.add_subparsers(dest="kind", required=True, metavar="KIND", help="retrieval or classify")

    retrieval = kinds.add_parser(
        "retrieval", help="contrastive training on text pairs (in-batch negatives)",
        description="Train the encoder on (query, positive) or (sentence, translation) pairs with symmetric "
        "InfoNCE over the pooled layer; writes a model directory for `xlsearch index --model DIR`.")
    retrieval.add_argument("--pairs", required=True, type=Path,
                           help="JSONL with query/positive or source/target, or a TSV of two columns")
    _training_options(retrieval, lr=2e-5, epochs=1)
    retrieval.add_argument("--held-out", type=_held_out, default=0.1,
                           help="fraction of pairs kept out of training and reported as accuracy@1 (default 0.1)")
    retrieval.add_argument("--temperature", type=_positive_float, default=0.05,
                           help="InfoNCE temperature dividing cosine similarities (default 0.05)")
    retrieval.add_argument("--checkpoint-every", type=positive_int, metavar="N",
                           help="also save DIR/checkpoint-N every N steps (default: only the final model)")
    retrieval.set_defaults(handler=run_finetune_retrieval)

    classify = kinds.add_parser(
        "classify", help="train a classification head on the pooled layer",
        description="Fine-tune the encoder with a linear head over its pooled layer on labelled texts; "
        "evaluate on --eval files (e.g. other languages, for zero-shot transfer).")
    classify.add_argument("--train", required=True, type=Path,
                          help="JSONL with text and label, or TSV/CSV whose header names text and label/category")
    classify.add_argument("--labels", required=True, type=_labels, metavar="A,B,...", help="comma list of labels")
    classify.add_argument("--eval", nargs="*", default=[], type=Path, metavar="FILE",
                          help="labelled files (same formats) to report accuracy on after training")
    classify.add_argument("--head-lr", type=_positive_float, default=1e-2,
                          help="learning rate of the classification head (default 0.01)")
    _training_options(classify, lr=2e-5, epochs=3)
    classify.set_defaults(handler=run_finetune_classify)

    predict = subparsers.add_parser("classify", help="label texts with a model from `finetune classify`",
                                    description="Print the predicted label and probability of each text.")
    predict.add_argument("input", metavar="TEXTS_FILE_OR_TEXT",
                         help="a text file (one text per line) or the text itself; a name that looks like a file "
                         "(.txt, .jsonl, .csv, .tsv, a/b) and does not exist is an error")
    predict.add_argument("--model", required=True, help="directory written by `xlsearch finetune classify`")
    add_device_option(predict)
    predict.add_argument("--json", action="store_true", help="print one JSON object per text")
    predict.set_defaults(handler=run_classify)


def _config(args: argparse.Namespace, **extra):
    from ...indexer.tasks.finetune import TrainConfig

    return TrainConfig(layer=args.layer, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       warmup=args.warmup, max_steps=args.max_steps, seed=args.seed, max_tokens=args.max_tokens,
                       **extra)


def run_finetune_retrieval(args: argparse.Namespace) -> int:
    from ...indexer.tasks.finetune import read_pairs, train_retrieval
    from ...indexer.encoding.model import load_model

    pairs = read_pairs(args.pairs)
    config = _config(args, held_out=args.held_out, temperature=args.temperature,
                     checkpoint_every=args.checkpoint_every)
    report = train_retrieval(load_model(args.model, args.device, train=True), pairs, args.out, config)
    print(f"trained {report.steps} steps on {report.train_pairs} pairs, final loss {report.final_loss:.4f}")
    if report.held_out_pairs:
        print(f"held-out accuracy@1 ({report.held_out_pairs} pairs): "
              f"source->target {report.before[0]:.3f} -> {report.after[0]:.3f}, "
              f"target->source {report.before[1]:.3f} -> {report.after[1]:.3f}")
    print(f"saved to {args.out} (layer {args.layer}); index with: xlsearch index ... --model {args.out} "
          f"--layer {args.layer}")
    return 0


def run_finetune_classify(args: argparse.Namespace) -> int:
    from ...indexer.tasks.classify import Classifier, majority_baseline, read_labelled
    from ...indexer.encoding.model import load_model

    train = read_labelled(args.train, args.labels)
    evals = {path: read_labelled(path, args.labels) for path in args.eval}
    classifier = Classifier(load_model(args.model, args.device, train=True), args.labels, args.layer)
    loss = classifier.train(train, _config(args), head_lr=args.head_lr)
    classifier.save(args.out)
    print(f"trained on {len(train)} texts, final loss {loss:.4f}; saved to {args.out}")
    for path, records in evals.items():
        print(f"{path}: accuracy {classifier.accuracy(records):.3f} "
              f"(majority baseline {majority_baseline(train, records):.3f}, {len(records)} texts)")
    return 0


def run_classify(args: argparse.Namespace) -> int:
    from ...indexer.tasks.classify import Classifier, texts_to_classify

    texts = texts_to_classify(args.input)
    predictions = Classifier.load(args.model, args.device).predict(texts)
    for text, prediction in zip(texts, predictions):
        if args.json:
            print(json.dumps({"text": text, "label": prediction.label, "score": round(prediction.score, 4)},
                             ensure_ascii=False))
        else:
            print(f"{prediction.label}\t{prediction.score:.3f}\t{text}")
    return 0
