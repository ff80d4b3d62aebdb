"""A ``tokenizer.json`` that is the whole tokenizer, read by the ``tokenizers`` library alone.

transformers' ``AutoTokenizer`` costs 2 s of imports and, for a file without an
``added_tokens_decoder`` in its config, a second parse of the JSON in Python (0.66 s for
multilingual-e5-small's 17 MB one). Where its tokenizer class is ``PreTrainedTokenizerFast`` (or
v5's ``TokenizersBackend``), transformers runs that file as it is: :class:`FileTokenizer` does the
same, with the part of the tokenizer call that xlsearch uses. A tokenizer class of its own
(``BertTokenizer``, ``XLMRobertaTokenizer``...) rebuilds its pipeline in transformers, and a config
key that changes encoding (``add_bos_token``, ``add_prefix_space``...) or a special token missing
from the file is transformers' to apply: :func:`read` returns None for those.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

TOKENIZER_FILE = "tokenizer.json"
CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# tokenizer_config.json keys that do not change how a text becomes ids and offsets
_INERT_KEYS = {"tokenizer_class", "model_max_length", "clean_up_tokenization_spaces", "added_tokens_decoder",
               "name_or_path", "padding_side", "truncation_side", "model_input_names", "extra_special_tokens",
               "additional_special_tokens", "backend", *SPECIAL_TOKENS}
VERY_LARGE_INTEGER = int(1e30)  # transformers' model_max_length when the config names none


class FileTokenizer:
    """The tokenizer call of transformers' fast tokenizers, for ids, special-token masks and offsets.

    Thread-safe: the shared ``tokenizers.Tokenizer`` is never reconfigured (transformers switches
    its truncation on and off around each call); truncation is applied to each encoding.
    """

    is_fast = True

    def __init__(self, backend, pad_token_id: int | None, model_max_length: int):
        self.backend = backend
        self.pad_token_id = pad_token_id
        self.model_max_length = model_max_length

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return self.backend.num_special_tokens_to_add(pair)

    def __call__(self, text: str | Sequence[str], *, add_special_tokens: bool = True, truncation: bool = False,
                 max_length: int | None = None, return_offsets_mapping: bool = False,
                 return_special_tokens_mask: bool = False, verbose: bool = True) -> dict[str, list]:
        """``input_ids`` (with ``special_tokens_mask``, ``offset_mapping`` if asked) of one text or a list of them,
        truncated to ``max_length`` tokens (special tokens included) when ``truncation``."""
        single = isinstance(text, str)
        encodings = self.backend.encode_batch([text] if single else list(text), add_special_tokens=False)
        limit = None
        if truncation:
            added = self.num_special_tokens_to_add() if add_special_tokens else 0
            limit = max(0, (max_length or self.model_max_length) - added)
        if limit is not None or add_special_tokens:
            encodings = [self._finish(e, limit, add_special_tokens) for e in encodings]
        out = {"input_ids": [e.ids for e in encodings]}
        if return_special_tokens_mask:
            out["special_tokens_mask"] = [e.special_tokens_mask for e in encodings]
        if return_offsets_mapping:
            out["offset_mapping"] = [e.offsets for e in encodings]
        return {key: value[0] for key, value in out.items()} if single else out

    def _finish(self, encoding, limit: int | None, add_special_tokens: bool):
        """What ``tokenizers`` does after splitting a text: truncate, then add the special tokens."""
        if limit is not None and len(encoding.ids) > limit:
            encoding.truncate(limit)
        return self.backend.post_process(encoding, add_special_tokens=add_special_tokens)


def read(directory: Path) -> FileTokenizer | None:
    """``directory``'s tokenizer as a :class:`FileTokenizer`, or None where transformers would not run
    its ``tokenizer.json`` as it is (see the module docstring)."""
    config = _json(directory / "tokenizer_config.json")
    if (config is None or config.get("tokenizer_class") not in CLASSES or set(config) - _INERT_KEYS
            or config.get("additional_special_tokens") or config.get("extra_special_tokens")
            or not (directory / TOKENIZER_FILE).is_file()):
        return None
    specials = {**(_json(directory / "special_tokens_map.json") or {}), **config}
    from tokenizers import Tokenizer

    backend = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
    if backend.truncation is not None or backend.padding is not None:
        return None  # transformers keeps them switched on
    tokens = backend.get_added_tokens_decoder().values()
    special, added = {t.content for t in tokens if t.special}, {t.content for t in tokens}
    named = [_content(specials.get(key)) for key in SPECIAL_TOKENS]
    listed = [_content(t) for t in (config.get("added_tokens_decoder") or {}).values()]
    if any(t is not None and t not in special for t in named) or any(t not in added for t in listed):
        return None  # transformers would add it to the vocabulary
    pad = _content(specials.get("pad_token"))
    length = config.get("model_max_length")
    return FileTokenizer(backend, None if pad is None else backend.token_to_id(pad),
                         int(length) if isinstance(length, (int, float)) and length > 0 else VERY_LARGE_INTEGER)


def _content(token) -> str | None:
    """A special token as a config writes it: a string, or an ``AddedToken``'s dict."""
    return token.get("content") if isinstance(token, dict) else token


def _json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
