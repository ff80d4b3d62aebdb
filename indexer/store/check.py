"""Verify an index the way Lucene's CheckIndex does, and list every problem found.

Checks: the document store opens and passes SQLite's ``quick_check``; every row
matches its checksum; the manifest is valid; every file of every live segment is present
with the size and SHA-256 the manifest records (every byte is read); each segment loads and,
its tombstones applied, holds as many live chunks as the manifest and the chunk rows naming
it say; the same chunk ids are in all three stores; every chunk's document exists and every
document has a chunk; the counts match the manifest; ``manifest.json`` is a copy of the committed manifest (or of the one
before it: a process killed between the commit and the copy's rename leaves that,
and the next writer rewrites it).
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from ..errors import IndexNotFoundError, XlsearchError
from .docstore import DOCS_FILE, DocStore
from .segment import Segment
from .shard_layout import index_directories, read_shards, shard_of
from .storage import MANIFEST_FILE, current_manifest, index_exists, open_docstore, verify_files
from ..text.validation import strict_json


def check_index(directory: str | Path) -> list[str]:
    """All problems of the index in ``directory``; an empty list means healthy.

    Raises:
        IndexNotFoundError: ``directory`` holds no index at all.
    """
    directory = Path(directory)
    try:
        store, _ = open_docstore(directory)
    except IndexNotFoundError:
        raise
    except XlsearchError as exc:
        return [str(exc)]
    try:
        for _ in range(5):
            problems, generation = _check_snapshot(directory, store)
            if not problems or _generation(store) == generation:
                break  # else a writer retired files of that commit meanwhile: check the new one
    finally:
        store.close()
    return problems


def _check_snapshot(directory: Path, store: DocStore) -> tuple[list[str], int]:
    """The problems of the commit the store's snapshot records, and its generation."""
    try:
        with store.snapshot():  # one commit's manifest, rows and tombstones, whatever a writer does meanwhile
            manifest = current_manifest(store)
            damaged = verify_files(directory, manifest)
            problems = _store_problems(store) + _safe(store.damaged_rows) + _metadata_problems(store) + damaged
            dense, lexical = _load(directory, manifest, store, problems, damaged)
            problems += _consistency_problems(store, manifest, dense, lexical)
    except XlsearchError as exc:
        return [str(exc)], -1
    return problems + _copy_problems(directory, manifest, store), manifest.generation


def _generation(store: DocStore) -> int:
    try:
        return current_manifest(store).generation
    except XlsearchError:
        return -1


def _safe(scan) -> list[str]:
    try:
        return scan()
    except XlsearchError as exc:
        return [str(exc)]


def _metadata_problems(store) -> list[str]:
    """Documents whose stored metadata is not strict JSON (NaN or Infinity, written by older
    versions), which filtered searches cannot read."""
    problems = []
    try:
        for doc_id, metadata in store.db.execute("SELECT id, metadata FROM documents"):
            try:
                strict_json(metadata or "{}")
            except (ValueError, RecursionError) as exc:
                problems.append(f"document {doc_id!r}: stored metadata is not valid JSON "
                                f"({str(exc).splitlines()[0]}); re-index it")
    except sqlite3.DatabaseError as exc:
        return [f"{store.path}: {exc}"]
    return problems


def _store_problems(store) -> list[str]:
    try:
        result = [r[0] for r in store.db.execute("PRAGMA quick_check")]
    except sqlite3.DatabaseError as exc:
        return [f"{store.path}: {exc}"]
    return [] if result == ["ok"] else [f"{store.path}: {line}" for line in result]


