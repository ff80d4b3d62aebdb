"""Encoder: pooled vectors equal a direct computation, in any batch order or padding."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from test_linear_kernel import tiny_own_forward

from xlsearch.indexer.encoding.encoder import Encoder
from xlsearch.indexer.errors import ModelLoadError, XlsearchError
from xlsearch.indexer.encoding.model import load_model, transformer_blocks
from xlsearch.indexer.encoding.native_weights import InferenceOnly

TEXTS = ["Hello world", "你好，世界。今天天气很好。", "สวัสดีครับ ยินดีที่ได้รู้จัก",
         "Привет, как дела? " * 6, "x", "مرحبا بالعالم", "नमस्ते दुनिया", "Das Wetter ist heute schön."]


@functools.lru_cache(maxsize=None)
def in_transformers(directory: str):
    """The model as transformers loads it: its own tokenizer and forward, the reference."""
    return load_model(directory, "cpu", train=True)


def reference(loaded, texts, layer):
    """Mean of hidden_states[layer] over real, non-special tokens, L2-normalised, by transformers' forward."""
    if isinstance(loaded.model, InferenceOnly):  # read without transformers: no forward of its own
        loaded = in_transformers(str(loaded.model.config._name_or_path))
    batch = loaded.tokenizer(texts, padding=True, return_tensors="pt", return_special_tokens_mask=True)
    with torch.no_grad():
        states = loaded.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              output_hidden_states=True).hidden_states
    mask = (batch["attention_mask"] * (1 - batch["special_tokens_mask"])).unsqueeze(-1).float()
    pooled = (states[layer] * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


@pytest.fixture(scope="module", params=["deberta", "bert"])
def loaded(request, tiny_deberta_dir, tiny_bert_dir):
    path = tiny_deberta_dir if request.param == "deberta" else tiny_bert_dir
    return load_model(str(path), "cpu")


@pytest.fixture(scope="module", params=["deberta", "bert"])
def trainable(request, tiny_deberta_dir, tiny_bert_dir):
    path = tiny_deberta_dir if request.param == "deberta" else tiny_bert_dir
    return load_model(str(path), "cpu", train=True)


def test_every_layer_equals_output_hidden_states(loaded):
    encoder = Encoder(loaded, batch_size=3)
    for layer in range(loaded.num_layers + 1):
        vectors = encoder.encode(TEXTS, layer)
        assert vectors.shape == (len(TEXTS), loaded.dim)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(vectors, reference(loaded, TEXTS, layer), atol=1e-5)


def test_batch_size_and_order_do_not_change_vectors(loaded):
    alone = np.stack([Encoder(loaded, batch_size=1).encode([t], 2)[0] for t in TEXTS])
    batched = Encoder(loaded, batch_size=5).encode(TEXTS, 2)
    permutation = np.random.default_rng(0).permutation(len(TEXTS))
    shuffled = Encoder(loaded, batch_size=3).encode([TEXTS[i] for i in permutation], 2)
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    np.testing.assert_allclose(shuffled, batched[permutation], atol=1e-5)


def test_several_layers_from_one_pass_match_single_layers(loaded):
    encoder = Encoder(loaded, batch_size=4)
    layers = list(range(loaded.num_layers + 1))
    many = encoder.encode_layers(TEXTS, layers)
    for layer in layers:
        np.testing.assert_allclose(many[layer], encoder.encode(TEXTS, layer), atol=1e-6)


def test_fast_path_runs_no_layer_above_the_pooled_one(loaded):
    """DeBERTa-v2 and BERT in eval mode: their fast forward does the work (the model gets no hook that would
    switch it off), runs only layer 0 to pool layer 1, and equals the plain transformers forward."""
    encoder = Encoder(loaded, batch_size=4)
    assert encoder.uses_fast_path
    ran, run_layer = [], encoder._fast._layer

    def spy(i, *args):
        ran.append(i)
        return run_layer(i, *args)

    encoder._fast._layer = spy  # on the fast forward's instance, not a hook on the model
    try:
        vectors = encoder.encode(TEXTS[:2], 1)
    finally:
        del encoder._fast._layer
    assert ran == [0]
    np.testing.assert_allclose(vectors, reference(loaded, TEXTS[:2], 1), atol=1e-5)


def test_hook_path_runs_no_layer_above_the_pooled_one(tiny_model):
    """A model with no fast forward (ELECTRA): its own forward, stopped by a pre-hook once layer 1's input
    is captured."""
    loaded = tiny_own_forward(tiny_model)
    encoder = Encoder(loaded, batch_size=4)
    assert not encoder.uses_fast_path
    calls = []
    blocks = transformer_blocks(loaded.model)
    handles = [b.register_forward_hook(lambda m, a, o, i=i: calls.append(i)) for i, b in enumerate(blocks)]
    try:
        vectors = encoder.encode(TEXTS[:2], 1)
    finally:
        for handle in handles:
            handle.remove()
    assert calls == [0]
    np.testing.assert_allclose(vectors, reference(loaded, TEXTS[:2], 1), atol=1e-5)


def test_pooled_tensors_equal_encode_with_and_without_grad(trainable):
    """``Encoder.pooled`` (one padded batch, tensors) is the path training uses: same vectors, and with
    ``grad`` they carry gradients back to the encoder's weights."""
    loaded = trainable
    encoder = Encoder(loaded, batch_size=3)
    expected = encoder.encode_layers(TEXTS, [1, 2])
    plain = encoder.pooled(TEXTS, [1, 2])
    assert not plain[2].requires_grad
    trained = encoder.pooled(TEXTS, [1, 2], grad=True)
    try:
        for layer in (1, 2):
            np.testing.assert_allclose(plain[layer].numpy(), expected[layer], atol=1e-5)
            np.testing.assert_allclose(trained[layer].detach().numpy(), expected[layer], atol=1e-5)
        trained[2].sum().backward()
        first = transformer_blocks(loaded.model)[0]
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in first.parameters())
    finally:
        loaded.model.zero_grad(set_to_none=True)
    assert encoder.pooled([], [1])[1].shape == (0, loaded.dim)


