"""A model's identity by content: the fingerprint an index records and checks at search time.

A model directory's fingerprint hashes its config and tokenizer files and the contents of its
weight files, so two fine-tuning checkpoints of one model (same shapes, same file sizes) differ.
Hashing a weight file reads it once: its SHA-256 is remembered by path, size, inode and
``mtime_ns``, in this process and in ``<cache>/weight-hashes.json`` (the cache root of
:func:`~indexer.encoding.cache.default_cache_dir`). A file modified in the last couple of seconds
is hashed again on every load (as git treats "racily clean" files), since a rewrite within one
timestamp tick could keep its size and mtime. A hub id is identified by the commit its cached
snapshot holds, which fixes every file; indexes that recorded a hub id's former identity (its
revision and transformers' config) are still recognised (:func:`formerly`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path

from .cache import default_cache_dir, json_object, sha256_file, write_atomically
from .hub import from_pretrained, hub_snapshot

log = logging.getLogger(__name__)

HASHED_FILES = ("config.json", "tokenizer_config.json", "tokenizer.json", "spm.model",
                "sentencepiece.bpe.model", "vocab.txt", "special_tokens_map.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin")
CACHE_FILE = "weight-hashes.json"
FORMER_FILE = "former-fingerprints.json"
SETTLED_SECONDS = 2.0  # younger files are hashed again: a rewrite may keep size and mtime

_memo: dict[tuple, str] = {}
_lock = threading.Lock()


def directory_fingerprint(directory: Path) -> str:
    """16 hex digits identifying the model in ``directory`` by its config, tokenizer and weight files' contents."""
    digest = hashlib.sha256()
    for child in sorted(directory.iterdir()):
        if child.name in HASHED_FILES:
            digest.update(child.name.encode() + child.read_bytes())
        elif child.suffix in WEIGHT_SUFFIXES and child.is_file():
            digest.update(f"{child.name}:{file_sha256(child)}".encode())
    return digest.hexdigest()[:16]


def hub_fingerprint(name: str, commit: str) -> str:
    """16 hex digits identifying hub id ``name`` at ``commit``, which fixes every file of the repository
    (whichever of them a cache holds, and whichever transformers reads them)."""
    return hashlib.sha256(f"hub:{name}@{commit}".encode()).hexdigest()[:16]


def config_fingerprint(config, name: str) -> str:
    """Hub id, revision and transformers' whole config (which names the installed transformers' version): a hub
    id's fingerprint before hub ids were identified by their commit, and still where no snapshot is found."""
    digest = hashlib.sha256()
    digest.update(f"{name}@{getattr(config, '_commit_hash', None) or ''}".encode())
    digest.update(config.to_json_string(use_diff=False).encode())
    return digest.hexdigest()[:16]


_former: dict[str, bool] = {}
_former_lock = threading.Lock()


def formerly(name: str, current: str, recorded: str) -> bool:
    """Whether an index's ``recorded`` fingerprint is :func:`config_fingerprint` of hub id ``name`` at the commit
    its cached ``main`` points at, ``current`` being that commit's :func:`hub_fingerprint`: such an index was
    built with this model, and stays usable. It is recognised while the transformers that built it is the
    one installed (its version is in the former fingerprint) and the cache still points at that commit.

    Finding out loads the model through transformers once, as xlsearch loaded it then; a yes is kept in
    ``<cache>/former-fingerprints.json``, so later processes read a file; either answer is kept in this process.
    """
    snapshot = None if Path(name).expanduser().exists() else hub_snapshot(name)
    if snapshot is None or hub_fingerprint(name, snapshot.name) != current:
        return False  # a directory was always fingerprinted by its files
    pair = f"{current} was {recorded}"
    path = default_cache_dir() / FORMER_FILE
    with _former_lock:  # one check per answer, however many threads ask
        if pair not in _former:
            _former[pair] = bool(_json_or_empty(path).get(pair)) or _check_former(name, snapshot.name, recorded, pair,
                                                                             path)
        return _former[pair]


def _check_former(name: str, commit: str, recorded: str, pair: str, path: Path) -> bool:
    from transformers import AutoModel

    try:
        config = from_pretrained(AutoModel, name, revision=commit).config
    except Exception as exc:  # noqa: BLE001 - a model that cannot be loaded as then is not recognised
        log.debug("former fingerprint of %s not checked: %s", name, exc)
        return False
    if config_fingerprint(config, name) != recorded:
        return False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps({**_json_or_empty(path), pair: True}))
    except OSError as exc:
        log.debug("cannot write %s: %s", path, exc)
    return True


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
    return _json_or_empty(_cache_path())


def _json_or_empty(path: Path) -> dict:
    return json_object(path) or {}


def _write_cache(entries: dict[str, dict]) -> None:
    """Atomically replace the cache file (entries of files that are gone dropped); silent when unwritable."""
    path = _cache_path()
    kept = {p: e for p, e in entries.items() if isinstance(e, dict) and os.path.exists(p)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps(kept))
    except OSError as exc:
        log.debug("cannot write the weight hash cache %s: %s", path, exc)
