"""Layout of a sharded index: ``shards.json`` and the shard of each document.

::

    DIR/
      shards.json      {"format": "xlsearch-shards", "format_version": 1, "shards": N, "hash": "blake2b-64"}
      shard-000/       a complete index (see ``indexer.storage``) holding the documents
      shard-001/       whose id hashes to it
      ...

``shards.json`` is written (atomically) before any shard, so a directory either is
sharded or is not; the number of shards is fixed for the life of the index.
"""
from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import os
from pathlib import Path

from ..errors import ConfigError, IndexFormatError
from ..document import Document
from .storage import fsync_dir, fsync_tree, index_exists, index_info, open_docstore

SHARDS_FILE = "shards.json"
FORMAT = "xlsearch-shards"
FORMAT_VERSION = 1
HASH = "blake2b-64"
MAX_SHARDS = 1024


def shard_of(doc_id: str, shards: int) -> int:
    """The shard of a document: a stable 64-bit BLAKE2b hash of its id (UTF-8) modulo ``shards``."""
    digest = hashlib.blake2b(doc_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def shard_dir(directory: Path, shard: int) -> Path:
    return Path(directory) / f"shard-{shard:03d}"


def read_shards(directory: str | Path) -> int | None:
    """The number of shards of the index in ``directory``, or None when it is not sharded.

    Raises:
        IndexFormatError: ``shards.json`` is unreadable or of another format.
    """
    path = Path(directory) / SHARDS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IndexFormatError(f"{path}: cannot read it ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise IndexFormatError(f"{path}: not an xlsearch shard list")
    if data.get("format_version") != FORMAT_VERSION or data.get("hash") != HASH:
        raise IndexFormatError(f"{path}: format {data.get('format_version')} with hash {data.get('hash')!r}; "
                               f"this xlsearch reads format {FORMAT_VERSION} with {HASH!r}")
    shards = data.get("shards")
    if not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
        raise IndexFormatError(f"{path}: 'shards' must be an integer in 1..{MAX_SHARDS}, got {shards!r}")
    return shards


def create_shards(directory: Path, shards: int) -> None:
    """Write ``shards.json`` into a new index directory (atomically)."""
    if not 1 <= shards <= MAX_SHARDS:
        raise ConfigError(f"--shards must be in 1..{MAX_SHARDS}, got {shards}")
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{SHARDS_FILE}.tmp"
    tmp.write_text(json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, "shards": shards,
                               "hash": HASH}, indent=1) + "\n", encoding="utf-8")
    fsync_tree(tmp)
    os.replace(tmp, directory / SHARDS_FILE)
    fsync_dir(directory)


def index_directories(directory: str | Path) -> list[Path]:
    """The directories of the complete indexes in ``directory``: its shards, or itself."""
    shards = read_shards(directory)
    return [Path(directory)] if shards is None else [shard_dir(Path(directory), s) for s in range(shards)]


def any_index_exists(directory: str | Path) -> bool:
    """Whether ``directory`` holds an index, sharded or not."""
    return index_exists(directory) or read_shards(directory) is not None


def document_directory(directory: str | Path, doc_id: str) -> Path:
    """The directory of the (shard) index that holds or would hold document ``doc_id``."""
    shards = read_shards(directory)
    return Path(directory) if shards is None else shard_dir(Path(directory), shard_of(doc_id, shards))


def sharded_info(directory: str | Path) -> dict:
    """``xlsearch info`` of any index: the manifest and counts, summed over shards with a per-shard list."""
    directories = index_directories(directory)
    if len(directories) == 1 and read_shards(directory) is None:
        return index_info(directory)
    shards = [index_info(d) for d in directories]
    info = dict(shards[0])
    for key in ("documents", "chunks"):
        info[key] = sum(s[key] for s in shards)
    info["stored"] = {key: sum(s["stored"][key] for s in shards) for key in ("documents", "chunks")}
    info["shards"] = [{"directory": d.name, "documents": s["documents"], "chunks": s["chunks"],
                       "generation": s["generation"]} for d, s in zip(directories, shards)]
    del info["files"], info["generation"]
    return info


def list_documents(directory: str | Path, offset: int, limit: int) -> tuple[list[Document], int]:
    """A page of any index's documents in id order (by code point), and how many it holds.

    Each shard is read in one snapshot; a sharded index merges each shard's first
    ``offset + limit``.
    """
    directories = index_directories(directory)
    pages, total = [], 0
    for path in directories:
        store, _ = open_docstore(path)
        try:
            with store.snapshot():
                first = offset if len(directories) == 1 else 0
                pages.append(store.list_documents(first, offset + limit - first))
                total += store.count("documents")
        finally:
            store.close()
    if len(pages) == 1:
        return pages[0], total
    return list(itertools.islice(heapq.merge(*pages, key=lambda doc: doc.id), offset, offset + limit)), total

