"""The tokenizer transformers builds for a model directory, kept as a ``tokenizer.json`` for later loads.

A directory that ships a vocabulary rather than a ``tokenizer.json`` (microsoft/mdeberta-v3-base
ships ``spm.model``; BERTs ship ``vocab.txt``), or whose tokenizer class rebuilds its pipeline, has
transformers build its fast tokenizer on every load: 3.5 s of imports, and 1.4 s more to convert a
250,000-piece SentencePiece model. transformers 5 runs every such tokenizer on a ``tokenizers``
backend; where the class it picked overrides nothing of ``TokenizersBackend`` but its construction,
that backend is the whole of the tokenizer call. It is then saved in xlsearch's cache (see
:func:`~.cache.default_cache_dir`), named by a hash of the directory's files (weights aside) and of
the transformers and tokenizers versions, with the four settings the call reads beside it; later
loads run it as a :class:`~.native_tokenizer.FileTokenizer`, without transformers.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .cache import default_cache_dir, json_object, sha256_file, write_atomically
from .native_tokenizer import FileTokenizer

log = logging.getLogger(__name__)

CACHE = "tokenizers"
# a directory's files that are weights (not read by a tokenizer, and too large to hash on every load)
WEIGHT_SUFFIXES = {".safetensors", ".bin", ".h5", ".msgpack", ".ot", ".onnx", ".onnx_data", ".pt", ".pth", ".ckpt",
                   ".gguf"}
SETTINGS = ("pad_token_id", "model_max_length", "truncation_side", "split_special_tokens")  # what the call reads
UNUSED_DAYS = 90  # an entry no load has read for this long is removed when another is stored
# what a tokenizer class may define and still encode through TokenizersBackend alone
_CONSTRUCTION = {"__module__", "__doc__", "__qualname__", "__firstlineno__", "__static_attributes__",
                 "__annotations__", "__dict__", "__weakref__", "__init__", "vocab_files_names", "model_input_names",
                 "model", "slow_tokenizer_class", "padding_side", "truncation_side"}


class Entry:
    """Where the tokenizer of one state of a model directory is kept: named by a hash of the directory's
    non-weight files and of the transformers and tokenizers versions."""

    def __init__(self, directory: Path, name: str):
        self.directory, self.name = directory, name
        self.root = default_cache_dir() / CACHE

    @classmethod
    def of(cls, directory: Path) -> Entry | None:
        name = _key(directory)
        return None if name is None else cls(directory, name)

    def load(self) -> FileTokenizer | None:
        """The tokenizer kept here, or None (none kept, or a file unreadable)."""
        settings = json_object(self.root / f"{self.name}.settings.json")
        if settings is None or set(SETTINGS) - set(settings):
            return None
        pad, length, side, split = (settings[k] for k in SETTINGS)
        if (not (pad is None or isinstance(pad, int)) or not isinstance(length, int) or side not in ("left", "right")
                or not isinstance(split, bool)):
            return None
        from tokenizers import Tokenizer

        try:
            backend = Tokenizer.from_file(str(self.root / f"{self.name}.json"))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception for a file it cannot parse
            log.debug("kept tokenizer %s unreadable: %s", self.name, exc)
            return None
        backend.encode_special_tokens = split
        try:
            os.utime(self.root / f"{self.name}.settings.json")  # its last use, for pruning
        except OSError:
            pass  # a read-only cache
        return FileTokenizer(backend, pad, length, side)

    def store(self, tokenizer) -> None:
        """Keep ``tokenizer``, which transformers built from the directory, where the call of its class is its
        backend's alone and the directory's files are still those this entry is named by; skipped where
        the cache cannot be written."""
        if not encodes_through_backend(type(tokenizer)) or _key(self.directory) != self.name:
            return
        from tokenizers import Tokenizer

        try:
            backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        except Exception as exc:  # noqa: BLE001 - a component tokenizers cannot serialise: nothing is kept
            log.debug("tokenizer of %s not kept: %s", self.directory, exc)
            return
        backend.no_truncation()  # transformers sets both on every call; a call of xlsearch's never pads
        backend.no_padding()
        settings = dict(zip(SETTINGS, (tokenizer.pad_token_id, int(tokenizer.model_max_length),
                                       tokenizer.truncation_side, bool(tokenizer.split_special_tokens))))
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            write_atomically(self.root / f"{self.name}.json", backend.to_str())
            write_atomically(self.root / f"{self.name}.settings.json", json.dumps(settings))  # last: complete
            _prune(self.root)
        except OSError as exc:
            log.debug("tokenizer cache %s not written: %s", self.root, exc)


def _prune(root: Path) -> None:
    """Remove the entries (and leftovers of interrupted writes) that nothing has used for :data:`UNUSED_DAYS`, so
    the cache holds the directories in use, not every state a directory ever had. An entry's last use is the
    newer of its two files' mtimes (a load touches the settings file; a writer rewrites both)."""
    oldest = time.time() - UNUSED_DAYS * 86400
    for path in root.iterdir():
        base = path.name.removesuffix(".json").removesuffix(".settings")
        pair = [root / f"{base}.json", root / f"{base}.settings.json"] if path.name.endswith(".json") else [path]
        try:
            if max(p.stat().st_mtime for p in pair if p.exists()) < oldest:
                path.unlink(missing_ok=True)
        except (OSError, ValueError):  # ValueError: the pair vanished meanwhile
            continue


def _key(directory: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        for package in ("transformers", "tokenizers"):
            digest.update(f"{package}=={version(package)}\n".encode())
        for child in sorted(directory.iterdir()):
            if child.is_file() and child.suffix not in WEIGHT_SUFFIXES:
                digest.update(f"{child.name}:{sha256_file(child)}\n".encode())
    except (OSError, PackageNotFoundError):
        return None
    return digest.hexdigest()[:32]


def encodes_through_backend(cls: type) -> bool:
    """Whether ``cls`` is transformers' ``TokenizersBackend`` or a subclass that only constructs it."""
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    if not issubclass(cls, TokenizersBackend):
        return False
    return all(set(vars(klass)) <= _CONSTRUCTION for klass in cls.__mro__[:cls.__mro__.index(TokenizersBackend)])

