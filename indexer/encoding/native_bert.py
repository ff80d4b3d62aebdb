"""A BERT-family encoder (BERT, RoBERTa, XLM-R) built from its directory without transformers.

:class:`.fast_bert.FastBert` computes a BERT-family encoder's hidden states from its weights alone;
transformers is needed to build the modules that hold them. Importing its ``BertModel`` costs
3.2-4.3 s of CPU on a 2-core AMD EPYC (some 3,000 modules, torch's distributed tensors among them),
about what everything else in a hybrid ``xlsearch search`` costs. So for a local model directory that
this module can read exactly, :func:`read` builds modules of the same names and shapes (the
checkpoint's state dict loads into them as it is, without a copy) and FastBert runs them.

What is read: ``config.json`` of ``model_type`` ``bert``, ``roberta`` or ``xlm-roberta``, an encoder
with absolute positions and a ``gelu`` or ``relu`` activation, weights in one fp32
``model.safetensors`` holding every tensor the modules have (under the family's prefix or
none). Anything else returns None and goes through transformers, as does any model that will be
trained: these modules have no forward of their own, only the fast one.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ModelLoadError

WEIGHTS = "model.safetensors"
# model_type -> the prefix of its weights inside a checkpoint of a task model (BertForMaskedLM: "bert.")
_PREFIXES = {"bert": "bert.", "roberta": "roberta.", "xlm-roberta": "roberta."}
_ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu}  # transformers' ACT2FN["gelu"] is F.gelu itself
# Modules are built without storage (the checkpoint's tensors are then assigned to them); a device
# argument, not torch.device("meta") as a context, which would import torch._dynamo (1.4 s).
_META = {"device": "meta"}
FAMILY_DEFAULTS = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
                   "hidden_act": "gelu", "max_position_embeddings": 512, "type_vocab_size": 2,
                   "layer_norm_eps": 1e-12, "position_embedding_type": None, "is_decoder": False,
                   "add_cross_attention": False}


class _Children(nn.Module):
    """A module that only holds named children (``attention.output``, ``intermediate``...)."""

    def __init__(self, children: dict[str, nn.Module]):
        super().__init__()
        for name, child in children.items():
            self.add_module(name, child)


def _embedding(rows: int, dim: int) -> nn.Embedding:
    """An embedding table without storage and not initialised (initialising a meta tensor with
    ``normal_`` imports torch._dynamo: 1.4 s)."""
    return nn.Embedding(rows, dim, _weight=torch.empty((rows, dim), **_META))


class Embeddings(nn.Module):
    """transformers' ``BertEmbeddings`` (and its RoBERTa copy) in eval mode, no token types given."""

    def __init__(self, config: SimpleNamespace):
        super().__init__()
        self.word_embeddings = _embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = _embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = _embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps, **_META)
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
        self.query, self.key, self.value = (nn.Linear(width, width, **_META) for _ in range(3))


def _output(inputs: int, config: SimpleNamespace) -> _Children:
    return _Children({"dense": nn.Linear(inputs, config.hidden_size, **_META),
                      "LayerNorm": nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps, **_META)})


class Block(nn.Module):
    """One transformer layer, named as transformers' ``BertLayer``."""

    def __init__(self, config: SimpleNamespace):
        super().__init__()
        self.attention = _Children({"self": SelfAttention(config), "output": _output(config.hidden_size, config)})
        self.intermediate = _Children({"dense": nn.Linear(config.hidden_size, config.intermediate_size, **_META)})
        self.intermediate.intermediate_act_fn = _ACTIVATIONS[config.hidden_act]
        self.output = _output(config.intermediate_size, config)


class NativeBert(nn.Module):
    """The weights of a BERT-family encoder for :class:`.fast_bert.FastBert`; no forward of its own."""

    def __init__(self, config: SimpleNamespace):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = _Children({"layer": nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))})

    def forward(self, *args, **kwargs):
        raise ModelLoadError(f"{self.config._name_or_path}: read without transformers, this model runs only "
                             "xlsearch's packed forward, which calls no module (no hooks, gradients or training); "
                             "load it with load_model(..., train=True) for transformers' own")


def read(directory: Path) -> NativeBert | None:
    """The encoder of ``directory`` as a :class:`NativeBert` in eval mode, or None where it is not one
    this module reads exactly (see the module docstring)."""
    config = _config(directory)
    weights = directory / WEIGHTS
    if config is None or not weights.is_file():
        return None
    from safetensors.torch import load_file

    state = load_file(weights)
    prefix = _PREFIXES[config.model_type]
    if any(name.startswith(prefix) for name in state):
        state = {name[len(prefix):]: tensor for name, tensor in state.items() if name.startswith(prefix)}
    if any(t.dtype != torch.float32 for t in state.values() if t.is_floating_point()):
        return None
    model = NativeBert(config)
    expected = model.state_dict()
    if any(name not in state or state[name].shape != tensor.shape for name, tensor in expected.items()):
        return None  # transformers would initialise what is missing; it loads such a checkpoint
    model.load_state_dict({name: state[name] for name in expected}, assign=True)
    return model.eval().requires_grad_(False)


def _config(directory: Path) -> SimpleNamespace | None:
    """``config.json`` as attributes, with ``_name_or_path``, if it is a plain BERT-family encoder."""
    try:
        values = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(values, dict) or "quantization_config" in values:  # transformers quantizes at load
        return None
    model_type = values.get("model_type")
    if model_type not in _PREFIXES:
        return None
    # What transformers' config classes assume of a key that config.json leaves out (it writes only
    # the values that differ from them); tests check these against the classes.
    defaults = {**FAMILY_DEFAULTS, "pad_token_id": 0 if model_type == "bert" else 1,
                "vocab_size": {"bert": 30522, "roberta": 50265, "xlm-roberta": 30522}[model_type]}
    config = SimpleNamespace(**{**defaults, **values, "_name_or_path": str(directory)})
    sizes = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
             "max_position_embeddings", "type_vocab_size")
    if (config.hidden_act not in _ACTIVATIONS or config.position_embedding_type not in (None, "absolute")
            or config.is_decoder or config.add_cross_attention
            or (getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32") != "float32"
            or not all(isinstance(getattr(config, key), int) and getattr(config, key) > 0 for key in sizes)
            or config.hidden_size % config.num_attention_heads
            or (model_type != "bert" and not isinstance(config.pad_token_id, int))):  # RoBERTa's positions need it
        return None
    return config
