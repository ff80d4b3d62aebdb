"""Encoders and tokenizers read without transformers (:mod:`native_bert`, :mod:`native_tokenizer`): the same
hidden states, ids and offsets as transformers' own, and transformers' path wherever they cannot be read
exactly."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from test_fast_bert import SMALL, built
from test_fast_deberta import padded_batch

from xlsearch.indexer.encoding import native_bert, native_deberta, native_tokenizer, native_weights, tokenizer_cache
from xlsearch.indexer.encoding.encoder import Encoder
from xlsearch.indexer.encoding.fast_bert import FastBert
from xlsearch.indexer.encoding.fast_deberta import FastDebertaV2, relative_positions
from xlsearch.indexer.encoding.model import load_model
from xlsearch.indexer.errors import ModelLoadError

LENGTHS = [300, 1, 17, 128, 129, 2]


def saved(kind: str, directory: Path, **overrides) -> tuple[torch.nn.Module, Path]:
    model = built(kind, **overrides)
    model.save_pretrained(directory)
    return model, directory


def assert_same_hidden_states(native: torch.nn.Module, model: torch.nn.Module) -> None:
    """Every layer at real tokens, to the bit: the same ops on the same weights."""
    ids, mask = padded_batch(LENGTHS, SMALL["vocab_size"])
    layers = list(range(model.config.num_hidden_layers + 1))
    got, expected = FastBert(native).hidden_states(ids, mask, layers), FastBert(model).hidden_states(ids, mask, layers)
    real = mask.bool()
    for layer in layers:
        assert torch.equal(got[layer][real], expected[layer][real]), layer


@pytest.mark.parametrize("kind", ["bert", "xlm-roberta"])
def test_a_saved_encoder_reads_into_the_same_hidden_states(kind, tmp_path):
    """BERT's positions count from 0, XLM-R's from its padding id past the padding."""
    model, directory = saved(kind, tmp_path)
    native = native_bert.read(directory)
    assert type(native) is native_bert.NativeBert and FastBert.supports(native)
    assert not any(p.requires_grad for p in native.parameters())
    assert_same_hidden_states(native, model)


def test_keys_left_to_the_family_defaults_read_as_transformers_reads_them(tmp_path):
    """A config written with only the values that differ from the class's (``use_diff``)."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=300, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=96)).eval()
    model.save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    for key in ("hidden_act", "layer_norm_eps", "type_vocab_size", "pad_token_id", "max_position_embeddings",
                "position_embedding_type", "is_decoder", "add_cross_attention"):
        config.pop(key, None)
    path.write_text(json.dumps(config))
    assert_same_hidden_states(native_bert.read(tmp_path), model)


@pytest.mark.parametrize("kind", ["bert", "roberta", "xlm-roberta"])
def test_a_config_of_its_model_type_alone_reads_as_transformers_defaults(kind, tmp_path):
    from transformers import AutoConfig

    (tmp_path / "config.json").write_text(json.dumps({"model_type": kind}))
    config, defaults = native_bert._config(tmp_path), AutoConfig.for_model(kind)
    for key in (*native_bert.FAMILY_DEFAULTS, "pad_token_id", "vocab_size"):
        assert getattr(config, key) == getattr(defaults, key, None), key


def test_a_task_model_s_checkpoint_loses_its_prefix_and_head(tmp_path):
    """A checkpoint of ``BertForMaskedLM`` keeps the encoder under ``bert.``, beside its head."""
    model, directory = saved("bert", tmp_path)
    weights = directory / native_weights.WEIGHTS
    state = {f"bert.{name}": tensor for name, tensor in load_file(weights).items()}
    state["cls.predictions.bias"] = torch.zeros(SMALL["vocab_size"])
    save_file(state, weights)
    assert_same_hidden_states(native_bert.read(directory), model)


def _mutate_config(directory: Path, **values) -> None:
    path = directory / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}))


def _drop_a_tensor(directory: Path) -> None:
    weights = directory / native_weights.WEIGHTS
    state = load_file(weights)
    state.pop(next(name for name in state if name.endswith("output.dense.bias")))
    save_file(state, weights)


