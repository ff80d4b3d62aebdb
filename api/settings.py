"""Settings both faces of the API read: the model asked for through the environment, and one HTTP
server's settings. No web framework is imported here, so the CLI stays quick."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..indexer.config import BATCH_SIZE
from ..indexer.errors import XlsearchError

MODEL_ENV = "XLSEARCH_MODEL"
API_KEY_ENV = "XLSEARCH_API_KEY"
INDEX_ENV = "XLSEARCH_INDEX"
MAX_BODY_BYTES = 8 * 1024 * 1024


def requested_model(option: str | None) -> str | None:
    """The model a command was asked for: ``--model``, else ``$XLSEARCH_MODEL``, else None."""
    return option or os.environ.get(MODEL_ENV) or None


@dataclass(frozen=True)
class Settings:
    """What one server instance serves and how.

    Attributes:
        index: Index directory (must exist; build it with ``xlsearch index``).
        model: Model name or directory; None: the index's own model.
        device: ``auto``, ``cpu`` or ``cuda``.
        precision: The encoder's matmul precision (``indexer.config.PRECISIONS``); None: the index's own.
        api_key: When set, write endpoints (and reads, with ``protect_reads``) need
            ``Authorization: Bearer <api_key>``.
        protect_reads: Require the key on every endpoint but ``/health`` and the docs.
        batch_size: Texts per forward pass when documents are added.
        threads: The most CPU threads one request may use (torch's; numpy's BLAS and FAISS are capped at it
            for the process); None: every core. Requests running at once share the cores.
        max_body_bytes: Larger request bodies are refused with 413.
    """

    index: Path
    model: str | None = None
    device: str = "auto"
    precision: str | None = None
    api_key: str | None = None
    protect_reads: bool = False
    batch_size: int = BATCH_SIZE
    threads: int | None = None
    max_body_bytes: int = MAX_BODY_BYTES

    @classmethod
    def from_env(cls) -> Settings:
        """``XLSEARCH_INDEX``, ``XLSEARCH_MODEL``, ``XLSEARCH_DEVICE``, ``XLSEARCH_API_KEY``,
        ``XLSEARCH_PROTECT_READS`` (1/true/yes).

        Raises:
            XlsearchError: ``XLSEARCH_INDEX`` is not set.
        """
        index = os.environ.get(INDEX_ENV)
        if not index:
            raise XlsearchError(f"set {INDEX_ENV} to the index directory, or start with `xlsearch serve --index DIR`")
        return cls(index=Path(index), model=requested_model(None),
                   device=os.environ.get("XLSEARCH_DEVICE", "auto"), api_key=api_key_from_env(),
                   protect_reads=os.environ.get("XLSEARCH_PROTECT_READS", "").lower() in ("1", "true", "yes"))


def api_key_from_env() -> str | None:
    """``$XLSEARCH_API_KEY``, or None when it is not set.

    Raises:
        XlsearchError: It is set but empty (which would silently leave the server open), or holds
            characters an ``Authorization`` header cannot carry (anything but printable ASCII).
    """
    key = os.environ.get(API_KEY_ENV)
    if key is None:
        return None
    if not key.strip():
        raise XlsearchError(f"{API_KEY_ENV} is set but empty: set a key, or unset it to serve without one")
    if not all(" " < c < "\x7f" for c in key):
        raise XlsearchError(f"{API_KEY_ENV} must be printable ASCII without spaces: an Authorization header "
                            "cannot carry other characters, so no client could send it")
    return key