def test_progress_counts_every_text(encoder):
    seen = []
    encoder.encode(TEXTS, 1, progress=seen.append)
    assert sum(seen) == len(TEXTS)


def test_empty_input_and_bad_layer(encoder):
    assert encoder.encode([], 1).shape == (0, encoder.dim)
    with pytest.raises(XlsearchError, match="layer 9 does not exist"):
        encoder.encode(["a"], 9)


def test_missing_model_directory_is_one_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "nope"), "cpu")


def test_an_unreachable_hub_fails_at_once_naming_the_offline_model(monkeypatch):
    import socket

    probes = []

    def refuse(address, timeout=None):
        probes.append((address, timeout))
        raise OSError(101, "Network is unreachable")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(ModelLoadError) as caught:
        load_model("xlsearch-tests/no-such-model", "cpu")
    message = str(caught.value)
    assert "cannot be reached: Network is unreachable" in message and "--model multilingual-e5-small" in message
    assert probes == [(("huggingface.co", 443), 1.5)]  # one short probe, not the hub client's retries


def test_directory_without_a_model_says_how_to_use_a_local_copy(tmp_path):
    with pytest.raises(ModelLoadError, match="XLSEARCH_MODEL=DIR"):
        load_model(str(tmp_path), "cpu")


def _copy(directory, tmp_path):
    import shutil

    return Path(shutil.copytree(directory, tmp_path / "copy"))


def test_fingerprint_follows_the_weights_not_their_sizes(tiny_model, tiny_deberta_dir, tmp_path, monkeypatch):
    """Two checkpoints of one model (same shapes, one value different) are two models."""
    monkeypatch.setenv("XLSEARCH_CACHE", str(tmp_path / "cache"))
    copy = _copy(tiny_deberta_dir, tmp_path)
    first = load_model(str(copy), "cpu", train=True)  # transformers' model, to edit and save
    assert first.fingerprint == tiny_model.fingerprint  # same files, another place
    assert load_model(str(copy), "cpu").fingerprint == first.fingerprint  # unchanged directory
    weights = copy / "model.safetensors"
    size = weights.stat().st_size
    with torch.no_grad():
        first.model.embeddings.word_embeddings.weight[5, 3] += 0.5
    first.model.save_pretrained(copy)
    assert weights.stat().st_size == size
    changed = load_model(str(copy), "cpu").fingerprint
    assert changed != first.fingerprint
    assert load_model(str(copy), "cpu").fingerprint == changed
    (copy / "config.json").write_text((copy / "config.json").read_text().replace('"hidden_act"', '"hidden_act" ', 1))
    assert load_model(str(copy), "cpu").fingerprint not in (changed, first.fingerprint)


