"""The one reader of record files: JSONL, CSV and TSV, each record with where it came from.

Every command that reads a file of records (``xlsearch index`` and ``embed`` for documents,
``finetune retrieval`` for pairs, ``finetune classify`` for labelled texts) reads it here,
so each file problem gets the same ``file:line: what is wrong`` message everywhere:
invalid UTF-8 (a byte-order mark on the first line is accepted), invalid or non-standard
JSON (NaN, Infinity, huge integers, deep nesting), a JSON value that is not an object, a
CSV field over the csv module's limit, a row with more fields than the header, a header
without the columns the caller needs, and an unreadable file.
"""
from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import CorpusError
from .validation import strict_json

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t"}
FORMATS = ("jsonl", "csv", "tsv")

Record = dict[str, Any]
_INVALID_BYTE = re.compile("[\udc80-\udcff]")


def record_format(path: Path) -> str | None:
    """``jsonl``, ``csv`` or ``tsv`` by the file's suffix; None for any other."""
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    return suffix[1:] if suffix in TABLE_SUFFIXES else None


def read_records(path: Path, fmt: str, *, required: Sequence[str | tuple[str, ...]] = (),
                 columns: Sequence[str] | None = None,
                 quoting: int = csv.QUOTE_MINIMAL) -> Iterator[tuple[str, Record | CorpusError]]:
    """``(where, fields)`` of each non-blank record in ``path``; a bad record comes as a CorpusError.

    Args:
        fmt: ``jsonl``, ``csv`` or ``tsv``.
        required: Columns a table's header must name (a tuple: any one of them).
        columns: A table without a header row: these are its columns.
        quoting: How a table quotes fields (``csv.QUOTE_NONE``: quotes are text).

    Raises:
        CorpusError: The file cannot be read at all.
    """
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if fmt == "jsonl":
        return _jsonl(path, handle)
    with handle:
        content = handle.read()
    return _table(path, content, "," if fmt == "csv" else "\t", required, columns, quoting)


def _jsonl(path: Path, handle) -> Iterator[tuple[str, Record | CorpusError]]:
    """Streams: a corpus of any size is read one line at a time."""
    with handle:
        for number, raw in enumerate(handle, 1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")  # a byte-order mark starts some files
            except UnicodeDecodeError as exc:
                yield where, CorpusError(f"{where}: invalid UTF-8 at byte {exc.start}")
                continue
            if line.strip():
                yield where, _json_object(line, where)


def _json_object(line: str, where: str) -> Record | CorpusError:
    try:
        fields = strict_json(line)
    except json.JSONDecodeError as exc:
        return CorpusError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})")
    except ValueError as exc:  # NaN or Infinity, or an integer of more than 4,300 digits
        return CorpusError(f"{where}: invalid JSON ({str(exc).splitlines()[0]})")
    except RecursionError:
        return CorpusError(f"{where}: invalid JSON (nested too deeply)")
    if not isinstance(fields, dict):
        return CorpusError(f"{where}: expected a JSON object, got {type(fields).__name__}")
    return fields


def _table(path: Path, content: bytes, delimiter: str, required: Sequence[str | tuple[str, ...]],
           columns: Sequence[str] | None, quoting: int) -> Iterator[tuple[str, Record | CorpusError]]:
    # Invalid bytes become lone surrogates U+DC80..U+DCFF, so only the rows holding them are bad.
    text = content.decode("utf-8-sig", errors="surrogateescape")
    reader = csv.DictReader(io.StringIO(text, newline=""), fieldnames=columns, delimiter=delimiter, quoting=quoting)
    header = reader.fieldnames or []
    if any(not set([c] if isinstance(c, str) else c) & set(header) for c in required):
        yield f"{path}:1", CorpusError(f"{path}:1: header needs {_names(required)} columns, got {header}")
        return
    line = 0 if columns else 1
    while True:
        where = f"{path}:{line + 1}"
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a field over csv.field_size_limit() (131,072 characters)
            line = reader.line_num
            yield where, CorpusError(f"{where}: {exc}")
            continue
        line = reader.line_num
        if None in row:
            yield where, CorpusError(f"{where}: more fields than the header has")
        elif any(_INVALID_BYTE.search(v) for v in row.values() if isinstance(v, str)):
            yield where, CorpusError(f"{where}: invalid UTF-8")
        else:  # a row of empty fields too: the caller reports it rather than losing it
            yield where, {k: v for k, v in row.items() if v is not None}


def _names(required: Sequence[str | tuple[str, ...]]) -> str:
    """``'id' and 'text'``: each column by its first name."""
    return " and ".join(repr(c if isinstance(c, str) else c[0]) for c in required)
