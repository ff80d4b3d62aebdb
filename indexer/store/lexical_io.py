"""Reading and writing a :class:`indexer.lexical.BM25Index`.

On disk, :meth:`BM25Index.save` writes into a directory (``meta.json`` last)::

    meta.json      {"format": "xlsearch-bm25", "format_version": 1, "k1", "b", "epsilon",
                    "chunks", "terms", "postings"}
    terms.json     JSON list of the terms; list position = term id
    chunk_ids.npy  int64 (chunks,): chunk id of each row
    doc_len.npy    int64 (chunks,): token count of each row
    indptr.npy     int64 (terms + 1,): term t's postings are [indptr[t], indptr[t + 1])
    rows.npy       int32 (postings,): row of each posting, increasing within a term
    tf.npy         int32 (postings,): frequency of the term in that row (>= 1)
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import partial
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import IndexFormatError
from .lexical import BM25Index

logger = logging.getLogger(__name__)

FORMAT = "xlsearch-bm25"
FORMAT_VERSION = 1
_ARRAYS = {"chunk_ids": np.int64, "doc_len": np.int64, "indptr": np.int64, "rows": np.int32, "tf": np.int32}


def save_bm25(index: BM25Index, directory: str | Path) -> None:
    """Write ``index`` into ``directory`` (created if needed), ``meta.json`` last."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays, terms = index.to_arrays()
    for name, dtype in _ARRAYS.items():
        np.save(directory / f"{name}.npy", np.ascontiguousarray(arrays[name], dtype=dtype), allow_pickle=False)
    (directory / "terms.json").write_text(json.dumps(terms, ensure_ascii=False), encoding="utf-8")
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "k1": index.k1, "b": index.b,
            "epsilon": index.epsilon, "chunks": len(arrays["chunk_ids"]), "terms": len(terms),
            "postings": int(len(arrays["rows"]))}
    (directory / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    logger.debug("saved BM25 index to %s: %s", directory, meta)


def load_bm25(directory: str | Path) -> BM25Index:
    """Read an index written by :func:`save_bm25`.

    Raises:
        IndexFormatError: A file is missing, unreadable, of another format version,
            or inconsistent with the others (the message names it).
    """
    directory = Path(directory)
    meta = _check_meta(directory / "meta.json", _read(directory / "meta.json", _read_json))
    arrays = {name: _read(directory / f"{name}.npy", partial(np.load, allow_pickle=False)) for name in _ARRAYS}
    terms = _read(directory / "terms.json", _read_json)
    if (not isinstance(terms, list) or len(terms) != meta["terms"]
            or not all(map(isinstance, terms, repeat(str))) or len(set(terms)) != len(terms)):
        raise IndexFormatError(f"{directory / 'terms.json'}: expected {meta['terms']} distinct terms")
    _check_arrays(directory, meta, arrays)
    return BM25Index.from_arrays(meta["k1"], meta["b"], meta["epsilon"], arrays, terms)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _read(path: Path, parse: Callable[[Path], Any]) -> Any:
    """Parse one index file, turning every failure into an IndexFormatError naming it."""
    try:
        return parse(path)
    except FileNotFoundError:
        raise IndexFormatError(f"{path}: BM25 index file is missing. Rebuild with `xlsearch index`.") from None
    except (OSError, ValueError, EOFError) as exc:  # JSON and Unicode decode errors are ValueErrors
        raise IndexFormatError(f"{path}: cannot read it ({exc}). Rebuild with `xlsearch index`.") from None


def _check_meta(path: Path, meta: Any) -> dict[str, Any]:
    """Check ``meta.json``'s format and version; return it with typed counts and parameters."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise IndexFormatError(f"{path}: not an xlsearch BM25 index")
    if meta.get("format_version") != FORMAT_VERSION:
        raise IndexFormatError(f"{path}: format {meta.get('format_version')}, expected {FORMAT_VERSION}. "
                               "Rebuild with `xlsearch index`.")
    try:
        return {**meta, **{key: int(meta[key]) for key in ("chunks", "terms", "postings")},
                **{key: float(meta[key]) for key in ("k1", "b", "epsilon")}}
    except (KeyError, TypeError, ValueError) as exc:
        raise IndexFormatError(f"{path}: incomplete BM25 metadata ({exc!r})") from None


def _check_arrays(directory: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Check that the arrays have their dtypes and agree with each other and with ``meta.json``."""
    for name, dtype in _ARRAYS.items():
        if arrays[name].ndim != 1 or arrays[name].dtype != dtype:
            raise IndexFormatError(f"{directory / name}.npy: expected a 1-d {np.dtype(dtype)} array, "
                                   f"got {arrays[name].ndim}-d {arrays[name].dtype}")
    n, postings = meta["chunks"], meta["postings"]
    ids, doc_len, indptr, rows, tf = (arrays[name] for name in _ARRAYS)
    checks: list[tuple[Callable[[], bool], str]] = [  # lazy, in order: each may rely on the previous
        (lambda: len(ids) == len(doc_len) == n, f"chunk_ids/doc_len do not hold {n} rows"),
        (lambda: len(np.unique(ids)) == n, "chunk_ids.npy repeats a chunk id"),
        (lambda: len(indptr) == meta["terms"] + 1 and indptr[0] == 0 and indptr[-1] == postings
         and bool(np.all(np.diff(indptr) >= 0)), "indptr.npy does not match the term and posting counts"),
        (lambda: len(rows) == len(tf) == postings, f"rows/tf do not hold {postings} postings"),
        (lambda: postings == 0 or bool(rows.min() >= 0 and rows.max() < n and tf.min() >= 1),
         "rows.npy or tf.npy holds values out of range"),
        (lambda: np.array_equal(np.bincount(rows, weights=tf, minlength=n), doc_len),
         "doc_len.npy does not equal the term frequencies per chunk"),
    ]
    for check, problem in checks:
        if not check():
            raise IndexFormatError(f"{directory}: damaged BM25 index: {problem}. Rebuild with `xlsearch index`.")

