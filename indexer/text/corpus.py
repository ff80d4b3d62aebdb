"""Read documents from JSONL, CSV/TSV, BEIR ``corpus.jsonl`` and folders of .txt/.md files.

Records:
    JSONL: one object per line with ``id`` (BEIR: ``_id``) and ``text``; optional
        ``title`` and ``lang``; every other field is kept as metadata.
    CSV/TSV: a header row, then the same fields as columns.
    Folder: every ``.txt`` and ``.md`` file below it (recursively, sorted); the id
        is the path relative to the folder; a Markdown file's first ``# `` heading is its title.

A bad record (no id, no text, invalid JSON or UTF-8, an id seen before in the same
run) raises :class:`CorpusError` as ``file:line: what is wrong``, or is skipped and
counted when ``skip_bad`` is set.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import MAX_DOCUMENT_CHARS
from ..document import Document
from ..errors import CorpusError
from .records import read_records, record_format
from .validation import id_problem, text_problem

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".md")
_RESERVED = {"id", "_id", "text", "title", "lang"}


@dataclass
class CorpusReport:
    """What a pass over the inputs found."""

    documents: int = 0
    bad: list[str] = field(default_factory=list)


def document_from_record(fields: dict[str, Any], where: str, max_chars: int = MAX_DOCUMENT_CHARS) -> Document:
    """Validate one record's fields (``text`` at most ``max_chars`` characters); raises CorpusError
    naming ``where``."""
    raw_id = fields.get("id", fields.get("_id"))
    if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()):
        raise CorpusError(f"{where}: record has no id")
    if not isinstance(raw_id, (str, int)) or isinstance(raw_id, bool):
        raise CorpusError(f"{where}: id must be a string or integer, got {type(raw_id).__name__}")
    problem = id_problem(str(raw_id))
    if problem:
        raise CorpusError(f"{where}: {problem}")
    text = fields.get("text")
    if not isinstance(text, str) or not text.strip():
        raise CorpusError(f"{where}: record {raw_id!r} has no text")
    if len(text) > max_chars:
        raise CorpusError(f"{where}: record {raw_id!r} has {len(text):,} characters of text, over the limit of "
                          f"{max_chars:,} (--max-document-chars); split it into several documents")
    title, lang = fields.get("title"), fields.get("lang")
    for name, value in (("title", title), ("lang", lang)):
        if value is not None and not isinstance(value, str):
            raise CorpusError(f"{where}: field {name!r} must be a string")
    for name, value in (("text", text), ("title", title), ("lang", lang)):
        problem = text_problem(value, name) if value else None
        if problem:
            raise CorpusError(f"{where}: {problem}")
    metadata = {k: v for k, v in fields.items() if k not in _RESERVED}
    return Document(id=str(raw_id), text=text, title=title or None, lang=lang or None, metadata=metadata)


def _folder(root: Path, max_chars: int) -> Iterator[tuple[str, Document | CorpusError]]:
    """The .txt and .md files below ``root``. A symbolic link is followed while it stays inside
    ``root``; one that leads outside is skipped with a warning naming it, so indexing a folder
    never reads files its owner did not put there. A folder without one such file is an error
    that names the record files it holds, which are read only when named (a folder may hold
    queries beside documents)."""
    inside = root.resolve()
    read, others, outside = 0, [], 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if not path.resolve().is_relative_to(inside):
            outside += 1
            log.warning("skipping %s: a link to %s, outside %s", path, path.resolve(), root)
        elif path.suffix.lower() in TEXT_SUFFIXES:
            read += 1
            yield _text_file(path, root, max_chars)
        else:
            others.append(path)
            log.info("skipping %s: not a .txt or .md file", path)
    if not read:  # a bad input as any other: skipped with --skip-bad
        records = [str(p) for p in others if record_format(p) is not None]
        hint = f"; record files are read when named: {' '.join(records[:5])}" if records else ""
        links = f" ({outside} links leading outside it skipped)" if outside else ""
        yield str(root), CorpusError(f"{root}: no .txt or .md file below it{links}{hint}")


def _text_file(path: Path, root: Path, max_chars: int) -> tuple[str, Document | CorpusError]:
    where = f"{path}:1"
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return where, CorpusError(f"{path}: invalid UTF-8 at byte {exc.start}")
    except OSError as exc:  # unreadable (permissions, a broken link, a vanished file)
        return where, CorpusError(f"{path}: cannot read it ({exc.strerror or exc})")
    title = None
    if path.suffix.lower() == ".md":
        title = next((ln[2:].strip() for ln in text.splitlines() if ln.startswith("# ")), None)
    return where, _safe({"id": path.relative_to(root).as_posix(), "text": text, "title": title}, where, max_chars)


def _safe(fields: dict[str, Any], where: str, max_chars: int) -> Document | CorpusError:
    try:
        return document_from_record(fields, where, max_chars)
    except CorpusError as exc:
        return exc


def _records(path: Path, max_chars: int) -> Iterator[tuple[str, Document | CorpusError]]:
    if path.is_dir():
        return _folder(path, max_chars)
    if not path.is_file():
        raise CorpusError(f"{path}: no such file or directory")
    fmt = record_format(path)
    if fmt is not None:
        return ((where, _safe(fields, where, max_chars) if isinstance(fields, dict) else fields)
                for where, fields in read_records(path, fmt, required=(("id", "_id"), "text")))
    if path.suffix.lower() in TEXT_SUFFIXES:
        return iter([_text_file(path, path.parent, max_chars)])
    raise CorpusError(f"{path}: unknown corpus format; use .jsonl, .csv, .tsv, .txt, .md or a folder")


def read_documents(paths: Sequence[str | Path], skip_bad: bool = False, report: CorpusReport | None = None,
                   max_chars: int = MAX_DOCUMENT_CHARS) -> Iterator[Document]:
    """Yield valid documents of every input in order.

    Args:
        paths: Files or folders.
        skip_bad: Skip bad records (listed in ``report.bad``) instead of raising.
        report: Filled with counts as the inputs are read.
        max_chars: Longest document text accepted; a longer one is a bad record.

    Raises:
        CorpusError: The first bad record, as ``file:line: what is wrong``.
    """
    report = report if report is not None else CorpusReport()
    seen: dict[str, str] = {}
    for path in paths:
        for where, item in _records(Path(path), max_chars):
            if isinstance(item, Document) and item.id in seen:
                item = CorpusError(f"{where}: duplicate id {item.id!r} (first at {seen[item.id]})")
            if isinstance(item, CorpusError):
                if not skip_bad:
                    raise item
                report.bad.append(str(item))
                continue
            seen[item.id] = where
            report.documents += 1
            yield item
