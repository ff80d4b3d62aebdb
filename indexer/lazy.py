"""Package faces that name their public objects without importing them (PEP 562).

``import xlsearch`` or ``from xlsearch.indexer.store import docstore`` must not pay for
torch and transformers; a package's ``__init__`` lists what it offers and where it
lives, and the module is imported on first use of the name.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``.

    Args:
        package: The package's ``__name__``.
        exports: Public name -> module that defines it, relative to ``package`` (``".writing.writer"``).
    """
    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module, package), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
