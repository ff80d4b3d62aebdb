"""The one training loop of ``xlsearch finetune``: settings, optimiser, schedule, batches, progress.

Retrieval (:mod:`indexer.tasks.finetune`) and classification (:mod:`indexer.tasks.classify`)
differ only in their loss over a batch of example indices; :func:`train_loop` does the rest:
AdamW, linear warm-up then linear decay, seeded shuffled batches, gradient clipping,
a progress bar on stderr, the model in train mode while it runs and in eval mode after.
"""
from __future__ import annotations

import math
import random
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import DEFAULT_LAYER


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


def seed_everything(seed: int) -> random.Random:
    """Seed torch (initialisation, dropout) and return the batch shuffler's generator."""
    torch.manual_seed(seed)
    return random.Random(seed)


def total_steps(examples: int, config: TrainConfig) -> int:
    """Optimiser steps of ``config.epochs`` over ``examples``, capped at ``config.max_steps``."""
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


def train_loop(model: nn.Module, param_groups: list[dict], examples: int, config: TrainConfig,
               rng: random.Random, loss_of: Callable[[list[int]], Tensor], *, minimum: int = 1,
               after_step: Callable[[int, int], None] | None = None) -> tuple[int, float]:
    """Train on ``examples`` indices in shuffled batches until :func:`total_steps` are done.

    Args:
        model: Put in train mode while training and back in eval mode after, also on error.
        param_groups: The optimiser's parameter groups (all of them are clipped together).
        examples: How many examples there are; batches are lists of their indices.
        rng: Shuffles the batches (from :func:`seed_everything`).
        loss_of: The scalar loss of one batch of indices, with gradients.
        minimum: Drop a last batch smaller than this (in-batch negatives need 2).
        after_step: Called with ``(step, total)`` after each optimiser step (checkpoints).

    Returns:
        ``(steps done, last loss)``.
    """
    param_groups = [{**group, "params": list(group["params"])} for group in param_groups]
    params = [p for group in param_groups for p in group["params"]]
    steps = total_steps(examples, config)
    optimizer, scheduler = make_optimizer(param_groups, config, steps)
    model.train()
    step, loss_value, bar = 0, float("nan"), progress_bar(steps, "fine-tuning")
    try:
        while step < steps and min(examples, config.batch_size) >= minimum:  # else no epoch has a batch
            for rows in batches(examples, config.batch_size, rng, minimum):
                loss = loss_of(rows)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, config.clip_norm)
                optimizer.step()
                scheduler.step()
                step, loss_value = step + 1, float(loss.detach())
                bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
                bar.update(1)
                if after_step is not None:
                    after_step(step, steps)
                if step >= steps:
                    break
    finally:
        bar.close()
        model.eval()
    return step, loss_value

