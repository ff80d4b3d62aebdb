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

from ..config import CLS, MEAN, MEAN_NO_SPECIAL, POOLINGS, IndexConfig
from ..errors import ConfigError, ModelLoadError
from .layers import check_layer
from .hub import hub_file, is_snapshot
from .model import LoadedModel
from .pooling import POOLING_FILE, Pooling

log = logging.getLogger(__name__)

ST_MODULES = "modules.json"
ST_CONFIG = "config_sentence_transformers.json"
POOLING_TYPE = "sentence_transformers.models.Pooling"
NORMALIZE_TYPE = "sentence_transformers.models.Normalize"
FINETUNE_POOLING = POOLING_FILE  # written by `xlsearch finetune` (indexer.tasks.finetune)
RAW_ENCODER = "raw encoder"  # the source of a model's defaults when it ships no pooling of its own


@dataclass(frozen=True)
class ModelDefaults:
    """The settings a model asks for; ``source`` says where they came from (for logs and docs).

    ``pooling`` is None when the model pools in a way xlsearch cannot (max, weighted mean):
    then the index needs an explicit ``--pooling``.
    """

    layer: int
    pooling: str | None
    query_prompt: str = ""
    document_prompt: str = ""
    source: str = RAW_ENCODER


def raw_encoder_layer(num_layers: int) -> int:
    """Two thirds of the depth, rounded: 8 of 12 layers, 4 of 6, 16 of 24."""
    return max(1, round(2 * num_layers / 3))


def model_defaults(loaded: LoadedModel) -> ModelDefaults:
    """The pooling, layer and prompts of ``loaded``'s sentence-transformers files; else the layer an
    ``xlsearch finetune`` checkpoint was trained at; else the raw-encoder defaults.

    Raises:
        ModelLoadError: A sentence-transformers file exists but cannot be read.
    """
    layers = loaded.num_layers
    modules = _read_json(loaded, ST_MODULES)
    pooling_dir = next((m.get("path", "") for m in modules or [] if m.get("type") == POOLING_TYPE), None)
    if pooling_dir is None:
        trained = Pooling.from_json(_read_json(loaded, FINETUNE_POOLING))
        if trained is not None and trained.layer <= layers:
            return ModelDefaults(layer=trained.layer, pooling=trained.mode, source=FINETUNE_POOLING)
        return ModelDefaults(layer=raw_encoder_layer(layers), pooling=MEAN_NO_SPECIAL)
    skipped = [m.get("type", "?") for m in modules
               if m.get("type") not in (POOLING_TYPE, NORMALIZE_TYPE) and not str(m.get("type", "")).endswith("Transformer")]
    if skipped:
        log.warning("%s: xlsearch applies the encoder, its pooling and L2 normalisation, not %s; its vectors "
                    "will differ from the ones sentence-transformers computes", loaded.name, ", ".join(skipped))
    pooling_config = _read_json(loaded, f"{pooling_dir}/config.json" if pooling_dir else "config.json") or {}
    prompts = (_read_json(loaded, ST_CONFIG) or {}).get("prompts") or {}
    return ModelDefaults(layer=layers, pooling=_pooling_mode(pooling_config),
                         query_prompt=str(prompts.get("query", "")),
                         document_prompt=str(prompts.get("document", prompts.get("passage", ""))),
                         source="sentence-transformers config")


def pools_as_trained(config: IndexConfig, loaded: LoadedModel) -> bool:
    """Whether an index of ``config`` holds the sentence embeddings ``loaded`` was trained to produce: the
    pooling and layer of its sentence-transformers files, or of an ``xlsearch finetune`` checkpoint."""
    defaults = model_defaults(loaded)
    return (defaults.source != RAW_ENCODER and config.layer == defaults.layer
            and config.pooling == defaults.pooling)


def settle_config(config: IndexConfig, loaded: LoadedModel) -> IndexConfig:
    """``config`` with every ``auto`` (None) setting replaced by what ``loaded`` asks for.

    Raises:
        LayerError: The layer does not exist in the model (a :class:`ConfigError`).
        ConfigError: The model's own pooling is one xlsearch cannot do and none was given.
    """
    defaults = model_defaults(loaded)
    if config.pooling is None and defaults.pooling is None:
        raise ConfigError(f"{loaded.name} pools in a way xlsearch cannot (see its 1_Pooling/config.json); "
                          f"give --pooling {' or '.join(POOLINGS)}")
    settled = dataclasses.replace(
        config,
        layer=defaults.layer if config.layer is None else config.layer,
        pooling=defaults.pooling if config.pooling is None else config.pooling,
        query_prompt=defaults.query_prompt if config.query_prompt is None else config.query_prompt,
        document_prompt=defaults.document_prompt if config.document_prompt is None else config.document_prompt)
    check_layer(settled.layer, loaded.num_layers, loaded.name)
    if settled != config:
        log.info("%s (%s): layer %d, pooling %s, query prompt %r, document prompt %r", loaded.name,
                 defaults.source, settled.layer, settled.pooling, settled.query_prompt, settled.document_prompt)
    return settled


def _pooling_mode(config: dict[str, Any]) -> str | None:
    if config.get("pooling_mode_mean_tokens"):
        return MEAN
    if config.get("pooling_mode_cls_token"):
        return CLS
    return None


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
    """A file of the model's directory; for a hub id, from the local cache, else (a few small JSON
    files, once) from the hub when it can be reached."""
    directory = Path(getattr(loaded.model.config, "_name_or_path", "") or loaded.name)
    if directory.is_dir() and (Path(loaded.name).expanduser().is_dir() or not is_snapshot(directory)):
        # a local directory, or e5's copy; a hub id read from its snapshot asks the cache, then the hub
        path = directory / filename
        return path if path.is_file() else None
    return hub_file(loaded.name, filename)
