"""Pooling of token vectors into one vector per text, and normalisation.

Normalisation happens here and nowhere else; the manifest records it.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


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
