"""Inference forward of a Hugging Face DeBERTa-v2 encoder up to a chosen layer.

The same maths as ``transformers``' ``DebertaV2Model`` in eval mode, on the model's
own weights (nothing is copied in fp32), minus the work that does not depend on the
input:

* The relative-position table (``rel_embeddings`` after its LayerNorm) projected
  through each layer's key and query projections is computed once per layer and
  cached, keyed on the versions of the weights it was computed from; HF recomputes
  all ``2 * position_buckets`` rows in every layer of every forward pass.
* A sequence of ``L`` tokens only reaches the log-bucketed relative positions
  ``bucket(-(L-1)) .. bucket(L-1)``, so the content->position and position->content
  scores are computed against that slice of the table, not all of it.
* Layers above the highest one asked for are never run.

Per-token layers run on the real tokens of a batch only (:mod:`indexer.packing`);
attention runs per group of similar-length rows, padded to the group's widest, with
padding keys masked, through ``scaled_dot_product_attention`` with the c2p + p2c
scores as its additive mask.
Everything runs in the weights' dtype unless a ``compute_dtype`` is given: then the
matmuls and attention run in that dtype on cached, cast copies of the weights (bf16 on
the CPU: cast and laid out for oneDNN, :mod:`.bf16_linear`), while LayerNorms and the
residual stream stay in the weights' dtype.
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules import module as nn_module

from . import bf16_linear, int8_linear, linear_kernel
from .packing import AttentionGroup, PackedBatch

_INDEX_CACHE_SIZE = 64


def supports(model: nn.Module) -> bool:
    """Whether :class:`FastDebertaV2` computes exactly what ``model`` computes.

    True for a ``DebertaV2Model`` (config ``model_type == "deberta-v2"``) with relative
    attention of kind c2p and/or p2c, no convolution layer and no ``z_steps``; anything
    else keeps the HF forward.
    """
    try:
        from transformers.models.deberta_v2 import modeling_deberta_v2 as hf
    except ImportError:  # pragma: no cover - transformers is a dependency
        return False
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) != "deberta-v2" or not isinstance(model, hf.DebertaV2Model):
        return False
    encoder = model.encoder
    if (not isinstance(model.embeddings, hf.DebertaV2Embeddings) or not isinstance(encoder, hf.DebertaV2Encoder)
            or encoder.conv is not None or not encoder.relative_attention or getattr(model, "z_steps", 0) > 1):
        return False
    kinds = set(getattr(config, "pos_att_type", None) or [])
    if not kinds or not kinds <= {"c2p", "p2c"}:
        return False
    return all(type(block) is hf.DebertaV2Layer and type(block.attention.self) is hf.DisentangledSelfAttention
               and block.attention.self.relative_attention for block in encoder.layer)


def has_forward_hooks(modules: Sequence[nn.Module]) -> bool:
    """Whether any of ``modules`` (or the global registry) has forward (pre-)hooks.

    The fast forward does not call the HF blocks, so hooks on them would silently not
    run; callers use the HF forward instead when this is True.
    """
    if nn_module._global_forward_hooks or nn_module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in modules)


class FastDebertaV2:
    """Hidden states of a DeBERTa-v2 model, computing only what pooling needs.

    Args:
        model: A ``DebertaV2Model`` for which :func:`supports` is True. Its weights are
            used in place; changing them (``load_state_dict``, an optimiser step, ``.to``)
            invalidates the cached position projections on the next call. In-place edits
            through ``param.data`` bypass version counters: call :meth:`clear_cache` then.
        compute_dtype: dtype of the matmuls, or None for the weights' own (exact) dtype.
        int8: Run the linear layers on int8 weights and per-token int8 activations
            (:mod:`.int8_linear`); attention and the rest keep ``compute_dtype``.

    Thread-safe: the caches are filled under a lock.
    """

    def __init__(self, model: nn.Module, compute_dtype: torch.dtype | None = None, int8: bool = False):
        if not supports(model):
            raise ValueError(f"{type(model).__name__} is not a DeBERTa-v2 model the fast forward supports")
        self.model = model
        self.modules = tuple(model.modules())
        self.compute_dtype = compute_dtype
        self._kernel = self._choose_kernel(model, compute_dtype, int8)
        encoder = model.encoder
        first = encoder.layer[0].attention.self
        self.heads = first.num_attention_heads
        self.head_size = first.attention_head_size
        self.att_span = first.pos_ebd_size
        self.kinds = set(first.pos_att_type)
        self.scale = math.sqrt(self.head_size * (1 + len(self.kinds)))
        self._lock = threading.Lock()
        self._positions: dict[int, tuple[tuple, Tensor, Tensor]] = {}
        self._casts: dict[int, tuple[tuple, Tensor]] = {}
        self._rel_full: Tensor | None = None
        self._columns: OrderedDict[tuple, Tensor] = OrderedDict()

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
        first = self.model.encoder.layer[0].attention.self.query_proj
        return linear_kernel.row_multiple(int(attention_mask.sum()), first.weight, first.bias)

    def clear_cache(self) -> None:
        """Forget cached position projections, cast, bf16 and int8 weights, and position indices."""
        int8_linear.clear()
        bf16_linear.clear()
        with self._lock:
            self._positions.clear()
            self._casts.clear()
            self._columns.clear()
            self._rel_full = None

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
            hidden = self.model.embeddings(input_ids=input_ids, mask=attention_mask)
            captured = {0: hidden}
            if top > 0:
                batch = PackedBatch.of(attention_mask, multiple=self._row_multiple(attention_mask))
                packed = batch.pack(hidden)
                for i in range(top):
                    packed = self._layer(i, packed, batch)
                    if i + 1 in layers:
                        captured[i + 1] = batch.unpack(packed)
        return {layer: captured[layer] for layer in layers}

    # -- caches ------------------------------------------------------------
    def _relative_columns(self, length: int, device: torch.device) -> Tensor:
        """Rows of the position table for the relative distances ``-(length-1) .. length-1``, in that order
        (``2*length - 1`` of them; log-bucketed distances repeat a row)."""
        key = (length, device)
        with self._lock:
            if key in self._columns:
                self._columns.move_to_end(key)
                return self._columns[key]
            full = self._rel_full
            if full is None or full.shape[0] < length or full.device != device:
                full = self._rel_full = self._build_relative_positions(max(length, 512), device)
            # full[i, j] is the bucket of distance i - j: its first row holds -j, its first column +i.
            distances = torch.cat([full[0, 1:length].flip(0), full[:length, 0]])
            span = self.att_span
            columns = self._columns[key] = torch.clamp(distances + span, 0, 2 * span - 1).contiguous()
            if len(self._columns) > _INDEX_CACHE_SIZE:
                self._columns.popitem(last=False)
            return columns

    def _build_relative_positions(self, length: int, device: torch.device) -> Tensor:
        """HF's bucketed ``q - k`` matrix; the one for a shorter sequence is its top-left block."""
        from transformers.models.deberta_v2.modeling_deberta_v2 import build_relative_position

        encoder = self.model.encoder
        probe = torch.empty((length, 1), device=device)
        return build_relative_position(probe, probe, bucket_size=encoder.position_buckets,
                                       max_position=encoder.max_relative_positions)[0]

    def _position_projections(self, i: int) -> tuple[Tensor | None, Tensor | None]:
        """Layer ``i``'s ``(pos_key, pos_query)`` divided by the scale, each ``(heads, 2*span, head_size)`` or None."""
        encoder = self.model.encoder
        attention = encoder.layer[i].attention.self
        key_proj = attention.key_proj if attention.share_att_key else getattr(attention, "pos_key_proj", None)
        query_proj = attention.query_proj if attention.share_att_key else getattr(attention, "pos_query_proj", None)
        sources = [encoder.rel_embeddings.weight, *self._layer_norm_params(encoder)]
        for proj in (key_proj, query_proj):
            if proj is not None:
                sources += [proj.weight] + ([proj.bias] if proj.bias is not None else [])
        key = linear_kernel.weight_key(sources) + (self.compute_dtype,)
        with self._lock:
            cached = self._positions.get(i)
            if cached is not None and cached[0] == key:
                return cached[1], cached[2]
            table = encoder.get_rel_embedding()[: 2 * self.att_span]
            pos_key = self._project_table(table, key_proj) if "c2p" in self.kinds else None
            pos_query = self._project_table(table, query_proj) if "p2c" in self.kinds else None
            self._positions[i] = (key, pos_key, pos_query)
            return pos_key, pos_query

    @staticmethod
    def _layer_norm_params(encoder: nn.Module) -> list[Tensor]:
        norm = getattr(encoder, "LayerNorm", None)
        if norm is None or "layer_norm" not in encoder.norm_rel_ebd:
            return []
        return [p for p in (norm.weight, norm.bias) if p is not None]

    def _project_table(self, table: Tensor, proj: nn.Linear) -> Tensor:
        """``proj(table) / scale`` split into heads: ``(heads, rows, head_size)``."""
        projected = F.linear(table, proj.weight, proj.bias) / self.scale
        projected = projected.view(table.shape[0], self.heads, self.head_size).transpose(0, 1).contiguous()
        return projected if self.compute_dtype is None else projected.to(self.compute_dtype)

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
        """``layer(x)`` for packed ``x`` ``(tokens, in)`` by the CPU's faster fp32 kernel (:mod:`.linear_kernel`),
        in bf16 (:mod:`.bf16_linear`) or int8 (:mod:`.int8_linear`); may return a transposed (non-contiguous) view."""
        if self.compute_dtype is not None:
            x = x.to(self.compute_dtype)
        return self._kernel(x, layer.weight, layer.bias)

    def _add_norm(self, x: Tensor, residual: Tensor, norm: nn.LayerNorm) -> Tensor:
        """``norm(x + residual)``, in the residual stream's dtype; ``x`` (a fresh output) is overwritten."""
        summed = x.add_(residual) if x.dtype == residual.dtype else x.to(residual.dtype) + residual
        return F.layer_norm(summed, norm.normalized_shape, norm.weight, norm.bias, norm.eps)

    def _layer(self, i: int, hidden: Tensor, batch: PackedBatch) -> Tensor:
        """One transformer block on packed ``(tokens, hidden)`` states."""
        block = self.model.encoder.layer[i]
        context = self._attention(i, block.attention.self, hidden, batch)
        attended = self._add_norm(self._linear(context, block.attention.output.dense), hidden,
                                  block.attention.output.LayerNorm)
        inner = block.intermediate.intermediate_act_fn(self._linear(attended, block.intermediate.dense))
        return self._add_norm(self._linear(inner, block.output.dense), attended, block.output.LayerNorm)

    def _attention(self, i: int, attention: nn.Module, hidden: Tensor, batch: PackedBatch) -> Tensor:
        """Self-attention of packed states, one group of similar-length rows at a time; packed."""
        if self.compute_dtype is not None:
            hidden = hidden.to(self.compute_dtype)  # once for the three projections
        projections = (attention.query_proj, attention.key_proj, attention.value_proj)
        if self._kernel is int8_linear.linear:  # the input quantized once for the three
            query, key, value = int8_linear.linears(hidden, [(layer.weight, layer.bias) for layer in projections])
        else:
            query, key, value = (self._linear(hidden, layer) for layer in projections)
        positions = self._position_projections(i)
        if len(batch.groups) == 1 and batch.packed_rows == batch.tokens:
            return self._group_attention(batch.groups[0], query, key, value, positions)
        context = query.new_zeros(query.shape)
        for group in batch.groups:
            if group.stop > group.start:
                context[group.start:group.stop] = self._group_attention(group, query, key, value, positions)
        return context

    def _group_attention(self, group: AttentionGroup, query: Tensor, key: Tensor, value: Tensor,
                         positions: tuple[Tensor | None, Tensor | None]) -> Tensor:
        """Disentangled attention (content->content + c2p + p2c) of one group's packed tokens."""
        heads, size, width = self.heads, self.head_size, group.width

        def split(x: Tensor) -> Tensor:  # packed (tokens, heads*size) -> (rows, heads, width, size)
            # contiguous: SDPA's fused CPU kernel wants unit stride along head_size.
            return group.unpack(x).contiguous().view(group.size, width, heads, size).transpose(1, 2)

        query, key, value = split(query), split(key), split(value)
        pos_key, pos_query = positions
        columns = self._relative_columns(width, query.device)
        c2p = p2c = None
        if pos_key is not None:  # content->position: query i against the position of key j (distance i - j)
            # Column t of the product is distance (width-1) - t: [i, j] sits at row i, column j - i + width - 1.
            c2p = _by_distance(torch.matmul(query, pos_key[:, columns.flip(0)].transpose(-1, -2)), width)
        if pos_query is not None:  # position->content: key j against the position of query i (distance i - j)
            # Column t of the product is distance t - (width-1): [i, j] sits at row j, column i - j + width - 1.
            p2c = _by_distance(torch.matmul(key, pos_query[:, columns].transpose(-1, -2)), width).transpose(-1, -2)
        # The views' rows overlap: their sum (or a copy) is a tensor of its own, which the mask may write.
        bias = c2p + p2c if c2p is not None and p2c is not None else (c2p if p2c is None else p2c).contiguous()
        if group.key_mask is not None:
            bias = bias.masked_fill_(group.key_mask, torch.finfo(bias.dtype).min)
        context = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, scale=1.0 / self.scale)
        return group.pack(context.transpose(1, 2).reshape(group.size, width, heads * size))


def _by_distance(scores: Tensor, width: int) -> Tensor:
    """``(..., width, width)`` from ``scores`` ``(..., width, 2*width - 1)``: entry ``[r, c]`` is row ``r``,
    column ``c - r + width - 1``, as a strided view (Transformer-XL's relative shift: no copy, no index)."""
    scores = scores.contiguous()
    return scores.as_strided((*scores.shape[:-1], width), (*scores.stride()[:-2], 2 * width - 2, 1),
                             scores.storage_offset() + width - 1)
