"""Language identification for documents that do not say their language.

Uses py3langid (a maintained fork of langid.py): its model ships inside the
package (no download), covers 97 languages and returns ISO 639-1 codes.
"""
from __future__ import annotations

from functools import lru_cache

DETECT_CHARS = 2000  # enough text for a stable answer; keeps long documents cheap


@lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE)


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of ``text``'s language, or None when it has no letters to go on."""
    sample = text[:DETECT_CHARS]
    if not any(ch.isalpha() for ch in sample):
        return None
    return str(_identifier().classify(sample)[0])
