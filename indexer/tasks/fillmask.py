"""Masked-token prediction that refuses to guess with an untrained head.

The released mdeberta-v3-base encoder was pre-trained ELECTRA-style: its main
weights hold no masked-LM head, so ``AutoModelForMaskedLM`` initialises one at
random and fill-mask answers with random tokens (transformers issues #18143,
#22790). The same repository ships a generator checkpoint
(``generator_config.json`` + ``pytorch_model.generator.bin``) trained as a
masked LM. :func:`load_masked_lm` prefers that checkpoint, falls back to the
main one, and raises :class:`MaskedLMHeadMissingError` whenever any weight, of
the head or of the encoder, would be randomly initialised.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..encoding.hub import from_pretrained, hub_file
from ..encoding.model import model_path, resolve_device
from ..errors import MaskedLMHeadMissingError, XlsearchError

log = logging.getLogger(__name__)

GENERATOR_CONFIG = "generator_config.json"
GENERATOR_WEIGHTS = ("pytorch_model.generator.bin", "model.generator.safetensors")
HEAD_MARKERS = ("lm_predictions", "cls.predictions", "lm_head", "predictions.", "generator_lm_head")
MASK_PLACEHOLDER = "[MASK]"



@dataclass
class MaskedLM:
    """A masked-LM model in eval mode, its tokenizer, and which checkpoint it came from."""

    name: str
    checkpoint: str  # "generator" or "main"
    model: torch.nn.Module
    tokenizer: object
    device: torch.device


@dataclass
class Prediction:
    token: str
    token_id: int
    score: float  # softmax probability at the masked position, higher is likelier


def find_generator(name: str) -> tuple[Path, Path] | None:
    """``(generator_config.json, generator weights)`` of a model directory or hub id, if it ships them."""
    path = Path(name).expanduser()
    if path.is_dir():
        config = path / GENERATOR_CONFIG
        weights = next((path / w for w in GENERATOR_WEIGHTS if (path / w).is_file()), None)
        return (config, weights) if config.is_file() and weights is not None else None
    if path.exists():
        return None
    config = hub_file(name, GENERATOR_CONFIG)
    if config is None:
        return None
    weights = hub_file(name, GENERATOR_WEIGHTS[0])
    return (config, weights) if weights is not None else None


def _stage_generator(config_file: Path, weights: Path, name: str, staging: Path) -> Path:
    """A directory with the generator's config as ``config.json`` and its weights under the standard name."""
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if "model_type" not in config:
        from transformers import AutoConfig

        config["model_type"] = from_pretrained(AutoConfig, name).model_type
    (staging / "config.json").write_text(json.dumps(config), encoding="utf-8")
    target = staging / ("model.safetensors" if weights.suffix == ".safetensors" else "pytorch_model.bin")
    try:
        target.symlink_to(weights.resolve())
    except OSError:
        shutil.copyfile(weights, target)
    return staging


def _load_checked(source: str, name: str, checkpoint: str):
    """``AutoModelForMaskedLM`` from ``source``; raises when any weight was not in the checkpoint."""
    from transformers import AutoConfig, AutoModelForMaskedLM

    config = from_pretrained(AutoConfig, source)
    model, info = from_pretrained(AutoModelForMaskedLM, source, config=config, output_loading_info=True)
    missing = list(info.get("missing_keys") or [])
    unexpected = list(info.get("unexpected_keys") or [])
    if missing and hasattr(config, "legacy") and any("predictions" in k for k in unexpected):
        # DeBERTa: the head is stored under the other naming scheme (cls.predictions vs lm_predictions).
        config.legacy = not config.legacy
        model, info = from_pretrained(AutoModelForMaskedLM, source, config=config, output_loading_info=True)
        missing = list(info.get("missing_keys") or [])
    if missing:
        head = [k for k in missing if any(marker in k for marker in HEAD_MARKERS)]
        shown = ", ".join(sorted(head or missing)[:4]) + (" ..." if len(head or missing) > 4 else "")
        what = "its masked-LM head" if head else "some of its weights"
        raise MaskedLMHeadMissingError(
            f"{name} ({checkpoint} checkpoint) has no trained weights for {what} ({shown}); they would be "
            "randomly initialised and the predictions would be random tokens (transformers issues #18143, "
            "#22790). mdeberta-v3-base's main weights were pre-trained ELECTRA-style without an MLM head: "
            "use a model directory that also holds the generator checkpoint (generator_config.json + "
            "pytorch_model.generator.bin from microsoft/mdeberta-v3-base) or any model trained as a masked LM."
        )
    return model


def load_masked_lm(name: str, device: str = "auto") -> MaskedLM:
    """Load a masked LM whose head weights are really present: the generator checkpoint if found, else main.

    Args:
        name: Hub id or local model directory (the tokenizer always comes from here).
        device: ``auto``, ``cpu`` or ``cuda``.

    Raises:
        MaskedLMHeadMissingError: The chosen checkpoint lacks head (or encoder) weights.
        ModelLoadError: The model or tokenizer cannot be found.
    """
    from transformers import AutoTokenizer

    name = model_path(name)
    tokenizer = from_pretrained(AutoTokenizer, name)
    generator = find_generator(name)
    if generator is not None:
        log.info("using the generator checkpoint %s", generator[1])
        with tempfile.TemporaryDirectory(prefix="xlsearch-generator-") as staging:
            source = str(_stage_generator(generator[0], generator[1], name, Path(staging)))
            model = _load_checked(source, name, "generator")
        checkpoint = "generator"
    else:
        model = _load_checked(name, name, "main")
        checkpoint = "main"
    torch_device = resolve_device(device)
    return MaskedLM(name, checkpoint, model.to(torch_device).eval(), tokenizer, torch_device)


@torch.inference_mode()
def fill_mask(masked: MaskedLM, text: str, k: int = 5) -> list[list[Prediction]]:
    """Top-``k`` tokens for each mask in ``text``, in text order.

    ``[MASK]`` is accepted for any model and replaced by the tokenizer's own mask token.

    Returns:
        One list per mask of ``k`` predictions, best (highest probability) first.

    Raises:
        XlsearchError: The text has no mask token, or ``k`` < 1.
    """
    tokenizer = masked.tokenizer
    if k < 1:
        raise XlsearchError(f"top-k must be >= 1, got {k}")
    mask_token = tokenizer.mask_token
    if mask_token is None:
        raise XlsearchError(f"{masked.name}: the tokenizer has no mask token")
    text = text.replace(MASK_PLACEHOLDER, mask_token)
    encoded = tokenizer(text, return_tensors="pt", truncation=True)
    positions = (encoded["input_ids"][0] == tokenizer.mask_token_id).nonzero().flatten().tolist()
    if not positions:
        raise XlsearchError(f"no {MASK_PLACEHOLDER} in the text; write it where the token to predict goes, "
                            f"e.g. \"Paris is the {MASK_PLACEHOLDER} of France.\"")
    inputs = {key: value.to(masked.device) for key, value in encoded.items()}
    logits = masked.model(**inputs).logits[0]
    results = []
    for position in positions:
        probs = logits[position].float().softmax(-1)
        scores, ids = probs.topk(min(k, probs.numel()))
        results.append([Prediction(tokenizer.decode([int(i)]).strip(), int(i), float(s))
                        for s, i in zip(scores, ids)])
    return results
