"""Text -> vector: tokenise, run the encoder up to the pooled layer, mean-pool, normalise.

Texts are sorted by token length and cut into batches padded only to their own
longest item (dynamic padding); vectors come back in input order. Layers above the
highest one asked for are never computed: a pre-forward hook on that layer captures
its input, which is ``hidden_states[layer]``, and stops the forward pass there.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from .errors import XlsearchError
from .model import LoadedModel, transformer_blocks
from .pooling import l2_normalize, mean_pool, to_numpy


class _StopForward(Exception):
    """Raised inside the model once every requested layer is captured."""


class Encoder:
    """Embeds texts with one model, pooling any hidden layer.

    Args:
        loaded: Model and tokenizer from :func:`indexer.model.load_model`.
        batch_size: Texts per forward pass.
        max_tokens: Longest input in tokens (special tokens included); longer
            texts are truncated. Defaults to the model's limit, at most 512.
    """

    def __init__(self, loaded: LoadedModel, batch_size: int = 32, max_tokens: int | None = None):
        if batch_size < 1:
            raise XlsearchError(f"batch size must be >= 1, got {batch_size}")
        self.loaded = loaded
        self.batch_size = batch_size
        self.max_tokens = max_tokens or model_max_tokens(loaded)
        self._blocks = transformer_blocks(loaded.model)

    @property
    def tokenizer(self):
        return self.loaded.tokenizer

    @property
    def dim(self) -> int:
        return self.loaded.dim

    @property
    def num_layers(self) -> int:
        return self.loaded.num_layers

    def encode(self, texts: Sequence[str], layer: int,
               progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Pooled, L2-normalised vectors of ``texts`` at ``layer``.

        Returns:
            ``(len(texts), dim)`` float32, row i for ``texts[i]``; inner product is cosine.
        """
        return self.encode_layers(texts, [layer], progress)[layer]

    def encode_layers(self, texts: Sequence[str], layers: Sequence[int],
                      progress: Callable[[int], None] | None = None) -> dict[int, np.ndarray]:
        """Like :meth:`encode` for several layers from one forward pass per batch."""
        self._check_layers(layers)
        out = {layer: np.zeros((len(texts), self.dim), dtype=np.float32) for layer in layers}
        if not texts:
            return out
        encoded = self.tokenizer(list(texts), add_special_tokens=True, truncation=True,
                                 max_length=self.max_tokens, return_special_tokens_mask=True)
        ids, special = encoded["input_ids"], encoded["special_tokens_mask"]
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]), reverse=True)
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            pooled = self._encode_batch([ids[i] for i in rows], [special[i] for i in rows], layers)
            for layer, vectors in pooled.items():
                out[layer][rows] = vectors
            if progress is not None:
                progress(len(rows))
        return out

    def _check_layers(self, layers: Sequence[int]) -> None:
        for layer in layers:
            if not 0 <= layer <= self.num_layers:
                raise XlsearchError(
                    f"layer {layer} does not exist: {self.loaded.name} has layers 0..{self.num_layers}"
                )

    @torch.inference_mode()
    def _encode_batch(self, ids: list[list[int]], special: list[list[int]],
                      layers: Sequence[int]) -> dict[int, np.ndarray]:
        width = max(len(x) for x in ids)
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
        attention = torch.zeros((len(ids), width), dtype=torch.long)
        pool_mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, (tokens, flags) in enumerate(zip(ids, special)):
            input_ids[row, :len(tokens)] = torch.tensor(tokens)
            attention[row, :len(tokens)] = 1
            pool_mask[row, :len(tokens)] = 1 - torch.tensor(flags)
        device = self.loaded.device
        hidden = self.hidden_states(input_ids.to(device), attention.to(device), layers)
        mask = pool_mask.to(device)
        return {layer: to_numpy(l2_normalize(mean_pool(h.float(), mask))) for layer, h in hidden.items()}

    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor,
                      layers: Sequence[int]) -> dict[int, Tensor]:
        """``hidden_states[layer]`` for each requested layer, computing no layer above the top one."""
        captured: dict[int, Tensor] = {}
        top = max(layers)
        handles = []

        def capture(layer: int):
            def hook(module, args, kwargs):
                captured[layer] = args[0] if args else kwargs["hidden_states"]
                if layer == top:
                    raise _StopForward
            return hook

        for layer in set(layers):
            if layer < self.num_layers:
                handles.append(self._blocks[layer].register_forward_pre_hook(capture(layer), with_kwargs=True))
        try:
            output = self.loaded.model(input_ids=input_ids, attention_mask=attention_mask)
            captured[self.num_layers] = output.last_hidden_state
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return {layer: captured[layer] for layer in layers}


def model_max_tokens(loaded: LoadedModel) -> int:
    """Longest input the model takes: the tokenizer's and config's limits, capped at 512."""
    limits = [512, int(getattr(loaded.tokenizer, "model_max_length", 512) or 512)]
    positions = getattr(loaded.model.config, "max_position_embeddings", None)
    if positions and getattr(loaded.model.config, "position_biased_input", True):
        # Absolute positions (BERT, XLM-R: 2 of them reserved for padding offsets).
        limits.append(int(positions) - (2 if loaded.model.config.model_type in ("xlm-roberta", "roberta") else 0))
    return min(limits)
