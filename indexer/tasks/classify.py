"""A classification head on the pooled layer: train, evaluate, predict, save and load.

The head is one linear layer over the mean-pooled, L2-normalised vectors of the layer
the index uses; training fine-tunes the encoder with it (cross-entropy). The saved
directory is a normal model directory (``load_model`` reads it) plus
``classifier.json`` (labels, layer) and ``classifier_head.pt`` (the head's weights).
Train in one language and predict in others for zero-shot cross-lingual transfer.
"""
from __future__ import annotations

import csv
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..encoding.encoder import Encoder
from ..encoding.model import LoadedModel, load_model
from ..errors import CorpusError, ModelLoadError, XlsearchError
from ..text.records import read_records, record_format
from .finetune import check_trainable_layer, save_checkpoint
from .training import TrainConfig, seed_everything, train_loop

log = logging.getLogger(__name__)

HEAD_CONFIG = "classifier.json"
HEAD_WEIGHTS = "classifier_head.pt"
_LABEL_KEYS = ("label", "category")
TEXT_FILE_SUFFIXES = (".txt", ".text", ".jsonl", ".json", ".ndjson", ".csv", ".tsv")  # classify: a path


@dataclass(frozen=True)
class Prediction:
    """The most probable label of one text and its probability."""

    label: str
    score: float


def read_labelled(path: str | Path, labels: Sequence[str]) -> list[tuple[str, str]]:
    """``(text, label)`` records from JSONL (``text``, ``label``) or TSV/CSV with a header naming them.

    ``category`` is accepted for ``label`` (SIB-200's files read as they are: in a TSV,
    quotes are text).

    Raises:
        CorpusError: Unreadable file, missing field or a label not in ``labels`` (``file:line: ...``).
    """
    path = Path(path)
    fmt = record_format(path) or "tsv"
    records = []
    for where, fields in read_records(path, fmt, required=("text", _LABEL_KEYS),
                                      quoting=csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL):
        if isinstance(fields, CorpusError):
            raise fields
        if not any(isinstance(v, str) and v.strip() for v in fields.values()):
            continue  # a blank row of a table
        text, label = fields.get("text"), next((fields[k] for k in _LABEL_KEYS if k in fields), None)
        if not isinstance(text, str) or not text.strip():
            raise CorpusError(f"{where}: no text")
        if label not in labels:
            raise CorpusError(f"{where}: label {label!r} is not one of {', '.join(labels)}")
        records.append((text, label))
    if not records:
        raise CorpusError(f"{path}: no labelled records found")
    return records


