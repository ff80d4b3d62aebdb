"""Text -> vector: tokenise (after an optional prompt), run the encoder up to the pooled layer, pool, normalise.

Texts are sorted by token length and cut into batches padded only to their own
longest item (dynamic padding); vectors come back in input order. Layers above the
highest one asked for are never computed. In eval mode, DeBERTa-v2 models (mdeberta-v3) run
:class:`.fast_deberta.FastDebertaV2`, which caches the projected relative-position table and
computes only the positions a batch uses, and BERT-family encoders (BERT, RoBERTa, XLM-R:
multilingual-e5-small, MiniLM) run :class:`.fast_bert.FastBert`; both run the real tokens of a
batch packed, as a handful of torch ops per layer (:class:`.packed_forward.PackedForward`); an
encoder read without transformers (:mod:`.native_weights`) has no other forward. Any
other model, or one being trained or carrying hooks, runs its own HF forward, where a pre-forward
hook on the top layer captures its input, which is ``hidden_states[layer]``, and stops the forward
pass there.

This is xlsearch's one encode path: :meth:`Encoder.pooled` runs the same tokenise, pad,
forward and pool steps on one batch and returns tensors, with autograd for training
(``xlsearch finetune``) or under inference mode.

fp32 linear layers run on MKL or oneDNN, whichever :mod:`.linear_kernel` measured faster on this
CPU (both exact fp32). ``precision`` ``fp32`` (the default) is exact; ``bf16``/``fp16`` run the matmuls in
that dtype (autocast for models other than DeBERTa-v2; on the CPU, bf16 linear layers run on weights
cast and laid out for oneDNN once, :mod:`.bf16_linear`); ``int8`` runs the linear layers on int8 weights
and per-token int8 activations (:mod:`.int8_linear`, CPU only) and the rest in fp32.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..config import BATCH_SIZE, MEAN_NO_SPECIAL, IndexConfig, check_pooling
from ..cpu import native_matmul
from ..errors import XlsearchError
from . import bf16_linear, int8_linear, linear_kernel
from .fast_bert import FastBert
from .fast_deberta import FastDebertaV2
from .packed_forward import PackedForward, has_forward_hooks
from .layers import check_layers
from .model import LoadedModel, transformer_blocks
from .protocol import ModelFacts, TextEncoder
from .pooling import pool, pool_mask, to_numpy

log = logging.getLogger(__name__)

# Precision -> dtype of the model's activations; int8 quantizes only the linear layers (:mod:`.int8_linear`).
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.float32}


_HOOK_LOCK = threading.Lock()  # models are shared between Encoders and threads
_PAGE = 4096  # bytes of a memory page: :meth:`Encoder.warm_up` reads one element of each


class _StopForward(Exception):
    """Raised inside the model once every requested layer is captured."""


class Encoder(ModelFacts):
    """Embeds texts with one model, pooling any hidden layer.

    Args:
        loaded: Model and tokenizer from :func:`indexer.model.load_model`.
        batch_size: Texts per forward pass.
        max_tokens: Longest input in tokens (special tokens included); longer
            texts are truncated. Defaults to the model's limit, at most 512.
        precision: ``fp32`` (exact, default), ``bf16`` or ``fp16`` for the matmuls, or ``int8`` for the
            linear layers (CPU); reduced precision changes vectors slightly (cosine ~0.99+ to fp32).

    Raises:
        XlsearchError: Bad batch size or unknown precision.
    """

    def __init__(self, loaded: LoadedModel, batch_size: int = BATCH_SIZE, max_tokens: int | None = None,
                 precision: str = "fp32"):
        if batch_size < 1:
            raise XlsearchError(f"batch size must be >= 1, got {batch_size}")
        self.loaded = loaded
        self.batch_size = batch_size
        self.max_tokens = max_tokens or model_max_tokens(loaded)
        self.precision = precision
        self._dtype = precision_dtype(precision, loaded.device)
        self._blocks = transformer_blocks(loaded.model)
        self._fast = fast_forward(loaded.model, None if self._dtype == torch.float32 else self._dtype,
                                  int8=precision == "int8")

    def encode(self, texts: Sequence[str], layer: int, progress: Callable[[int], None] | None = None,
               *, pooling: str = MEAN_NO_SPECIAL, prompt: str = "") -> np.ndarray:
        """Pooled, L2-normalised vectors of ``texts`` at ``layer``.

        Args:
            texts: Texts to embed.
            layer: Hidden layer to pool (0 = embedding output).
            progress: Called with the number of texts done after each batch.
            pooling: One of :data:`indexer.config.POOLINGS`.
            prompt: Prepended to every text before tokenising (``"query: "`` for E5 queries);
                the index records which prompt its documents and queries get.

        Returns:
            ``(len(texts), dim)`` float32, row i for ``texts[i]``; inner product is cosine.
        """
        return self.encode_layers(texts, [layer], progress, pooling=pooling, prompt=prompt)[layer]

    def encode_layers(self, texts: Sequence[str], layers: Sequence[int],
                      progress: Callable[[int], None] | None = None,
                      *, pooling: str = MEAN_NO_SPECIAL, prompt: str = "") -> dict[int, np.ndarray]:
        """Like :meth:`encode` for several layers from one forward pass per batch.

        Returns:
            ``{layer: (len(texts), dim) float32}``, row i for ``texts[i]``.
        """
        self._check(layers, pooling)
        out = {layer: np.zeros((len(texts), self.dim), dtype=np.float32) for layer in layers}
        if not texts:
            return out
        ids, special = self._tokenize(texts, prompt, self.max_tokens)
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]), reverse=True)
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            with torch.inference_mode():
                pooled = self._pool_batch([ids[i] for i in rows], [special[i] for i in rows], layers, pooling)
            for layer, vectors in pooled.items():
                out[layer][rows] = to_numpy(vectors)
            if progress is not None:
                progress(len(rows))
        return out

    def pooled(self, texts: Sequence[str], layers: Sequence[int], *, pooling: str = MEAN_NO_SPECIAL,
               prompt: str = "", max_tokens: int | None = None, grad: bool = False) -> dict[int, Tensor]:
        """Pooled, L2-normalised vectors of ``texts`` as tensors, all texts in one padded batch.

        Args:
            texts: Texts to embed (one forward pass: keep them to a batch).
            layers: Hidden layers to pool (0 = embedding output).
            pooling, prompt: As for :meth:`encode`.
            max_tokens: Truncate each text to this many tokens (default: the encoder's ``max_tokens``).
            grad: Keep autograd through the forward pass (training): the model's own forward runs,
                never the inference-only fast path. Otherwise the pass runs under ``torch.inference_mode``.

        Returns:
            ``{layer: (len(texts), dim) float32}`` on the model's device, row i for ``texts[i]``.
        """
        self._check(layers, pooling)
        if not texts:
            return {layer: torch.zeros((0, self.dim), device=self.loaded.device) for layer in layers}
        ids, special = self._tokenize(texts, prompt, max_tokens or self.max_tokens)
        with contextlib.nullcontext() if grad else torch.inference_mode():
            return self._pool_batch(ids, special, layers, pooling, grad)

    def warm_up(self, layer: int, *, pooling: str = MEAN_NO_SPECIAL, prompt: str = "") -> None:
        """Pay a server's first-query costs before its first query.

        Reads one element of every page of the model's weights: safetensors files are mapped
        into memory, so a page is read from disk at its first use, and a query whose token's row of the
        embedding table has not been read yet waits for the disk (40-100 ms a page on a shared 2-core
        machine whose page cache had dropped the file, against 16 ms for the whole query). Then encodes
        a short text twice at ``layer``, as queries will be: the fp32 kernel is chosen on the first call
        and the weights are laid out for it on the second (:mod:`.linear_kernel`). Where that chose a
        kernel (fp32 products ran), a batch of four long texts follows, as documents sent to a server are
        encoded: the kernel of products of many rows is chosen now, while nothing else runs and skews its
        timing, not in the first request that adds documents.
        """
        with torch.inference_mode():
            for tensor in (*self.loaded.model.parameters(), *self.loaded.model.buffers()):
                if tensor.device.type == "cpu" and tensor.numel() and tensor.is_contiguous():
                    tensor.reshape(-1)[::max(1, _PAGE // tensor.element_size())].sum()
        for _ in range(2):
            self.encode(["warm up"], layer, pooling=pooling, prompt=prompt)
        chosen = linear_kernel.choice()
        if chosen is not None and "many" not in chosen:  # int8, bf16 or a GPU: no fp32 kernel to choose
            self.encode(["warm up " * (linear_kernel.FEW_ROWS // 2)] * 4, layer, pooling=pooling)  # > FEW_ROWS tokens

    def _check(self, layers: Sequence[int], pooling: str) -> None:
        check_layers(layers, self.num_layers, self.loaded.name)
        check_pooling(pooling)

    def _tokenize(self, texts: Sequence[str], prompt: str, max_tokens: int) -> tuple[list[list[int]], list[list[int]]]:
        """Token ids and special-token flags (1 = special) of each text, truncated to ``max_tokens``."""
        encoded = self.tokenizer([prompt + t for t in texts] if prompt else list(texts), add_special_tokens=True,
                                 truncation=True, max_length=max_tokens, return_special_tokens_mask=True)
        return encoded["input_ids"], encoded["special_tokens_mask"]

    def _pool_batch(self, ids: list[list[int]], special: list[list[int]],
                    layers: Sequence[int], pooling: str, grad: bool = False) -> dict[int, Tensor]:
        """Pad ``ids`` to their longest, run the encoder, pool: ``{layer: (len(ids), dim)}`` unit vectors."""
        width = max(len(x) for x in ids)
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
        attention = torch.zeros((len(ids), width), dtype=torch.long)
        for row, tokens in enumerate(ids):
            input_ids[row, :len(tokens)] = torch.tensor(tokens)
            attention[row, :len(tokens)] = 1
        device = self.loaded.device
        hidden = self.hidden_states(input_ids.to(device), attention.to(device), layers, grad=grad)
        mask = pool_mask([len(x) for x in ids], special, width, pooling).to(device)
        return {layer: pool(h, mask) for layer, h in hidden.items()}

    @property
    def uses_fast_path(self) -> bool:
        """Whether the next batch runs a fast forward (DeBERTa-v2 or BERT family, eval mode, no hooks)."""
        fast = self._fast
        return fast is not None and not fast.model.training and not has_forward_hooks(fast.modules)

    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor,
                      layers: Sequence[int], *, grad: bool = False) -> dict[int, Tensor]:
        """``hidden_states[layer]`` ``(batch, seq, dim)`` for each requested layer, computing no layer
        above the top one; ``grad`` runs the model's own (differentiable) forward.

        Rows of padding positions are not meaningful on the fast path.
        """
        if self.uses_fast_path and not grad:
            return self._fast.hidden_states(input_ids, attention_mask, layers)
        autocast = contextlib.nullcontext()
        if self._dtype != torch.float32:
            autocast = torch.autocast(device_type=input_ids.device.type, dtype=self._dtype)
        with autocast:
            return self._hooked_hidden_states(input_ids, attention_mask, layers)

    def _hooked_hidden_states(self, input_ids: Tensor, attention_mask: Tensor,
                              layers: Sequence[int]) -> dict[int, Tensor]:
        """The model's own forward, captured by a pre-hook and stopped at the top layer.

        The hooks live on the shared model, so one call at a time may hold them
        (threads of a server would otherwise capture each other's layers).
        """
        with _HOOK_LOCK:
            return self._hooked_forward(input_ids, attention_mask, layers)

    def _hooked_forward(self, input_ids: Tensor, attention_mask: Tensor,
                        layers: Sequence[int]) -> dict[int, Tensor]:
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
        kernels = contextlib.nullcontext()
        if self._dtype == torch.float32:  # fp32 on the faster library, or int8
            kernels = linear_kernel.routed(self.loaded.model, int8_linear.linear if self.precision == "int8" else None)
        elif self._dtype == torch.bfloat16 and input_ids.device.type == "cpu" and bf16_linear.available():
            kernels = linear_kernel.routed(self.loaded.model, bf16_linear.linear)  # packed, not cast per call
        try:
            with kernels:
                output = self.loaded.model(input_ids=input_ids, attention_mask=attention_mask)
            captured[self.num_layers] = output.last_hidden_state
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return {layer: captured[layer] for layer in layers}


def fast_forward(model: torch.nn.Module, compute_dtype: torch.dtype | None, int8: bool) -> PackedForward | None:
    """The fast forward of ``model``'s family (:class:`FastDebertaV2`, :class:`FastBert`), or None."""
    for forward in (FastDebertaV2, FastBert):
        if forward.supports(model):
            return forward(model, compute_dtype, int8=int8)
    return None


def precision_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype of ``precision``'s activations; warns when ``device`` has no native support for it.

    Raises:
        XlsearchError: ``precision`` is not one of ``fp32``, ``bf16``, ``fp16``, ``int8``, or ``int8``
            off the CPU.
    """
    if precision not in PRECISIONS:
        raise XlsearchError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    if precision == "int8":
        if device.type != "cpu" or not int8_linear.available():
            raise XlsearchError(f"--precision int8 runs on the CPU only, not on {device}; use fp16 or bf16 there")
        if not int8_linear.native_support():
            log.warning("this CPU has no int8 dot-product instructions (VNNI or AMX): --precision int8 "
                        "may be no faster than fp32 here")
        return dtype
    if dtype != torch.float32 and not native_support(dtype, device):
        log.warning("%s has no native %s matmuls: --precision %s will be slower than fp32 here",
                    device, precision, precision)
    return dtype


def native_support(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether ``device`` runs ``dtype`` matmuls in hardware (CUDA; AVX512-BF16/AMX or AVX512-FP16 CPUs)."""
    if dtype == torch.float32:
        return True
    if device.type == "cuda":
        return dtype == torch.float16 or torch.cuda.is_bf16_supported()
    return native_matmul(dtype)


def model_max_tokens(loaded: LoadedModel) -> int:
    """Longest input the model takes: the tokenizer's and config's limits, capped at 512."""
    limits = [512, int(getattr(loaded.tokenizer, "model_max_length", 512) or 512)]
    positions = getattr(loaded.model.config, "max_position_embeddings", None)
    if positions and getattr(loaded.model.config, "position_biased_input", True):
        # Absolute positions (BERT, XLM-R: 2 of them reserved for padding offsets).
        limits.append(int(positions) - (2 if loaded.model.config.model_type in ("xlm-roberta", "roberta") else 0))
    return min(limits)


def encode_documents(encoder: TextEncoder, texts: Sequence[str], config: IndexConfig,
                     progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Vectors of chunk inputs as ``config``'s index embeds them: its layer, pooling and document prompt."""
    return encoder.encode(texts, config.layer, progress, pooling=config.pooling, prompt=config.document_prompt)


def encode_queries(encoder: TextEncoder, texts: Sequence[str], config: IndexConfig,
                   progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Vectors of queries as ``config``'s index embeds them: its layer, pooling and query prompt."""
    return encoder.encode(texts, config.layer, progress, pooling=config.pooling, prompt=config.query_prompt)
