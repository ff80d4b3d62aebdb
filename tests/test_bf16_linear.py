"""--precision bf16 on the CPU: linear layers on weights cast to bf16 and laid out for oneDNN once, on the fast
DeBERTa path and on any model's own forward; the numbers of ``F.linear`` in bf16, a last bit apart at most."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from xlsearch.indexer.encoding import bf16_linear
from xlsearch.indexer.encoding.encoder import Encoder
from xlsearch.indexer.encoding.model import load_model

pytestmark = pytest.mark.skipif(not bf16_linear.available(), reason="this CPU or torch build has no oneDNN bf16")


@pytest.fixture(autouse=True)
def fresh_cache():
    bf16_linear.clear()
    yield
    bf16_linear.clear()


@pytest.mark.parametrize("rows", [1, 3, 17, 300])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_equals_f_linear_in_bf16(rows, with_bias):
    generator = torch.Generator().manual_seed(rows)
    weight = torch.randn(48, 40, generator=generator)
    bias = torch.randn(48, generator=generator) if with_bias else None
    x = torch.randn(40, rows, generator=generator).t()  # fp32 and non-contiguous: cast here
    with torch.no_grad():
        got = bf16_linear.linear(x, weight, bias)
    expected = F.linear(x.bfloat16(), weight.bfloat16(), None if bias is None else bias.bfloat16())
    assert got.dtype == torch.bfloat16
    # The same product; oneDNN may add the bias in another order, a last bit apart at most.
    torch.testing.assert_close(got.float(), expected.float(), rtol=2 ** -7, atol=1e-6)
    assert (got == expected).float().mean() > 0.99


def test_a_changed_weight_is_packed_again():
    weight, x = torch.randn(16, 8), torch.randn(2, 8)
    with torch.no_grad():
        before = bf16_linear.linear(x, weight, None)
        weight.mul_(2)
        after = bf16_linear.linear(x, weight, None)
    torch.testing.assert_close(after, (2 * before.float()).bfloat16(), rtol=0.01, atol=0.01)


def test_autograd_takes_f_linear():
    weight = torch.randn(16, 8, requires_grad=True)
    out = bf16_linear.linear(torch.randn(2, 8), weight, None)
    out.float().sum().backward()
    assert weight.grad is not None and not bf16_linear._weights


@pytest.mark.parametrize("which", ["deberta", "bert"])
def test_encoders_run_their_linear_layers_on_packed_weights(which, tiny_model, tiny_bert_dir, sentences):
    loaded = tiny_model if which == "deberta" else load_model(str(tiny_bert_dir), "cpu")
    linears = [m for m in loaded.model.modules() if isinstance(m, torch.nn.Linear)]
    Encoder(loaded, batch_size=4, precision="bf16").encode(sentences[:6], 2)
    packed = {id(m.weight) for m in linears} & set(bf16_linear._weights)
    assert packed, "no linear layer ran on a packed bf16 weight"
    assert all(m.weight.dtype == torch.float32 for m in linears)  # the model itself is untouched
