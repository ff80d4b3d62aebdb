"""Contrastive fine-tuning of the encoder for retrieval, pooling the layer the index uses.

Pairs ``(query, positive)`` or ``(sentence, translation)`` are batched; every other
positive in a batch is a negative (in-batch negatives). The loss is symmetric InfoNCE
over the mean-pooled, L2-normalised vectors of one hidden layer, divided by a
temperature. AdamW, linear warm-up then linear decay, gradient clipping. The output
directory holds the base encoder (``save_pretrained``, same class as the input model),
its tokenizer and ``xlsearch_pooling.json``; ``xlsearch index --model DIR`` loads it.
"""
from __future__ import annotations

import json
import logging
import math
import random
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import DEFAULT_LAYER
from ..encoding.encoder import Encoder
from ..errors import CorpusError, XlsearchError
from ..encoding.model import LoadedModel
from ..encoding.pooling import l2_normalize, mean_pool
from ..encoding.sentence_config import FINETUNE_POOLING as POOLING_FILE

log = logging.getLogger(__name__)

_PAIR_KEYS = (("query", "positive"), ("source", "target"))


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one fine-tuning run (retrieval or classification)."""

    layer: int = DEFAULT_LAYER
    epochs: int = 1
    batch_size: int = 32
    lr: float = 2e-5
    warmup: float = 0.1
    max_steps: int | None = None
    held_out: float = 0.1
    checkpoint_every: int | None = None
    seed: int = 0
    temperature: float = 0.05
    max_tokens: int = 128
    clip_norm: float = 1.0


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
    """Text pairs from JSONL (``query``/``positive`` or ``source``/``target``) or a two-column TSV.

    Raises:
        CorpusError: Unreadable file or bad record, as ``file:line: what is wrong``.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CorpusError(f"{path}: cannot read pairs ({exc})") from None
    is_jsonl = path.suffix.lower() in (".jsonl", ".json")
    pairs = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if is_jsonl:
            pairs.append(_json_pair(line, f"{path}:{number}"))
        else:
            pair = _tsv_pair(line, f"{path}:{number}")
            if number > 1 or tuple(cell.strip().lower() for cell in pair) not in _PAIR_KEYS:  # skip a header
                pairs.append(pair)
    if not pairs:
        raise CorpusError(f"{path}: no pairs found")
    return pairs


def _json_pair(line: str, where: str) -> tuple[str, str]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CorpusError(f"{where}: invalid JSON ({exc.msg})") from None
    if not isinstance(record, dict):
        raise CorpusError(f"{where}: expected an object with query/positive or source/target")
    for first, second in _PAIR_KEYS:
        if first in record or second in record:
            a, b = record.get(first), record.get(second)
            if not isinstance(a, str) or not a.strip() or not isinstance(b, str) or not b.strip():
                raise CorpusError(f"{where}: {first!r} and {second!r} must both be non-empty strings")
            return a, b
    raise CorpusError(f"{where}: no pair: give query/positive or source/target")


def _tsv_pair(line: str, where: str) -> tuple[str, str]:
    cells = line.split("\t")
    if len(cells) != 2 or not cells[0].strip() or not cells[1].strip():
        raise CorpusError(f"{where}: expected two non-empty tab-separated columns, got {len(cells)} column(s)")
    return cells[0], cells[1]


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


def pooled(encoder: Encoder, texts: Sequence[str], layer: int, max_tokens: int) -> Tensor:
    """Mean-pooled (real, non-special tokens), L2-normalised ``layer`` vectors, with gradients."""
    batch = encoder.tokenizer(list(texts), padding=True, truncation=True, max_length=max_tokens,
                              return_special_tokens_mask=True, return_tensors="pt")
    device = encoder.loaded.device
    attention = batch["attention_mask"].to(device)
    mask = attention * (1 - batch["special_tokens_mask"].to(device))
    hidden = encoder.hidden_states(batch["input_ids"].to(device), attention, [layer])[layer]
    return l2_normalize(mean_pool(hidden.float(), mask))


def retrieval_accuracy(encoder: Encoder, pairs: Sequence[tuple[str, str]], layer: int) -> tuple[float, float]:
    """Accuracy@1 of finding each pair's partner among all held-out partners, both directions."""
    if not pairs:
        return (float("nan"), float("nan"))
    source = encoder.encode([a for a, _ in pairs], layer)
    target = encoder.encode([b for _, b in pairs], layer)
    scores = torch.from_numpy(source @ target.T)
    gold = torch.arange(len(pairs))
    return (float((scores.argmax(1) == gold).float().mean()), float((scores.argmax(0) == gold).float().mean()))


