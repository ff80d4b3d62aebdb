"""Pooling of token vectors into one vector per text, normalisation, and the pooling stage's own config.

Normalisation happens in :func:`pool` and nowhere else; the manifest records it.
:class:`Pooling` is the stage as a model directory records it (like sentence-transformers'
``Pooling`` module): which layer, which mode, whether vectors are L2-normalised, saved as
``xlsearch_pooling.json`` by ``xlsearch finetune`` and read back when such a directory is indexed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import CLS, MEAN, MEAN_NO_SPECIAL, POOLINGS
from ..errors import ConfigError

POOLING_FILE = "xlsearch_pooling.json"
if TYPE_CHECKING:  # the stage's config reads and writes without torch (``xlsearch --help`` lists modes)
    from torch import Tensor

ALIASES = {"mean": MEAN_NO_SPECIAL, "cls": CLS}  # the short names `xlsearch embed` and the pooling file use
NORMALIZATION = "l2"


def pooling_mode(name: str) -> str:
    """The mode of ``name``: one of :data:`indexer.config.POOLINGS` or a short alias (``mean``, ``cls``).

    Raises:
        ConfigError: Unknown name, naming the valid ones.
    """
    mode = ALIASES.get(name, name)
    if mode not in POOLINGS:
        names = (*ALIASES, *(p for p in POOLINGS if p not in ALIASES.values()))
        raise ConfigError(f"unknown pooling {name!r}; choose one of {', '.join(names)}")
    return mode


def pool_mask(lengths: list[int], special: list[list[int]], width: int, pooling: str) -> Tensor:
    """``(batch, width)`` mask of the tokens ``pooling`` averages: row i has ``lengths[i]`` tokens,
    ``special[i]`` flags its special tokens (1 = special)."""
    import torch

    mask = torch.zeros((len(lengths), width), dtype=torch.long)
    for row, (length, flags) in enumerate(zip(lengths, special)):
        if pooling == CLS:
            mask[row, 0] = 1
        elif pooling == MEAN:
            mask[row, :length] = 1
        else:
            mask[row, :length] = 1 - torch.tensor(flags[:length])
    return mask


def mean_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    """Mean of the token vectors selected by ``mask``.

    Args:
        hidden: ``(batch, seq, dim)`` token vectors.
        mask: ``(batch, seq)``, 1 for tokens to pool (real, non-special), 0 otherwise.

    Returns:
        ``(batch, dim)``; a row with no selected token is all zeros.
    """
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def l2_normalize(vectors: Tensor) -> Tensor:
    """Scale each row to unit L2 norm (zero rows stay zero). Shape ``(n, dim)``."""
    import torch

    return torch.nn.functional.normalize(vectors, p=2.0, dim=-1, eps=1e-12)


def pool(hidden: Tensor, mask: Tensor, normalize: bool = True) -> Tensor:
    """``(batch, dim)`` float32 mean of ``hidden`` ``(batch, seq, dim)`` over ``mask`` ``(batch, seq)``,
    L2-normalised unless ``normalize`` is False; keeps autograd."""
    pooled = mean_pool(hidden.float(), mask)
    return l2_normalize(pooled) if normalize else pooled


def to_numpy(vectors: Tensor) -> np.ndarray:
    """Float32, C-contiguous numpy copy, as FAISS wants it."""
    import torch

    return np.ascontiguousarray(vectors.detach().to("cpu", torch.float32).numpy())


@dataclass(frozen=True)
class Pooling:
    """The pooling stage of a model directory: ``layer``, ``mode`` (:data:`POOLINGS`), ``normalize``.

    Stored as ``xlsearch_pooling.json``: ``{"layer": 8, "pooling": "mean", "exclude_special_tokens":
    true, "normalize": "l2", ...}`` (``mean`` + ``exclude_special_tokens`` is ``mean-tokens-no-special``);
    extra keys (base model, objective, steps) are kept in the file and ignored on reading.
    """

    layer: int
    mode: str = MEAN_NO_SPECIAL
    normalize: bool = True

    def to_json(self) -> dict[str, Any]:
        short = {v: k for k, v in ALIASES.items()}.get(self.mode, self.mode)
        return {"layer": self.layer, "pooling": short, "exclude_special_tokens": self.mode == MEAN_NO_SPECIAL,
                "normalize": NORMALIZATION if self.normalize else None}

    @classmethod
    def from_json(cls, data: Any) -> Pooling | None:
        """The stage a pooling file's JSON describes, or None when it names no usable layer or mode."""
        if not isinstance(data, dict) or not isinstance(data.get("layer"), int) or data["layer"] < 0:
            return None
        name = data.get("pooling", "mean")
        if name == "mean" and data.get("exclude_special_tokens") is False:
            name = MEAN
        try:
            mode = pooling_mode(name)
        except ConfigError:
            return None
        return cls(data["layer"], mode, data.get("normalize", NORMALIZATION) == NORMALIZATION)

    def save(self, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write ``directory/xlsearch_pooling.json`` (with ``extra`` keys); returns its path."""
        path = Path(directory) / POOLING_FILE
        path.write_text(json.dumps({**self.to_json(), **(extra or {})}, indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> Pooling | None:
        """The stage saved in ``directory``, None when it has no (usable) pooling file."""
        path = Path(directory) / POOLING_FILE
        if not path.is_file():
            return None
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
