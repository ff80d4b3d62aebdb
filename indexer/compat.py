"""Whether an index can be used with a given encoder and settings: the check the writer and the
searcher both make before they touch an index."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from .config import ANALYZER, IndexConfig, Manifest
from .errors import IndexMismatchError

if TYPE_CHECKING:
    from .encoding.protocol import TextEncoder


def check_compatible(manifest: Manifest, encoder: TextEncoder | None = None,
                     config: IndexConfig | None = None) -> None:
    """Refuse to use an index with another model, layer or build setting.

    Raises:
        IndexMismatchError: Naming the setting, the index's value and the asked one.
    """
    if manifest.config.analyzer != ANALYZER:
        raise IndexMismatchError(
            f"the index was built with the lexical analyzer {manifest.config.analyzer!r}; this xlsearch "
            f"analyzes with {ANALYZER!r}, so its BM25 terms would not match. Rebuild it with `xlsearch index`.")
    if encoder is not None and not _same_model(manifest, encoder.loaded):
        raise IndexMismatchError(
            f"the index was built with model {manifest.config.model_name!r} (fingerprint "
            f"{manifest.model_fingerprint}), not {encoder.loaded.name!r} ({encoder.loaded.fingerprint}); "
            "use the index's model, or build a new index")
    if encoder is not None and encoder.precision != manifest.config.precision:
        raise IndexMismatchError(
            f"the index's vectors were computed in {manifest.config.precision}, not {encoder.precision}; "
            f"vectors of different precisions are not compared: use --precision {manifest.config.precision} "
            "(the default is the index's own), or build a new index")
    for setting in dataclasses.fields(IndexConfig):
        ours, asked = getattr(manifest.config, setting.name), getattr(config, setting.name, None)
        if config is not None and setting.name != "model_name" and asked is not None and ours != asked:
            raise IndexMismatchError(f"the index was built with {setting.name}={ours!r}, not {asked!r}; "
                                     "drop the option or build a new index")


def _same_model(manifest: Manifest, loaded) -> bool:
    """The index's fingerprint is the model's, or the one xlsearch gave the same hub id before it
    identified hub ids by their commit."""
    if loaded.fingerprint == manifest.model_fingerprint:
        return True
    if loaded.name != manifest.config.model_name:
        return False
    from .encoding.fingerprint import formerly

    return formerly(loaded.name, loaded.fingerprint, manifest.model_fingerprint)
