"""`xlsearch fill-mask`: predicts with a trained head, refuses an untrained one, prefers the generator."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from xlsearch.api.cli.main import main

SENTENCE = "every small village needs clean water and good roads"
TOKENIZER_FILES = ("spm.model", "tokenizer_config.json")


def _target(tokenizer) -> tuple[str, str]:
    """A word of SENTENCE that is one SentencePiece token, and the sentence with it masked."""
    words = SENTENCE.split()
    for i, word in enumerate(words[1:-1], start=1):
        if len(tokenizer.tokenize(" " + word)) == 1 and len(word) > 3:
            return word, " ".join(words[:i] + ["[MASK]"] + words[i + 1:])
    raise AssertionError("no single-token word in the sentence")


@pytest.fixture(scope="module")
def trained_mlm(tiny_deberta_dir):
    """A tiny DebertaV2ForMaskedLM trained until it predicts the masked word of one repeated sentence."""
    from transformers import AutoConfig, AutoTokenizer, DebertaV2ForMaskedLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_deberta_dir)
    word, masked_text = _target(tokenizer)
    config = AutoConfig.from_pretrained(tiny_deberta_dir, hidden_dropout_prob=0.0,
                                        attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = DebertaV2ForMaskedLM(config)
    batch = tokenizer([masked_text], return_tensors="pt")
    position = (batch["input_ids"][0] == tokenizer.mask_token_id).nonzero().item()
    target = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(" " + word))[0]
    labels = torch.full_like(batch["input_ids"], -100)
    labels[0, position] = target
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(60):
        loss = model(**batch, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        assert model(**batch).logits[0, position].argmax().item() == target
    return model, word, masked_text


def _with_tokenizer(directory, tiny_deberta_dir):
    for name in TOKENIZER_FILES:
        shutil.copy(tiny_deberta_dir / name, directory / name)
    return directory


def test_trained_head_predicts_the_word(trained_mlm, tiny_deberta_dir, tmp_path, capsys):
    model, word, masked_text = trained_mlm
    model.save_pretrained(tmp_path / "mlm")
    directory = _with_tokenizer(tmp_path / "mlm", tiny_deberta_dir)
    assert main(["fill-mask", masked_text, "--model", str(directory), "--top-k", "3", "--json",
                 "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["checkpoint"] == "main"
    assert len(result["masks"]) == 1 and len(result["masks"][0]) == 3
    assert result["masks"][0][0]["token"] == word
    scores = [p["score"] for p in result["masks"][0]]
    assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1
    assert main(["fill-mask", masked_text, "--model", str(directory), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[0] == "1" and lines[1].split()[2] == word and len(lines) == 6


def test_model_without_head_is_refused(tiny_deberta_dir, capsys, monkeypatch):
    monkeypatch.setenv("XLSEARCH_MODEL", str(tiny_deberta_dir))  # a plain DebertaV2Model: no MLM head
    assert main(["fill-mask", "the [MASK] is full of boats", "--device", "cpu"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # no predictions printed
    err = captured.err
    assert err.startswith("error: ") and "masked-LM head" in err and "randomly initialised" in err
    assert "#18143" in err and "generator_config.json" in err


def test_generator_checkpoint_is_preferred(trained_mlm, tiny_deberta_dir, tmp_path, capsys):
    """Main weights without a head (would be refused) + generator files in mdeberta's layout: generator used."""
    model, word, masked_text = trained_mlm
    directory = tmp_path / "mdeberta-like"
    shutil.copytree(tiny_deberta_dir, directory)
    config = model.config.to_dict()
    config.pop("model_type")  # taken from the main config.json
    config.pop("legacy", None)  # the weights below use the non-legacy `lm_predictions.lm_head` names
    (directory / "generator_config.json").write_text(json.dumps(config), encoding="utf-8")
    renames = {"cls.predictions.transform.": "lm_predictions.lm_head.",
               "cls.predictions.bias": "lm_predictions.lm_head.bias"}
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("cls.predictions.decoder"):
            continue  # tied to the word embeddings
        for old, new in renames.items():
            key = key.replace(old, new)
        state[key] = value
    torch.save(state, directory / "pytorch_model.generator.bin")
    assert main(["fill-mask", masked_text, "--model", str(directory), "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["checkpoint"] == "generator"
    assert result["masks"][0][0]["token"] == word


def test_text_without_mask(trained_mlm, tiny_deberta_dir, tmp_path, capsys):
    model, _, _ = trained_mlm
    model.save_pretrained(tmp_path / "mlm")
    directory = _with_tokenizer(tmp_path / "mlm", tiny_deberta_dir)
    assert main(["fill-mask", "no mask here", "--model", str(directory), "--device", "cpu"]) == 1
    assert "no [MASK] in the text" in capsys.readouterr().err
