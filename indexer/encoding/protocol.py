"""What indexing and search need of an encoder, declared once.

:class:`~indexer.encoding.encoder.Encoder` implements it, and so does the evaluation's
``LayerCache`` (one forward pass per text for a whole layer sweep); the writer, the
searcher and ``encode_documents``/``encode_queries`` accept either.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from .model import LoadedModel


class TextEncoder(Protocol):
    @property
    def loaded(self) -> LoadedModel:
        """The model: its name, fingerprint, tokenizer and depth."""

    @property
    def tokenizer(self): ...

    @property
    def dim(self) -> int: ...

    @property
    def num_layers(self) -> int: ...

    @property
    def precision(self) -> str:
        """The matmul precision its vectors are computed in (``indexer.config.PRECISIONS``)."""

    def encode(self, texts: Sequence[str], layer: int, progress: Callable[[int], None] | None = None,
               *, pooling: str, prompt: str = "") -> np.ndarray:
        """``(len(texts), dim)`` float32 unit vectors pooled at ``layer``, after ``prompt``."""


class ModelFacts:
    """``tokenizer``, ``dim`` and ``num_layers`` read from ``self.loaded``: what every
    :class:`TextEncoder` implementation states the same way."""

    loaded: LoadedModel
    precision: str = "fp32"

    @property
    def tokenizer(self):
        return self.loaded.tokenizer

    @property
    def dim(self) -> int:
        return self.loaded.dim

    @property
    def num_layers(self) -> int:
        return self.loaded.num_layers

