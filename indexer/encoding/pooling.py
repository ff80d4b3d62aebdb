"""Pooling of token vectors into one vector per text, and normalisation.

Normalisation happens here and nowhere else; the manifest records it.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..config import CLS, MEAN


def pool_mask(lengths: list[int], special: list[list[int]], width: int, pooling: str) -> Tensor:
    """``(batch, width)`` mask of the tokens ``pooling`` averages: row i has ``lengths[i]`` tokens,
    ``special[i]`` flags its special tokens (1 = special)."""
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
    return torch.nn.functional.normalize(vectors, p=2.0, dim=-1, eps=1e-12)


def to_numpy(vectors: Tensor) -> np.ndarray:
    """Float32, C-contiguous numpy copy, as FAISS wants it."""
    return np.ascontiguousarray(vectors.detach().to("cpu", torch.float32).numpy())
