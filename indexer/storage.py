"""Layout of an index directory, its generations and its writer lock.

::

    DIR/
      docs.sqlite          documents, chunks, meta (the manifest and current generation)
      dense.<gen>.faiss    chunk vectors of generation <gen>
      bm25.<gen>/          lexical index of generation <gen>
      manifest.json        copy of the committed manifest, for people and tools
      .lock                held by the one writer

A commit writes the files of generation g+1 next to those of g, fsyncs them, then
records g+1 and its manifest in one SQLite transaction. That transaction is the
commit point: before it, readers and a crash see generation g; after it, g+1.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
from pathlib import Path

from .config import Manifest
from .docstore import DOCS_FILE, DocStore
from .errors import IndexFormatError, IndexLockedError, IndexNotFoundError

MANIFEST_FILE = "manifest.json"
LOCK_FILE = ".lock"


def dense_path(directory: Path, generation: int) -> Path:
    return directory / f"dense.{generation}.faiss"


def lexical_path(directory: Path, generation: int) -> Path:
    return directory / f"bm25.{generation}"


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
    except sqlite3.DatabaseError as exc:  # not a database, missing table...
        store.close()
        raise IndexFormatError(f"{directory / DOCS_FILE}: unreadable document store ({exc})") from None
    if text is None:
        store.close()
        raise IndexFormatError(f"{directory}: the index has no committed manifest; rebuild it")
    return store, Manifest.from_json(text, str(directory / DOCS_FILE))


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
        if len(parts) >= 2 and parts[0] in ("dense", "bm25") and parts[1].isdigit():
            if int(parts[1]) not in keep:
                shutil.rmtree(item) if item.is_dir() else item.unlink()


class WriterLock:
    """Exclusive, non-blocking lock on ``DIR/.lock``; the OS frees it if the process dies."""

    def __init__(self, directory: Path):
        self.path = directory / LOCK_FILE
        self._handle = open(self.path, "a+")
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
