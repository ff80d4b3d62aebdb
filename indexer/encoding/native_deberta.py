"""A DeBERTa-v2 encoder (mdeberta-v3-base's family) built from its directory without transformers.

The counterpart of :mod:`.native_bert` for :class:`.fast_deberta.FastDebertaV2`: modules of
transformers' ``DebertaV2Model`` names and shapes, a local directory's fp32 weights assigned to them
(:mod:`.native_weights`). Read: ``model_type`` ``deberta-v2`` with relative attention of kinds c2p
and/or p2c, no convolution layer, a ``gelu`` or ``relu`` activation. Its tokenizer (a SentencePiece
``spm.model``) is built by transformers on a directory's first load and kept (:mod:`.tokenizer_cache`).
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
from torch import Tensor, nn

from .native_weights import (ACTIVATIONS, Block, InferenceOnly, embedding, layer_norm, linear, load_weights,
                             read_config, sizes_valid)

PREFIX = "deberta."
KINDS = {"c2p", "p2c"}
# transformers' DebertaV2Config defaults, and what its modules assume of keys the class has no default
# for (position_buckets, share_att_key, norm_rel_ebd, conv_kernel_size); tests check them.
FAMILY_DEFAULTS = {"vocab_size": 128100, "hidden_size": 1536, "num_hidden_layers": 24, "num_attention_heads": 24,
                   "intermediate_size": 6144, "hidden_act": "gelu", "max_position_embeddings": 512,
                   "type_vocab_size": 0, "layer_norm_eps": 1e-7, "relative_attention": False,
                   "max_relative_positions": -1, "pad_token_id": 0, "position_biased_input": True,
                   "pos_att_type": None, "position_buckets": -1, "share_att_key": False, "norm_rel_ebd": "none",
                   "conv_kernel_size": 0}


class Embeddings(nn.Module):
    """transformers' ``DebertaV2Embeddings`` in eval mode, no token types or positions given."""

    def __init__(self, config: SimpleNamespace):
        super().__init__()
        self.word_embeddings = embedding(config.vocab_size, config.embedding_size)
        self.position_embeddings = (embedding(config.max_position_embeddings, config.embedding_size)
                                    if config.position_biased_input else None)
        self.token_type_embeddings = (embedding(config.type_vocab_size, config.embedding_size)
                                      if config.type_vocab_size > 0 else None)
        self.embed_proj = (linear(config.embedding_size, config.hidden_size, bias=False)
                           if config.embedding_size != config.hidden_size else None)
        self.LayerNorm = layer_norm(config)

    def forward(self, input_ids: Tensor, mask: Tensor) -> Tensor:
        # The order of transformers' sums, so the result is the same to the bit.
        embeddings = self.word_embeddings(input_ids)
        if self.position_embeddings is not None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
            embeddings = embeddings + self.position_embeddings(positions)
        if self.token_type_embeddings is not None:
            embeddings = embeddings + self.token_type_embeddings(torch.zeros_like(input_ids))
        if self.embed_proj is not None:
            embeddings = self.embed_proj(embeddings)
        return self.LayerNorm(embeddings) * mask.unsqueeze(2).to(embeddings.dtype)


class SelfAttention(nn.Module):
    """transformers' ``DisentangledSelfAttention``: its projections and the facts of its relative attention."""

    def __init__(self, config: SimpleNamespace):
        super().__init__()
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.attention_head_size
        width = config.num_attention_heads * config.attention_head_size
        self.query_proj, self.key_proj, self.value_proj = (linear(config.hidden_size, width) for _ in range(3))
        self.share_att_key = config.share_att_key
        self.pos_att_type = config.pos_att_type
        self.pos_ebd_size = _span(config)
        if not self.share_att_key:
            if "c2p" in self.pos_att_type:
                self.pos_key_proj = linear(config.hidden_size, width)
            if "p2c" in self.pos_att_type:
                self.pos_query_proj = linear(config.hidden_size, width)


class Encoder(nn.Module):
    """transformers' ``DebertaV2Encoder``: the layers and the relative-position table."""

    def __init__(self, config: SimpleNamespace):
        super().__init__()
        self.layer = nn.ModuleList(Block(config, SelfAttention(config)) for _ in range(config.num_hidden_layers))
        self.max_relative_positions = config.max_relative_positions
        self.position_buckets = config.position_buckets
        self.rel_embeddings = embedding(2 * _span(config), config.hidden_size)
        self.norm_rel_ebd = [x.strip() for x in str(config.norm_rel_ebd).lower().split("|")]
        if "layer_norm" in self.norm_rel_ebd:
            self.LayerNorm = layer_norm(config)

    def get_rel_embedding(self) -> Tensor:
        table = self.rel_embeddings.weight
        return self.LayerNorm(table) if "layer_norm" in self.norm_rel_ebd else table


class NativeDebertaV2(InferenceOnly):
    """The weights of a DeBERTa-v2 encoder for :class:`.fast_deberta.FastDebertaV2`; no forward of its own."""

    def __init__(self, config: SimpleNamespace):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)


def read(directory: Path) -> NativeDebertaV2 | None:
    """The encoder of ``directory`` as a :class:`NativeDebertaV2` in eval mode, or None where it is not one
    this module reads exactly (see the module docstring)."""
    config = _config(directory)
    return None if config is None else load_weights(directory, NativeDebertaV2(config), PREFIX)


def _span(config: SimpleNamespace) -> int:
    """Relative distances each side that the position table holds: its buckets, else the largest distance."""
    return config.position_buckets if config.position_buckets > 0 else config.max_relative_positions


def _config(directory: Path) -> SimpleNamespace | None:
    config = read_config(directory, ("deberta-v2",), lambda _: FAMILY_DEFAULTS)
    if config is None:
        return None
    kinds = config.pos_att_type
    if isinstance(kinds, str):  # DebertaV2Config splits "p2c|c2p"
        kinds = [x.strip() for x in kinds.lower().split("|")]
    config.pos_att_type = list(kinds or [])
    sizes = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
             "max_position_embeddings")
    if (config.hidden_act not in ACTIVATIONS or config.relative_attention is not True or config.conv_kernel_size
            or not config.pos_att_type or not set(config.pos_att_type) <= KINDS or not sizes_valid(config, sizes)
            or config.hidden_size % config.num_attention_heads
            or not isinstance(config.type_vocab_size, int) or config.type_vocab_size < 0
            or not isinstance(config.position_buckets, int) or not isinstance(config.max_relative_positions, int)):
        return None
    config.embedding_size = getattr(config, "embedding_size", None) or config.hidden_size
    config.attention_head_size = getattr(config, "attention_head_size", None) or (
        config.hidden_size // config.num_attention_heads)
    if config.max_relative_positions < 1:
        config.max_relative_positions = config.max_position_embeddings
    return config
