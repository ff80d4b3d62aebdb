"""The fp32 linear kernel choice (MKL or oneDNN): either one computes F.linear, the choice is measured or forced."""
from __future__ import annotations

import contextlib
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import ElectraConfig, ElectraModel

from xlsearch.indexer.encoding import linear_kernel
from xlsearch.indexer.encoding.encoder import Encoder
from xlsearch.indexer.encoding.fast_deberta import FastDebertaV2
from xlsearch.indexer.encoding.model import LoadedModel, load_model

KERNELS = [linear_kernel.MKL] + ([linear_kernel.ONEDNN] if linear_kernel.onednn_available() else [])


@pytest.fixture(autouse=True)
def fresh_choice(monkeypatch):
    monkeypatch.delenv(linear_kernel.ENV, raising=False)
    linear_kernel.reset()
    yield
    linear_kernel.reset()


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("rows", [1, 16, linear_kernel.FEW_ROWS, linear_kernel.FEW_ROWS + 1, 300])
@pytest.mark.parametrize("with_bias", [True, False])
def test_each_kernel_computes_f_linear(kernel, rows, with_bias):
    generator = torch.Generator().manual_seed(rows)
    weight = torch.randn(48, 40, generator=generator)
    bias = torch.randn(48, generator=generator) if with_bias else None
    x = torch.randn(rows, 40, generator=generator)
    transposed = torch.randn(40, rows, generator=generator).t()  # a non-contiguous input, as the fast path passes
    with linear_kernel.forced(kernel):
        for inputs in (x, transposed):
            np.testing.assert_allclose(linear_kernel.linear(inputs, weight, bias).numpy(),
                                       F.linear(inputs, weight, bias).numpy(), atol=1e-5)


