"""Every error xlsearch raises on purpose is declared in one place and has its HTTP answer."""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import xlsearch
from xlsearch.api.http.errors import STATUS
from xlsearch.indexer import errors


def _all_modules() -> None:
    for info in pkgutil.walk_packages(xlsearch.__path__, "xlsearch."):
        importlib.import_module(info.name)


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def test_every_error_lives_in_errors_py_and_has_a_status():
    _all_modules()
    ours = {c for c in _subclasses(errors.XlsearchError) if c.__module__.startswith("xlsearch.")}
    assert {c.__module__ for c in ours} == {"xlsearch.indexer.errors"}
    declared = {c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.XlsearchError)}
    assert declared - set(STATUS) == set()
    for cls, (status, code) in STATUS.items():
        assert 400 <= status < 600 and code


def test_settings_and_layers_are_client_errors():
    assert STATUS[errors.LayerError][0] == STATUS[errors.ConfigError][0] == 422
