"""SQLite document store (through sqlite-utils): documents, chunks and index metadata.

Tables:
    documents(id TEXT PK, title, text, lang, metadata JSON)
    chunks(chunk_id INTEGER PK, doc_id, start, end, text)   -- offsets into documents.text
    meta(key TEXT PK, value TEXT)                            -- manifest, generation, next_chunk_id

The database runs in WAL mode: readers keep reading the last committed state while
a writer works. Writes go through :meth:`DocStore.transaction`, one SQLite
transaction per index commit; that commit is the switch point of a whole index
generation (see ``indexer.writing``).
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from ..document import Document, row_checksum
from ..errors import IndexFormatError

DOCS_FILE = "docs.sqlite"


@dataclass(frozen=True)
class ChunkRow:
    chunk_id: int
    doc_id: str
    start: int
    end: int
    text: str


class DocStore:
    """Documents and chunks of one index directory.

    Args:
        path: The ``docs.sqlite`` file (created when ``create`` is true).
        create: Create tables if missing.
    """

    def __init__(self, path: str | Path, create: bool = False):
        self.path = Path(path)
        conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False,
                               timeout=30.0)
        self.db = sqlite_utils.Database(conn)
        if create:
            self.db.enable_wal()
            self._create_tables()

    def _create_tables(self) -> None:
        if "documents" not in self.db.table_names():
            self.db["documents"].create({"id": str, "title": str, "text": str, "lang": str, "metadata": str,
                                         "checksum": str}, pk="id")
        if "chunks" not in self.db.table_names():
            self.db["chunks"].create({"chunk_id": int, "doc_id": str, "start": int, "end": int, "text": str,
                                      "checksum": str, "segment": str}, pk="chunk_id")
            self.db["chunks"].create_index(["doc_id"])
        if "tombstones" not in self.db.table_names():  # deleted chunks still in a segment's files
            self.db["tombstones"].create({"chunk_id": int, "segment": str, "generation": int}, pk="chunk_id")
        if "meta" not in self.db.table_names():
            self.db["meta"].create({"key": str, "value": str}, pk="key")

    def close(self) -> None:
        self.db.conn.close()

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: every read inside sees one committed state (WAL snapshot)."""
        conn = self.db.conn
        if conn.in_transaction:  # nested: the outer snapshot holds
            yield
            return
        conn.execute("BEGIN")
        try:
            yield
        finally:
            conn.execute("COMMIT")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; commits on success, rolls back on any exception."""
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- reads -------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM meta WHERE key = ?", [key])
        return rows[0][0] if rows else None

    def get_document(self, doc_id: str) -> Document | None:
        """The stored document, or None.

        Raises:
            IndexFormatError: The row is damaged (its checksum does not match).
        """
        row = self._read("SELECT id, title, text, lang, metadata, checksum FROM documents WHERE id = ?", [doc_id])
        return self._document(row[0]) if row else None

    def list_documents(self, offset: int, limit: int) -> list[Document]:
        """Documents in id order (by code point), ``limit`` of them after the first ``offset``.

        Raises:
            IndexFormatError: A row is damaged.
        """
        rows = self._read("SELECT id, title, text, lang, metadata, checksum FROM documents ORDER BY id "
                          "LIMIT ? OFFSET ?", [limit, offset])
        return [self._document(row) for row in rows]

    def _document(self, values: Sequence[Any]) -> Document:
        if row_checksum(values[:5]) != values[5]:
            raise IndexFormatError(f"{self.path}: document {values[0]!r} is damaged (checksum mismatch); "
                                   "run `xlsearch check` and re-index it")
        return Document(id=values[0], title=values[1], text=values[2], lang=values[3],
                        metadata=json.loads(values[4] or "{}"))

    def _read(self, sql: str, params: Sequence[Any]) -> list[tuple]:
        """Run a query; SQLite errors (a damaged file) become IndexFormatError."""
        try:
            return self.db.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise unreadable(self.path, exc) from None

    def documents(self, doc_ids: Iterable[str]) -> dict[str, Document]:
        return {d: doc for d in set(doc_ids) if (doc := self.get_document(d)) is not None}

    def chunks(self, chunk_ids: Sequence[int]) -> dict[int, ChunkRow]:
        """Stored chunks by id (missing ids are left out).

        Raises:
            IndexFormatError: A row is damaged.
        """
        out: dict[int, ChunkRow] = {}
        ids = [int(c) for c in chunk_ids]
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            marks = ",".join("?" * len(part))
            for row in self._read(f"SELECT chunk_id, doc_id, start, end, text, checksum FROM chunks "
                                  f"WHERE chunk_id IN ({marks})", part):
                if row_checksum(row[:5]) != row[5]:
                    raise IndexFormatError(f"{self.path}: chunk {row[0]} is damaged (checksum mismatch); "
                                           "run `xlsearch check`")
                out[row[0]] = ChunkRow(*row[:5])
        return out

    def damaged_rows(self) -> list[str]:
        """Every document and chunk whose content does not match its checksum (a full scan)."""
        problems = []
        for table, columns, key in (("documents", "id, title, text, lang, metadata", "document"),
                                    ("chunks", "chunk_id, doc_id, start, end, text", "chunk")):
            for row in self._read(f"SELECT {columns}, checksum FROM {table}", []):
                if row_checksum(row[:5]) != row[5]:
                    problems.append(f"{self.path}: {key} {row[0]!r} is damaged (checksum mismatch)")
        return problems

    def chunk_ids_of(self, doc_ids: Iterable[str]) -> list[int]:
        return [chunk_id for chunk_id, _ in self.chunk_segments_of(doc_ids)]

    def chunk_segments_of(self, doc_ids: Iterable[str]) -> list[tuple[int, str]]:
        """``(chunk id, segment name)`` of every chunk of these documents."""
        ids = list(doc_ids)
        out: list[tuple[int, str]] = []
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            marks = ",".join("?" * len(part))
            out += self._read(f"SELECT chunk_id, segment FROM chunks WHERE doc_id IN ({marks})", part)
        return out

    def tombstones(self, segments: Sequence[str], after: int, upto: int) -> dict[str, list[int]]:
        """Deleted chunk ids per segment name, of these segments, recorded by generations
        ``after + 1`` to ``upto``."""
        out: dict[str, list[int]] = {name: [] for name in segments}
        if not out:
            return out
        marks = ",".join("?" * len(out))
        for chunk_id, segment in self._read(f"SELECT chunk_id, segment FROM tombstones WHERE generation > ? "
                                            f"AND generation <= ? AND segment IN ({marks})", [after, upto, *out]):
            out[segment].append(chunk_id)
        return out

    def chunk_ids_where(self, lang: str | None = None,
                        metadata: dict[str, str | int | float | bool] | None = None) -> list[int]:
        """Chunk ids of documents with this ``lang`` and these exact metadata values.

        A value matches a top-level metadata field of the same JSON type and equal value:
        a string only a string, ``true``/``false`` only that boolean, a number any equal
        number (``1`` matches ``1.0``). A list or object field matches no filter. Keys are
        compared as given (any character, quotes included).
        """
        clauses, params = [], []
        if lang is not None:
            clauses.append("d.lang = ?")
            params.append(lang)
        for key, value in (metadata or {}).items():
            kind, value = _json_kind(value)
            clauses.append("EXISTS (SELECT 1 FROM json_each(d.metadata) AS m WHERE m.key = ? AND m.type IN "
                           f"({', '.join('?' * len(kind))}) AND m.value = ?)")
            params += [key, *kind, value]
        where = " AND ".join(clauses) or "1"
        return [r[0] for r in self._read(
            f"SELECT c.chunk_id FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE {where}", params)]

    def count(self, table: str) -> int:
        return int(self._read(f"SELECT COUNT(*) FROM {table}", [])[0][0])


def _json_kind(value: str | int | float | bool) -> tuple[tuple[str, ...], str | int | float]:
    """The ``json_each`` types a filter value matches, and the value as ``json_each`` gives it."""
    if isinstance(value, bool):
        return ("true",) if value else ("false",), int(value)
    if isinstance(value, (int, float)):
        return ("integer", "real"), value
    return ("text",), value


def write_documents(conn: sqlite3.Connection, docs: Sequence[Document]) -> None:
    """Insert or replace ``docs`` inside an open transaction."""
    conn.executemany("INSERT OR REPLACE INTO documents (id, title, text, lang, metadata, checksum) "
                     "VALUES (?, ?, ?, ?, ?, ?)", [d.row() for d in docs])


def write_chunks(conn: sqlite3.Connection, chunks: Sequence[ChunkRow], segment: str) -> None:
    """Insert the rows of chunks whose vectors and postings are in ``segment``."""
    rows = [(c.chunk_id, c.doc_id, c.start, c.end, c.text) for c in chunks]
    conn.executemany("INSERT INTO chunks (chunk_id, doc_id, start, end, text, checksum, segment) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)", [(*row, row_checksum(row), segment) for row in rows])


def write_tombstones(conn: sqlite3.Connection, chunks: dict[int, str], generation: int) -> None:
    """Record deleted chunks (id -> segment) as tombstones of ``generation``."""
    conn.executemany("INSERT INTO tombstones (chunk_id, segment, generation) VALUES (?, ?, ?)",
                     [(chunk_id, segment, generation) for chunk_id, segment in chunks.items()])


def retire_segments(conn: sqlite3.Connection, merged: Sequence[str], into: str | None) -> None:
    """After a merge: the chunks of ``merged`` live in ``into``; their tombstones are purged."""
    marks = ",".join("?" * len(merged))
    conn.execute(f"DELETE FROM tombstones WHERE segment IN ({marks})", list(merged))
    if into is not None:
        conn.execute(f"UPDATE chunks SET segment = ? WHERE segment IN ({marks})", [into, *merged])


def delete_documents(conn: sqlite3.Connection, doc_ids: Sequence[str]) -> None:
    conn.executemany("DELETE FROM chunks WHERE doc_id = ?", [(d,) for d in doc_ids])
    conn.executemany("DELETE FROM documents WHERE id = ?", [(d,) for d in doc_ids])


def set_meta(conn: sqlite3.Connection, values: dict[str, str]) -> None:
    conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(values.items()))


def unreadable(path: Path, exc: sqlite3.DatabaseError) -> IndexFormatError:
    """The error for a document store SQLite cannot read; an I/O error (SQLite could not create its
    shared-memory or journal file: a full or read-only disk) is named as such, not as damage."""
    if "disk I/O error" in str(exc):
        return IndexFormatError(f"{path}: cannot open the document store ({exc}): is the disk full or read-only?")
    return IndexFormatError(f"{path}: unreadable document store ({exc})")
