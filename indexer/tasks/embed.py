"""Embedding extraction: texts -> vectors from one or more layers, written to .npy, .npz or .parquet.

Inputs are either a plain text file with one text per line (ids are 1-based line
numbers; blank lines are skipped but keep their number) or any corpus format
:func:`indexer.corpus.read_documents` reads (``.jsonl``/``.json``/``.ndjson``,
``.csv``, ``.tsv``, a folder; ids are the records' ids and the text is the
``text`` field). Rows always keep input order.

Output conventions:

- ``.npy``: one layer only, a ``(n, dim)`` float32 array; the ids go beside it
  in ``<name>.ids.json`` (a JSON list, row i -> ids[i]).
- ``.npz``: ``ids`` (unicode array) and one ``(n, dim)`` float32 array per layer
  named ``layer_<L>`` (e.g. ``layer_8``).
- ``.parquet`` (needs pyarrow): column ``id`` and one fixed-size-list float32
  column ``layer_<L>`` per layer.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..config import POOLINGS as CONFIG_POOLINGS
from ..encoding.pooling import ALIASES, pooling_mode
from ..errors import CorpusError, XlsearchError
from ..text.corpus import read_documents
from ..text.records import record_format

if TYPE_CHECKING:
    from ..encoding.encoder import Encoder

POOLINGS = (*ALIASES, *(p for p in CONFIG_POOLINGS if p not in ALIASES.values()))  # `xlsearch embed --pooling`
OUTPUT_SUFFIXES = (".npy", ".npz", ".parquet")


@dataclass
class Embeddings:
    """Vectors of ``ids`` (row i of every array belongs to ``ids[i]``), one ``(n, dim)`` array per layer."""

    ids: list[str]
    vectors: dict[int, np.ndarray]


def read_texts(path: str | Path) -> tuple[list[str], list[str]]:
    """``(ids, texts)`` of a one-text-per-line file or a corpus file/folder, in input order.

    Raises:
        CorpusError: The input is missing, unreadable or holds no text (``file:line: ...``).
    """
    path = Path(path)
    if path.is_dir() or record_format(path) is not None:
        docs = list(read_documents([path]))
        ids, texts = [d.id for d in docs], [d.text for d in docs]
    else:
        ids, texts = _read_lines(path)
    if not texts:
        raise CorpusError(f"{path}: no texts to embed")
    return ids, texts


def _read_lines(path: Path) -> tuple[list[str], list[str]]:
    if not path.is_file():
        raise CorpusError(f"{path}: no such file or directory")
    ids, texts = [], []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise CorpusError(f"{path}:{number}: invalid UTF-8 at byte {exc.start} of the line") from None
            if line.strip():
                ids.append(str(number))
                texts.append(line)
    return ids, texts


def embed_texts(encoder: Encoder, texts: Sequence[str], layers: Sequence[int],
                pooling: str = "mean", prompt: str = "") -> dict[int, np.ndarray]:
    """L2-normalised vectors of ``texts`` at each layer, all from one forward pass per batch.

    Args:
        pooling: one of :data:`indexer.config.POOLINGS`; ``mean`` is ``mean-tokens-no-special``
            (over real tokens) and ``cls`` the first token's hidden state.
        prompt: Put before each text (``"passage: "`` for E5 documents).

    Returns:
        ``{layer: (len(texts), dim) float32}``, row i for ``texts[i]``; inner product is cosine.

    Raises:
        ConfigError: Unknown pooling.
        LayerError: A layer the model does not have.
    """
    return encoder.encode_layers(texts, layers, pooling=pooling_mode(pooling), prompt=prompt)


def write_embeddings(embeddings: Embeddings, out: str | Path) -> list[Path]:
    """Write ``embeddings`` by the suffix of ``out`` (see the module docstring); returns the files written.

    Raises:
        XlsearchError: Unknown suffix, several layers into ``.npy``, or pyarrow missing for ``.parquet``.
    """
    out = Path(out)
    suffix = out.suffix.lower()
    layers = list(embeddings.vectors)
    if suffix not in OUTPUT_SUFFIXES:
        raise XlsearchError(f"{out}: unknown output format; use one of {', '.join(OUTPUT_SUFFIXES)}")
    if suffix == ".npy" and len(layers) != 1:
        raise XlsearchError(f"{out}: .npy holds one layer, {len(layers)} were asked for; "
                            "write .npz or .parquet for several layers")
    if suffix == ".parquet":
        return [_write_parquet(embeddings, out)]
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        np.save(out, embeddings.vectors[layers[0]])
        ids_file = ids_path(out)
        ids_file.write_text(json.dumps(embeddings.ids, ensure_ascii=False), encoding="utf-8")
        return [out, ids_file]
    arrays = {f"layer_{layer}": vectors for layer, vectors in embeddings.vectors.items()}
    np.savez(out, ids=np.array(embeddings.ids, dtype=str), **arrays)
    return [out]


def ids_path(npy: str | Path) -> Path:
    """The ids file written beside a ``.npy``: ``vectors.npy`` -> ``vectors.ids.json``."""
    return Path(npy).with_suffix(".ids.json")


def _write_parquet(embeddings: Embeddings, out: Path) -> Path:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise XlsearchError("writing .parquet needs pyarrow: pip install 'xlsearch[parquet]' "
                            "(or pip install pyarrow), or write .npy/.npz instead") from None
    columns = {"id": pa.array(embeddings.ids, type=pa.string())}
    for layer, vectors in embeddings.vectors.items():
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel(), type=pa.float32())
        columns[f"layer_{layer}"] = pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), out)
    return out
