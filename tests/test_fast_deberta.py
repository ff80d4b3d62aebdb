"""FastDebertaV2: the same hidden states as transformers' eager DeBERTa-v2 forward, less work."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import SAMPLE
from torch.overrides import TorchFunctionMode

from xlsearch.api.cli.main import main
from xlsearch.indexer.encoding.encoder import Encoder
from xlsearch.indexer.errors import XlsearchError
from xlsearch.indexer.encoding.fast_deberta import FastDebertaV2, supports
from xlsearch.indexer.encoding.model import LoadedModel, load_model

ATOL = 1e-5


@pytest.fixture
def model(tiny_transformers_model):
    """A private copy of the tiny DeBERTa-v2 (3 layers, hidden 32, 256 position buckets)."""
    return copy.deepcopy(tiny_transformers_model.model).eval()


def padded_batch(lengths: list[int], vocab: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.zeros((len(lengths), max(lengths)), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(5, vocab, (n,), generator=generator)
        mask[row, :n] = 1
    return ids, mask


def assert_matches_hf(model, ids: torch.Tensor, mask: torch.Tensor, fast: FastDebertaV2 | None = None) -> None:
    """Every layer's hidden states at real tokens equal HF's ``output_hidden_states``."""
    layers = list(range(model.config.num_hidden_layers + 1))
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    got = (fast or FastDebertaV2(model)).hidden_states(ids, mask, layers)
    real = mask.bool()
    for layer in layers:
        np.testing.assert_allclose(got[layer][real].numpy(), expected[layer][real].numpy(), atol=ATOL,
                                   err_msg=f"layer {layer}, lengths {mask.sum(1).tolist()}")


def test_tiny_model_takes_the_fast_path(tiny_model):
    assert supports(tiny_model.model)
    assert Encoder(tiny_model).uses_fast_path


def test_padded_batch_every_layer(model):
    ids, mask = padded_batch([300, 1, 17, 128, 129, 130, 257, 2], model.config.vocab_size)
    assert_matches_hf(model, ids, mask)


def test_left_padding_holes_and_an_empty_row(model):
    ids, mask = padded_batch([150, 150, 150, 150], model.config.vocab_size)
    mask[0, :100] = 0  # left padding
    mask[1, 10:20] = 0  # a hole
    mask[2, 140:] = 0
    mask[3] = 0  # nothing at all
    expected_rows = mask[:3]
    with torch.no_grad():
        expected = model(input_ids=ids[:3], attention_mask=expected_rows, output_hidden_states=True).hidden_states
    got = FastDebertaV2(model).hidden_states(ids, mask, [0, 1, 3])
    real = expected_rows.bool()
    for layer in (0, 1, 3):
        np.testing.assert_allclose(got[layer][:3][real].numpy(), expected[layer][real].numpy(), atol=ATOL)
    assert torch.count_nonzero(got[3][3]) == 0


@pytest.mark.parametrize("top", [20, 60, 127, 128, 129, 140, 200, 256, 300])
def test_lengths_1_to_300(model, top):
    """Every length 1..300 occurs as a real row, under batch widths on both sides of the log buckets (>128)."""
    start = {20: 1, 60: 21, 127: 61, 128: 126, 129: 127, 140: 130, 200: 141, 256: 201, 300: 257}[top]
    ids, mask = padded_batch(list(range(start, top + 1)), model.config.vocab_size, seed=top)
    assert_matches_hf(model, ids, mask)


@pytest.mark.parametrize("length", [1, 2, 3, 64, 128, 129, 130, 255, 256, 257, 300])
def test_single_unpadded_sequences(model, length):
    ids, mask = padded_batch([length], model.config.vocab_size, seed=length)
    assert_matches_hf(model, ids, mask)


@pytest.mark.parametrize("kinds, buckets, shared", [(["c2p"], 256, True), (["p2c"], 256, True),
                                                     (["p2c", "c2p"], 32, False), (["c2p"], -1, True)])
def test_other_relative_attention_variants(kinds, buckets, shared):
    """One kind of position attention only, separate position projections, fewer buckets, none at all."""
    from transformers import DebertaV2Config, DebertaV2Model

    torch.manual_seed(1)
    config = DebertaV2Config(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, relative_attention=True, position_buckets=buckets,
                             pos_att_type=kinds, share_att_key=shared, norm_rel_ebd="layer_norm",
                             max_relative_positions=-1, position_biased_input=False, max_position_embeddings=512,
                             type_vocab_size=0, pad_token_id=0)
    model = DebertaV2Model(config).eval()
    assert supports(model)
    ids, mask = padded_batch([1, 5, 40, 70, 200], 100, seed=len(kinds) + buckets)
    assert_matches_hf(model, ids, mask)


def test_encoder_vectors_equal_hf_for_long_texts(tiny_model, tiny_transformers_model, sentences):
    """Pooled, normalised vectors through ``Encoder`` (fast path, the model read without transformers) equal the
    HF reference, texts up to ~300 tokens."""
    texts = [" ".join(sentences[i:i + n]) for i, n in [(0, 1), (5, 2), (40, 3), (100, 4), (200, 2), (300, 1)]]
    encoder = Encoder(tiny_model, batch_size=3)
    reference = tiny_transformers_model
    tokens = reference.tokenizer(texts, padding=True, return_tensors="pt", return_special_tokens_mask=True)
    assert 200 < tokens["attention_mask"].sum(1).max() <= 512
    with torch.no_grad():
        states = reference.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                                  output_hidden_states=True).hidden_states
    mask = (tokens["attention_mask"] * (1 - tokens["special_tokens_mask"])).unsqueeze(-1).float()
    for layer in range(tiny_model.num_layers + 1):
        expected = F.normalize((states[layer] * mask).sum(1) / mask.sum(1), dim=-1).numpy()
        np.testing.assert_allclose(encoder.encode(texts, layer), expected, atol=ATOL)


def test_cache_is_invalidated_when_weights_change(model):
    fast = FastDebertaV2(model)
    ids, mask = padded_batch([40, 9, 150], model.config.vocab_size)
    before = fast.hidden_states(ids, mask, [3])[3].clone()  # fills the position cache
    with torch.no_grad():
        model.encoder.rel_embeddings.weight.mul_(3.0)
    assert_matches_hf(model, ids, mask, fast)
    with torch.no_grad():
        model.encoder.layer[1].attention.self.key_proj.weight.add_(0.05)
        model.encoder.LayerNorm.bias.add_(0.5)
    assert_matches_hf(model, ids, mask, fast)
    other = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.mul_(0.9)
    model.load_state_dict(other.state_dict())
    assert_matches_hf(model, ids, mask, fast)
    assert not torch.allclose(fast.hidden_states(ids, mask, [3])[3], before, atol=1e-3)


def test_cache_follows_replaced_parameters(model):
    fast = FastDebertaV2(model)
    ids, mask = padded_batch([12, 30], model.config.vocab_size)
    fast.hidden_states(ids, mask, [2])
    attention = model.encoder.layer[0].attention.self
    attention.query_proj.weight = torch.nn.Parameter(attention.query_proj.weight.detach() * 2)
    assert_matches_hf(model, ids, mask, fast)


def test_training_mode_and_hooks_fall_back_to_the_hf_forward(model, tiny_model):
    encoder = Encoder(LoadedModel("tiny", model, tiny_model.tokenizer, "fp", torch.device("cpu")))
    model.train()
    assert not encoder.uses_fast_path
    model.eval()
    assert encoder.uses_fast_path
    handle = model.encoder.layer[1].register_forward_pre_hook(lambda module, args: None)
    assert not encoder.uses_fast_path
    handle.remove()
    assert encoder.uses_fast_path


class _TensorsUsed(TorchFunctionMode):
    """Records the id of every tensor passed to a torch function."""

    def __init__(self):
        super().__init__()
        self.ids: set[int] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        for value in [*args, *(kwargs or {}).values()]:
            if isinstance(value, torch.Tensor):
                self.ids.add(id(value))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_layers_above_the_pooled_one_are_not_computed(tiny_model, layer):
    owner = {id(p): i for i, block in enumerate(tiny_model.model.encoder.layer) for p in block.parameters()}
    encoder = Encoder(tiny_model, batch_size=2)
    encoder.encode(["warm the position cache", "x"], tiny_model.num_layers)
    with _TensorsUsed() as recorder:
        encoder.encode(["Hello world", "你好，世界。今天天气很好。", "x"], layer)
    used = {owner[i] for i in recorder.ids if i in owner}
    assert used == set(range(layer))


def test_other_model_types_are_not_taken_for_deberta(tiny_bert_dir):
    bert = load_model(str(tiny_bert_dir), "cpu")
    assert not supports(bert.model)
    assert not isinstance(Encoder(bert)._fast, FastDebertaV2)


@pytest.mark.parametrize("which", ["deberta", "bert"])
def test_bf16_is_close_to_fp32(which, tiny_model, tiny_bert_dir, sentences):
    loaded = tiny_model if which == "deberta" else load_model(str(tiny_bert_dir), "cpu")
    texts = sentences[:12]
    exact = Encoder(loaded, batch_size=4).encode(texts, 2)
    reduced = Encoder(loaded, batch_size=4, precision="bf16").encode(texts, 2)
    assert reduced.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(reduced, axis=1), 1.0, atol=1e-5)
    assert (exact * reduced).sum(1).min() > 0.99


def test_unknown_precision_names_the_choices(tiny_model):
    with pytest.raises(XlsearchError, match="fp32, bf16, fp16, int8"):
        Encoder(tiny_model, precision="int4")


def test_cli_precision_option(tmp_path, monkeypatch, tiny_deberta_dir, capsys):
    monkeypatch.setenv("XLSEARCH_MODEL", str(tiny_deberta_dir))
    index = str(tmp_path / "idx")
    assert main(["index", str(SAMPLE), "--index", index, "--layer", "2", "--precision", "bf16"]) == 0
    capsys.readouterr()
    assert json.loads((tmp_path / "idx" / "manifest.json").read_text())["config"]["precision"] == "bf16"
    assert main(["info", "--index", index]) == 0
    assert "dimensions, bf16, flat-ip" in capsys.readouterr().out
    assert main(["search", "--index", index, "green tea", "-k", "3", "--json", "--precision", "bf16"]) == 0
    assert len(json.loads(capsys.readouterr().out)["hits"]) == 3
    assert main(["search", "--index", index, "green tea", "-k", "3", "--json"]) == 0  # the index's own precision
    assert len(json.loads(capsys.readouterr().out)["hits"]) == 3
    assert main(["search", "--index", index, "green tea", "--precision", "fp32"]) == 1  # never compared across
    assert "computed in bf16, not fp32" in capsys.readouterr().err
    assert main(["index", str(SAMPLE), "--index", index, "--precision", "int8"]) == 1  # nor mixed in one index
    assert "computed in bf16, not int8" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        main(["search", "--index", index, "tea", "--precision", "fp8"])
    assert done.value.code == 2