def test_weight_files_are_hashed_once_per_version(tiny_deberta_dir, tmp_path, monkeypatch):
    """A settled file is read once: remembered in the process and, for the next process, in the cache file."""
    import hashlib
    import os
    import time

    from xlsearch.indexer.encoding import fingerprint

    monkeypatch.setenv("XLSEARCH_CACHE", str(tmp_path / "cache"))
    weights = _copy(tiny_deberta_dir, tmp_path) / "model.safetensors"
    old = time.time() - 3600
    os.utime(weights, (old, old))
    reads, sha256 = [], fingerprint.sha256_file
    monkeypatch.setattr(fingerprint, "sha256_file", lambda path: reads.append(path) or sha256(path))
    digest = fingerprint.file_sha256(weights)
    assert digest == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert fingerprint.file_sha256(weights) == digest and len(reads) == 1
    monkeypatch.setattr(fingerprint, "_memo", {})  # a new process: the cache file answers
    assert fingerprint.file_sha256(weights) == digest and len(reads) == 1
    assert (tmp_path / "cache" / fingerprint.CACHE_FILE).is_file()
    with weights.open("r+b") as handle:  # same size, new content, new mtime
        handle.seek(-1, os.SEEK_END)
        last = handle.read(1)
        handle.seek(-1, os.SEEK_END)
        handle.write(bytes([last[0] ^ 1]))
    assert fingerprint.file_sha256(weights) != digest and len(reads) == 2


@pytest.mark.parametrize("which", ["own forward", "deberta", "bert"])
def test_threads_sharing_one_encoder_get_their_own_vectors(which, tiny_model, tiny_bert_dir):
    """Concurrent calls must not mix their vectors: the hook path registers hooks on the shared model (under
    a lock), the fast forwards of DeBERTa-v2 and BERT run at once with no lock."""
    from concurrent.futures import ThreadPoolExecutor

    loaded = {"own forward": lambda: tiny_own_forward(tiny_model), "deberta": lambda: tiny_model,
              "bert": lambda: load_model(str(tiny_bert_dir), "cpu")}[which]()
    encoder = Encoder(loaded, batch_size=2)
    assert encoder.uses_fast_path == (which != "own forward")
    expected = {(i, layer): encoder.encode([TEXTS[i]], layer)[0] for i in range(len(TEXTS)) for layer in (1, 2)}
    jobs = [(i % len(TEXTS), 1 + i % 2) for i in range(120)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda job: encoder.encode([TEXTS[job[0]]], job[1])[0], jobs))
    for job, vector in zip(jobs, results):
        np.testing.assert_allclose(vector, expected[job], atol=1e-6)


def test_warm_up_reads_every_weight_and_leaves_the_query_path_nothing_to_prepare(tiny_model, monkeypatch):
    """A server calls ``warm_up`` at start: every weight's pages are read (safetensors weights are mapped
    from disk, a page read at its first use), the fp32 kernel is chosen and the weights laid out for it."""
    from torch.overrides import TorchFunctionMode

    from xlsearch.indexer.encoding import linear_kernel

    class StoragesRead(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.pointers: set[int] = set()

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if getattr(func, "__name__", "") == "sum" and isinstance(args[0], torch.Tensor):
                self.pointers.add(args[0].untyped_storage().data_ptr())
            return func(*args, **(kwargs or {}))

    monkeypatch.delenv(linear_kernel.ENV, raising=False)
    linear_kernel.reset()
    encoder = Encoder(tiny_model, batch_size=2)
    try:
        with StoragesRead() as read:
            encoder.warm_up(2)
        model = tiny_model.model
        assert {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())} <= read.pointers
        assert {"few", "many"} <= set(linear_kernel.choice())  # both regimes chosen before the first request
        if linear_kernel.onednn_available():  # where few-row products run on weights laid out for oneDNN
            linear_kernel.reset()
            with linear_kernel.forced(linear_kernel.ONEDNN):
                encoder.warm_up(2)
                packed = {key: id(value[1]) for key, value in linear_kernel._packed.items()}
                assert any(value[1] is not None for value in linear_kernel._packed.values())
                encoder.encode(["a query after the warm-up"], 2)
                assert {key: id(value[1]) for key, value in linear_kernel._packed.items()} == packed
    finally:
        linear_kernel.reset()
