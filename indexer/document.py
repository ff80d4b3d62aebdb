"""A document as every part of xlsearch sees it: read from a corpus, stored, returned in hits."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Document:
    """One input document. ``metadata`` holds every extra field of the record."""

    id: str
    text: str
    title: str | None = None
    lang: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def row(self) -> tuple:
        """``(id, title, text, lang, metadata JSON, checksum)`` as stored."""
        values = (self.id, self.title, self.text, self.lang,
                  json.dumps(self.metadata, sort_keys=True, allow_nan=False))  # ASCII JSON: safe for any str
        return (*values, row_checksum(values))


def row_checksum(values: Sequence[Any]) -> str:
    """A short hash of one stored row, to detect damaged content that SQLite cannot."""
    return hashlib.blake2b(json.dumps(list(values)).encode(), digest_size=8).hexdigest()
