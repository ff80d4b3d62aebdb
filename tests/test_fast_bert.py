"""FastBert: the same hidden states as transformers' BERT, RoBERTa and XLM-R forwards, without their modules."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from test_fast_deberta import ATOL, padded_batch
from transformers import BertConfig, BertModel, XLMRobertaConfig, XLMRobertaModel

from xlsearch.indexer.encoding.encoder import Encoder
from xlsearch.indexer.encoding.fast_bert import FastBert, supports
from xlsearch.indexer.encoding.model import load_model

SMALL = dict(vocab_size=300, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=600, pad_token_id=1)


def built(kind: str, **overrides):
    torch.manual_seed(0)
    if kind == "bert":
        return BertModel(BertConfig(**{**SMALL, **overrides})).eval()
    return XLMRobertaModel(XLMRobertaConfig(**{**SMALL, **overrides})).eval()


@pytest.mark.parametrize("kind", ["bert", "xlm-roberta"])
@pytest.mark.parametrize("lengths", [[300, 1, 17, 128, 129, 130, 2], [9], [5, 5, 5]])
def test_every_layer_matches_the_model_s_own_forward(kind, lengths):
    """Padded and unpadded batches, groups of several widths; XLM-R's positions come from the padding."""
    model = built(kind)
    assert supports(model)
    ids, mask = padded_batch(lengths, model.config.vocab_size)
    ids[mask == 0] = model.config.pad_token_id
    layers = list(range(model.config.num_hidden_layers + 1))
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    got = FastBert(model).hidden_states(ids, mask, layers)
    real = mask.bool()
    for layer in layers:
        np.testing.assert_allclose(got[layer][real].numpy(), expected[layer][real].numpy(), atol=ATOL,
                                   err_msg=f"{kind}, layer {layer}")


@pytest.mark.parametrize("overrides", [{"is_decoder": True}, {"is_decoder": True, "add_cross_attention": True}])
def test_decoders_keep_their_own_forward(overrides):
    assert not supports(built("bert", **overrides))


def test_subclasses_and_other_families_keep_their_own_forward(tiny_model):
    class Custom(BertModel):  # may compute anything
        pass

    assert not supports(Custom(BertConfig(**SMALL)))
    assert not supports(tiny_model.model)  # DeBERTa-v2 has its own fast forward


def test_encoder_vectors_equal_the_model_s_own_forward(tiny_bert_dir, sentences, monkeypatch):
    loaded = load_model(str(tiny_bert_dir), "cpu", train=True)  # transformers' BertModel
    texts = sentences[:20]
    fast = Encoder(loaded, batch_size=8)
    assert isinstance(fast._fast, FastBert) and fast.uses_fast_path
    got = fast.encode(texts, 1), fast.encode(texts, 2)
    monkeypatch.setattr(Encoder, "uses_fast_path", property(lambda self: False))
    own = Encoder(loaded, batch_size=8)
    np.testing.assert_allclose(got[0], own.encode(texts, 1), atol=ATOL)
    np.testing.assert_allclose(got[1], own.encode(texts, 2), atol=ATOL)


def test_a_model_in_training_or_with_hooks_runs_its_own_forward(tiny_bert_dir):
    loaded = load_model(str(tiny_bert_dir), "cpu", train=True)  # transformers' BertModel
    encoder = Encoder(loaded)
    loaded.model.train()
    assert not encoder.uses_fast_path
    loaded.model.eval()
    handle = loaded.model.encoder.layer[0].register_forward_hook(lambda *args: None)
    assert not encoder.uses_fast_path
    handle.remove()
    assert encoder.uses_fast_path


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precision_runs_on_the_fast_path_close_to_fp32(tiny_bert_dir, sentences, precision):
    loaded = load_model(str(tiny_bert_dir), "cpu")
    texts = sentences[:12]
    exact = Encoder(loaded, batch_size=4).encode(texts, 2)
    encoder = Encoder(loaded, batch_size=4, precision=precision)
    assert encoder.uses_fast_path
    reduced = encoder.encode(texts, 2)
    np.testing.assert_allclose(np.linalg.norm(reduced, axis=1), 1.0, atol=1e-5)
    assert (exact * reduced).sum(1).min() > 0.99
    assert np.abs(exact - reduced).max() > 1e-6  # it did run in reduced precision


def test_real_multilingual_encoder_matches_its_own_forward(e5_small_dir, monkeypatch):
    """multilingual-e5-small's vectors, fast and through transformers, on real text in several scripts."""
    from conftest import sib_sentences

    loaded = load_model(str(e5_small_dir), "cpu", train=True)  # transformers' BertModel
    texts = [s for lang in ("deu_Latn", "arb_Arab", "zho_Hans", "hin_Deva") for s in sib_sentences(lang, limit=4)]
    fast = Encoder(loaded, batch_size=8)
    assert isinstance(fast._fast, FastBert)
    got = fast.encode(texts, 12, prompt="query: ")
    monkeypatch.setattr(Encoder, "uses_fast_path", property(lambda self: False))
    np.testing.assert_allclose(got, Encoder(loaded, batch_size=8).encode(texts, 12, prompt="query: "), atol=ATOL)



def test_a_call_for_hidden_states_leaves_the_fast_path_on(tiny_bert_dir):
    """transformers installs output-capturing hooks for good on the first ``output_hidden_states`` call;
    they record nothing outside the model's own forward, so they must not switch the fast path off."""
    loaded = load_model(str(tiny_bert_dir), "cpu", train=True)  # transformers' BertModel
    ids = torch.tensor([[2, 40, 41, 3]])
    with torch.no_grad():
        loaded.model(input_ids=ids, output_hidden_states=True)
    assert any(m._forward_hooks for m in loaded.model.modules())
    assert Encoder(loaded).uses_fast_path


def test_quantized_modules_keep_their_own_forward():
    """torch's dynamic quantization swaps nn.Linear for modules without a weight tensor."""
    from torch.ao.quantization import quantize_dynamic

    model = quantize_dynamic(built("bert"), {torch.nn.Linear}, dtype=torch.qint8)
    assert not supports(model)


def test_the_feed_forward_activation_overwrites_its_input_with_the_same_values():
    """GELU (transformers' module or F.gelu) and ReLU run in place on the fresh product; any other
    activation runs as it is."""
    from transformers.activations import ACT2FN

    from xlsearch.indexer.encoding.packed_forward import in_place

    x = torch.randn(50, 30) * 4
    for activation in (ACT2FN["gelu"], torch.nn.functional.gelu, ACT2FN["relu"], torch.nn.ReLU(),
                       torch.nn.functional.relu):
        fresh = x.clone()
        expected = activation(x)
        out = in_place(activation)(fresh)
        assert out.data_ptr() == fresh.data_ptr()
        assert torch.equal(out, expected)
    for other in (ACT2FN["gelu_new"], ACT2FN["silu"], torch.tanh):
        assert in_place(other) is other
