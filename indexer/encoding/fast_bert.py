"""Inference forward of a BERT-family encoder (BERT, RoBERTa, XLM-RoBERTa) up to a chosen layer.

The same maths as transformers' ``BertModel`` (and its RoBERTa and XLM-R copies) in eval mode,
as an encoder with absolute positions: the model's own embeddings module, then each block's
attention as ``scaled_dot_product_attention`` with padding keys masked, on
:class:`.PackedForward`'s packed tokens. multilingual-e5-small and all-MiniLM-L6-v2 are such
models. What it saves over the model's own forward is per call, not per token: a query of
multilingual-e5-small calls some 160 modules, builds a 4-d attention mask and (stopped below the
top) goes through hooks; here it is the ops alone (see ``docs/performance.md``).
"""
from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .native_bert import NativeBert
from .packed_forward import GroupAttention, PackedForward, standard_block
from .packing import AttentionGroup

# model_type -> (its transformers module, the prefix of its Model, Embeddings, Layer and SelfAttention classes)
_FAMILIES = {
    "bert": ("bert.modeling_bert", "Bert"),
    "roberta": ("roberta.modeling_roberta", "Roberta"),
    "xlm-roberta": ("xlm_roberta.modeling_xlm_roberta", "XLMRoberta"),
}


def supports(model: nn.Module) -> bool:
    """Whether :class:`FastBert` computes exactly what ``model`` computes.

    True for a ``BertModel``, ``RobertaModel`` or ``XLMRobertaModel`` (the classes themselves, not
    subclasses) that is an encoder (no decoder, no cross-attention) with absolute positions and
    transformers' own embeddings, layers and self-attention on plain linear layers (not quantized
    modules), and for the same encoder read without transformers (:class:`.native_bert.NativeBert`);
    anything else keeps its own forward.
    """
    if type(model) is NativeBert:
        return all(standard_block(block, FastBert._projections(block)) for block in model.encoder.layer)
    config = getattr(model, "config", None)
    family = _FAMILIES.get(getattr(config, "model_type", None))
    if family is None:
        return False
    module_name, prefix = family
    try:
        hf = importlib.import_module(f"transformers.models.{module_name}")
    except ImportError:  # pragma: no cover - transformers is a dependency
        return False
    if (type(model) is not getattr(hf, f"{prefix}Model") or getattr(config, "is_decoder", False)
            or getattr(config, "add_cross_attention", False)
            or getattr(config, "position_embedding_type", "absolute") != "absolute"
            or type(model.embeddings) is not getattr(hf, f"{prefix}Embeddings")):
        return False
    layer, attention = getattr(hf, f"{prefix}Layer"), getattr(hf, f"{prefix}SelfAttention")
    return all(type(block) is layer and type(block.attention.self) is attention
               and not getattr(block.attention.self, "is_causal", False)
               and standard_block(block, FastBert._projections(block)) for block in model.encoder.layer)


class FastBert(PackedForward):
    """Hidden states of a BERT-family encoder, computing only what pooling needs (:class:`.PackedForward`)."""

    supports = staticmethod(supports)

    def __init__(self, model: nn.Module, compute_dtype: torch.dtype | None = None, int8: bool = False):
        super().__init__(model, compute_dtype, int8)
        self.heads = model.encoder.layer[0].attention.self.num_attention_heads

    def _embed(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        # Position ids as the model's forward makes them (0.. for BERT; from the padding for RoBERTa).
        return self.model.embeddings(input_ids=input_ids)

    @staticmethod
    def _projections(block: nn.Module) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
        attention = block.attention.self
        return attention.query, attention.key, attention.value

    def _group_attention(self, i: int) -> GroupAttention:
        return self._attend

    def _attend(self, group: AttentionGroup, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        query, key, value = (self._heads(group, x, self.heads) for x in (query, key, value))
        # SDPA's boolean mask: True where a key takes part (its scale is the head size's, as BERT's).
        mask = None if group.key_mask is None else ~group.key_mask
        return self._merge_heads(group, F.scaled_dot_product_attention(query, key, value, attn_mask=mask))