@pytest.mark.parametrize("change", [
    pytest.param(lambda d: _mutate_config(d, model_type="deberta-v2"), id="another family"),
    pytest.param(lambda d: _mutate_config(d, hidden_act="gelu_new"), id="another activation"),
    pytest.param(lambda d: _mutate_config(d, position_embedding_type="relative_key"), id="relative positions"),
    pytest.param(lambda d: _mutate_config(d, is_decoder=True), id="a decoder"),
    pytest.param(lambda d: _mutate_config(d, dtype="float16"), id="another dtype in the config"),
    pytest.param(lambda d: save_file({k: v.half() for k, v in load_file(d / native_weights.WEIGHTS).items()},
                                     d / native_weights.WEIGHTS), id="fp16 weights"),
    pytest.param(_drop_a_tensor, id="a tensor missing"),
    pytest.param(lambda d: (d / native_weights.WEIGHTS).unlink(), id="no safetensors file"),
    pytest.param(lambda d: (d / "config.json").write_text("[1]"), id="a config that is no object"),
    pytest.param(lambda d: _mutate_config(d, quantization_config={"quant_method": "bitsandbytes"}),
                 id="quantized at load"),
])
def test_what_cannot_be_read_exactly_is_left_to_transformers(change, tmp_path):
    _, directory = saved("bert", tmp_path)
    change(directory)
    assert native_bert.read(directory) is None


def test_the_native_model_runs_only_the_fast_forward_and_says_how_to_get_the_other(tiny_bert_dir):
    loaded = load_model(str(tiny_bert_dir), "cpu")
    assert type(loaded.model) is native_bert.NativeBert
    encoder = Encoder(loaded)
    with pytest.raises(ModelLoadError, match=r"train=True"):
        encoder.pooled(["a text"], [1], grad=True)
    handle = loaded.model.encoder.layer[0].register_forward_hook(lambda *args: None)
    try:
        with pytest.raises(ModelLoadError, match=r"no hooks.*train=True"):
            encoder.encode(["a text"], 1)
    finally:
        handle.remove()
    trained = load_model(str(tiny_bert_dir), "cpu", train=True)
    assert type(trained.model).__name__ == "BertModel"
    assert trained.fingerprint == loaded.fingerprint


# ------------------------------------------------------------------ DeBERTa-v2


def saved_deberta(directory: Path, **overrides) -> tuple[torch.nn.Module, Path]:
    from transformers import DebertaV2Config, DebertaV2Model

    torch.manual_seed(2)
    values = dict(vocab_size=300, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                  relative_attention=True, position_buckets=256, pos_att_type=["p2c", "c2p"], share_att_key=True,
                  norm_rel_ebd="layer_norm", max_relative_positions=-1, position_biased_input=False,
                  max_position_embeddings=512, type_vocab_size=0, pad_token_id=0)
    model = DebertaV2Model(DebertaV2Config(**{**values, **overrides})).eval()
    model.save_pretrained(directory)
    return model, directory


@pytest.mark.parametrize("overrides", [
    pytest.param({}, id="mdeberta-v3's kind"),
    pytest.param({"pos_att_type": ["c2p"], "share_att_key": False, "position_buckets": 32}, id="c2p, own projection"),
    pytest.param({"pos_att_type": "p2c", "share_att_key": False, "position_buckets": -1, "norm_rel_ebd": "none"},
                 id="p2c, no buckets, no norm"),
    pytest.param({"position_biased_input": True, "type_vocab_size": 2, "embedding_size": 16},
                 id="absolute positions, token types, an embedding projection"),
])
def test_a_saved_deberta_reads_into_transformers_hidden_states(overrides, tmp_path):
    from test_fast_deberta import assert_matches_hf

    model, directory = saved_deberta(tmp_path, **overrides)
    native = native_deberta.read(directory)
    assert type(native) is native_deberta.NativeDebertaV2 and FastDebertaV2.supports(native)
    ids, mask = padded_batch([1, 5, 40, 70, 200], 300)
    assert_matches_hf(model, ids, mask, FastDebertaV2(native))
    layers = list(range(4))
    got, expected = FastDebertaV2(native).hidden_states(ids, mask, layers), FastDebertaV2(model).hidden_states(
        ids, mask, layers)
    for layer in layers:  # to the bit against the same forward on transformers' modules
        assert torch.equal(got[layer][mask.bool()], expected[layer][mask.bool()]), layer


def _as_torch_checkpoint(directory: Path, prefix: str, legacy_norms: bool, **save) -> None:
    """The safetensors file rewritten as a task model's ``pytorch_model.bin`` (mdeberta-v3-base ships one), with
    an older checkpoint's ``LayerNorm.gamma``/``beta`` names when ``legacy_norms``."""
    state = load_file(directory / native_weights.WEIGHTS)
    if legacy_norms:
        state = {name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): t
                 for name, t in state.items()}
    state = {f"{prefix}{name}": tensor for name, tensor in state.items()}
    state["lm_predictions.lm_head.bias"] = torch.zeros(3)
    torch.save(state, directory / native_weights.TORCH_WEIGHTS, **save)
    (directory / native_weights.WEIGHTS).unlink()