def check_layer(loaded: LoadedModel, layer: int) -> None:
    """Raises XlsearchError unless ``1 <= layer <= num_layers`` (layer 0 has nothing to train)."""
    if not 1 <= layer <= loaded.num_layers:
        raise XlsearchError(f"layer {layer} cannot be fine-tuned: {loaded.name} has layers 1..{loaded.num_layers}")


def total_steps(examples: int, config: TrainConfig) -> int:
    per_epoch = math.ceil(examples / config.batch_size)
    steps = per_epoch * config.epochs
    return min(steps, config.max_steps) if config.max_steps else steps


def make_optimizer(params: list[dict], config: TrainConfig, steps: int):
    """AdamW with linear warm-up (``config.warmup`` of the steps) and linear decay to zero."""
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.01)
    warm = max(1, int(steps * config.warmup)) if config.warmup > 0 else 0

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (steps - step) / max(1, steps - warm))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def batches(count: int, batch_size: int, rng: random.Random, minimum: int = 1) -> Iterator[list[int]]:
    """Shuffled index batches of one epoch; a last batch smaller than ``minimum`` is dropped."""
    order = list(range(count))
    rng.shuffle(order)
    for start in range(0, count, batch_size):
        rows = order[start:start + batch_size]
        if len(rows) >= minimum:
            yield rows


def progress_bar(total: int, desc: str):
    """A tqdm bar on stderr, silent when stderr is no terminal."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", disable=None, file=sys.stderr)


def save_checkpoint(loaded: LoadedModel, directory: str | Path, layer: int, extra: dict | None = None) -> Path:
    """Save encoder, tokenizer and ``xlsearch_pooling.json`` so ``load_model(directory)`` works."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    loaded.model.save_pretrained(directory)
    loaded.tokenizer.save_pretrained(directory)
    pooling = {"layer": layer, "pooling": "mean", "exclude_special_tokens": True, "normalize": "l2",
               "base_model": loaded.name, **(extra or {})}
    (directory / POOLING_FILE).write_text(json.dumps(pooling, indent=2) + "\n", encoding="utf-8")
    return directory


def seed_everything(seed: int) -> random.Random:
    torch.manual_seed(seed)
    return random.Random(seed)


def train_retrieval(loaded: LoadedModel, pairs: Sequence[tuple[str, str]], out: str | Path,
                    config: TrainConfig) -> RetrievalReport:
    """Fine-tune ``loaded.model`` in place on ``pairs``; save checkpoints and the final model to ``out``.

    Checkpoints go to ``out/checkpoint-STEP`` every ``config.checkpoint_every`` steps; the
    final model to ``out`` itself. Held-out accuracy@1 is measured before and after.

    Raises:
        XlsearchError: Bad layer, split or too few pairs to train.
    """
    check_layer(loaded, config.layer)
    rng = seed_everything(config.seed)
    train, held = split_pairs(pairs, config.held_out, config.seed)
    if len(train) < 2:
        raise XlsearchError(f"{len(train)} training pair(s): in-batch negatives need at least 2")
    before = retrieval_accuracy(Encoder(loaded, batch_size=64), held, config.layer)
    steps = total_steps(len(train), config)
    optimizer, scheduler = make_optimizer([{"params": loaded.model.parameters()}], config, steps)
    encoder = Encoder(loaded, batch_size=config.batch_size)
    loaded.model.train()
    step, loss_value, bar = 0, float("nan"), progress_bar(steps, "fine-tuning")
    try:
        while step < steps:
            for rows in batches(len(train), config.batch_size, rng, minimum=2):
                queries = pooled(encoder, [train[i][0] for i in rows], config.layer, config.max_tokens)
                positives = pooled(encoder, [train[i][1] for i in rows], config.layer, config.max_tokens)
                loss = info_nce(queries, positives, config.temperature)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(loaded.model.parameters(), config.clip_norm)
                optimizer.step()
                scheduler.step()
                step, loss_value = step + 1, float(loss.detach())
                bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
                bar.update(1)
                if config.checkpoint_every and step % config.checkpoint_every == 0 and step < steps:
                    save_checkpoint(loaded, Path(out) / f"checkpoint-{step}", config.layer)
                if step >= steps:
                    break
    finally:
        bar.close()
        loaded.model.eval()
    save_checkpoint(loaded, out, config.layer, {"objective": "retrieval", "steps": step,
                                                "temperature": config.temperature})
    after = retrieval_accuracy(Encoder(loaded, batch_size=64), held, config.layer)
    return RetrievalReport(step, loss_value, len(train), len(held), before, after)
