"""How a model wants to be pooled and prompted: read from its sentence-transformers files.

A model trained for sentence embeddings (E5, BGE, MiniLM...) ships the recipe it
was trained with: ``modules.json`` names a ``Pooling`` module whose ``config.json``
gives the pooling mode over its last layer, and ``config_sentence_transformers.json``
gives the prompts put before queries and documents (``"query: "`` / ``"passage: "``
for E5). A raw encoder (mdeberta-v3-base) has none of these; xlsearch then pools
the mean of its real tokens at two thirds of its depth, where raw encoders align
languages best. :func:`settle_config` turns the ``auto`` settings of an
:class:`~indexer.config.IndexConfig` into these numbers, which the manifest records.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import CLS, MEAN, MEAN_NO_SPECIAL, IndexConfig
from .errors import ConfigError, ModelLoadError
from .model import LoadedModel

log = logging.getLogger(__name__)

ST_MODULES = "modules.json"
ST_CONFIG = "config_sentence_transformers.json"
POOLING_TYPE = "sentence_transformers.models.Pooling"


@dataclass(frozen=True)
class ModelDefaults:
    """The settings a model asks for; ``source`` says where they came from (for logs and docs)."""

    layer: int
    pooling: str
    query_prompt: str = ""
    document_prompt: str = ""
    source: str = "raw encoder"


def raw_encoder_layer(num_layers: int) -> int:
    """Two thirds of the depth, rounded: 8 of 12 layers, 4 of 6, 16 of 24."""
    return max(1, round(2 * num_layers / 3))


def model_defaults(loaded: LoadedModel) -> ModelDefaults:
    """The pooling, layer and prompts of ``loaded``'s sentence-transformers files, else the raw-encoder ones.

    Raises:
        ModelLoadError: A sentence-transformers file exists but cannot be read, or asks for
            something xlsearch cannot do (say, max pooling).
    """
    layers = loaded.num_layers
    modules = _read_json(loaded, ST_MODULES)
    pooling_dir = next((m.get("path", "") for m in modules or [] if m.get("type") == POOLING_TYPE), None)
    if pooling_dir is None:
        return ModelDefaults(layer=raw_encoder_layer(layers), pooling=MEAN_NO_SPECIAL)
    pooling_config = _read_json(loaded, f"{pooling_dir}/config.json" if pooling_dir else "config.json") or {}
    prompts = (_read_json(loaded, ST_CONFIG) or {}).get("prompts") or {}
    return ModelDefaults(layer=layers, pooling=_pooling_mode(pooling_config, loaded.name),
                         query_prompt=str(prompts.get("query", "")),
                         document_prompt=str(prompts.get("document", prompts.get("passage", ""))),
                         source="sentence-transformers config")


def settle_config(config: IndexConfig, loaded: LoadedModel) -> IndexConfig:
    """``config`` with every ``auto`` (None) setting replaced by what ``loaded`` asks for.

    Raises:
        ConfigError: The layer does not exist in the model.
    """
    defaults = model_defaults(loaded)
    settled = dataclasses.replace(
        config,
        layer=defaults.layer if config.layer is None else config.layer,
        pooling=defaults.pooling if config.pooling is None else config.pooling,
        query_prompt=defaults.query_prompt if config.query_prompt is None else config.query_prompt,
        document_prompt=defaults.document_prompt if config.document_prompt is None else config.document_prompt)
    if settled.layer > loaded.num_layers:
        raise ConfigError(f"layer {settled.layer} does not exist: {loaded.name} has layers 0..{loaded.num_layers}")
    if settled != config:
        log.info("%s (%s): layer %d, pooling %s, query prompt %r, document prompt %r", loaded.name,
                 defaults.source, settled.layer, settled.pooling, settled.query_prompt, settled.document_prompt)
    return settled


def _pooling_mode(config: dict[str, Any], name: str) -> str:
    if config.get("pooling_mode_mean_tokens"):
        return MEAN
    if config.get("pooling_mode_cls_token"):
        return CLS
    modes = sorted(k for k, v in config.items() if k.startswith("pooling_mode") and v)
    raise ModelLoadError(f"{name}: sentence-transformers pooling {', '.join(modes) or '(none)'} is not supported; "
                         "xlsearch pools the mean or the first token (--pooling)")


def _read_json(loaded: LoadedModel, filename: str) -> Any:
    """A JSON file of the model's directory (or hub cache), None when the model has none."""
    path = _model_file(loaded, filename)
    if path is None:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path}: cannot read the model's {filename} ({exc})") from None


def _model_file(loaded: LoadedModel, filename: str) -> Path | None:
    directory = Path(getattr(loaded.model.config, "_name_or_path", "") or loaded.name)
    if directory.is_dir():
        path = directory / filename
        return path if path.is_file() else None
    try:  # a hub id: only what the local cache holds (the model itself was loaded from there)
        from transformers.utils import cached_file

        found = cached_file(loaded.name, filename, local_files_only=True,
                            _raise_exceptions_for_missing_entries=False,
                            _raise_exceptions_for_connection_errors=False)
    except (OSError, ValueError):
        return None
    return Path(found) if found else None
