"""What the encoders read without transformers (:mod:`.native_bert`, :mod:`.native_deberta`) share.

Each family builds modules of transformers' names and shapes without storage, then assigns a
local directory's tensors to them, mapped from the file, not copied: ``model.safetensors``, else
a ``pytorch_model.bin`` in torch's zip format (as microsoft/mdeberta-v3-base ships), read as
transformers reads it (``weights_only``, ``LayerNorm.gamma``/``beta`` renamed). A directory is
read only where the result is exactly what transformers would build: its ``config.json`` read
with the family's defaults for what it leaves out, one fp32 weights file holding every tensor the
modules have (under the family's prefix, as a task model saves it, or none), nothing quantized at
load. Anything else returns None, and transformers loads it.
"""
from __future__ import annotations

import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from .cache import json_object
from ..errors import ModelLoadError

WEIGHTS = "model.safetensors"
SHARDED_INDEX = "model.safetensors.index.json"
TORCH_WEIGHTS = "pytorch_model.bin"  # transformers' choice when no safetensors file is there
LEGACY_NAMES = (("LayerNorm.gamma", "LayerNorm.weight"), ("LayerNorm.beta", "LayerNorm.bias"))
ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu}  # transformers' ACT2FN["gelu"] is F.gelu itself
# Modules are built without storage; a device argument, not torch.device("meta") as a context,
# which would import torch._dynamo (1.4 s) to initialise the embedding tables.
META = {"device": "meta"}


class Children(nn.Module):
    """A module that only holds named children (``attention.output``, ``intermediate``...)."""

    def __init__(self, children: dict[str, nn.Module]):
        super().__init__()
        for name, child in children.items():
            self.add_module(name, child)


class InferenceOnly(nn.Module):
    """A model read without transformers: its fast forward computes it; it has no forward of its own."""

    config: SimpleNamespace

    def forward(self, *args, **kwargs):
        raise ModelLoadError(f"{self.config._name_or_path}: read without transformers, this model runs only "
                             "xlsearch's packed forward, which calls no module (no hooks, gradients or training); "
                             "load it with load_model(..., train=True) for transformers' own")


def embedding(rows: int, dim: int) -> nn.Embedding:
    """An embedding table without storage, not initialised (``normal_`` on a meta tensor imports torch._dynamo)."""
    return nn.Embedding(rows, dim, _weight=torch.empty((rows, dim), **META))


def linear(inputs: int, outputs: int, bias: bool = True) -> nn.Linear:
    return nn.Linear(inputs, outputs, bias=bias, **META)


def layer_norm(config: SimpleNamespace) -> nn.LayerNorm:
    return nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps, **META)


def output(inputs: int, config: SimpleNamespace) -> Children:
    """A block's projection back to the hidden size and its LayerNorm (``attention.output``, ``output``)."""
    return Children({"dense": linear(inputs, config.hidden_size), "LayerNorm": layer_norm(config)})


class Block(nn.Module):
    """One post-LayerNorm transformer layer around ``attention`` (its ``self``), named as transformers'
    ``BertLayer`` and ``DebertaV2Layer``."""

    def __init__(self, config: SimpleNamespace, attention: nn.Module):
        super().__init__()
        self.attention = Children({"self": attention, "output": output(config.hidden_size, config)})
        self.intermediate = Children({"dense": linear(config.hidden_size, config.intermediate_size)})
        self.intermediate.intermediate_act_fn = ACTIVATIONS[config.hidden_act]
        self.output = output(config.intermediate_size, config)


def read_config(directory: Path, model_types: tuple[str, ...],
                defaults: Callable[[str], dict]) -> SimpleNamespace | None:
    """``config.json`` as attributes over ``defaults(model_type)``, with ``_name_or_path``; None unless its
    ``model_type`` is one of ``model_types``, its dtype fp32 and nothing is quantized at load."""
    values = json_object(directory / "config.json")
    if (values is None or values.get("model_type") not in model_types
            or "quantization_config" in values
            or (values.get("dtype") or values.get("torch_dtype") or "float32") != "float32"):
        return None
    return SimpleNamespace(**{**defaults(values["model_type"]), **values, "_name_or_path": str(directory)})


def sizes_valid(config: SimpleNamespace, keys: tuple[str, ...]) -> bool:
    return all(isinstance(getattr(config, key, None), int) and getattr(config, key) > 0 for key in keys)


def load_weights(directory: Path, model: nn.Module, prefix: str) -> nn.Module | None:
    """``model`` (built on the meta device) with ``directory``'s fp32 tensors assigned, in eval mode and
    without gradients; None where the file is missing, not fp32 or lacks one of its tensors."""
    state = _read_state(directory)
    if state is None:
        return None
    for old, new in LEGACY_NAMES:
        state = {name.replace(old, new): tensor for name, tensor in state.items()}
    if any(name.startswith(prefix) for name in state):
        state = {name[len(prefix):]: tensor for name, tensor in state.items() if name.startswith(prefix)}
    if any(t.dtype != torch.float32 for t in state.values() if t.is_floating_point()):
        return None
    expected = model.state_dict()
    if any(name not in state or state[name].shape != tensor.shape for name, tensor in expected.items()):
        return None  # transformers would initialise what is missing; it loads such a checkpoint
    model.load_state_dict({name: state[name] for name in expected}, assign=True)
    return model.eval().requires_grad_(False)


def _read_state(directory: Path) -> dict[str, torch.Tensor] | None:
    """The tensors of the weights file transformers would read, mapped; None for none, a sharded one, or a
    ``.bin`` in torch's legacy format (which cannot be mapped) or holding more than tensors."""
    if (directory / WEIGHTS).is_file():
        from safetensors.torch import load_file

        return load_file(directory / WEIGHTS)
    path = directory / TORCH_WEIGHTS
    if (directory / SHARDED_INDEX).exists() or not path.is_file() or not zipfile.is_zipfile(path):
        return None  # transformers prefers sharded safetensors to a .bin
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, OSError, ValueError, pickle.UnpicklingError):
        return None
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        return None
    return state
