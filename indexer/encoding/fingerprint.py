"""A model's identity by content: the fingerprint an index records and checks at search time.

A model directory's fingerprint hashes its config and tokenizer files and the contents of its
weight files, so two fine-tuning checkpoints of one model (same shapes, same file sizes) differ.
Hashing a weight file reads it once: its SHA-256 is remembered by path, size, inode and
``mtime_ns``, in this process and in ``<cache>/weight-hashes.json`` (the cache root of
:func:`~indexer.encoding.cache.default_cache_dir`). A file modified in the last couple of seconds
is hashed again on every load (as git treats "racily clean" files), since a rewrite within one
timestamp tick could keep its size and mtime. A hub id is identified by its revision and config.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

from .cache import default_cache_dir, sha256_file, write_atomically

log = logging.getLogger(__name__)

HASHED_FILES = ("config.json", "tokenizer_config.json", "tokenizer.json", "spm.model",
                "sentencepiece.bpe.model", "vocab.txt", "special_tokens_map.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin")
CACHE_FILE = "weight-hashes.json"
SETTLED_SECONDS = 2.0  # younger files are hashed again: a rewrite may keep size and mtime

_memo: dict[tuple, str] = {}
_lock = threading.Lock()


def fingerprint(model: nn.Module, name: str) -> str:
    """16 hex digits identifying the model: file contents for a directory, else hub id, revision and config."""
    digest = hashlib.sha256()
    path = Path(getattr(model.config, "_name_or_path", "") or name)
    if path.is_dir():
        for child in sorted(path.iterdir()):
            if child.name in HASHED_FILES:
                digest.update(child.name.encode() + child.read_bytes())
            elif child.suffix in WEIGHT_SUFFIXES and child.is_file():
                digest.update(f"{child.name}:{file_sha256(child)}".encode())
    else:
        revision = getattr(model.config, "_commit_hash", None) or ""
        digest.update(f"{name}@{revision}".encode())
        digest.update(model.config.to_json_string(use_diff=False).encode())
    return digest.hexdigest()[:16]


def file_sha256(path: Path) -> str:
    """SHA-256 of ``path``'s bytes, read once per version of the file (see the module docstring)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_ino, stat.st_mtime_ns)
    settled = time.time() - stat.st_mtime_ns / 1e9 >= SETTLED_SECONDS
    with _lock:
        if settled and key in _memo:
            return _memo[key]
    entries = _read_cache() if settled else {}
    entry = entries.get(key[0])
    if entry is not None and [entry.get(k) for k in ("size", "inode", "mtime_ns")] == list(key[1:]):
        digest = str(entry.get("sha256"))
    else:
        digest = sha256_file(path)
        if settled:
            entries[key[0]] = {"size": key[1], "inode": key[2], "mtime_ns": key[3], "sha256": digest}
            _write_cache(entries)
    if settled:
        with _lock:
            _memo[key] = digest
    return digest



def _cache_path() -> Path:
    return default_cache_dir() / CACHE_FILE


def _read_cache() -> dict[str, dict]:
    try:
        data = json.loads(_cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(entries: dict[str, dict]) -> None:
    """Atomically replace the cache file (entries of files that are gone dropped); silent when unwritable."""
    path = _cache_path()
    kept = {p: e for p, e in entries.items() if isinstance(e, dict) and os.path.exists(p)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps(kept))
    except OSError as exc:
        log.debug("cannot write the weight hash cache %s: %s", path, exc)
