"""Layout of an index directory, its generations and its writer lock.

::

    DIR/
      docs.sqlite          documents, chunks, meta (the manifest and current generation)
      dense.<gen>.faiss    chunk vectors of generation <gen>
      bm25.<gen>/          lexical index of generation <gen>
      raw.<gen>.faiss      uncentered vectors and centroids.<gen>.npz language means
                           (only with center_languages)
      manifest.json        copy of the committed manifest, for people and tools
      .lock                held by the one writer

A commit writes the files of generation g+1 next to those of g, fsyncs them, then
records g+1 and its manifest in one SQLite transaction. That transaction is the
commit point: before it, readers and a crash see generation g; after it, g+1.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
from pathlib import Path

from .centering import Centroids
from ..config import Manifest
from .dense import DenseIndex
from .docstore import DOCS_FILE, DocStore
from ..errors import IndexFormatError, IndexLockedError, IndexNotFoundError, IndexWriteError
from .lexical import BM25Index
from .lexical_io import load_bm25

MANIFEST_FILE = "manifest.json"
LOCK_FILE = ".lock"


def dense_path(directory: Path, generation: int) -> Path:
    return directory / f"dense.{generation}.faiss"


def lexical_path(directory: Path, generation: int) -> Path:
    return directory / f"bm25.{generation}"


def raw_path(directory: Path, generation: int) -> Path:
    """Uncentered chunk vectors, kept only by indexes built with ``center_languages``."""
    return directory / f"raw.{generation}.faiss"


def centroids_path(directory: Path, generation: int) -> Path:
    return directory / f"centroids.{generation}.npz"


def generation_files(directory: Path, generation: int) -> list[Path]:
    """Every file of one generation (dense, lexical folder, and the centering files if any)."""
    lexical = lexical_path(directory, generation)
    files = [dense_path(directory, generation)]
    files += [p for p in (raw_path(directory, generation), centroids_path(directory, generation)) if p.is_file()]
    if lexical.is_dir():
        files += sorted(p for p in lexical.rglob("*") if p.is_file())
    return files


def file_digest(path: Path) -> dict[str, int | str]:
    """Size and SHA-256 of one file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def digest_generation(directory: Path, generation: int) -> dict[str, dict[str, int | str]]:
    """``{relative path: {"size", "sha256"}}`` for the manifest."""
    return {p.relative_to(directory).as_posix(): file_digest(p) for p in generation_files(directory, generation)}


def verify_files(directory: Path, manifest: Manifest, hashes: bool = True) -> list[str]:
    """Problems with the generation files the manifest lists: missing, other size or hash."""
    problems = []
    for name, expected in sorted(manifest.files.items()):
        path = directory / name
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.stat().st_size != expected["size"]:
            problems.append(f"{path}: {path.stat().st_size} bytes, the manifest says {expected['size']}")
        elif hashes and file_digest(path)["sha256"] != expected["sha256"]:
            problems.append(f"{path}: content does not match the manifest's SHA-256 (damaged)")
    return problems


def index_exists(directory: str | Path) -> bool:
    return (Path(directory) / DOCS_FILE).is_file()


