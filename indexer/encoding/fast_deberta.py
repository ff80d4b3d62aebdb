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

The rest (packed per-token layers, groups of similar-length rows for attention, layers
above the pooled one never run, the linear layers' kernel and precision) is
:class:`.PackedForward`'s; attention here is ``scaled_dot_product_attention`` with the
c2p + p2c scores as its additive mask.
"""
from __future__ import annotations

import functools
import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import linear_kernel
from .native_deberta import NativeDebertaV2
from .packed_forward import GroupAttention, PackedForward, standard_block
from .packing import AttentionGroup

PER_HEAD_ROWS = 96  # a group of at least this many tokens takes its position products head by head

_INDEX_CACHE_SIZE = 64


def supports(model: nn.Module) -> bool:
    """Whether :class:`FastDebertaV2` computes exactly what ``model`` computes.

    True for a ``DebertaV2Model`` (config ``model_type == "deberta-v2"``) with relative
    attention of kind c2p and/or p2c, no convolution layer and no ``z_steps``, and for such an
    encoder read without transformers (:class:`.native_deberta.NativeDebertaV2`, which checks
    the same when it reads); anything else keeps the HF forward.
    """
    config = getattr(model, "config", None)
    if type(model) is NativeDebertaV2:
        return all(standard_block(block, FastDebertaV2._projections(block)) for block in model.encoder.layer)
    if getattr(config, "model_type", None) != "deberta-v2":
        return False  # before importing transformers' module, which other families would pay for
    try:
        from transformers.models.deberta_v2 import modeling_deberta_v2 as hf
    except ImportError:  # pragma: no cover - transformers is a dependency
        return False
    if not isinstance(model, hf.DebertaV2Model):
        return False
    encoder = model.encoder
    if (not isinstance(model.embeddings, hf.DebertaV2Embeddings) or not isinstance(encoder, hf.DebertaV2Encoder)
            or encoder.conv is not None or not encoder.relative_attention or getattr(model, "z_steps", 0) > 1):
        return False
    kinds = set(getattr(config, "pos_att_type", None) or [])
    if not kinds or not kinds <= {"c2p", "p2c"}:
        return False
    return all(type(block) is hf.DebertaV2Layer and type(block.attention.self) is hf.DisentangledSelfAttention
               and block.attention.self.relative_attention
               and standard_block(block, FastDebertaV2._projections(block)) for block in encoder.layer)


class FastDebertaV2(PackedForward):
    """Hidden states of a DeBERTa-v2 model, computing only what pooling needs (:class:`.PackedForward`).

    Args:
        model: A ``DebertaV2Model`` for which :func:`supports` is True; see :class:`.PackedForward`
            for ``compute_dtype`` and ``int8``. Changing its weights also invalidates the cached
            position projections.
    """

    def __init__(self, model: nn.Module, compute_dtype: torch.dtype | None = None, int8: bool = False):
        super().__init__(model, compute_dtype, int8)
        first = model.encoder.layer[0].attention.self
        self.heads = first.num_attention_heads
        self.head_size = first.attention_head_size
        self.att_span = first.pos_ebd_size
        self.kinds = set(first.pos_att_type)
        self.scale = math.sqrt(self.head_size * (1 + len(self.kinds)))
        self._positions: dict[int, tuple[tuple, Tensor, Tensor]] = {}
        self._rel_full: Tensor | None = None
        self._columns: OrderedDict[tuple, tuple[Tensor, Tensor]] = OrderedDict()

    supports = staticmethod(supports)

    def clear_cache(self) -> None:
        """Forget cached position projections, cast, bf16 and int8 weights, and position indices."""
        super().clear_cache()
        with self._lock:
            self._positions.clear()
            self._columns.clear()
            self._rel_full = None

    def _embed(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.model.embeddings(input_ids=input_ids, mask=attention_mask)

    @staticmethod
    def _projections(block: nn.Module) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
        attention = block.attention.self
        return attention.query_proj, attention.key_proj, attention.value_proj

    def _group_attention(self, i: int) -> GroupAttention:
        return functools.partial(self._disentangled_attention, positions=self._position_projections(i))

    # -- caches ------------------------------------------------------------
    def _relative_columns(self, length: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """Rows of the position table for a ``length``-token group: for the relative distances
        ``length-1 .. -(length-1)`` (the content->position product) and ``-(length-1) .. length-1``
        (position->content), ``2*length - 1`` each (log-bucketed distances repeat a row), each followed by
        one row no entry reads: products with an even number of columns measured 1.3x faster than with
        the odd one (12 heads x 256 tokens, one thread)."""
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
            columns = torch.clamp(distances + span, 0, 2 * span - 1)
            unread = columns[:1]
            both = self._columns[key] = (torch.cat([columns.flip(0), unread]), torch.cat([columns, unread]))
            if len(self._columns) > _INDEX_CACHE_SIZE:
                self._columns.popitem(last=False)
            return both

    def _build_relative_positions(self, length: int, device: torch.device) -> Tensor:
        """HF's bucketed ``q - k`` matrix; the one for a shorter sequence is its top-left block."""
        encoder = self.model.encoder
        return relative_positions(length, encoder.position_buckets, encoder.max_relative_positions, device)

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

    # -- maths ---------------------------------------------------------------
    def _disentangled_attention(self, group: AttentionGroup, query: Tensor, key: Tensor, value: Tensor,
                                positions: tuple[Tensor | None, Tensor | None]) -> Tensor:
        """Disentangled attention (content->content + c2p + p2c) of one group's packed tokens."""
        width, heads = group.width, self.heads
        query, key = self._heads_first(group, query), self._heads_first(group, key)  # (heads, rows, width, size)
        pos_key, pos_query = positions
        c2p_rows, p2c_rows = self._relative_columns(width, query.device)
        # content->position: query i against the position of key j (distance i - j); column t of a product
        # is distance (width-1) - t, so [i, j] sits at row i, column j - i + width - 1.
        c2p = pos_key.index_select(1, c2p_rows) if pos_key is not None else None
        # position->content: key j against the position of query i (distance i - j); column t of a product
        # is distance t - (width-1), so [i, j] sits at row j, column i - j + width - 1.
        p2c = pos_query.index_select(1, p2c_rows) if pos_query is not None else None
        bias = query.new_empty(heads, group.size, width, width)
        for part in range(heads) if group.size * width >= PER_HEAD_ROWS else (slice(None),):
            terms = []
            if c2p is not None:
                terms.append(_position_scores(query[part], c2p[part], width))
            if p2c is not None:
                terms.append(_position_scores(key[part], p2c[part], width).transpose(-1, -2))
            if len(terms) == 2:
                torch.add(terms[0], terms[1], out=bias[part])
            else:
                bias[part].copy_(terms[0])
        if group.key_mask is not None:
            bias.masked_fill_(group.key_mask.view(1, group.size, 1, width), torch.finfo(bias.dtype).min)
        context = F.scaled_dot_product_attention(query.transpose(0, 1), key.transpose(0, 1),
                                                 self._heads(group, value, heads), attn_mask=bias.transpose(0, 1),
                                                 scale=1.0 / self.scale)
        return self._merge_heads(group, context)

    def _heads_first(self, group: AttentionGroup, x: Tensor) -> Tensor:
        """A group's packed ``(tokens, heads*size)`` as a contiguous ``(heads, rows, width, size)``: each
        head's states one block, as a 2-D product reads them."""
        return group.unpack(x).view(group.size, group.width, self.heads, -1).permute(2, 0, 1, 3).contiguous()


def _position_scores(states: Tensor, table: Tensor, width: int) -> Tensor:
    """States ``(..., rows, width, size)`` against position rows ``(..., columns, size)`` (one head, or every
    head at once), as ``(..., rows, width, width)``: entry ``[r, i, j]`` is column ``j - i + width - 1``.

    One head is one 2-D product on the block's linear kernel (:func:`.linear_kernel.product`); every head
    at once is one batched matmul, which repeats the table for every row. On a 2-core AMD EPYC (one thread)
    the batched form ran at a third of the fp32 rate on groups of documents (12 rows of 174 tokens, one term:
    31 ms against 15), and won only below :data:`PER_HEAD_ROWS` tokens, where twelve calls per term
    cost more than the products (a 14-token query: 0.07 against 0.31 ms per layer).
    """
    if states.dim() == 3:
        rows, _, size = states.shape
        scores = linear_kernel.product(states.reshape(rows * width, size), table).view(rows, width, -1)
    else:
        scores = torch.matmul(states, table.unsqueeze(-3).transpose(-1, -2))
    return _by_distance(scores, width)


def relative_positions(length: int, bucket_size: int, max_position: int, device: torch.device) -> Tensor:
    """``(length, length)`` relative positions ``q - k``, log-bucketed beyond ``bucket_size // 2``: the ops of
    transformers' ``build_relative_position`` and ``make_log_bucket_position``, so the buckets are its own
    (a test compares them) without importing its DeBERTa module."""
    ids = torch.arange(length, dtype=torch.long, device=device)
    relative = ids[:, None] - ids[None, :]
    if bucket_size > 0 and max_position > 0:
        sign = torch.sign(relative)
        mid = bucket_size // 2
        distance = torch.where((relative < mid) & (relative > -mid), torch.tensor(mid - 1).type_as(relative),
                               torch.abs(relative))
        logs = torch.ceil(torch.log(distance / mid) / torch.log(torch.tensor((max_position - 1) / mid))
                          * (mid - 1)) + mid
        relative = torch.where(distance <= mid, relative.type_as(logs), logs * sign)
    return relative.to(torch.long)


def _by_distance(scores: Tensor, width: int) -> Tensor:
    """``(..., width, width)`` from ``scores`` ``(..., width, columns)``, ``columns >= 2*width - 1``: entry
    ``[r, c]`` is row ``r``, column ``c - r + width - 1``, as a strided view (Transformer-XL's relative
    shift: no copy, no index)."""
    scores = scores.contiguous()
    return scores.as_strided((*scores.shape[:-1], width), (*scores.stride()[:-2], scores.shape[-1] - 1, 1),
                             scores.storage_offset() + width - 1)