@pytest.mark.parametrize("legacy_norms", [False, True], ids=["layer norms as now", "gamma and beta"])
def test_a_torch_checkpoint_reads_as_transformers_reads_it(legacy_norms, tmp_path):
    from transformers import DebertaV2Model

    model, directory = saved_deberta(tmp_path)
    _as_torch_checkpoint(directory, "deberta.", legacy_norms)
    native = native_deberta.read(directory)
    assert type(native) is native_deberta.NativeDebertaV2
    hf = DebertaV2Model.from_pretrained(directory).eval()
    ids, mask = padded_batch([1, 5, 40, 70], 300)
    layers = list(range(4))
    got, expected = FastDebertaV2(native).hidden_states(ids, mask, layers), FastDebertaV2(hf).hidden_states(
        ids, mask, layers)
    for layer in layers:
        assert torch.equal(got[layer][mask.bool()], expected[layer][mask.bool()]), layer
    assert torch.equal(hf.embeddings.LayerNorm.weight, model.embeddings.LayerNorm.weight)


def test_a_torch_checkpoint_that_cannot_be_mapped_is_left_to_transformers(tmp_path):
    """torch's legacy (pre-zip) format, a pickle that holds more than tensors, and a ``.bin`` beside sharded
    safetensors."""
    _, directory = saved_deberta(tmp_path)
    _as_torch_checkpoint(directory, "", False, _use_new_zipfile_serialization=False)
    assert native_deberta.read(directory) is None
    torch.save({"state": {}, "step": 3}, directory / native_weights.TORCH_WEIGHTS)
    assert native_deberta.read(directory) is None
    _, directory = saved_deberta(tmp_path / "sharded")
    _as_torch_checkpoint(directory, "", False)
    assert native_deberta.read(directory) is not None
    (directory / native_weights.SHARDED_INDEX).write_text("{}")  # transformers would read the shards instead
    assert native_deberta.read(directory) is None


@pytest.mark.parametrize("length, buckets, most", [(1, 256, 512), (300, 256, 512), (600, 32, 512), (70, -1, 512),
                                                   (513, 256, 128)])
def test_relative_positions_are_transformers_buckets(length, buckets, most):
    from transformers.models.deberta_v2.modeling_deberta_v2 import build_relative_position

    probe = torch.empty((length, 1))
    expected = build_relative_position(probe, probe, bucket_size=buckets, max_position=most)[0]
    assert torch.equal(relative_positions(length, buckets, most, probe.device), expected)


def test_deberta_defaults_are_transformers(tmp_path):
    from transformers import AutoConfig, DebertaV2Config, DebertaV2Model

    defaults = AutoConfig.for_model("deberta-v2")
    modules = DebertaV2Model(DebertaV2Config(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=8, relative_attention=True))
    assumed = {"position_buckets": modules.encoder.position_buckets, "conv_kernel_size": 0,
               "share_att_key": modules.encoder.layer[0].attention.self.share_att_key,
               "norm_rel_ebd": "|".join(modules.encoder.norm_rel_ebd)}
    assert modules.encoder.conv is None
    for key, value in native_deberta.FAMILY_DEFAULTS.items():
        assert (assumed[key] if key in assumed else getattr(defaults, key)) == value, key


@pytest.mark.parametrize("overrides", [
    pytest.param({"relative_attention": False}, id="no relative attention"),
    pytest.param({"pos_att_type": ["p2p"]}, id="another kind of position attention"),
    pytest.param({"conv_kernel_size": 3}, id="a convolution layer"),
    pytest.param({"hidden_act": "gelu_new"}, id="another activation"),
])
def test_deberta_that_cannot_be_read_exactly_is_left_to_transformers(overrides, tmp_path):
    _, directory = saved_deberta(tmp_path)
    _mutate_config(directory, **overrides)
    assert native_deberta.read(directory) is None


def test_the_tiny_deberta_loads_natively_to_transformers_vectors(tiny_deberta_dir, sentences):
    native, hf = load_model(str(tiny_deberta_dir), "cpu"), load_model(str(tiny_deberta_dir), "cpu", train=True)
    assert type(native.model) is native_deberta.NativeDebertaV2 and type(hf.model).__name__ == "DebertaV2Model"
    assert native.fingerprint == hf.fingerprint
    texts = [" ".join(sentences[i:i + n]) for i, n in [(0, 1), (5, 2), (40, 3), (100, 4), (200, 2)]]
    got = Encoder(native, batch_size=2).encode(texts, 3)
    np.testing.assert_array_equal(got, Encoder(hf, batch_size=2).encode(texts, 3))


# ------------------------------------------------------------------ the real multilingual encoder


@pytest.fixture(scope="module")
def e5_both(e5_small_dir):
    return load_model(str(e5_small_dir), "cpu"), load_model(str(e5_small_dir), "cpu", train=True)


