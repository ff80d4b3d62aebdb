"""Query sets read from a file, for ``xlsearch search --queries``: JSONL, TSV or TREC topics.

- JSONL (``.jsonl``, ``.json``, ``.ndjson``): one object per line with an id (``id``,
  ``qid`` or BEIR's ``_id``) and the query (``query``, ``text`` or ``title``).
- TSV (``.tsv``, ``.txt``; MS MARCO's ``queries.tsv``): ``id<TAB>query`` per line, no header.
- TREC topics (``.trec``, ``.topics``, or any file that starts with ``<top>``): each
  ``<top>`` block's ``<num>`` and ``<title>``, as Pyserini's ``--topics`` reads them.

Every problem is a :class:`CorpusError` naming the file and line (or topic).
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

from ..indexer.errors import CorpusError
from ..indexer.text.records import read_records, record_format

ID_FIELDS = ("id", "qid", "_id")
TEXT_FIELDS = ("query", "text", "title")
TREC_SUFFIXES = (".trec", ".topics")
_NUM = re.compile(r"<num>\s*(?:Number:\s*)?(\S+)")  # no two quantifiers compete for the same spaces
_TITLE = re.compile(r"<title>\s*(?:Topic:)?([^<]*)")


def read_queries(path: str | Path) -> list[tuple[str, str]]:
    """``(query id, query text)`` in file order.

    Raises:
        CorpusError: Unreadable file, a record without id or text, or an id seen twice.
    """
    path = Path(path)
    if path.suffix.lower() in TREC_SUFFIXES or _starts_with_topic(path):
        queries = _trec_topics(path)
    else:
        queries = _records(path)
    seen: set[str] = set()
    for where, qid, _ in queries:
        if qid in seen:
            raise CorpusError(f"{where}: query id {qid!r} appears twice")
        seen.add(qid)
    if not queries:
        raise CorpusError(f"{path}: no queries found")
    return [(qid, text) for _, qid, text in queries]


def _records(path: Path) -> list[tuple[str, str, str]]:
    fmt = record_format(path)
    is_jsonl = fmt == "jsonl"
    out = []
    for where, fields in read_records(path, "jsonl" if is_jsonl else "tsv", columns=None if is_jsonl else ("id", "query"),
                                      quoting=csv.QUOTE_NONE):
        if isinstance(fields, CorpusError):
            raise fields
        qid = next((fields[k] for k in ID_FIELDS if fields.get(k) not in (None, "")), None)
        text = next((fields[k] for k in TEXT_FIELDS if isinstance(fields.get(k), str) and fields[k].strip()), None)
        if qid is None or isinstance(qid, (bool, float, dict, list)):
            raise CorpusError(f"{where}: a query needs an id ({', '.join(ID_FIELDS)})")
        if text is None:
            raise CorpusError(f"{where}: query {qid!r} has no text ({', '.join(TEXT_FIELDS)})")
        out.append((where, str(qid), text))
    return out


def _starts_with_topic(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(64).lstrip().startswith(b"<top>")
    except OSError:
        return False


def _trec_topics(path: Path) -> list[tuple[str, str, str]]:
    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CorpusError(f"{path}: cannot read the topics ({exc})") from None
    before, *blocks = content.split("<top>")  # split, not a regex: linear on any input
    out, line = [], 1 + before.count("\n")
    for number, block in enumerate(blocks, 1):
        where = f"{path}:{line}"
        line += block.count("\n")
        topic = block.split("</top>", 1)[0]
        num, title = _NUM.search(topic), _TITLE.search(topic)
        if num is None:
            raise CorpusError(f"{where}: topic {number} has no <num>")
        text = " ".join(title.group(1).split()) if title else ""
        if not text:
            raise CorpusError(f"{where}: topic {num.group(1)} has no <title>")
        out.append((where, num.group(1), text))
    return out
