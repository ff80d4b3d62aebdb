"""A ``tokenizer.json`` that is the whole tokenizer, read by the ``tokenizers`` library alone.

transformers' ``AutoTokenizer`` costs 2 s of imports and, for a file without an
``added_tokens_decoder`` in its config, a second parse of the JSON in Python (0.66 s for
multilingual-e5-small's 17 MB one). Where its tokenizer class is ``PreTrainedTokenizerFast`` (or
v5's ``TokenizersBackend``), transformers runs that file as it is: :class:`FileTokenizer` does the
same, with the part of the tokenizer call that xlsearch uses. A tokenizer class of its own
(``BertTokenizer``, ``XLMRobertaTokenizer``...) rebuilds its pipeline in transformers, and so do a
config key that changes encoding (``add_bos_token``, ``add_prefix_space``...), a special or added
token that the file lacks or describes otherwise (``added_tokens.json``, extra special tokens),
and a model type whose class ``AutoTokenizer`` swaps: :func:`read` returns None for those, and
reads only BERT-family directories (as :mod:`.native_bert` does).
"""
from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from .cache import json_object

TOKENIZER_FILE = "tokenizer.json"
CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")
MODEL_TYPES = ("bert", "roberta", "xlm-roberta")  # AutoTokenizer swaps the class of some other model types
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# tokenizer_config.json keys that do not change how a text becomes ids and offsets (truncation_side is
# applied here; the special tokens are checked against the file)
_INERT_KEYS = {"tokenizer_class", "model_max_length", "clean_up_tokenization_spaces", "added_tokens_decoder",
               "name_or_path", "padding_side", "truncation_side", "model_input_names", "backend", "is_local",
               "local_files_only", *SPECIAL_TOKENS}
_ADDED_TOKEN_FIELDS = ("content", "single_word", "lstrip", "rstrip", "normalized", "special")
VERY_LARGE_INTEGER = int(1e30)  # transformers' model_max_length when the config names none
LARGE_INTEGER = int(1e20)  # above it, transformers does not truncate to model_max_length


class FileTokenizer:
    """The tokenizer call of transformers' fast tokenizers, for ids, special-token masks and offsets.

    Truncation is set on the shared ``tokenizers.Tokenizer`` for each call, as transformers sets it,
    under a lock: threads of a server tokenize one call at a time (a query takes well under a
    millisecond), and none sees another's setting.
    """

    is_fast = True

    def __init__(self, backend, pad_token_id: int | None, model_max_length: int, truncation_side: str = "right"):
        self.backend = backend
        self.pad_token_id = pad_token_id
        self.model_max_length = model_max_length
        self.truncation_side = truncation_side
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return self.backend.num_special_tokens_to_add(pair)

    def __call__(self, text: str | Sequence[str], *, add_special_tokens: bool = True, truncation: bool = False,
                 max_length: int | None = None, return_offsets_mapping: bool = False,
                 return_special_tokens_mask: bool = False, verbose: bool = True) -> dict[str, list]:
        """``input_ids`` (with ``special_tokens_mask``, ``offset_mapping`` if asked) of one text or a list of them,
        truncated to ``max_length`` tokens (special tokens included) when ``truncation``."""
        single = isinstance(text, str)
        limit = (max_length or self.model_max_length) if truncation else None
        with self._lock:
            if limit is None or limit > LARGE_INTEGER:
                self.backend.no_truncation()
            else:
                self.backend.enable_truncation(limit, stride=0, strategy="longest_first",
                                               direction=self.truncation_side)
            encodings = self.backend.encode_batch([text] if single else list(text),
                                                  add_special_tokens=add_special_tokens)
        out = {"input_ids": [e.ids for e in encodings]}
        if return_special_tokens_mask:
            out["special_tokens_mask"] = [e.special_tokens_mask for e in encodings]
        if return_offsets_mapping:
            out["offset_mapping"] = [e.offsets for e in encodings]
        return {key: value[0] for key, value in out.items()} if single else out


def read(directory: Path) -> FileTokenizer | None:
    """``directory``'s tokenizer as a :class:`FileTokenizer`, or None where transformers would not run
    its ``tokenizer.json`` as it is (see the module docstring)."""
    config = json_object(directory / "tokenizer_config.json")
    model = json_object(directory / "config.json")
    if (config is None or config.get("tokenizer_class") not in CLASSES or set(config) - _INERT_KEYS
            or config.get("truncation_side", "right") not in ("left", "right")
            or model is None or model.get("model_type") not in MODEL_TYPES
            or (directory / "added_tokens.json").exists() or not (directory / TOKENIZER_FILE).is_file()):
        return None
    specials = _special_tokens(directory, config)
    if specials is None:
        return None
    from tokenizers import Tokenizer

    backend = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
    if backend.truncation is not None or backend.padding is not None:
        return None  # transformers keeps them switched on
    in_file = backend.get_added_tokens_decoder()
    special = {t.content for t in in_file.values() if t.special}
    if any(t is not None and t not in special for t in specials.values()):
        return None  # transformers would add it to the vocabulary
    for token_id, token in (config.get("added_tokens_decoder") or {}).items():
        # transformers adds each again as the config describes it (lstrip, normalized...)
        ours = in_file.get(int(token_id)) if str(token_id).isdigit() else None
        if ours is None or not isinstance(token, dict) or any(
                token.get(field) != getattr(ours, field) for field in _ADDED_TOKEN_FIELDS):
            return None
    pad = specials.get("pad_token")
    length = config.get("model_max_length")
    return FileTokenizer(backend, None if pad is None else backend.token_to_id(pad),
                         int(length) if isinstance(length, (int, float)) and length > 0 else VERY_LARGE_INTEGER,
                         config.get("truncation_side", "right"))


def _special_tokens(directory: Path, config: dict) -> dict[str, str | None] | None:
    """The named special tokens as transformers reads them: ``special_tokens_map.json`` is read only when
    the config has no ``added_tokens_decoder``, and then overrides it. None where the map holds more
    than those tokens (extra special tokens, which transformers would add) or cannot be read."""
    values = {key: config.get(key) for key in SPECIAL_TOKENS}
    path = directory / "special_tokens_map.json"
    if "added_tokens_decoder" not in config and path.exists():
        mapped = json_object(path)
        if mapped is None or set(mapped) - set(SPECIAL_TOKENS):
            return None
        values.update(mapped)
    return {key: _content(value) for key, value in values.items()}


def _content(token) -> str | None:
    """A special token as a config writes it: a string, or an ``AddedToken``'s dict."""
    return token.get("content") if isinstance(token, dict) else token