@pytest.fixture(scope="module")
def multilingual_texts() -> list[str]:
    from conftest import sib_sentences

    texts = [s for lang in ("deu_Latn", "arb_Arab", "zho_Hans", "hin_Deva", "tha_Thai", "kor_Hang")
             for s in sib_sentences(lang, limit=6)]
    return texts + ["", " ", "a  b\t\nc", "<mask> </s> <s> <pad>", "😀 ½ Ⅻ ﬁ ｆｕｌｌ", "NOOOOOOO",
                    "Der schnelle braune Fuchs springt. " * 120]


def test_e5_loads_without_transformers(e5_small_dir):
    """The command line's hybrid search pays no transformers import (3-4 s of CPU) for e5, nor the hub
    client's (0.15 s): its pooling and prompts come from its directory."""
    code = ("import sys; from xlsearch.indexer.encoding.model import load_model;"
            "from xlsearch.indexer.encoding.encoder import Encoder;"
            "from xlsearch.indexer.encoding.sentence_config import model_defaults;"
            f"loaded = load_model({str(e5_small_dir)!r}, 'cpu'); Encoder(loaded).encode(['query: 火山'], 12);"
            "defaults = model_defaults(loaded);"
            "print(type(loaded.model).__name__, type(loaded.tokenizer).__name__, 'transformers' in sys.modules,"
            " 'huggingface_hub' in sys.modules, defaults.query_prompt == 'query: ')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["NativeBert", "FileTokenizer", "False", "False", "True"]


def test_e5_tokenizes_as_transformers_does(e5_both, multilingual_texts):
    native, hf = (loaded.tokenizer for loaded in e5_both)
    assert type(native) is native_tokenizer.FileTokenizer
    assert (native.pad_token_id, native.model_max_length) == (hf.pad_token_id, hf.model_max_length)
    assert native.num_special_tokens_to_add(pair=False) == hf.num_special_tokens_to_add(pair=False)
    for length in (3, 16, 512):  # the encoder's call: truncated, with special tokens and their mask
        options = dict(add_special_tokens=True, truncation=True, max_length=length, return_special_tokens_mask=True)
        got, expected = native(multilingual_texts, **options), hf(multilingual_texts, **options)
        assert got["input_ids"] == expected["input_ids"]
        assert got["special_tokens_mask"] == expected["special_tokens_mask"]
    for text in multilingual_texts:  # chunking's call: one text, offsets, no special tokens
        options = dict(add_special_tokens=False, return_offsets_mapping=True)
        got, expected = native(text, **options, verbose=False), hf(text, **options, verbose=False)
        assert got["input_ids"] == expected["input_ids"]
        assert [tuple(o) for o in got["offset_mapping"]] == [tuple(o) for o in expected["offset_mapping"]]


def test_e5_vectors_equal_transformers_loading(e5_both, multilingual_texts):
    native, hf = e5_both
    assert native.fingerprint == hf.fingerprint
    got = Encoder(native, batch_size=8).encode(multilingual_texts, 12, prompt="query: ")
    np.testing.assert_array_equal(got, Encoder(hf, batch_size=8).encode(multilingual_texts, 12, prompt="query: "))


def _tokenizer_copy(e5_small_dir: Path, directory: Path, files: dict | None = None, **config_values) -> Path:
    """e5's tokenizer files (and config.json) in ``directory``, the tokenizer config updated, ``files`` added."""
    directory.mkdir()
    for name in ("tokenizer.json", "special_tokens_map.json", "config.json"):
        shutil.copy(e5_small_dir / name, directory / name)
    config = json.loads((e5_small_dir / "tokenizer_config.json").read_text())
    (directory / "tokenizer_config.json").write_text(json.dumps({**config, **config_values}))
    for name, value in (files or {}).items():
        (directory / name).write_text(json.dumps(value))
    return directory


def _added(content: str, **fields) -> dict:
    return {"content": content, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
            "special": True, **fields}


def _e5_added_tokens(e5_small_dir: Path) -> dict:
    tokens = json.loads((e5_small_dir / "tokenizer.json").read_text())["added_tokens"]
    return {str(t["id"]): {field: t[field] for field in native_tokenizer._ADDED_TOKEN_FIELDS} for t in tokens}


@pytest.mark.parametrize("values", [
    pytest.param({"tokenizer_class": "XLMRobertaTokenizer"}, id="a class that rebuilds its pipeline"),
    pytest.param({"add_bos_token": False}, id="a key that changes encoding"),
    pytest.param({"files": {"special_tokens_map.json": {"mask_token": "<extra>"}}},
                 id="a special token the file lacks"),
    pytest.param({"truncation_side": "middle"}, id="a truncation side tokenizers does not have"),
    pytest.param({"files": {"added_tokens.json": {"<foo>": 250037}}}, id="added_tokens.json"),
    pytest.param({"files": {"special_tokens_map.json": {"additional_special_tokens": ["<foo>"]}}},
                 id="extra special tokens in the map"),
    pytest.param({"files": {"special_tokens_map.json": [1]}}, id="a map that is no object"),
    pytest.param({"files": {"config.json": {"model_type": "qwen2"}}}, id="a model type AutoTokenizer redirects"),
    pytest.param({"added_tokens_decoder": {"250001": _added("<mask>", lstrip=False)}},
                 id="an added token described otherwise than in the file"),
])
def test_tokenizers_transformers_would_change_are_left_to_it(e5_small_dir, tmp_path, values):
    values = dict(values)
    directory = _tokenizer_copy(e5_small_dir, tmp_path / "copy", values.pop("files", None), **values)
    assert native_tokenizer.read(directory) is None


@pytest.mark.parametrize("values", [
    pytest.param({"truncation_side": "left"}, id="truncated from the left"),
    pytest.param({"files": {"special_tokens_map.json": {"pad_token": "<unk>"}}}, id="the map overrides the config"),
    pytest.param({"added_tokens_decoder": "E5", "pad_token": None,
                  "files": {"special_tokens_map.json": {"pad_token": "<unk>"}}},
                 id="no map beside added_tokens_decoder"),
    pytest.param({"is_local": True, "local_files_only": True}, id="the keys transformers 5 saves"),
])
def test_what_it_reads_it_reads_as_transformers_does(e5_small_dir, tmp_path, values, multilingual_texts):
    from transformers import AutoTokenizer

    values = dict(values)
    if values.get("added_tokens_decoder") == "E5":
        values["added_tokens_decoder"] = _e5_added_tokens(e5_small_dir)
    directory = _tokenizer_copy(e5_small_dir, tmp_path / "copy", values.pop("files", None), **values)
    native, hf = native_tokenizer.read(directory), AutoTokenizer.from_pretrained(directory)
    assert native is not None
    assert native.pad_token_id == hf.pad_token_id and len(native) == len(hf)
    for length in (1, 2, 9):  # 1: fewer than the special tokens
        options = dict(add_special_tokens=True, truncation=True, max_length=length, return_special_tokens_mask=True)
        assert native(multilingual_texts, **options) == {k: v for k, v in hf(multilingual_texts, **options).items()
                                                         if k in ("input_ids", "special_tokens_mask")}


def test_the_tiny_bert_s_own_tokenizer_class_stays_with_transformers(tiny_bert_dir):
    assert native_tokenizer.read(tiny_bert_dir) is None


# ------------------------------------------------------------------ tokenizers transformers built, kept


@pytest.fixture
def own_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XLSEARCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / tokenizer_cache.CACHE


def assert_tokenizes_alike(native, hf, texts: list[str]) -> None:
    """The encoder's call (truncated, special tokens and their mask) and chunking's (offsets, none added)."""
    assert (native.pad_token_id, native.model_max_length, len(native)) == (hf.pad_token_id, hf.model_max_length,
                                                                         len(hf))
    assert native.num_special_tokens_to_add(pair=False) == hf.num_special_tokens_to_add(pair=False)
    for length in (1, 3, 16, 512, None):
        options = dict(add_special_tokens=True, truncation=True, max_length=length, return_special_tokens_mask=True)
        got, expected = native(texts, **options), hf(texts, **options, verbose=False)
        assert got["input_ids"] == expected["input_ids"], length
        assert got["special_tokens_mask"] == expected["special_tokens_mask"], length
    for text in texts:
        options = dict(add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        got, expected = native(text, **options), hf(text, **options)
        assert got["input_ids"] == expected["input_ids"]
        assert [tuple(o) for o in got["offset_mapping"]] == [tuple(o) for o in expected["offset_mapping"]]


@pytest.mark.parametrize("fixture, built_by", [("tiny_deberta_dir", "DebertaV2Tokenizer"),
                                               ("tiny_bert_dir", "BertTokenizer")],
                         ids=["spm.model, as mdeberta-v3 ships", "vocab.txt, lower-cased"])
def test_a_tokenizer_transformers_built_is_kept_and_tokenizes_alike(fixture, built_by, request, own_cache,
                                                                     multilingual_texts, tmp_path):
    source = request.getfixturevalue(fixture)
    directory = tmp_path / "model"
    shutil.copytree(source, directory)
    first = load_model(str(directory), "cpu")
    assert type(first.tokenizer).__name__ == built_by
    assert len(list(own_cache.glob("*.settings.json"))) == 1
    again = load_model(str(directory), "cpu")
    assert type(again.tokenizer) is native_tokenizer.FileTokenizer
    assert again.fingerprint == first.fingerprint
    assert_tokenizes_alike(again.tokenizer, first.tokenizer, multilingual_texts)
    texts = multilingual_texts[:8]
    np.testing.assert_array_equal(Encoder(again).encode(texts, 2), Encoder(first).encode(texts, 2))


def test_a_kept_tokenizer_loads_without_transformers(tiny_deberta_dir, own_cache):
    """mdeberta-v3's layout (``spm.model``, a DeBERTa-v2) loads with no transformers import once its tokenizer
    is kept."""
    code = ("import sys; from xlsearch.indexer.encoding.model import load_model;"
            f"loaded = load_model({str(tiny_deberta_dir)!r}, 'cpu');"
            "print(type(loaded.model).__name__, type(loaded.tokenizer).__name__, 'transformers' in sys.modules)")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
            for _ in range(2)]
    assert runs == [["NativeDebertaV2", "DebertaV2Tokenizer", "True"], ["NativeDebertaV2", "FileTokenizer", "False"]]


@pytest.mark.parametrize("change", [
    pytest.param(lambda d: _mutate_tokenizer_config(d, truncation_side="left"), id="the tokenizer config"),
    pytest.param(lambda d: _mutate_tokenizer_config(d, model_max_length=7), id="the longest input"),
    pytest.param(lambda d: (d / "special_tokens_map.json").write_text(json.dumps({"pad_token": "[UNK]"})),
                 id="a file added"),
    pytest.param(lambda d: (d / "spm.model").write_bytes((d / "spm.model").read_bytes() + b"\x00"),
                 id="the vocabulary"),
])
def test_a_changed_directory_builds_its_tokenizer_again(change, tiny_deberta_dir, own_cache, tmp_path,
                                                         multilingual_texts):
    from transformers import AutoTokenizer

    directory = tmp_path / "model"
    shutil.copytree(tiny_deberta_dir, directory)
    load_model(str(directory), "cpu")
    before = tokenizer_cache.Entry.of(directory).name
    change(directory)
    try:
        expected = AutoTokenizer.from_pretrained(directory)
    except Exception:  # noqa: BLE001 - a vocabulary transformers cannot read fails the load as well
        with pytest.raises(ModelLoadError):
            load_model(str(directory), "cpu")
        return
    assert tokenizer_cache.Entry.of(directory).name != before
    assert type(load_model(str(directory), "cpu").tokenizer).__name__ == "DebertaV2Tokenizer"
    assert_tokenizes_alike(load_model(str(directory), "cpu").tokenizer, expected, multilingual_texts)


def _mutate_tokenizer_config(directory: Path, **values) -> None:
    path = directory / "tokenizer_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}))


@pytest.mark.parametrize("damage", [
    pytest.param(lambda p: p.write_text("{"), id="a truncated tokenizer file"),
    pytest.param(lambda p: p.with_name(p.name.replace(".json", ".settings.json")).write_text('{"pad_token_id": "x"}'),
                 id="settings of the wrong type"),
    pytest.param(lambda p: p.with_name(p.name.replace(".json", ".settings.json")).unlink(),
                 id="settings never written"),
])
def test_a_damaged_entry_is_built_again(damage, tiny_deberta_dir, own_cache):
    first = load_model(str(tiny_deberta_dir), "cpu")
    entry = own_cache / f"{tokenizer_cache.Entry.of(tiny_deberta_dir).name}.json"
    damage(entry)
    assert type(load_model(str(tiny_deberta_dir), "cpu").tokenizer).__name__ == "DebertaV2Tokenizer"
    assert type(load_model(str(tiny_deberta_dir), "cpu").tokenizer) is native_tokenizer.FileTokenizer
    assert first.fingerprint == load_model(str(tiny_deberta_dir), "cpu").fingerprint


def test_an_unwritable_cache_only_costs_the_saving(tiny_deberta_dir, tmp_path, monkeypatch):
    blocker = tmp_path / "a file"
    blocker.write_text("")
    monkeypatch.setenv("XLSEARCH_CACHE", str(blocker))
    for _ in range(2):
        assert type(load_model(str(tiny_deberta_dir), "cpu").tokenizer).__name__ == "DebertaV2Tokenizer"


def test_entries_unused_for_months_are_pruned_when_another_is_stored(tiny_deberta_dir, own_cache, tmp_path):
    import time

    load_model(str(tiny_deberta_dir), "cpu")
    used = tokenizer_cache.Entry.of(tiny_deberta_dir).name
    own_cache.joinpath("stale.json").write_text("{}")
    own_cache.joinpath("stale.settings.json").write_text("{}")
    own_cache.joinpath(".stale.json.tmp123").write_text("")  # an interrupted write
    long_ago = time.time() - (tokenizer_cache.UNUSED_DAYS + 1) * 86400
    for path in own_cache.iterdir():
        os.utime(path, (long_ago, long_ago))
    load_model(str(tiny_deberta_dir), "cpu")  # a load marks its entry used
    own_cache.joinpath("rewritten.settings.json").write_text("{}")
    os.utime(own_cache / "rewritten.settings.json", (long_ago, long_ago))
    own_cache.joinpath("rewritten.json").write_text("{}")  # a writer between its two files: kept
    other = tmp_path / "other"
    shutil.copytree(tiny_deberta_dir, other)
    _mutate_tokenizer_config(other, model_max_length=64)
    load_model(str(other), "cpu")  # stores an entry, and prunes
    assert sorted(p.name for p in own_cache.iterdir()) == sorted(
        f"{name}{suffix}" for name in (used, tokenizer_cache.Entry.of(other).name, "rewritten")
        for suffix in (".json", ".settings.json"))


def test_only_classes_that_encode_through_their_backend_are_kept():
    import transformers

    for name in ("DebertaV2Tokenizer", "XLMRobertaTokenizer", "BertTokenizer", "CamembertTokenizer",
                 "PreTrainedTokenizerFast"):
        assert tokenizer_cache.encodes_through_backend(getattr(transformers, name)), name
    for name in ("LayoutXLMTokenizer", "NllbTokenizer", "MPNetTokenizer"):  # own __call__, prefixes, a property
        assert not tokenizer_cache.encodes_through_backend(getattr(transformers, name)), name
    assert not tokenizer_cache.encodes_through_backend(native_tokenizer.FileTokenizer)


def test_a_tokenizer_saved_by_transformers_reads_back_natively(e5_both, e5_small_dir, tmp_path, multilingual_texts):
    """What ``xlsearch finetune`` writes beside a fine-tuned e5 (transformers 5's save) stays on the fast load,
    though training's last call left transformers' truncation switched on."""
    from xlsearch.indexer.tasks.finetune import save_tokenizer

    hf = e5_both[1].tokenizer
    hf(["a text"], truncation=True, max_length=16)
    assert hf.backend_tokenizer.truncation is not None
    save_tokenizer(hf, tmp_path)
    shutil.copy(e5_small_dir / "config.json", tmp_path / "config.json")
    native = native_tokenizer.read(tmp_path)
    assert native is not None
    options = dict(add_special_tokens=True, truncation=True, max_length=16, return_special_tokens_mask=True)
    assert native(multilingual_texts, **options) == e5_both[0].tokenizer(multilingual_texts, **options)


# ------------------------------------------------------------------ hub ids, from the Hugging Face cache

HUB_ID = "xlsearch-test/tiny-deberta"


@pytest.fixture
def hub_cache(tiny_deberta_dir, tmp_path) -> dict[str, str]:
    """The tiny DeBERTa laid out as the Hugging Face cache holds a download (blobs, a snapshot of links to
    them, ``refs/main``), and the environment of a process that finds it there, offline."""
    import hashlib

    repo = tmp_path / "hub" / f"models--{HUB_ID.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for path in tiny_deberta_dir.iterdir():
        blob = hashlib.sha256(path.read_bytes()).hexdigest()
        shutil.copy(path, repo / "blobs" / blob)
        (repo / "snapshots" / commit / path.name).symlink_to(Path("../../blobs") / blob)
    return {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1",
            "XLSEARCH_CACHE": str(tmp_path / "cache")}


def _in_process(env: dict[str, str], code: str) -> list:
    done = subprocess.run([sys.executable, "-c", f"import json, sys\n{code}"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


LOAD = ("from xlsearch.indexer.encoding.model import load_model\n"
        "loaded = load_model({name!r}, 'cpu', train={train})\n"
        "print(json.dumps([type(loaded.model).__name__, type(loaded.tokenizer).__name__,"
        " 'transformers' in sys.modules, loaded.fingerprint, loaded.name]))")


def test_a_cached_hub_id_loads_from_its_snapshot_identified_by_its_commit(hub_cache, tiny_deberta_dir):
    """The product's default model is a hub id: once downloaded, it loads from the cache's snapshot as a local
    copy does, and its fingerprint is its commit's, whichever loader read it and whatever else the cache gains."""
    runs = [_in_process(hub_cache, LOAD.format(name=HUB_ID, train=False)) for _ in range(2)]
    trained = _in_process(hub_cache, LOAD.format(name=HUB_ID, train=True))
    identity = runs[0][3]
    assert runs[0] == ["DebertaV2Model", "DebertaV2Tokenizer", True, identity, HUB_ID]  # the tokenizer is kept
    assert runs[1] == ["NativeDebertaV2", "FileTokenizer", False, identity, HUB_ID]
    assert trained == ["DebertaV2Model", "DebertaV2Tokenizer", True, identity, HUB_ID]
    snapshot = next(Path(hub_cache["HF_HUB_CACHE"]).glob("models--*/snapshots/*"))
    (snapshot / "README.md").write_text("a file another download brought")
    assert _in_process(hub_cache, LOAD.format(name=HUB_ID, train=False))[3] == identity
    assert identity != load_model(str(tiny_deberta_dir), "cpu").fingerprint


def test_a_hub_id_whose_snapshot_cannot_be_read_natively_loads_both_halves_through_transformers(hub_cache):
    """A tokenizer read from one snapshot and a model that transformers may fetch at another commit never
    meet: a hub id's model that cannot be read natively takes its tokenizer from transformers as well."""
    snapshot = next(Path(hub_cache["HF_HUB_CACHE"]).glob("models--*/snapshots/*"))
    _in_process(hub_cache, LOAD.format(name=HUB_ID, train=False))  # the tokenizer is kept
    config = json.loads((snapshot / "config.json").read_text())
    (snapshot / "config.json").unlink()
    (snapshot / "config.json").write_text(json.dumps({**config, "hidden_act": "gelu_new"}))
    assert _in_process(hub_cache, LOAD.format(name=HUB_ID, train=False))[:3] == [
        "DebertaV2Model", "DebertaV2Tokenizer", True]


def test_a_hub_id_s_sentence_transformers_files_come_from_its_cache(hub_cache, tmp_path):
    """Read from a snapshot, a hub id still finds its pooling and prompts where the cache has them, and asks
    nothing of an offline hub where it does not."""
    code = (f"from xlsearch.indexer.encoding.model import load_model\n"
            f"from xlsearch.indexer.encoding.sentence_config import _model_file\n"
            f"loaded = load_model({HUB_ID!r}, 'cpu')\n"
            "print(json.dumps([str(_model_file(loaded, 'config.json')), str(_model_file(loaded, 'modules.json'))]))")
    config, modules = _in_process(hub_cache, code)
    assert config.endswith("/config.json") and "snapshots" in config and modules == "None"
def test_an_index_that_recorded_a_hub_id_s_former_fingerprint_stays_usable(hub_cache):
    """Before, a hub id's fingerprint hashed transformers' config (naming the installed transformers): an index
    built then is recognised once by loading the model as it was loaded then, and from a file after that."""
    code = f"""
from transformers import AutoModel
from xlsearch.indexer.compat import check_compatible
from xlsearch.indexer.config import IndexConfig, Manifest
from xlsearch.indexer.encoding.encoder import Encoder
from xlsearch.indexer.encoding.fingerprint import config_fingerprint
from xlsearch.indexer.encoding.hub import from_pretrained
from xlsearch.indexer.encoding.model import load_model
from xlsearch.indexer.errors import IndexMismatchError
encoder = Encoder(load_model({HUB_ID!r}, 'cpu'))
former = config_fingerprint(from_pretrained(AutoModel, {HUB_ID!r}).config, {HUB_ID!r})
answers = [former != encoder.loaded.fingerprint]
for recorded, name in ((former, {HUB_ID!r}), ("0" * 16, {HUB_ID!r}), (former, "another/model")):
    manifest = Manifest(config=IndexConfig(model_name=name), model_fingerprint=recorded, dim=32, num_layers=3)
    try:
        check_compatible(manifest, encoder)
        answers.append("usable")
    except IndexMismatchError as exc:
        answers.append(str(exc).split(";")[0])
print(json.dumps(answers + [former]))
"""
    first = _in_process(hub_cache, code)
    former = first[-1]
    assert first[:2] == [True, "usable"]
    assert first[2].startswith(f"the index was built with model '{HUB_ID}' (fingerprint 0000000000000000)")
    assert first[3].startswith("the index was built with model 'another/model'")
    later = _in_process(hub_cache, f"""
from xlsearch.indexer.compat import check_compatible
from xlsearch.indexer.config import IndexConfig, Manifest
from xlsearch.indexer.encoding.encoder import Encoder
from xlsearch.indexer.encoding.model import load_model
encoder = Encoder(load_model({HUB_ID!r}, 'cpu'))
check_compatible(Manifest(config=IndexConfig(model_name={HUB_ID!r}), model_fingerprint={former!r}, dim=32,
                          num_layers=3), encoder)
print(json.dumps(['usable', 'transformers' in sys.modules]))
""")
    assert later == ["usable", False]
