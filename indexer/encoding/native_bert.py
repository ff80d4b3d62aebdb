"""A BERT-family encoder (BERT, RoBERTa, XLM-R) built from its directory without transformers.

:class:`.fast_bert.FastBert` computes a BERT-family encoder's hidden states from its weights alone;
transformers is needed to build the modules that hold them. Importing its ``BertModel`` costs
3.2-4.3 s of CPU on a 2-core AMD EPYC (some 3,000 modules, torch's distributed tensors among them),
about what everything else in a hybrid ``xlsearch search`` costs. So for a local model directory that
this module can read exactly (:mod:`.native_weights`), :func:`read` builds modules of the same names
and shapes and FastBert runs them.

What is read: ``config.json`` of ``model_type`` ``bert``, ``roberta`` or ``xlm-roberta``, an encoder
with absolute positions and a ``gelu`` or ``relu`` activation, and its fp32 weights (:mod:`.native_weights`).
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
from torch import Tensor, nn

from .native_weights import (ACTIVATIONS, Block, Children, InferenceOnly, embedding, layer_norm, linear,
                             load_weights, read_config, sizes_valid)

# model_type -> the prefix of its weights inside a checkpoint of a task model (BertForMaskedLM: "bert.")
_PREFIXES = {"bert": "bert.", "roberta": "roberta.", "xlm-roberta": "roberta."}
FAMILY_DEFAULTS = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
                   "hidden_act": "gelu", "max_position_embeddings": 512, "type_vocab_size": 2,
                   "layer_norm_eps": 1e-12, "position_embedding_type": None, "is_decoder": False,
                   "add_cross_attention": False}


class Embeddings(nn.Module):
    """transformers' ``BertEmbeddings`` (and its RoBERTa copy) in eval mode, no token types given."""

    def __init__(self, config: SimpleNamespace):
        super().__init__()
        self.word_embeddings = embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = layer_norm(config)
        # RoBERTa numbers positions from the padding id up, skipping padding tokens; BERT from 0.
        self.padding_idx = config.pad_token_id if config.model_type in ("roberta", "xlm-roberta") else None

    def forward(self, input_ids: Tensor) -> Tensor:
        if self.padding_idx is None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        else:
            real = input_ids.ne(self.padding_idx).int()
            positions = (torch.cumsum(real, dim=1).type_as(real) * real).long() + self.padding_idx
        types = torch.zeros_like(positions)
        # The order of transformers' sums, so the result is the same to the bit.
        embeddings = self.word_embeddings(input_ids) + self.token_type_embeddings(types)
        embeddings = embeddings + self.position_embeddings(positions)
        return self.LayerNorm(embeddings)


class SelfAttention(nn.Module):
    def __init__(self, config: SimpleNamespace):
        super().__init__()
        self.num_attention_heads = config.num_attention_heads
        width = config.hidden_size
        self.query, self.key, self.value = (linear(width, width) for _ in range(3))


class NativeBert(InferenceOnly):
    """The weights of a BERT-family encoder for :class:`.fast_bert.FastBert`; no forward of its own."""

    def __init__(self, config: SimpleNamespace):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        layers = nn.ModuleList(Block(config, SelfAttention(config)) for _ in range(config.num_hidden_layers))
        self.encoder = Children({"layer": layers})


def read(directory: Path) -> NativeBert | None:
    """The encoder of ``directory`` as a :class:`NativeBert` in eval mode, or None where it is not one
    this module reads exactly (see the module docstring)."""
    config = _config(directory)
    return None if config is None else load_weights(directory, NativeBert(config), _PREFIXES[config.model_type])


def _defaults(model_type: str) -> dict:
    """What transformers' config classes assume of a key that config.json leaves out (it writes only the
    values that differ from them); tests check these against the classes."""
    return {**FAMILY_DEFAULTS, "pad_token_id": 0 if model_type == "bert" else 1,
            "vocab_size": {"bert": 30522, "roberta": 50265, "xlm-roberta": 30522}[model_type]}


def _config(directory: Path) -> SimpleNamespace | None:
    """``config.json`` as attributes, with ``_name_or_path``, if it is a plain BERT-family encoder."""
    config = read_config(directory, tuple(_PREFIXES), _defaults)
    sizes = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
             "max_position_embeddings", "type_vocab_size")
    if (config is None or config.hidden_act not in ACTIVATIONS
            or config.position_embedding_type not in (None, "absolute")
            or config.is_decoder or config.add_cross_attention or not sizes_valid(config, sizes)
            or config.hidden_size % config.num_attention_heads
            or (config.model_type != "bert" and not isinstance(config.pad_token_id, int))):  # RoBERTa's positions
        return None
    return config
