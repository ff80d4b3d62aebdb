"""--precision int8: int8 weights per output channel, int8 activations per row, on the fast DeBERTa path and
on any model's own forward. Exactness here means equal to the same quantized arithmetic done by hand; how
close that is to fp32 is checked on random models here and on real weights in test_real_encoder.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xlsearch.indexer.encoding import int8_linear, linear_kernel
from xlsearch.indexer.encoding.encoder import Encoder, precision_dtype
from xlsearch.indexer.errors import XlsearchError

from test_linear_kernel import tiny_own_forward

pytestmark = pytest.mark.skipif(not int8_linear.available(), reason="this torch build has no CPU int8 matmul")


@pytest.fixture(autouse=True)
def fresh_cache():
    int8_linear.clear()
    yield
    int8_linear.clear()


def by_hand(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> np.ndarray:
    """The same arithmetic: per-row scales and the division by them in fp32 (as torch does them: in float64
    a value a hair from a half rounds the other way now and then), rounding half to even, exact integer
    products and the scaling in float64."""
    def rows(m):
        m = m.float().numpy()
        amax = np.abs(m).max(1, keepdims=True)
        scale = np.where(amax > 0, amax / np.float32(127), np.float32(1))
        return np.round(m / scale).astype(np.float64), scale.astype(np.float64)
    qx, sx = rows(x)
    qw, sw = rows(weight)
    out = (qx @ qw.T) * sx * sw.T
    return out + (0 if bias is None else bias.double().numpy())


def test_rows_are_rounded_on_their_own_scale():
    x = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0], [1000.0, 1.0, -3.0]])
    q, scale = int8_linear.quantize_rows(x)
    assert q.dtype == torch.int8 and scale.shape == (3, 1)
    assert q[0].tolist() == [64, -127, 32] and q[1].tolist() == [0, 0, 0] and q[2, 0] == 127
    assert 0 < scale[1].item() < 1e-30  # an all-zero row: no division by zero
    unsigned, same = int8_linear.quantize_rows(x, unsigned=True)
    assert unsigned.dtype == torch.uint8 and torch.equal(unsigned.int() - 128, q.int()) and torch.equal(same, scale)
    assert (q.float() * scale - x).abs().le(scale / 2 + 1e-6).all()  # within half a step of each row


def test_the_compiled_rounding_is_torchs_arithmetic():
    """One compiled loop stands for six torch ops: the same fp32 scale and quotient, rounded half to even."""
    generator = torch.Generator().manual_seed(3)
    halves = torch.tensor([[0.5, 1.5, 2.5, -0.5, -1.5, 127.0]])  # scale 1: every quotient a tie but the last
    for x in (torch.randn(17, 300, generator=generator) * 40, halves, torch.randn(30, 9, generator=generator).t()):
        scale = x.abs().amax(dim=1, keepdim=True).div(127).clamp_min(torch.finfo(torch.float32).tiny)
        expected = torch.div(x, scale).round().int()
        for unsigned in (False, True):
            q, got = int8_linear.quantize_rows(x, unsigned=unsigned)
            assert torch.equal(got, scale) and q.is_contiguous()
            assert torch.equal(q.int() - (128 if unsigned else 0), expected)
    assert int8_linear.quantize_rows(halves)[0].tolist() == [[0, 2, 2, 0, -2, 127]]


@pytest.mark.parametrize("rows", [1, 3, 17, 300])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_is_the_quantized_arithmetic_and_close_to_fp32(rows, with_bias):
    generator = torch.Generator().manual_seed(rows)
    weight = torch.randn(48, 40, generator=generator)
    bias = torch.randn(48, generator=generator) if with_bias else None
    x = torch.randn(40, rows, generator=generator).t()  # non-contiguous, as the fast path passes it
    with torch.no_grad():
        got = int8_linear.linear(x, weight, bias)
    np.testing.assert_allclose(got.numpy(), by_hand(x, weight, bias), rtol=1e-5, atol=1e-4)
    exact = F.linear(x, weight, bias).numpy()
    assert np.abs(got.numpy() - exact).max() < 0.02 * np.abs(exact).max()


@pytest.mark.parametrize("prepacked", [True, False])
def test_both_int8_products_give_the_quantized_arithmetic(prepacked, monkeypatch):
    """oneDNN's int8 linear on a prepacked weight where torch has it, ``torch._int_mm`` elsewhere."""
    if prepacked and not int8_linear.prepacked():
        pytest.skip("this torch build has no oneDNN int8 linear")
    monkeypatch.setattr(int8_linear, "prepacked", lambda: prepacked)
    weight, bias = torch.randn(24, 16), torch.randn(24)
    for rows in (1, 5, 200):
        x = torch.randn(rows, 16)
        with torch.no_grad():
            got = int8_linear.linear(x, weight, bias)
        np.testing.assert_allclose(got.numpy(), by_hand(x, weight, bias), rtol=1e-5, atol=1e-4)
    operand = int8_linear._weights[id(weight), id(bias)][1]
    if prepacked:
        assert operand.layout == torch._mkldnn  # laid out for oneDNN
    else:
        assert operand.layout == torch.strided and operand.shape == (16, 24) and operand.is_contiguous()