class Classifier:
    """An encoder plus a linear head over its pooled ``layer`` vectors.

    Args:
        loaded: The encoder (from :func:`indexer.model.load_model`).
        labels: Label names, in the head's output order.
        layer: Hidden layer pooled (mean over real tokens, then L2).
        head: ``nn.Linear(dim, len(labels))``; a fresh one when omitted.
    """

    def __init__(self, loaded: LoadedModel, labels: Sequence[str], layer: int, head: nn.Linear | None = None):
        if len(set(labels)) != len(labels) or len(labels) < 2:
            raise XlsearchError(f"need at least 2 distinct labels, got {list(labels)}")
        check_trainable_layer(loaded, layer)
        self.loaded, self.labels, self.layer = loaded, list(labels), layer
        self.head = (head or nn.Linear(loaded.dim, len(labels))).to(loaded.device)

    def train(self, records: Sequence[tuple[str, str]], config: TrainConfig, head_lr: float = 1e-2) -> float:
        """Fine-tune encoder and a freshly initialised head on ``(text, label)``; returns the last loss."""
        rng = seed_everything(config.seed)
        self.head.reset_parameters()
        index = {label: i for i, label in enumerate(self.labels)}
        targets = torch.tensor([index[label] for _, label in records], device=self.loaded.device)
        encoder = Encoder(self.loaded, batch_size=config.batch_size)

        def loss_of(rows: list[int]) -> torch.Tensor:
            vectors = encoder.pooled([records[i][0] for i in rows], [self.layer], max_tokens=config.max_tokens,
                                     grad=True)[self.layer]
            return F.cross_entropy(self.head(vectors), targets[rows])

        groups = [{"params": self.loaded.model.parameters()}, {"params": self.head.parameters(), "lr": head_lr}]
        return train_loop(self.loaded.model, groups, len(records), config, rng, loss_of)[1]

    @torch.inference_mode()
    def predict(self, texts: Sequence[str], batch_size: int = 32) -> list[Prediction]:
        """The most probable label of each text, in input order."""
        vectors = Encoder(self.loaded, batch_size=batch_size).encode(texts, self.layer)
        self.head.eval()
        probs = self.head(torch.from_numpy(vectors).to(self.loaded.device)).softmax(-1)
        best = probs.max(-1)
        return [Prediction(self.labels[int(i)], float(p)) for p, i in zip(best.values, best.indices)]

    def accuracy(self, records: Sequence[tuple[str, str]]) -> float:
        """Fraction of ``(text, label)`` records predicted right."""
        predictions = self.predict([text for text, _ in records])
        return sum(p.label == label for p, (_, label) in zip(predictions, records)) / max(1, len(records))

    def save(self, directory: str | Path) -> Path:
        """Model directory (``load_model`` reads it) plus head weights and ``classifier.json``."""
        directory = save_checkpoint(self.loaded, directory, self.layer, {"objective": "classify"})
        torch.save(self.head.state_dict(), directory / HEAD_WEIGHTS)
        (directory / HEAD_CONFIG).write_text(json.dumps({"labels": self.labels, "layer": self.layer}, indent=2)
                                             + "\n", encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str = "auto") -> Classifier:
        """Read a directory written by :meth:`save`.

        Raises:
            ModelLoadError: The directory has no classifier head (not made by ``finetune classify``).
        """
        directory = Path(directory)
        if not (directory / HEAD_CONFIG).is_file() or not (directory / HEAD_WEIGHTS).is_file():
            raise ModelLoadError(f"{directory} has no classifier head ({HEAD_CONFIG}, {HEAD_WEIGHTS}); "
                                 "train one with `xlsearch finetune classify`")
        settings = json.loads((directory / HEAD_CONFIG).read_text(encoding="utf-8"))
        loaded = load_model(str(directory), device)
        head = nn.Linear(loaded.dim, len(settings["labels"]))
        head.load_state_dict(torch.load(directory / HEAD_WEIGHTS, map_location="cpu", weights_only=True))
        return cls(loaded, settings["labels"], int(settings["layer"]), head)


def looks_like_path(argument: str) -> bool:
    """Whether ``argument`` reads as a file name rather than a text: one line ending in a file extension
    (``.txt``, ``.jsonl``, ``.csv``, ``.tsv``...), or one word with a path separator (``data/in``)."""
    if "\n" in argument or not argument.strip():
        return False
    if Path(argument.strip()).suffix.lower() in TEXT_FILE_SUFFIXES:
        return True
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return any(sep in argument for sep in separators) and len(argument.split()) == 1


def texts_to_classify(argument: str) -> list[str]:
    """The texts ``xlsearch classify`` labels: the non-blank lines of the file ``argument`` names, else
    ``argument`` itself as one text.

    Raises:
        CorpusError: ``argument`` looks like a file name (:func:`looks_like_path`) but no such file
            exists, names a directory, or the file cannot be read as UTF-8.
    """
    source = Path(argument)
    if source.is_file():
        try:
            return [line for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise CorpusError(f"{source}: cannot read ({exc})") from None
    if looks_like_path(argument):
        what = "is a directory" if source.is_dir() else "no such file"
        raise CorpusError(f"{argument}: {what}; give a text file (one text per line), or the text itself")
    return [argument]


def majority_baseline(train: Sequence[tuple[str, str]], test: Sequence[tuple[str, str]]) -> float:
    """Accuracy on ``test`` of always answering ``train``'s most common label."""
    common = Counter(label for _, label in train).most_common(1)[0][0]
    return sum(label == common for _, label in test) / max(1, len(test))
