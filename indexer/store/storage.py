"""Layout of an index directory, its segments, its commit point and its writer lock.

::

    DIR/
      docs.sqlite          documents, chunks (each naming its segment), tombstones (deleted chunks
                           still in a segment's files) and meta: the manifest, which lists the live
                           segments with the size and SHA-256 of each of their files
      seg.<n>/             one immutable segment (``indexer.store.segment``): vectors and postings
                           of the chunks one commit added, or of a merge of segments
      centroids.<g>.npz    language means of generation <g> (only with center_languages)
      manifest.json        copy of the committed manifest, for people and tools
      .lock                held by the one writer

A commit writes its new segment (and a merged one, when the merge policy asks), fsyncs it,
then records in one SQLite transaction the new documents and chunks, the tombstones of the
chunks it deletes and the manifest of generation g+1. That transaction is the commit point:
before it, readers and a crash see generation g; after it, g+1. No file of an earlier segment
is written by a commit; retired segments are deleted once no manifest since the previous
commit lists them.
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
from .docstore import DOCS_FILE, DocStore, unreadable
from ..errors import IndexFormatError, IndexLockedError, IndexNotFoundError, IndexWriteError
from .durable import fsync_dir, fsync_tree
from .segment import Segment, is_segment_name

MANIFEST_FILE = "manifest.json"
LOCK_FILE = ".lock"
_VERIFIED: set[tuple[str, int, str]] = set()  # (file, size, SHA-256) whose content this process has hashed


def centroids_path(directory: Path, generation: int) -> Path:
    return directory / f"centroids.{generation}.npz"


def file_digest(path: Path) -> dict[str, int | str]:
    """Size and SHA-256 of one file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    found = {"size": path.stat().st_size, "sha256": digest.hexdigest()}
    _VERIFIED.add((str(path.resolve()), found["size"], found["sha256"]))
    return found


def digest_files(directory: Path, paths: list[Path]) -> dict[str, dict[str, int | str]]:
    """``{relative path: {"size", "sha256"}}`` of new files and of every file in new folders."""
    files = [f for p in paths for f in (sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p])]
    return {f.relative_to(directory).as_posix(): file_digest(f) for f in files}


def verify_files(directory: Path, manifest: Manifest, hashes: bool = True, names: set[str] | None = None,
                 cached: bool = False) -> list[str]:
    """Problems with the files the manifest lists (all, or those of the segments in ``names``, and
    the centroids): missing, another size or another SHA-256.

    Args:
        hashes: Compare contents too, not only sizes.
        cached: Skip hashing a file whose size and SHA-256 this process has already verified
            (a reader re-opening after a commit pays only for the new segments).
    """
    problems = []
    for name, expected in sorted(manifest.files.items()):
        if names is not None and name.split("/", 1)[0] not in names and "/" in name:
            continue
        path = directory / name
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.stat().st_size != expected["size"]:
            problems.append(f"{path}: {path.stat().st_size} bytes, the manifest says {expected['size']}")
        elif hashes and not (cached and (str(path.resolve()), expected["size"], expected["sha256"]) in _VERIFIED):
            if file_digest(path)["sha256"] != expected["sha256"]:
                problems.append(f"{path}: content does not match the manifest's SHA-256 (damaged)")
    return problems


def damaged(directory: Path, problems: list[str]) -> IndexFormatError:
    return IndexFormatError(f"damaged index: {problems[0]}"
                            + (f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else "")
                            + f". Run `xlsearch check --index {directory}`.")


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


def current_manifest(store: DocStore) -> Manifest:
    """The manifest the store's current snapshot records (read inside ``store.snapshot()`` to pair
    it with that commit's rows and tombstones).

    Raises:
        IndexFormatError: None committed, or invalid.
    """
    return Manifest.from_json(store.get_meta("manifest") or "{}", str(store.path))


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
        raise unreadable(path, exc) from None
    finally:
        store.close()
    return None if text is None else Manifest.from_json(text, str(path))


def load_centroids(directory: Path, manifest: Manifest) -> Centroids | None:
    """Language means of the manifest's generation, or None when the index does not center."""
    if not manifest.config.center_languages or manifest.centroids is None:
        return None
    return Centroids.load(directory / manifest.centroids)


def load_segments(directory: Path, manifest: Manifest, store: DocStore, loaded: dict[str, Segment] | None = None,
                  since: int = 0, with_raw: bool = False) -> dict[str, Segment]:
    """The manifest's live segments, in order, with their tombstones applied.

    Segments in ``loaded`` (as they were at generation ``since``) are reused and only drop the
    chunks deleted after ``since``; the others are checked (sizes, and the SHA-256 of files this
    process has not verified yet) and read. So re-opening after a commit costs the new segments.

    Raises:
        IndexFormatError: A file is missing, damaged or unreadable, or the live counts disagree
            with the manifest.
    """
    loaded = loaded or {}
    names = [entry["name"] for entry in manifest.segments]
    new = [name for name in names if name not in loaded]
    problems = verify_files(directory, manifest, names=set(new), cached=True)
    if problems:
        raise damaged(directory, problems)
    out = {name: loaded.get(name) or Segment.load(directory, name, manifest.dim, manifest.config, with_raw)
           for name in names}
    kept = [name for name in names if name in loaded]
    for group, after in ((kept, since), (new, 0)):  # kept ones hold the tombstones up to ``since``
        for name, ids in store.tombstones(group, after, manifest.generation).items():
            out[name].remove(ids)
    for entry in manifest.segments:
        if len(out[entry["name"]]) != entry["live"]:
            raise IndexFormatError(f"{directory / entry['name']}: {len(out[entry['name']])} live chunks, the "
                                   f"manifest says {entry['live']}. Run `xlsearch check --index {directory}`.")
    return out


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


def remove_unlisted(directory: Path, keep: set[str]) -> None:
    """Delete segment folders and centroid files whose names are not in ``keep``: retired ones
    (no reader re-opening now needs them) and leftovers of a commit that failed."""
    for item in directory.iterdir():
        centroids = item.name.startswith("centroids.") and item.name.endswith(".npz")
        if (is_segment_name(item.name) or centroids) and item.name not in keep:
            shutil.rmtree(item) if item.is_dir() else item.unlink()


def listed_names(manifest: Manifest) -> set[str]:
    """Names of the segment folders and centroid file the manifest uses."""
    return {path.split("/", 1)[0] for path in manifest.files}


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