def _load(directory: Path, manifest, store, problems: list[str],
          damaged: list[str]) -> tuple[list[int] | None, list[int] | None]:
    """Live chunk ids of the dense and lexical indexes over every segment, tombstones applied; None
    when a segment's files failed the size and SHA-256 checks (a damaged file is never handed to
    FAISS or numpy) or do not load."""
    dense_ids: list[int] = []
    lexical_ids: list[int] = []
    try:
        rows = dict(store.db.execute("SELECT segment, COUNT(*) FROM chunks GROUP BY segment").fetchall())
    except sqlite3.DatabaseError as exc:
        problems.append(f"{store.path}: {exc}")
        return None, None
    for entry in manifest.segments:
        name = entry["name"]
        if any(p.startswith(f"{directory / name}/") for p in damaged):
            return None, None
        try:
            segment = Segment.load(directory, name, manifest.dim, manifest.config)
            segment.remove(store.tombstones([name], 0, manifest.generation)[name])
        except (XlsearchError, sqlite3.DatabaseError) as exc:
            problems.append(str(exc))
            return None, None
        if not len(segment) == entry["live"] == rows.get(name, 0):
            problems.append(f"{directory / name}: {len(segment)} live chunks, the manifest says {entry['live']}, "
                            f"{rows.get(name, 0)} chunk rows name it")
        dense_ids += segment.dense.chunk_ids().tolist()
        lexical_ids += segment.lexical.chunk_ids.tolist()
    return dense_ids, lexical_ids


def _consistency_problems(store, manifest, dense, lexical) -> list[str]:
    problems = []
    try:
        stored = {r[0] for r in store.db.execute("SELECT chunk_id FROM chunks")}
        orphans = store.db.execute("SELECT COUNT(*) FROM chunks c LEFT JOIN documents d ON d.id = c.doc_id "
                                   "WHERE d.id IS NULL").fetchone()[0]
        empty = store.db.execute("SELECT COUNT(*) FROM documents d WHERE NOT EXISTS "
                                 "(SELECT 1 FROM chunks c WHERE c.doc_id = d.id)").fetchone()[0]
        documents = store.count("documents")
    except sqlite3.DatabaseError as exc:
        return [f"{store.path}: {exc}"]
    if orphans:
        problems.append(f"{orphans} chunks belong to no stored document")
    if empty:
        problems.append(f"{empty} documents have no chunk")
    if documents != manifest.documents:
        problems.append(f"{documents} documents stored, the manifest says {manifest.documents}")
    if len(stored) != manifest.chunks:
        problems.append(f"{len(stored)} chunks stored, the manifest says {manifest.chunks}")
    for name, ids in (("dense", dense), ("lexical", lexical)):
        if ids is None:
            continue
        if len(ids) != len(stored):
            problems.append(f"{name} index holds {len(ids)} vectors/entries for {len(stored)} chunks")
        missing, extra = stored - set(ids), set(ids) - stored
        if missing or extra:
            problems.append(f"{name} index: {len(missing)} chunks missing, {len(extra)} unknown chunk ids")
    return problems


def _copy_problems(directory: Path, manifest, store: DocStore) -> list[str]:
    path = directory / MANIFEST_FILE
    try:
        copy = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return [f"{path}: unreadable copy of the manifest ({exc})"]
    if copy == manifest.to_dict():
        return []
    generation = copy.get("generation") if isinstance(copy, dict) else None
    if generation == manifest.generation - 1:
        return []  # killed between the commit and the copy's rename; the next writer rewrites it
    if isinstance(generation, int) and manifest.generation < generation <= _generation(store):
        return []  # a writer committed and copied a later generation while this check ran
    return [f"{path}: differs from the manifest committed in docs.sqlite"]


def check_any(directory: str | Path) -> list[str]:
    """``xlsearch check`` of any index: every shard's problems, and documents in the wrong shard."""
    shards = read_shards(directory)
    if shards is None:
        return check_index(directory)
    problems = []
    for shard, path in enumerate(index_directories(directory)):
        found = check_index(path)
        problems += found
        if found or not index_exists(path):
            continue
        store = DocStore(path / DOCS_FILE)
        try:
            misplaced = [doc_id for (doc_id,) in store.db.execute("SELECT id FROM documents")
                         if shard_of(doc_id, shards) != shard]
        finally:
            store.close()
        problems += [f"{path}: document {doc_id!r} belongs in shard {shard_of(doc_id, shards)}"
                     for doc_id in misplaced[:10]]
    return problems
