"""Checks on user-supplied strings shared by the corpus readers, the search and the API.

Tokenizers cannot encode unpaired UTF-16 surrogates (JSON escapes like ``"\\ud800"``
produce them), and control characters in ids make them unprintable and ambiguous,
so both are refused with a message that names the field.
"""
from __future__ import annotations

import json

import re

MAX_ID_CHARS = 1024
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def text_problem(text: str, field: str) -> str | None:
    """Why ``text`` cannot be indexed or searched, or None when it can."""
    match = _SURROGATE.search(text)
    if match:
        return f"{field} contains an unpaired surrogate U+{ord(match.group()):04X} at character {match.start()}"
    return None


def id_problem(doc_id: str) -> str | None:
    """Why ``doc_id`` is not a valid document id, or None when it is."""
    if not doc_id.strip():
        return "id is empty"
    if len(doc_id) > MAX_ID_CHARS:
        return f"id is {len(doc_id)} characters long; the limit is {MAX_ID_CHARS}"
    match = _CONTROL.search(doc_id)
    if match:
        return f"id contains the control character U+{ord(match.group()):04X}"
    return text_problem(doc_id, "id")


def strict_json(text: str):
    """``json.loads`` that refuses what JSON itself does not allow: ``NaN``, ``Infinity``,
    ``-Infinity`` (Python's parser accepts them; stored, they break every reader).

    Raises:
        json.JSONDecodeError: Not JSON.
        ValueError: A non-finite number, or an integer of more than 4,300 digits.
        RecursionError: Nesting deeper than the interpreter's stack allows.
    """
    return json.loads(text, parse_constant=_non_finite)


def _non_finite(name: str):
    raise ValueError(f"{name} is not a number JSON allows")
