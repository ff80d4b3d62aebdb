"""Contrastive fine-tuning of the encoder for retrieval, pooling the layer the index uses.

Pairs ``(query, positive)`` or ``(sentence, translation)`` are batched; every other
positive in a batch is a negative (in-batch negatives). The loss is symmetric InfoNCE
over the mean-pooled, L2-normalised vectors of one hidden layer, divided by a
temperature. AdamW, linear warm-up then linear decay, gradient clipping. The output
directory holds the base encoder (``save_pretrained``, same class as the input model),
its tokenizer and ``xlsearch_pooling.json``; ``xlsearch index --model DIR`` loads it.
"""
from __future__ import annotations

import csv
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..encoding.encoder import Encoder
from ..encoding.layers import check_layer
from ..encoding.model import LoadedModel
from ..encoding.pooling import POOLING_FILE, Pooling  # noqa: F401 - POOLING_FILE: callers read it here
from ..errors import CorpusError, XlsearchError
from ..text.records import read_records, record_format
from .training import TrainConfig, seed_everything, train_loop

log = logging.getLogger(__name__)

_PAIR_KEYS = (("query", "positive"), ("source", "target"))


@dataclass(frozen=True)
class RetrievalReport:
    """Held-out accuracy@1 before and after training, both directions (source->target, target->source)."""

    steps: int
    final_loss: float
    train_pairs: int
    held_out_pairs: int
    before: tuple[float, float]
    after: tuple[float, float]


def read_pairs(path: str | Path) -> list[tuple[str, str]]:
    """Text pairs from JSONL (``query``/``positive`` or ``source``/``target``) or a two-column TSV
    (any other suffix; an optional header row naming one of those pairs).

    Raises:
        CorpusError: Unreadable file or bad record, as ``file:line: what is wrong``.
    """
    path = Path(path)
    fmt = "jsonl" if record_format(path) == "jsonl" else "tsv"
    pairs = []
    for where, fields in read_records(path, fmt, columns=None if fmt == "jsonl" else ("first", "second"),
                                      quoting=csv.QUOTE_NONE):
        if isinstance(fields, CorpusError):
            raise fields
        pair = _pair(fields, where) if fmt == "jsonl" else _columns(fields, where)
        is_header = where.endswith(":1") and tuple(cell.strip().lower() for cell in pair) in _PAIR_KEYS
        if not is_header:
            pairs.append(pair)
    if not pairs:
        raise CorpusError(f"{path}: no pairs found")
    return pairs


def _pair(record: dict, where: str) -> tuple[str, str]:
    for first, second in _PAIR_KEYS:
        if first in record or second in record:
            a, b = record.get(first), record.get(second)
            if not isinstance(a, str) or not a.strip() or not isinstance(b, str) or not b.strip():
                raise CorpusError(f"{where}: {first!r} and {second!r} must both be non-empty strings")
            return a, b
    raise CorpusError(f"{where}: no pair: give query/positive or source/target")


def _columns(row: dict, where: str) -> tuple[str, str]:
    a, b = row.get("first"), row.get("second")
    if not a or not a.strip() or not b or not b.strip():
        raise CorpusError(f"{where}: expected two non-empty tab-separated columns")
    return a, b


