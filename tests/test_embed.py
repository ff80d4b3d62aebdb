"""`xlsearch embed` and indexer.embed: layers, pooling, ids, order and output formats."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from xlsearch.api.cli.main import main
from xlsearch.indexer.config import CLS, MEAN
from xlsearch.indexer.encoding.layers import check_layer, parse_layers
from xlsearch.indexer.errors import LayerError
from xlsearch.indexer.tasks.embed import Embeddings, ids_path, read_texts, write_embeddings
from xlsearch.indexer.encoding.encoder import Encoder
from xlsearch.indexer.encoding.model import load_model

TEXTS = ["The river flooded the old town after three days of rain.",
         "Der Zug nach Berlin hatte zwei Stunden Verspätung.",
         "短文",
         "Le marché ouvre tous les samedis à sept heures du matin, même en hiver quand il neige.",
         "Москва — столица России.",
         "ok"]


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "texts.txt"
    lines = TEXTS[:3] + [""] + TEXTS[3:]  # a blank line: skipped, but ids stay line numbers
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_read_texts_line_ids_and_corpus_ids(text_file, tmp_path):
    ids, texts = read_texts(text_file)
    assert ids == ["1", "2", "3", "5", "6", "7"]
    assert texts == TEXTS
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("\n".join(json.dumps({"id": f"d{9 - i}", "text": t}) for i, t in enumerate(TEXTS)),
                     encoding="utf-8")
    ids, texts = read_texts(jsonl)
    assert ids == [f"d{9 - i}" for i in range(len(TEXTS))] and texts == TEXTS


def test_parse_layers():
    assert parse_layers("2, 0,2") == [2, 0]
    assert parse_layers("auto") is None
    for bad in ("2,x", "-1", "", "1,,2"):
        with pytest.raises(LayerError, match="comma-separated"):
            parse_layers(bad)


def test_one_layer_check_and_one_parser_for_every_command(capsys):
    from xlsearch.api.cli.options import layer_option, layers_option

    assert check_layer(3, 3, "m") == 3
    with pytest.raises(LayerError, match=r"layer 4 does not exist: m has layers 0\.\.3"):
        check_layer(4, 3, "m")
    assert (layer_option("auto"), layer_option("5"), layers_option("auto"), layers_option("4,6")) == (None, 5, [], [4, 6])
    for option, bad in ((layer_option, "x"), (layer_option, "1,2"), (layers_option, "-2")):
        with pytest.raises(argparse.ArgumentTypeError, match="layer"):
            option(bad)
    with pytest.raises(SystemExit):
        main(["evaluate", "xquad", "--layers", "4,x"])
    assert "bad layer list '4,x'" in capsys.readouterr().err


def test_cli_mean_npz_equals_encoder(text_file, tmp_path, tiny_deberta_dir, encoder):
    out = tmp_path / "vectors.npz"
    assert main(["embed", str(text_file), "--model", str(tiny_deberta_dir), "--layers", "1,3",
                 "--out", str(out), "--batch-size", "2", "--device", "cpu"]) == 0
    data = np.load(out)
    assert sorted(data.files) == ["ids", "layer_1", "layer_3"]
    assert data["ids"].tolist() == ["1", "2", "3", "5", "6", "7"]
    for layer in (1, 3):
        assert data[f"layer_{layer}"].shape == (len(TEXTS), encoder.dim)
        np.testing.assert_allclose(data[f"layer_{layer}"], encoder.encode(TEXTS, layer), atol=1e-5)


def test_cli_npy_writes_ids_beside(text_file, tmp_path, tiny_deberta_dir, encoder, capsys):
    out = tmp_path / "sub" / "vectors.npy"
    assert main(["embed", str(text_file), "--model", str(tiny_deberta_dir), "--layers", "2",
                 "--out", str(out), "--device", "cpu"]) == 0
    assert "embedded 6 texts" in capsys.readouterr().err
    np.testing.assert_allclose(np.load(out), encoder.encode(TEXTS, 2), atol=1e-5)
    assert json.loads(ids_path(out).read_text(encoding="utf-8")) == ["1", "2", "3", "5", "6", "7"]
    assert main(["embed", str(text_file), "--model", str(tiny_deberta_dir), "--layers", "2",
                 "--out", str(out), "--device", "cpu", "--precision", "int8"]) == 0
    assert "dim 32, int8)" in capsys.readouterr().err
    reduced, exact = np.load(out), encoder.encode(TEXTS, 2)
    assert (reduced * exact).sum(1).min() > 0.99 and np.abs(reduced - exact).max() > 1e-6  # int8: close, not equal


@pytest.mark.parametrize("fixture", ["tiny_deberta_dir", "tiny_bert_dir"])
def test_cls_and_mean_pooling_equal_output_hidden_states(fixture, request):
    directory = str(request.getfixturevalue(fixture))
    encoder = Encoder(load_model(directory, "cpu"), batch_size=4)
    first = encoder.encode_layers(TEXTS, [0, 2], pooling=CLS)
    mean = encoder.encode_layers(TEXTS, [0, 2], pooling=MEAN)  # every token, special ones included
    reference = load_model(directory, "cpu", train=True)  # transformers' tokenizer and model
    for row, text in enumerate(TEXTS):
        batch = reference.tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            hidden = reference.model(**batch, output_hidden_states=True).hidden_states
        for layer in (0, 2):
            expected = torch.nn.functional.normalize(hidden[layer][0, 0], dim=-1).numpy()
            np.testing.assert_allclose(first[layer][row], expected, atol=1e-5)
            expected = torch.nn.functional.normalize(hidden[layer][0].mean(0), dim=-1).numpy()
            np.testing.assert_allclose(mean[layer][row], expected, atol=1e-5)
    assert np.allclose(np.linalg.norm(first[2], axis=1), 1.0, atol=1e-5)


def test_cli_cls_pooling(text_file, tmp_path, tiny_deberta_dir, encoder):
    out = tmp_path / "cls.npz"
    assert main(["embed", str(text_file), "--model", str(tiny_deberta_dir), "--layers", "3", "--pooling", "cls",
                 "--out", str(out), "--device", "cpu"]) == 0
    np.testing.assert_allclose(np.load(out)["layer_3"], encoder.encode(TEXTS, 3, pooling=CLS), atol=1e-5)


def test_parquet_round_trip_or_clear_error(tmp_path):
    embeddings = Embeddings(["a", "b"], {4: np.eye(2, 3, dtype=np.float32), 6: np.ones((2, 3), np.float32)})
    out = tmp_path / "v.parquet"
    try:
        import pyarrow.parquet as pq
    except ImportError:
        with pytest.raises(Exception, match=r"pip install"):
            write_embeddings(embeddings, out)
        return
    write_embeddings(embeddings, out)
    table = pq.read_table(out).to_pydict()
    assert table["id"] == ["a", "b"]
    np.testing.assert_array_equal(np.array(table["layer_4"], dtype=np.float32), embeddings.vectors[4])
    np.testing.assert_array_equal(np.array(table["layer_6"], dtype=np.float32), embeddings.vectors[6])


def test_npy_refuses_several_layers_and_unknown_suffix(tmp_path):
    embeddings = Embeddings(["a"], {1: np.zeros((1, 2), np.float32), 2: np.zeros((1, 2), np.float32)})
    with pytest.raises(Exception, match=r"\.npz or \.parquet"):
        write_embeddings(embeddings, tmp_path / "v.npy")
    with pytest.raises(Exception, match="unknown output format"):
        write_embeddings(embeddings, tmp_path / "v.csv")


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    (b"\n  \n", "no texts to embed"),
    (b"fine\n\xff\xfe bad\n", "bad.txt:2: invalid UTF-8"),
])
def test_cli_bad_input(content, message, tmp_path, tiny_deberta_dir, capsys):
    path = tmp_path / "bad.txt"
    if content is not None:
        path.write_bytes(content)
    code = main(["embed", str(path), "--model", str(tiny_deberta_dir), "--out", str(tmp_path / "v.npy")])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not (tmp_path / "v.npy").exists()


def test_cli_bad_corpus_record_and_layer(tmp_path, tiny_deberta_dir, capsys):
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text('{"id": "a", "text": "hello"}\n{"id": "b"}\n', encoding="utf-8")
    assert main(["embed", str(jsonl), "--model", str(tiny_deberta_dir), "--out", str(tmp_path / "v.npy")]) == 1
    assert "docs.jsonl:2" in capsys.readouterr().err
    text = tmp_path / "t.txt"
    text.write_text("hello\n", encoding="utf-8")
    assert main(["embed", str(text), "--model", str(tiny_deberta_dir), "--layers", "9",
                 "--out", str(tmp_path / "v.npy"), "--device", "cpu"]) == 1
    assert "layer 9 does not exist" in capsys.readouterr().err
    assert main(["embed", str(text), "--model", str(tiny_deberta_dir), "--layers", "9",
                 "--pooling", "cls", "--out", str(tmp_path / "v.npy"), "--device", "cpu"]) == 1
    assert "layer 9 does not exist" in capsys.readouterr().err
