"""The one top-k selection of the dense scans (the fp32 scan and the int8 scan's rescoring)."""
from __future__ import annotations

import numpy as np


def best_first(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` highest ``scores`` (all of them if fewer), highest first."""
    top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    return top[np.argsort(-scores[top], kind="stable")]