@pytest.mark.skipif(not linear_kernel.onednn_available(), reason="this torch build has no oneDNN linear ops")
def test_packed_weight_follows_in_place_changes():
    weight, x = torch.randn(24, 16), torch.randn(4, 16)
    with linear_kernel.forced(linear_kernel.ONEDNN):
        linear_kernel.linear(x, weight, None)  # the first few-row call: the weight as it is
        before = linear_kernel.linear(x, weight, None)  # the second: packed
        assert linear_kernel._packed[id(weight),][1] is not None
        weight.mul_(2)  # bumps the version: the packed copy must be rebuilt
        after = linear_kernel.linear(x, weight, None)
        assert linear_kernel._packed[id(weight),][1] is None  # rebuilt on the next call, not kept stale
        after_packed = linear_kernel.linear(x, weight, None)
    np.testing.assert_allclose(after_packed.numpy(), after.numpy(), atol=1e-5)
    np.testing.assert_allclose(after.numpy(), 2 * before.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("rows", [3, linear_kernel.FEW_ROWS + 1])
def test_several_layers_of_one_input_give_each_layers_product(kernel, rows):
    """``linears`` (attention's three projections): with oneDNN and few rows one product on a stacked copy of
    the weights, made at the second call; the same values as one product each, and as ``F.linear``."""
    generator = torch.Generator().manual_seed(rows)
    layers = [(torch.randn(24, 16, generator=generator), torch.randn(24, generator=generator)),
              (torch.randn(8, 16, generator=generator), None), (torch.randn(12, 16, generator=generator), None)]
    x = torch.randn(rows, 16, generator=generator)
    with linear_kernel.forced(kernel), torch.inference_mode():
        for _ in range(3):
            together = linear_kernel.linears(x, layers)
            assert [tuple(t.shape) for t in together] == [(rows, 24), (rows, 8), (rows, 12)]
            for got, (weight, bias) in zip(together, layers):
                np.testing.assert_allclose(got.numpy(), F.linear(x, weight, bias).numpy(), atol=1e-5)
                np.testing.assert_array_equal(got.numpy(), linear_kernel.linear(x, weight, bias).numpy())
        stacked = tuple(id(t) for layer in layers for t in layer if t is not None)
        assert (stacked in linear_kernel._packed) == (kernel == linear_kernel.ONEDNN and rows <= linear_kernel.FEW_ROWS)
        layers[1][0].mul_(2)  # a new version of one weight: the stacked copy is not used stale
        np.testing.assert_allclose(linear_kernel.linears(x, layers)[1].numpy(), F.linear(x, layers[1][0]).numpy(),
                                   atol=1e-5)


@pytest.mark.parametrize("kernel", KERNELS + [None])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_product_of_a_weight_made_per_call_keeps_no_copy_and_chooses_nothing(kernel, dtype):
    """``product`` (DeBERTa's position rows, made for each group): ``x @ w.T`` on the kernel chosen (None: none
    chosen yet, torch's own), with no laid-out copy kept and no kernel timed on it."""
    generator = torch.Generator().manual_seed(7)
    x, weight = torch.randn(200, 64, generator=generator), torch.randn(96, 64, generator=generator)
    context = linear_kernel.forced(kernel) if kernel else contextlib.nullcontext()
    with context:
        for rows in (5, 200):
            got = linear_kernel.product(x[:rows].to(dtype), weight.to(dtype))
            assert got.dtype == dtype and got.shape == (rows, 96)
            expected = (x[:rows].to(dtype).float() @ weight.to(dtype).float().T).numpy()
            np.testing.assert_allclose(got.float().numpy(), expected, atol=1e-4 if dtype == torch.float32 else 0.5)
    assert linear_kernel._packed == {} and linear_kernel.choice() is None


def test_auto_times_each_regime_once_when_it_first_runs():
    assert linear_kernel.choice() is None
    weight, bias = torch.randn(64, 32), torch.randn(64)
    linear_kernel.linear(torch.randn(3, 32), weight, bias)
    chosen = linear_kernel.choice()
    assert chosen["few"] in KERNELS and "many" not in chosen and not chosen["forced"]  # a query never times bulk
    linear_kernel.linear(torch.randn(3, 32), weight, None)
    assert linear_kernel.choice() is chosen  # measured once per process
    linear_kernel.linear(torch.randn(linear_kernel.FEW_ROWS + 1, 32), weight, bias)
    chosen = linear_kernel.choice()
    assert chosen["many"] in KERNELS and chosen["few"] in KERNELS
    if linear_kernel.onednn_available():
        for regime, margin in (("few", 0.9), ("many", 1.0)):
            timings = chosen["ms"][regime]
            assert timings["mkl"] > 0 and timings["onednn"] > 0
            faster = linear_kernel.ONEDNN if timings["onednn"] <= margin * timings["mkl"] else linear_kernel.MKL
            assert chosen[regime] == faster
    linear_kernel.linear(torch.randn(linear_kernel.FEW_ROWS + 1, 32), weight, bias)
    assert linear_kernel.choice() is chosen


def fake_timings(monkeypatch, times: list[float]) -> list[tuple]:
    """Make the probe's timings ``times`` (in call order: MKL, oneDNN per shape); returns the (input, weight)
    shapes MKL was timed on."""
    shapes, calls, real_mkl = [], [], linear_kernel._mkl

    def fake_best_ms(fn, repeats=5):
        fn()
        calls.append(fn)
        return times[len(calls) - 1]

    def recording_mkl(x, weight, bias):
        shapes.append((tuple(x.shape), tuple(weight.shape)))
        return real_mkl(x, weight, bias)

    monkeypatch.setattr(linear_kernel, "_best_ms", fake_best_ms)
    monkeypatch.setattr(linear_kernel, "_mkl", recording_mkl)
    return shapes


@pytest.mark.skipif(not linear_kernel.onednn_available(), reason="this torch build has no oneDNN linear ops")
def test_the_bulk_probe_weighs_a_block_of_layers(monkeypatch):
    """Many rows are timed on each of a block's shapes, as often as it has them: the weight (four projections),
    four times as wide (the feed-forward layer's first product) and four times as deep (its second)."""
    shapes = fake_timings(monkeypatch, [1.0, 2.0, 4.0, 3.0, 4.0, 3.0])  # (mkl, onednn) per shape
    linear_kernel.linear(torch.randn(linear_kernel.FEW_ROWS + 1, 8), torch.randn(16, 8), None)
    chosen = linear_kernel.choice()
    assert shapes[:3] == [((512, 8), (16, 8)), ((512, 8), (64, 8)), ((512, 32), (16, 32))]  # then the call itself
    assert chosen["ms"]["many"] == {"mkl": 4 * 1.0 + 4.0 + 4.0, "onednn": 4 * 2.0 + 3.0 + 3.0, "rows": 512}
    assert chosen["many"] == linear_kernel.MKL  # 12 ms against 14: the small weight's 2x decides, not the wide 0.75x


@pytest.mark.skipif(not linear_kernel.onednn_available(), reason="this torch build has no oneDNN linear ops")
@pytest.mark.parametrize("regime, onednn_share, expected", [
    ("few", 0.95, linear_kernel.MKL),  # a packed copy of every query weight must buy at least 10%
    ("few", 0.85, linear_kernel.ONEDNN),
    ("many", 1.0, linear_kernel.ONEDNN),  # no copy with many rows: the faster wins, a tie goes to oneDNN
    ("many", 1.05, linear_kernel.MKL)])
def test_each_regime_keeps_the_faster_within_its_margin(monkeypatch, regime, onednn_share, expected):
    shapes = fake_timings(monkeypatch, [2.0, 2.0 * onednn_share] * 3)
    rows = 3 if regime == "few" else linear_kernel.FEW_ROWS + 1
    linear_kernel.linear(torch.randn(rows, 8), torch.randn(16, 8), torch.randn(16))
    assert linear_kernel.choice()[regime] == expected
    if regime == "few":  # one shape, where a query spends most: the feed-forward width, padded rows as MKL is fed
        assert shapes[0] == ((32, 8), (64, 8))


def test_environment_forces_and_checks_the_kernel(monkeypatch):
    monkeypatch.setenv(linear_kernel.ENV, "mkl")
    linear_kernel.linear(torch.randn(3, 8), torch.randn(4, 8), None)
    linear_kernel.linear(torch.randn(linear_kernel.FEW_ROWS + 1, 8), torch.randn(4, 8), None)
    assert linear_kernel.choice()["few"] == linear_kernel.choice()["many"] == "mkl"
    assert linear_kernel.choice()["ms"] == {}  # nothing timed
    linear_kernel.reset()
    monkeypatch.setenv(linear_kernel.ENV, "fastest")
    with pytest.raises(ValueError, match="XLSEARCH_LINEAR_KERNEL must be auto, mkl or onednn"):
        linear_kernel.linear(torch.randn(3, 8), torch.randn(4, 8), None)


def test_autograd_and_other_dtypes_keep_torch_linear():
    weight = torch.randn(4, 8, requires_grad=True)
    x = torch.randn(3, 8)
    with linear_kernel.forced(linear_kernel.ONEDNN):
        out = linear_kernel.linear(x, weight, None)
        out.sum().backward()  # F.linear under autograd: gradients flow
        assert weight.grad is not None
        half = linear_kernel.linear(x.bfloat16(), weight.detach().bfloat16(), None)
    assert half.dtype == torch.bfloat16


@pytest.mark.parametrize("kernel", KERNELS)
def test_fast_deberta_matches_hf_on_each_kernel(tiny_transformers_model, kernel):
    model = copy.deepcopy(tiny_transformers_model.model).eval()
    ids = torch.randint(5, model.config.vocab_size, (3, 40), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 1:] = 0
    layers = list(range(model.config.num_hidden_layers + 1))
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    with linear_kernel.forced(kernel):
        got = FastDebertaV2(model).hidden_states(ids, mask, layers)
    real = mask.bool()
    for layer in layers:
        np.testing.assert_allclose(got[layer][real].numpy(), expected[layer][real].numpy(), atol=1e-5)


def tiny_own_forward(tiny_model) -> LoadedModel:
    """A BERT-like encoder (ELECTRA's discriminator) that no fast forward supports: it runs its own."""
    config = ElectraConfig(vocab_size=tiny_model.model.config.vocab_size, embedding_size=32, hidden_size=32,
                           num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                           max_position_embeddings=512)
    torch.manual_seed(0)
    # transformers' tokenizer: the tests' reference pads with it (xlsearch's own reader does not pad)
    tokenizer = load_model(tiny_model.model.config._name_or_path, "cpu", train=True).tokenizer
    loaded = LoadedModel("tiny-electra", ElectraModel(config).eval(), tokenizer, "test", torch.device("cpu"))
    assert not Encoder(loaded).uses_fast_path
    return loaded


@pytest.mark.parametrize("kernel", KERNELS)
def test_models_on_their_own_forward_are_routed_and_restored(tiny_model, kernel, monkeypatch):
    loaded = tiny_own_forward(tiny_model)
    texts = ["a short query", "a somewhat longer passage of text " * 12]
    reference = Encoder(loaded, precision="fp32")
    with linear_kernel.forced(linear_kernel.MKL):
        expected = reference.encode(texts, 2)
    calls = []
    kernel_linear = linear_kernel.linear
    monkeypatch.setattr(linear_kernel, "linear", lambda *args: calls.append(1) or kernel_linear(*args))
    with linear_kernel.forced(kernel):
        got = Encoder(loaded).encode(texts, 2)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert bool(calls) == (kernel == linear_kernel.ONEDNN)  # MKL for both regimes: torch's own forward, untouched
    linears = [m for m in loaded.model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all("forward" not in vars(m) for m in linears)  # the model is as it was


@pytest.mark.parametrize("kernel", KERNELS)
def test_packed_rows_are_padded_for_mkl_only(kernel, tiny_model, monkeypatch):
    """MKL's few-row products cost the same up to each multiple of 16, so its inputs are padded; oneDNN's
    (and the bf16 and int8 kernels') cost follows the rows, so theirs are not."""
    from xlsearch.indexer.encoding import packing

    seen = []
    original = packing.PackedBatch.of.__func__
    monkeypatch.setattr(packing.PackedBatch, "of", classmethod(
        lambda cls, mask, **kw: seen.append(kw.get("multiple")) or original(cls, mask, **kw)))
    fast = FastDebertaV2(copy.deepcopy(tiny_model.model).eval())
    ids = torch.randint(5, 100, (1, 17))
    with linear_kernel.forced(kernel):
        fast.hidden_states(ids, torch.ones_like(ids), [1])
    expected = linear_kernel.MKL_ROW_MULTIPLE if kernel == linear_kernel.MKL else 1
    assert seen == [expected]
    with linear_kernel.forced(kernel):
        assert linear_kernel.row_multiple(300, torch.randn(4, 4), None) == expected  # the many-row regime too
