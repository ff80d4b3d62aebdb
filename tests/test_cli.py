"""The xlsearch command: exit codes, stderr messages, JSON output, help for every subcommand."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from xlsearch.api.cli.main import build_parser, main
from conftest import REPO, SAMPLE

SUBCOMMANDS = ["index", "search", "delete", "info", "optimize", "check", "serve", "evaluate", "embed", "fill-mask",
               "finetune", "classify"]


@pytest.fixture
def model_env(monkeypatch, tiny_deberta_dir):
    monkeypatch.setenv("XLSEARCH_MODEL", str(tiny_deberta_dir))
    return tiny_deberta_dir


def test_every_subcommand_has_help(capsys):
    choices = build_parser()._subparsers._group_actions[0].choices
    assert sorted(choices) == sorted(SUBCOMMANDS)
    for command in SUBCOMMANDS:
        with pytest.raises(SystemExit) as done:
            main([command, "--help"])
        assert done.value.code == 0
        out = capsys.readouterr().out
        assert f"usage: xlsearch {command}" in out
        for action in choices[command]._actions:
            assert action.help, f"{command} {action.option_strings or action.dest} has no help"


def test_index_search_json_info_delete(tmp_path, model_env, capsys):
    index = str(tmp_path / "idx")
    assert main(["index", str(SAMPLE), "--index", index, "--layer", "2", "--chunk-tokens", "96"]) == 0
    assert "52 added" in capsys.readouterr().out
    assert main(["search", "--index", index, "绿茶 水温", "-k", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["query"] == "绿茶 水温" and result["mode"] == "hybrid" and len(result["hits"]) == 3
    hit = result["hits"][0]
    assert {"id", "score", "title", "lang", "passage", "scores"} <= set(hit)
    assert set(hit["scores"]) == {"dense", "lexical"}
    assert hit["id"] == "zh-tea-01"
    assert main(["search", "--index", index, "火山", "--mode", "lexical", "--lang", "ja"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("  1. ja-volcano-01 [ja]") and "[zh]" not in out
    assert main(["info", "--index", index, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["config"]["chunk_tokens"] == 96 and info["stored"]["documents"] == 52
    assert main(["info", "--index", index]) == 0
    summary = capsys.readouterr().out
    assert summary.startswith("documents  52 in ") and "up to 96 tokens, " in summary and "{" not in summary
    assert main(["delete", "--index", index, "zh-tea-01", "missing-id"]) == 0
    captured = capsys.readouterr()
    assert "deleted 1 of 2" in captured.out and "no document with id 'missing-id'" in captured.err
    assert main(["search", "--index", index, "绿茶 水温", "--json", "--mode", "lexical"]) == 0
    assert "zh-tea-01" not in [h["id"] for h in json.loads(capsys.readouterr().out)["hits"]]


def test_reindexing_with_another_layer_is_refused(tmp_path, model_env, capsys):
    index = str(tmp_path / "idx")
    assert main(["index", str(SAMPLE), "--index", index, "--layer", "2"]) == 0
    capsys.readouterr()
    assert main(["index", str(SAMPLE), "--index", index, "--layer", "1"]) == 1
    assert "layer=2, not 1" in capsys.readouterr().err
    assert main(["index", str(SAMPLE), "--index", index]) == 0
    assert "52 unchanged" in capsys.readouterr().out
    assert main(["search", "--index", index, "tea", "--layer", "3"]) == 1
    assert "layer=2, not 3" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["search", "--index", "{missing}", "query"], "no such index directory"),
    (["search", "--index", "{index}", "   "], "query is empty"),
    (["search", "--index", "{index}", "tea", "-k", "0"], "k must be between 1 and 1000"),
    (["search", "--index", "{index}", "tea", "-k", "-3"], "k must be between 1 and 1000"),
    (["info", "--index", "{missing}"], "no such index directory"),
    (["delete", "--index", "{missing}", "x"], "no such index directory"),
    (["index", "{missing}.jsonl", "--index", "{index}"], "no such file or directory"),
])
def test_errors_are_one_line_and_exit_1(sample_index, tmp_path, capsys, argv, message):
    argv = [a.format(missing=tmp_path / "missing", index=sample_index) for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize("argv", [["search", "query"], ["search", "--index", "x", "q", "--mode", "fuzzy"],
                                  ["search", "--index", "x", "q", "--alpha", "3"], ["frobnicate"], []])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2


def test_bad_record_stops_the_run_and_leaves_the_index(sample_index, tmp_path, model_env, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "ok", "text": "fine"}\n{"id": "ok", "text": "again"}\n{"text": "no id"}\n')
    assert main(["index", str(bad), "--index", str(sample_index)]) == 1
    assert f"error: {bad}:2: duplicate id 'ok'" in capsys.readouterr().err
    assert main(["search", "--index", str(sample_index), "fine", "--mode", "lexical", "--json"]) == 0
    assert "ok" not in [h["id"] for h in json.loads(capsys.readouterr().out)["hits"]]
    assert main(["index", str(bad), "--index", str(sample_index), "--skip-bad"]) == 0
    captured = capsys.readouterr()
    assert "1 added" in captured.out and "skipped 2 bad records" in captured.err


@pytest.mark.slow
def test_model_download_failure_is_one_clear_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "XLSEARCH_MODEL": "microsoft/mdeberta-v3-base",
           "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run([sys.executable, "-m", "xlsearch.api.cli.main", "index", str(SAMPLE), "--index", str(tmp_path / "i")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.startswith("error: could not load model 'microsoft/mdeberta-v3-base'")
    assert "--model DIR or XLSEARCH_MODEL=DIR" in done.stderr and done.stderr.count("\n") == 1
    assert "--model multilingual-e5-small" in done.stderr
    assert not (tmp_path / "i").exists()


def test_bad_input_is_reported_before_the_model_loads(tmp_path, monkeypatch, capsys):
    """The model here cannot load at all: the corpus error comes first, so loading was never tried."""
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text('{"id": "a", "text": "fine"}\n{"id": "b", "text": 5}\n', encoding="utf-8")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["index", str(corpus), "--index", str(tmp_path / "i"), "--model", "xlsearch-tests/no-such-model"]) == 1
    err = capsys.readouterr().err
    assert f"{corpus}:2" in err and "could not load model" not in err


def test_version_and_verbose_after_the_subcommand(capsys, sample_index):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("xlsearch ")
    from xlsearch.api.cli.main import build_parser

    assert build_parser().parse_args(["info", "-v", "--index", "x"]).verbose is True
    assert build_parser().parse_args(["-v", "info", "--index", "x"]).verbose is True
    assert build_parser().parse_args(["info", "--index", "x"]).verbose is False


def test_search_filters_by_metadata_and_hits_carry_it(sample_index, capsys):
    import json as json_module

    assert main(["search", "--index", str(sample_index), "tea volcano moon", "-k", "50", "--json",
                 "--mode", "lexical", "--filter", "source=howto"]) == 0
    hits = json_module.loads(capsys.readouterr().out)["hits"]
    assert hits and all(hit["metadata"] == {"source": "howto"} for hit in hits)
    # "water" is in howto and wiki-style documents; the last --filter of a key wins. (This asked
    # for "tea", which no wiki-style document holds: no hits, and all() of nothing held anyway.)
    for first, last in (("howto", "wiki-style"), ("wiki-style", "howto")):
        assert main(["search", "--index", str(sample_index), "water", "--mode", "lexical", "--json", "-k", "50",
                     "--filter", f"source={first}", "--filter", f"source={last}"]) == 0
        hits = json_module.loads(capsys.readouterr().out)["hits"]
        assert hits and all(h["metadata"]["source"] == last for h in hits), (last, hits)
    from xlsearch.api.cli.options import filter_option

    assert [filter_option(t) for t in ("year=2019", "draft=false", "score=0.5", "source=wiki", "x=NaN", "k==")] == \
        [("year", 2019), ("draft", False), ("score", 0.5), ("source", "wiki"), ("x", "NaN"), ("k", "=")]
    with pytest.raises(SystemExit):
        main(["search", "--index", str(sample_index), "tea", "--filter", "no-equals-sign"])