def test_int8_weights_follow_in_place_changes():
    weight, x = torch.randn(24, 16), torch.randn(4, 16)
    with torch.no_grad():
        before = int8_linear.linear(x, weight, None)
        weight.mul_(2)  # a new version: the cached int8 copy must not be used
        after = int8_linear.linear(x, weight, None)
    np.testing.assert_allclose(after.numpy(), 2 * before.numpy(), rtol=1e-5, atol=1e-5)


def test_autograd_and_other_dtypes_keep_torch_s_own_path():
    weight = torch.randn(8, 4, requires_grad=True)
    x = torch.randn(3, 4)
    np.testing.assert_array_equal(int8_linear.linear(x, weight, None).detach().numpy(),
                                  F.linear(x, weight).detach().numpy())
    half = torch.randn(3, 4, dtype=torch.bfloat16)
    assert int8_linear.linear(half, weight.detach().bfloat16(), None).dtype == torch.bfloat16
    assert not int8_linear._weights  # nothing was quantized


def test_fast_deberta_in_int8_is_close_to_fp32(tiny_model, sentences):
    texts = sentences[:16]
    exact = Encoder(tiny_model, batch_size=4).encode(texts, 2)
    reduced = Encoder(tiny_model, batch_size=4, precision="int8").encode(texts, 2)
    np.testing.assert_allclose(np.linalg.norm(reduced, axis=1), 1.0, atol=1e-5)
    assert (exact * reduced).sum(1).min() > 0.99
    assert np.abs(exact - reduced).max() > 1e-6  # it did run in int8


def test_fast_path_and_the_model_s_own_forward_agree_in_int8(tiny_model, tiny_transformers_model, sentences,
                                                             monkeypatch):
    texts = sentences[:8]
    fast = Encoder(tiny_model, batch_size=4, precision="int8")
    assert fast.uses_fast_path
    got = fast.encode(texts, 2)
    monkeypatch.setattr(Encoder, "uses_fast_path", property(lambda self: False))
    own = Encoder(tiny_transformers_model, batch_size=4, precision="int8").encode(texts, 2)
    assert (got * own).sum(1).min() > 0.9999  # the same quantized layers; only rounding at ties may differ


def test_models_on_their_own_forward_are_routed_to_int8_and_restored(tiny_model, monkeypatch):
    loaded = tiny_own_forward(tiny_model)
    texts = ["a short query", "a somewhat longer passage of text " * 12]
    exact = Encoder(loaded).encode(texts, 2)
    calls = []
    int8 = int8_linear.linear
    monkeypatch.setattr(int8_linear, "linear", lambda *args: calls.append(1) or int8(*args))
    with linear_kernel.forced(linear_kernel.MKL):  # fp32 would leave the forward untouched: int8 must not
        reduced = Encoder(loaded, precision="int8").encode(texts, 2)
    assert calls
    assert (exact * reduced).sum(1).min() > 0.99
    linears = [m for m in loaded.model.modules() if isinstance(m, torch.nn.Linear)]
    assert all("forward" not in vars(m) for m in linears)  # the model is as it was
    np.testing.assert_allclose(Encoder(loaded).encode(texts, 2), exact, atol=1e-6)


def test_int8_runs_on_the_cpu_only():
    assert precision_dtype("int8", torch.device("cpu")) == torch.float32  # activations stay fp32
    with pytest.raises(XlsearchError, match="CPU only"):
        precision_dtype("int8", torch.device("cuda"))


def test_one_input_is_quantized_once_and_multiplied_once_for_several_layers(monkeypatch):
    """``linears`` (attention's three projections) quantizes its input once, multiplies it once by the weights
    stacked, and equals ``linear`` per layer to the bit (each output channel has its own scale)."""
    calls = []
    original = int8_linear.quantize_rows
    monkeypatch.setattr(int8_linear, "quantize_rows", lambda x, unsigned=False: (calls.append(1), original(x, unsigned))[1])
    x = torch.randn(5, 16)
    layers = [(torch.randn(8, 16), torch.randn(8)), (torch.randn(4, 16), None), (torch.randn(6, 16), torch.randn(6))]
    with torch.no_grad():
        int8_linear.linears(x, layers)  # the stacked weight quantized
        calls.clear()
        together = int8_linear.linears(x, layers)
        assert len(calls) == 1
        assert [tuple(t.shape) for t in together] == [(5, 8), (5, 4), (5, 6)]
        for got, (weight, bias) in zip(together, layers):
            np.testing.assert_array_equal(got.numpy(), int8_linear.linear(x, weight, bias).numpy())
        layers[1][0].mul_(2)  # a new version of one of them: the stacked copy is made again
        np.testing.assert_array_equal(int8_linear.linears(x, layers)[1].numpy(),
                                      int8_linear.linear(x, *layers[1]).numpy())
