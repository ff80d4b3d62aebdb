"""Language centering: remove each language's mean vector before comparing vectors.

Raw multilingual encoders place each language in its own region of the space;
subtracting a language's mean from the vectors of that language makes vectors of
different languages comparable (Libovický et al. 2020, "On the language neutrality
of pre-trained multilingual representations"). The mean of a language with fewer
than ``min_chunks`` chunks is too noisy; such languages (and unknown ones) use the
global mean. Functions only, no I/O; vectors are rows of float32 arrays.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import IndexFormatError

MIN_LANGUAGE_CHUNKS = 20


@dataclass(frozen=True)
class Centroids:
    """Mean vector per language (``langs[i]`` -> ``means[i]``) and the global mean."""

    langs: tuple[str, ...]
    means: np.ndarray  # (len(langs), dim)
    global_mean: np.ndarray  # (dim,)

    def mean_of(self, lang: str | None) -> np.ndarray:
        """The language's mean, or the global one for a rare or unknown language."""
        if lang in self.langs:
            return self.means[self.langs.index(lang)]
        return self.global_mean

    def save(self, path: Path) -> None:
        with open(path, "wb") as handle:
            np.savez(handle, langs=np.array(self.langs, dtype=str), means=self.means,
                     global_mean=self.global_mean)

    @classmethod
    def load(cls, path: Path) -> Centroids:
        try:
            with np.load(path) as data:
                return cls(tuple(str(x) for x in data["langs"]), data["means"], data["global_mean"])
        except (OSError, KeyError, ValueError) as exc:
            raise IndexFormatError(f"{path}: cannot read language centroids ({exc})") from None


def compute_centroids(vectors: np.ndarray, langs: Sequence[str | None],
                      min_chunks: int = MIN_LANGUAGE_CHUNKS) -> Centroids:
    """Per-language means of ``vectors`` (rows aligned with ``langs``) and the global mean."""
    dim = vectors.shape[1]
    global_mean = vectors.mean(axis=0) if len(vectors) else np.zeros(dim, np.float32)
    labels = np.array([lang or "" for lang in langs], dtype=object)
    kept, means = [], []
    for lang in sorted(set(labels.tolist()) - {""}):
        rows = labels == lang
        if rows.sum() >= min_chunks:
            kept.append(lang)
            means.append(vectors[rows].mean(axis=0))
    means_array = np.stack(means).astype(np.float32) if means else np.zeros((0, dim), np.float32)
    return Centroids(tuple(kept), means_array, global_mean.astype(np.float32))


def center(vectors: np.ndarray, langs: Sequence[str | None], centroids: Centroids) -> np.ndarray:
    """Subtract each row's language mean, then L2-normalise (zero rows stay zero)."""
    shifted = vectors - np.stack([centroids.mean_of(lang) for lang in langs]) if len(vectors) else vectors
    norms = np.linalg.norm(shifted, axis=1, keepdims=True)
    return np.ascontiguousarray(shifted / np.maximum(norms, 1e-12), dtype=np.float32)