def open_docstore(directory: str | Path) -> tuple[DocStore, Manifest]:
    """Open the document store of an existing index and read its committed manifest.

    Raises:
        IndexNotFoundError: ``directory`` holds no index.
        IndexFormatError: The manifest is missing, invalid or of another format version.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise IndexNotFoundError(f"{directory}: no such index directory. Build one with "
                                 f"`xlsearch index PATH --index {directory}`.")
    if not index_exists(directory):
        raise IndexNotFoundError(f"{directory}: not an xlsearch index (no {DOCS_FILE}). Build one "
                                 f"with `xlsearch index PATH --index {directory}`.")
    store = DocStore(directory / DOCS_FILE)
    try:
        text = store.get_meta("manifest")
    except IndexFormatError:  # not a database, missing table...
        store.close()
        raise
    if text is None:
        store.close()
        raise IndexFormatError(f"{directory}: the index has no committed manifest; rebuild it")
    return store, Manifest.from_json(text, str(directory / DOCS_FILE))


def index_info(directory: str | Path) -> dict:
    """The committed manifest plus the counts in the document store (``xlsearch info``, ``GET /info``)."""
    store, manifest = open_docstore(directory)
    try:
        info = manifest.to_dict()
        info["stored"] = {"documents": store.count("documents"), "chunks": store.count("chunks")}
    finally:
        store.close()
    return info


def committed_manifest(directory: str | Path) -> Manifest | None:
    """The committed manifest of the index in ``directory``, or None when nothing was committed.

    Raises:
        IndexFormatError: The store exists but is unreadable or of another format.
    """
    if not index_exists(directory):
        return None
    path = Path(directory) / DOCS_FILE
    store = DocStore(path)
    try:
        if "meta" not in store.db.table_names():
            return None  # created, but the first commit never happened
        text = store.get_meta("manifest")
    except sqlite3.DatabaseError as exc:
        raise IndexFormatError(f"{path}: unreadable document store ({exc})") from None
    finally:
        store.close()
    return None if text is None else Manifest.from_json(text, str(path))


def load_generation(directory: Path, manifest: Manifest) -> tuple[DenseIndex, BM25Index]:
    """Verify and load the dense and lexical files of the manifest's generation.

    Raises:
        IndexFormatError: A file is missing, damaged (size or SHA-256 differs from the
            manifest) or unreadable, or the stores disagree on the number of chunks.
    """
    problems = verify_files(directory, manifest)
    if problems:
        raise IndexFormatError(f"damaged index: {problems[0]}"
                               + (f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else "")
                               + f". Run `xlsearch check --index {directory}`.")
    generation = manifest.generation
    dense = DenseIndex.load(dense_path(directory, generation), manifest.dim, manifest.config.dense_index)
    lexical = load_bm25(lexical_path(directory, generation))
    if not len(dense) == len(lexical) == manifest.chunks:
        raise IndexFormatError(
            f"{directory}: generation {generation} is inconsistent: {len(dense)} vectors, "
            f"{len(lexical)} lexical entries, manifest says {manifest.chunks} chunks")
    return dense, lexical


def load_centroids(directory: Path, manifest: Manifest) -> Centroids | None:
    """Language means of the manifest's generation, or None when the index does not center."""
    if not manifest.config.center_languages:
        return None
    return Centroids.load(centroids_path(directory, manifest.generation))


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """fsync a file, or every file in a folder and the folder itself."""
    paths = sorted(path.rglob("*")) if path.is_dir() else [path]
    for item in paths:
        if item.is_file():
            with open(item, "rb") as handle:
                os.fsync(handle.fileno())
    if path.is_dir():
        fsync_dir(path)


def read_manifest_copy(directory: Path) -> dict | None:
    """``manifest.json`` as a dict, or None when missing or unreadable."""
    try:
        data = json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def write_manifest_copy(directory: Path, manifest: Manifest) -> None:
    """Atomically replace ``manifest.json`` with the committed manifest."""
    tmp = directory / f".{MANIFEST_FILE}.tmp"
    tmp.write_text(manifest.to_json() + "\n", encoding="utf-8")
    fsync_tree(tmp)
    os.replace(tmp, directory / MANIFEST_FILE)
    fsync_dir(directory)


def remove_generations(directory: Path, keep: set[int]) -> None:
    """Delete generation files not in ``keep`` (old ones, or leftovers of a failed commit)."""
    for item in directory.iterdir():
        parts = item.name.split(".")
        is_generation = len(parts) >= 2 and parts[0] in ("dense", "bm25", "raw", "centroids") and parts[1].isdigit()
        if is_generation and int(parts[1]) not in keep:
            shutil.rmtree(item) if item.is_dir() else item.unlink()


class WriterLock:
    """Exclusive, non-blocking lock on ``DIR/.lock``; the OS frees it if the process dies."""

    def __init__(self, directory: Path):
        self.path = directory / LOCK_FILE
        try:
            self._handle = open(self.path, "a+")  # noqa: SIM115 - held until release()
        except OSError as exc:
            raise IndexWriteError(f"{directory}: cannot write to the index ({exc.strerror})") from None
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._handle.close()
            raise IndexLockedError(f"{directory}: another process is writing to this index "
                                   f"(it holds {self.path}); try again when it is done") from None

    def release(self) -> None:
        if not self._handle.closed:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
