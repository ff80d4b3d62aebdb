"""xlsearch's cache of derived model files: where it lives, the content hash its users take (the e5
converter's source file, the fingerprint's weight files, the tokenizer cache's key), how its
files are written, and the one reader of a small JSON file (of the cache or a model's directory)."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

CACHE_ENV = "XLSEARCH_CACHE"


def default_cache_dir() -> Path:
    """xlsearch's cache root: ``$XLSEARCH_CACHE``, else ``$XDG_CACHE_HOME/xlsearch``, else ``~/.cache/xlsearch``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "xlsearch"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's contents, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def json_object(path: Path) -> dict | None:
    """The JSON object in ``path``; None where the file is missing, unreadable, not JSON or not an object."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_atomically(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (a reader sees the old file or the new one)."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide the file from others sharing the cache
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