def split_pairs(pairs: Sequence[tuple[str, str]], held_out: float,
                seed: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Shuffle with ``seed`` and cut off ``held_out`` (a fraction) for evaluation: ``(train, held)``."""
    if not 0.0 <= held_out < 1.0:
        raise XlsearchError(f"held-out fraction must be in [0, 1), got {held_out}")
    order = list(pairs)
    random.Random(seed).shuffle(order)
    count = round(len(order) * held_out)
    if held_out > 0 and count < 2:
        raise XlsearchError(f"held-out split of {len(order)} pairs would have {count}; need at least 2")
    return order[count:], order[:count]


def info_nce(queries: Tensor, positives: Tensor, temperature: float) -> Tensor:
    """Symmetric InfoNCE with in-batch negatives.

    Args:
        queries: ``(batch, dim)`` unit vectors; row i pairs with ``positives[i]``.
        positives: ``(batch, dim)`` unit vectors.
        temperature: Cosine similarities are divided by it (lower is sharper).

    Returns:
        Scalar: mean of the query->positive and positive->query cross-entropies.
    """
    logits = queries @ positives.T / temperature
    target = torch.arange(len(queries), device=queries.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def retrieval_accuracy(encoder: Encoder, pairs: Sequence[tuple[str, str]], layer: int) -> tuple[float, float]:
    """Accuracy@1 of finding each pair's partner among all held-out partners, both directions."""
    if not pairs:
        return (float("nan"), float("nan"))
    source = encoder.encode([a for a, _ in pairs], layer)
    target = encoder.encode([b for _, b in pairs], layer)
    scores = torch.from_numpy(source @ target.T)
    gold = torch.arange(len(pairs))
    return (float((scores.argmax(1) == gold).float().mean()), float((scores.argmax(0) == gold).float().mean()))


def check_trainable_layer(loaded: LoadedModel, layer: int) -> int:
    """``layer`` when ``1 <= layer <= num_layers`` (layer 0 has nothing to train).

    Raises:
        LayerError: Naming the valid range.
    """
    return check_layer(layer, loaded.num_layers, loaded.name, lowest=1, purpose="fine-tuned")


def save_checkpoint(loaded: LoadedModel, directory: str | Path, layer: int, extra: dict | None = None) -> Path:
    """Save encoder, tokenizer and its :class:`Pooling` stage so ``load_model(directory)`` works."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    loaded.model.save_pretrained(directory)
    save_tokenizer(loaded.tokenizer, directory)
    Pooling(layer).save(directory, {"base_model": loaded.name, **(extra or {})})
    return directory


def save_tokenizer(tokenizer, directory: Path) -> None:
    """``tokenizer.save_pretrained(directory)`` without the truncation its last call left switched on.

    transformers sets truncation on its Rust tokenizer for a call that truncates and leaves it there
    until a call that does not; saved, it would become the tokenizer's own setting. Every call of
    xlsearch's sets truncation itself, so it is dropped: the file is the model's tokenizer as loaded,
    which ``load_model`` then reads without transformers where it can (:mod:`..encoding.native_tokenizer`).
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and backend.truncation is not None:
        backend.no_truncation()
    tokenizer.save_pretrained(directory)


def train_retrieval(loaded: LoadedModel, pairs: Sequence[tuple[str, str]], out: str | Path,
                    config: TrainConfig) -> RetrievalReport:
    """Fine-tune ``loaded.model`` in place on ``pairs``; save checkpoints and the final model to ``out``.

    Checkpoints go to ``out/checkpoint-STEP`` every ``config.checkpoint_every`` steps; the
    final model to ``out`` itself. Held-out accuracy@1 is measured before and after.

    Raises:
        XlsearchError: Bad layer, split or too few pairs to train.
    """
    check_trainable_layer(loaded, config.layer)
    rng = seed_everything(config.seed)
    train, held = split_pairs(pairs, config.held_out, config.seed)
    if len(train) < 2:
        raise XlsearchError(f"{len(train)} training pair(s): in-batch negatives need at least 2")
    before = retrieval_accuracy(Encoder(loaded, batch_size=64), held, config.layer)
    encoder = Encoder(loaded, batch_size=config.batch_size)

    def loss_of(rows: list[int]) -> Tensor:
        queries, positives = (encoder.pooled([train[i][side] for i in rows], [config.layer],
                                             max_tokens=config.max_tokens, grad=True)[config.layer] for side in (0, 1))
        return info_nce(queries, positives, config.temperature)

    def checkpoint(step: int, steps: int) -> None:
        if config.checkpoint_every and step % config.checkpoint_every == 0 and step < steps:
            save_checkpoint(loaded, Path(out) / f"checkpoint-{step}", config.layer)

    step, loss_value = train_loop(loaded.model, [{"params": loaded.model.parameters()}], len(train), config, rng,
                                  loss_of, minimum=2, after_step=checkpoint)
    save_checkpoint(loaded, out, config.layer, {"objective": "retrieval", "steps": step,
                                                "temperature": config.temperature})
    after = retrieval_accuracy(Encoder(loaded, batch_size=64), held, config.layer)
    return RetrievalReport(step, loss_value, len(train), len(held), before, after)
