"""Hidden-layer numbers: the one range check against a model's depth and the one parser of layer lists.

Layer 0 is the embedding output and layer N the last of a model's N transformer layers,
as in Hugging Face's ``hidden_states``. Every check raises :class:`~indexer.errors.LayerError`
with the valid range in its message.
"""
from __future__ import annotations

from collections.abc import Iterable

from ..errors import LayerError

AUTO = "auto"


def check_layer(layer: int, num_layers: int, model: str, *, lowest: int = 0, purpose: str = "") -> int:
    """``layer`` itself when ``lowest <= layer <= num_layers``.

    Args:
        layer: The layer asked for.
        num_layers: The model's depth (its last layer's number).
        model: The model's name, for the message.
        lowest: The smallest usable layer (1 for fine-tuning: layer 0 has nothing to train).
        purpose: What the layer is for (``"fine-tuned"``); the message then says it cannot be.

    Raises:
        LayerError: ``layer <N> does not exist: <model> has layers <lowest>..<num_layers>``.
    """
    if not lowest <= layer <= num_layers:
        what = f"cannot be {purpose}" if purpose else "does not exist"
        raise LayerError(f"layer {layer} {what}: {model} has layers {lowest}..{num_layers}")
    return layer


def check_layers(layers: Iterable[int], num_layers: int, model: str) -> None:
    """:func:`check_layer` on each of ``layers``."""
    for layer in layers:
        check_layer(layer, num_layers, model)


def parse_layers(text: str) -> list[int] | None:
    """``"8,10"`` -> ``[8, 10]`` (duplicates dropped, order kept); ``"auto"`` -> None (the model's own).

    Raises:
        LayerError: A part is not a layer number >= 0, or there is none.
    """
    if text.strip() == AUTO:
        return None
    layers: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit():
            raise LayerError(f"bad layer list {text!r}: give auto or comma-separated layer numbers >= 0, "
                             "e.g. 8,10")
        if int(part) not in layers:
            layers.append(int(part))
    return layers


def parse_layer(text: str) -> int | None:
    """``"8"`` -> 8; ``"auto"`` -> None.

    Raises:
        LayerError: Not auto and not one layer number >= 0.
    """
    layers = parse_layers(text)
    if layers is not None and len(layers) != 1:
        raise LayerError(f"bad layer {text!r}: give auto or one layer number >= 0")
    return None if layers is None else layers[0]
