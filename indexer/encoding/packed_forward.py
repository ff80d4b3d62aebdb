"""Inference forward of a post-LayerNorm transformer encoder on packed tokens, up to a chosen layer.

The part that BERT-family encoders (:mod:`.fast_bert`) and DeBERTa-v2 (:mod:`.fast_deberta`)
share: each block is self-attention, a projection added to its input and normalised, and a
feed-forward layer added and normalised, as in transformers' ``BertLayer`` and ``DebertaV2Layer``.
A subclass gives the embeddings, the block's three attention projections and the attention of
one group of rows; this class runs the rest:

* Per-token layers run on the real tokens of a batch only (:mod:`.packing`); attention runs per
  group of similar-length rows, padded to the group's widest, with padding keys masked.
* Layers above the highest one asked for are never run.
* No module is called: a layer is a handful of torch ops on the modules' own weights, so a query
  of a few tokens pays no per-module Python, no attention-mask building and no hooks, and the
  forward holds no lock (threads of a server encode at once).
* Every linear layer runs on one kernel chosen once: fp32 on the CPU's faster library
  (:mod:`.linear_kernel`), bf16 on weights cast and laid out for oneDNN (:mod:`.bf16_linear`),
  or int8 (:mod:`.int8_linear`); attention's three projections run as one product on their weights
  stacked, in int8 and where oneDNN serves an fp32 query's few rows.

Everything runs in the weights' dtype unless a ``compute_dtype`` is given: then the matmuls and
attention run in that dtype, while LayerNorms and the residual stream stay in the weights' dtype.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules import module as nn_module

from . import bf16_linear, int8_linear, linear_kernel
from .packing import AttentionGroup, PackedBatch

# (group, query, key, value) -> the group's packed attention output
GroupAttention = Callable[[AttentionGroup, Tensor, Tensor, Tensor], Tensor]


def has_forward_hooks(modules: Sequence[nn.Module]) -> bool:
    """Whether any of ``modules`` (or the global registry) has forward (pre-)hooks that would run.

    The fast forward does not call the HF blocks, so hooks on them would silently not
    run; callers use the HF forward instead when this is True. transformers' own
    output-capturing hooks (installed for good by a call with ``output_hidden_states``) are
    not counted: they record only inside the model's own forward.
    """
    if nn_module._global_forward_hooks or nn_module._global_forward_pre_hooks:
        return True
    return any((m._forward_hooks or m._forward_pre_hooks)
               and not all(map(_inert, (*m._forward_hooks.values(), *m._forward_pre_hooks.values())))
               for m in modules)


_TRANSFORMERS_CAPTURE = "transformers.utils.output_capturing"


def in_place(activation: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """``activation``, overwriting its input where it is GELU (exact, as transformers' ``"gelu"``) or ReLU.

    The feed-forward layer's inner activations are the largest tensor of a batch (6,000 tokens x 3,072
    floats, 74 MB, for 32 paragraphs of mdeberta-v3-base); written to a new one, they took a second block
    of that size (and, where freed memory goes back to the system, its page faults). The same values, to
    the bit.
    """
    if type(activation).__name__ == "GELUActivation" and isinstance(activation, nn.Module):
        activation = getattr(activation, "act", activation)  # transformers' module around F.gelu
    if activation is F.gelu:
        return torch.ops.aten.gelu_
    if activation is F.relu or (isinstance(activation, nn.ReLU)):
        return torch.relu_
    return activation


def _inert(hook: Callable) -> bool:
    return getattr(hook, "__module__", None) == _TRANSFORMERS_CAPTURE


def standard_block(block: nn.Module, projections: Sequence[nn.Module]) -> bool:
    """Whether ``block``'s linear layers (``projections`` and the BERT-style output, intermediate and output
    dense layers) are plain ``nn.Linear`` and its norms plain ``nn.LayerNorm``: what :class:`PackedForward`
    computes with (a quantized or otherwise replaced module keeps the model's own forward)."""
    try:
        linears = [*projections, block.attention.output.dense, block.intermediate.dense, block.output.dense]
        norms = [block.attention.output.LayerNorm, block.output.LayerNorm]
    except AttributeError:
        return False
    return all(type(m) is nn.Linear for m in linears) and all(type(m) is nn.LayerNorm for m in norms)


class PackedForward:
    """Hidden states of an encoder, computing only what pooling needs (see the module).

    Args:
        model: A model for which the subclass's :meth:`supports` is True. Its weights are used in
            place; changing them (``load_state_dict``, an optimiser step, ``.to``) invalidates the
            caches derived from them on the next call. In-place edits through ``param.data`` bypass
            version counters: call :meth:`clear_cache` then.
        compute_dtype: dtype of the matmuls, or None for the weights' own (exact) dtype.
        int8: Run the linear layers on int8 weights and per-token int8 activations
            (:mod:`.int8_linear`); attention and the rest keep ``compute_dtype``.

    Thread-safe: the caches are filled under a lock.
    """

    def __init__(self, model: nn.Module, compute_dtype: torch.dtype | None = None, int8: bool = False):
        if not self.supports(model):
            raise ValueError(f"{type(model).__name__} is not a model {type(self).__name__} supports")
        self.model = model
        self.modules = tuple(model.modules())
        self.compute_dtype = compute_dtype
        self._kernel = self._choose_kernel(model, compute_dtype, int8)
        self._lock = threading.Lock()
        self._casts: dict[int, tuple[tuple, Tensor]] = {}

    # -- what a model family gives ----------------------------------------
    @staticmethod
    def supports(model: nn.Module) -> bool:
        """Whether this forward computes exactly what ``model`` computes."""
        raise NotImplementedError

    def _blocks(self) -> Sequence[nn.Module]:
        """The transformer blocks, in order."""
        return self.model.encoder.layer

    def _embed(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """The embedding output ``(batch, seq, hidden)``: ``hidden_states[0]``."""
        raise NotImplementedError

    @staticmethod
    def _projections(block: nn.Module) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
        """The block's query, key and value projections."""
        raise NotImplementedError

    def _group_attention(self, i: int) -> GroupAttention:
        """Layer ``i``'s attention of one group of rows."""
        raise NotImplementedError

    # -- public ------------------------------------------------------------
    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor, layers: Sequence[int]) -> dict[int, Tensor]:
        """``hidden_states[layer]`` of the HF forward for each of ``layers``.

        Args:
            input_ids: ``(batch, seq)`` token ids.
            attention_mask: ``(batch, seq)``, 1 for real tokens, 0 for padding.
            layers: Indices into HF's ``hidden_states`` (0 = embeddings output).

        Returns:
            ``{layer: (batch, seq, hidden)}`` in fp32 (or the weights' dtype), zeros at
            padding positions after layer 0.
        """
        top = max(layers)
        with torch.inference_mode():
            hidden = self._embed(input_ids, attention_mask)
            captured = {0: hidden}
            if top > 0:
                batch = PackedBatch.of(attention_mask, multiple=self._row_multiple(attention_mask))
                packed = batch.pack(hidden)
                blocks = self._blocks()
                for i in range(top):
                    packed = self._layer(i, blocks[i], packed, batch)
                    if i + 1 in layers:
                        captured[i + 1] = batch.unpack(packed)
        return {layer: captured[layer] for layer in layers}

    def clear_cache(self) -> None:
        """Forget cached cast, bf16 and int8 weights."""
        int8_linear.clear()
        bf16_linear.clear()
        with self._lock:
            self._casts.clear()

    # -- kernels -----------------------------------------------------------
    def _choose_kernel(self, model: nn.Module, compute_dtype: torch.dtype | None, int8: bool):
        """The linear layers' kernel: int8, bf16 on packed weights (CPU), fp32's faster library, or
        ``F.linear`` on cast weights (fp16; bf16 off the CPU)."""
        if int8:
            return int8_linear.linear
        if compute_dtype is None:
            return linear_kernel.linear
        on_cpu = next(model.parameters()).device.type == "cpu"
        if compute_dtype == torch.bfloat16 and on_cpu and bf16_linear.available():
            return bf16_linear.linear
        return lambda x, weight, bias: F.linear(x, self._cast(weight), self._cast(bias))

    def _row_multiple(self, attention_mask: Tensor) -> int:
        """Packed rows are padded to a multiple of this: MKL's, where fp32 products run on MKL, else 1
        (oneDNN's fp32, bf16 and int8 products cost what their rows cost)."""
        if self._kernel is not linear_kernel.linear:
            return 1
        first = self._projections(self._blocks()[0])[0]
        return linear_kernel.row_multiple(int(attention_mask.sum()), first.weight, first.bias)

    def _cast(self, weight: Tensor | None) -> Tensor | None:
        """``weight`` in the compute dtype (cached per weight version), or itself."""
        if weight is None or self.compute_dtype is None or weight.dtype == self.compute_dtype:
            return weight
        key = linear_kernel.weight_key([weight])
        with self._lock:
            cached = self._casts.get(id(weight))
            if cached is None or cached[0] != key:
                cached = self._casts[id(weight)] = (key, weight.detach().to(self.compute_dtype))
            return cached[1]

    # -- maths -------------------------------------------------------------
    def _linear(self, x: Tensor, layer: nn.Linear) -> Tensor:
        """``layer(x)`` for packed ``x`` ``(tokens, in)`` on the chosen kernel; may return a transposed
        (non-contiguous) view."""
        if self.compute_dtype is not None:
            x = x.to(self.compute_dtype)
        return self._kernel(x, layer.weight, layer.bias)

    def _add_norm(self, x: Tensor, residual: Tensor, norm: nn.LayerNorm) -> Tensor:
        """``norm(x + residual)``, in the residual stream's dtype; ``x`` (a fresh output) is overwritten."""
        summed = x.add_(residual) if x.dtype == residual.dtype else x.to(residual.dtype) + residual
        return F.layer_norm(summed, norm.normalized_shape, norm.weight, norm.bias, norm.eps)

    def _layer(self, i: int, block: nn.Module, hidden: Tensor, batch: PackedBatch) -> Tensor:
        """One transformer block on packed ``(tokens, hidden)`` states."""
        context = self._attention(i, block, hidden, batch)
        attended = self._add_norm(self._linear(context, block.attention.output.dense), hidden,
                                  block.attention.output.LayerNorm)
        inner = in_place(block.intermediate.intermediate_act_fn)(self._linear(attended, block.intermediate.dense))
        return self._add_norm(self._linear(inner, block.output.dense), attended, block.output.LayerNorm)

    def _attention(self, i: int, block: nn.Module, hidden: Tensor, batch: PackedBatch) -> Tensor:
        """Self-attention of packed states, one group of similar-length rows at a time; packed."""
        if self.compute_dtype is not None:
            hidden = hidden.to(self.compute_dtype)  # once for the three projections
        layers = [(layer.weight, layer.bias) for layer in self._projections(block)]
        if self._kernel is int8_linear.linear:  # the input quantized once, one product for the three
            query, key, value = int8_linear.linears(hidden, layers)
        elif self._kernel is linear_kernel.linear:  # one product for the three where oneDNN serves few rows
            query, key, value = linear_kernel.linears(hidden, layers)
        else:
            query, key, value = (self._kernel(hidden, weight, bias) for weight, bias in layers)
        attend = self._group_attention(i)
        if len(batch.groups) == 1 and batch.packed_rows == batch.tokens:
            return attend(batch.groups[0], query, key, value)
        context = query.new_zeros(query.shape)
        for group in batch.groups:
            if group.stop > group.start:
                context[group.start:group.stop] = attend(group, query, key, value)
        return context

    @staticmethod
    def _heads(group: AttentionGroup, x: Tensor, heads: int) -> Tensor:
        """A group's packed ``(tokens, heads*size)`` as ``(rows, heads, width, size)``, contiguous along
        ``size`` (SDPA's fused CPU kernel wants unit stride along the head)."""
        return group.unpack(x).contiguous().view(group.size, group.width, heads, -1).transpose(1, 2)

    @staticmethod
    def _merge_heads(group: AttentionGroup, context: Tensor) -> Tensor:
        """``(rows, heads, width, size)`` attention output -> the group's packed ``(tokens, heads*size)``."""
        return group.pack(context.transpose(1, 2).reshape(group.size, group.width, -1))
