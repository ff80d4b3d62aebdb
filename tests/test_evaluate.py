"""xlsearch evaluate: benchmark loaders, the layer cache, the harness and the command, end to end."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED

from xlsearch.indexer.writing.pipeline import index_documents
from xlsearch.api.cli.main import main
from xlsearch.indexer.encoding.encoder import Encoder
from xlsearch.indexer.errors import XlsearchError
from xlsearch.search.eval.benchmarks import TATOEBA_XTREME, BenchmarkError, load_benchmark
from xlsearch.search.eval.harness import EvalSettings, Evaluation, LayerCache, Score, evaluate


@pytest.fixture(autouse=True)
def no_model_env(monkeypatch):
    monkeypatch.delenv("XLSEARCH_MODEL", raising=False)


@pytest.fixture(scope="module")
def beir_dir(tmp_path_factory) -> Path:
    """A BEIR-layout dataset made of real XQuAD text: English paragraphs (titled) and questions."""
    data = json.loads((SHARED / "xquad" / "xquad.en.json").read_text(encoding="utf-8"))
    root = tmp_path_factory.mktemp("beir") / "xquad-en"
    (root / "qrels").mkdir(parents=True)
    corpus, queries, qrels = [], [], ["query-id\tcorpus-id\tscore"]
    for a, article in enumerate(data["data"][:3]):
        for p, paragraph in enumerate(article["paragraphs"][:2]):
            doc_id = f"a{a}p{p}"
            corpus.append({"_id": doc_id, "title": article["title"].replace("_", " "), "text": paragraph["context"]})
            for qa in paragraph["qas"][:2]:
                queries.append({"_id": qa["id"], "text": qa["question"]})
                qrels.append(f"{qa['id']}\t{doc_id}\t1")
    queries.append({"_id": "unjudged", "text": "a query with no judgments"})
    (root / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in corpus) + "\n", encoding="utf-8")
    (root / "queries.jsonl").write_text("\n".join(json.dumps(r) for r in queries) + "\n", encoding="utf-8")
    (root / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n", encoding="utf-8")
    return root


# -- loaders ---------------------------------------------------------------------
def test_tatoeba_pairs_and_preset():
    bench = load_benchmark("tatoeba", SHARED / "tatoeba", langs=["deu", "cmn"], limit=5)
    assert [t.key for t in bench.tasks] == ["deu-eng", "eng-deu", "cmn-eng", "eng-cmn"]
    forward = bench.tasks[0]
    assert forward.collection == "deu.eng" and forward.qrels["deu:3"] == {"eng:3": 1}
    assert [d.id for d in bench.collections["deu.eng"]] == [f"eng:{i}" for i in range(5)]
    assert bench.collections["deu.deu"][0].text == forward.queries["deu:0"]
    assert bench.metrics == ("accuracy@1",)
    xtreme = load_benchmark("tatoeba", SHARED / "tatoeba", langs=["xtreme"], limit=1)
    assert len(TATOEBA_XTREME) == 36 and len(xtreme.tasks) == 72


def test_xquad_aligns_questions_by_id_and_paragraphs_by_position():
    bench = load_benchmark("xquad", SHARED / "xquad", langs=["en", "zh"], limit=2)
    assert [t.key for t in bench.tasks] == ["en-en", "en-zh", "zh-en", "zh-zh"]
    en_zh, zh_en = bench.tasks[1], bench.tasks[2]
    assert en_zh.queries.keys() == zh_en.queries.keys() and en_zh.group == "cross-lingual"
    qid = next(iter(en_zh.queries))
    assert en_zh.qrels[qid] == {"zh:0": 1} and zh_en.qrels[qid] == {"en:0": 1}
    assert len(bench.collections["zh"]) == 2 and bench.collections["zh"][0].lang == "zh"
    assert [t.key for t in load_benchmark("xquad", SHARED / "xquad", langs=["en", "zh"], pairs="mono").tasks] \
        == ["en-en", "zh-zh"]
    assert [t.key for t in load_benchmark("xquad", SHARED / "xquad", pairs="ar-en,de-en", limit=1).tasks] \
        == ["ar-en", "de-en"]


def test_xquad_r_answer_in_every_language_is_relevant():
    bench = load_benchmark("xquad-r", SHARED / "xquad-r", langs=["en", "de", "zh"], limit=2)
    assert [t.key for t in bench.tasks] == ["en", "de", "zh"] and list(bench.collections) == ["pool"]
    ids = {d.id for d in bench.collections["pool"]}
    for task in bench.tasks:
        for relevant in task.qrels.values():
            assert {doc.split(":")[0] for doc in relevant} == {"en", "de", "zh"} and set(relevant) <= ids
    data = json.loads((SHARED / "xquad-r" / "en.json").read_text(encoding="utf-8"))
    paragraph = data["data"][0]["paragraphs"][0]
    qa = paragraph["qas"][0]
    sentence = bench.tasks[0].qrels[qa["id"]]
    doc = next(d for d in bench.collections["pool"] if d.id in sentence and d.lang == "en")
    start = qa["answers"][0]["answer_start"]
    assert doc.text == paragraph["context"][slice(*next(b for b in paragraph["sentence_breaks"] if b[0] <= start < b[1]))]


def test_beir_loader(beir_dir):
    bench = load_benchmark("beir", beir_dir)
    task = bench.tasks[0]
    assert len(bench.collections["corpus"]) == 6 and len(task.queries) == 11 and "unjudged" not in task.queries
    assert bench.collections["corpus"][0].title == "Super Bowl 50"
    sliced = load_benchmark("beir", beir_dir, limit=2)
    assert len(sliced.tasks[0].queries) == 2 and len(sliced.collections["corpus"]) == 6  # judged + 10N others


def test_errors_name_the_file_and_line(tmp_path):
    def fails(name: str, path: Path, message: str, **options) -> None:
        with pytest.raises(BenchmarkError, match=message):
            load_benchmark(name, path, **options)

    fails("tatoeba", tmp_path / "missing", "no such benchmark folder")
    fails("tatoeba", tmp_path, "no tatoeba.xxx-eng.eng files")
    (tmp_path / "tatoeba.deu-eng.eng").write_text("one\ntwo\n")
    fails("tatoeba", tmp_path, r"tatoeba.deu-eng.deu: file not found")
    (tmp_path / "tatoeba.deu-eng.deu").write_text("eins\n\n")
    fails("tatoeba", tmp_path, r"tatoeba.deu-eng.deu:2: empty line")
    (tmp_path / "tatoeba.deu-eng.deu").write_text("eins\nzwei\ndrei\n")
    fails("tatoeba", tmp_path, "3 lines, but .* has 2")
    fails("tatoeba", tmp_path, "no tatoeba data for fra; available: deu", langs=["fra"])
    (tmp_path / "tatoeba.deu-eng.deu").write_bytes(b"eins\nzw\xffei\n")
    fails("tatoeba", tmp_path, r"tatoeba.deu-eng.deu:2: not valid UTF-8")
    (tmp_path / "xquad.en.json").write_text('{"data": [\n  {"paragraphs": [}\n]}')
    fails("xquad", tmp_path, r"xquad.en.json:2: invalid JSON")
    (tmp_path / "xquad.en.json").write_text('{"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "1"}]}]}]}')
    fails("xquad", tmp_path, r"xquad.en.json: data\[0\].paragraphs\[0\].qas\[0\]: missing 'question'")
    fails("xquad", tmp_path, "pairs 'en-xx'", pairs="en-xx")
    fails("nope", tmp_path, "unknown benchmark 'nope'")
    (tmp_path / "qrels").mkdir()
    fails("beir", tmp_path, r"qrels/test.tsv: file not found")
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\tlots\n")
    fails("beir", tmp_path, r"test.tsv:2: score 'lots' is not a number")
    (tmp_path / "qrels" / "test.tsv").write_text("q1\td1\t1\n")
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "what"}\n{"_id": "q2"}\n')
    fails("beir", tmp_path, r"queries.jsonl:2: missing or empty 'text'")


def test_cli_reports_a_bad_benchmark_in_one_line(tmp_path, capsys):
    assert main(["evaluate", "xquad", "--data", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no xquad.xx.json files found" in err and err.count("\n") == 1


# -- layer cache and harness -------------------------------------------------------
class CountingEncoder(Encoder):
    """The real encoder, counting the texts that go through the model."""

    def __init__(self, loaded):
        super().__init__(loaded, batch_size=8)
        self.texts = 0

    def encode_layers(self, texts, layers, progress=None, **options):
        self.texts += len(texts)
        return super().encode_layers(texts, layers, progress, **options)


def test_layer_cache_encodes_each_text_once(tiny_model, encoder):
    counting = CountingEncoder(tiny_model)
    cache = LayerCache(counting, [1, 3])
    texts = ["Guten Morgen", "早上好", "Guten Morgen", "Bonjour tout le monde"]
    for layer in (1, 3):
        np.testing.assert_allclose(cache.encode(texts, layer), encoder.encode(texts, layer), atol=1e-5)
    cache.encode(texts[:2], 3)
    assert counting.texts == 3 and cache.forward_texts == 3 and len(cache) == 3
    assert cache.encode([], 1).shape == (0, encoder.dim) and cache.loaded is tiny_model
    cache.retain({"早上好"})
    assert len(cache) == 1


def test_sweep_encodes_once_and_lexical_matches_the_modelless_path(tiny_model):
    bench = load_benchmark("tatoeba", SHARED / "tatoeba", langs=["deu"], limit=12)
    counting = CountingEncoder(tiny_model)
    swept = evaluate(bench, counting, EvalSettings(modes=("dense", "lexical", "hybrid"), layers=(1, 2, 3)),
                      build=index_documents)
    texts = {d.text for docs in bench.collections.values() for d in docs}
    assert counting.texts == len(texts)  # every sentence is both a query and a document; no chunk is split
    assert swept.configs == [("dense", 1), ("dense", 2), ("dense", 3), ("lexical", None), ("hybrid", 1),
                             ("hybrid", 2), ("hybrid", 3)]
    modelless = evaluate(bench, None, EvalSettings(modes=("lexical",)))
    assert modelless.lexical_unit == "document"
    lexical = {(s.key, s.metric): s.value for s in swept.scores if s.mode == "lexical"}
    assert lexical == {(s.key, s.metric): s.value for s in modelless.scores}
    assert lexical[("deu-eng", "accuracy@1")] > 0  # names and numbers match across languages


def test_dense_modes_need_a_model():
    bench = load_benchmark("tatoeba", SHARED / "tatoeba", langs=["deu"], limit=2)
    with pytest.raises(XlsearchError, match="need a model"):
        evaluate(bench, None, EvalSettings(modes=("dense", "lexical")))
    with pytest.raises(XlsearchError, match="unknown mode"):
        EvalSettings(modes=("fuzzy",))


def test_summary_groups_and_best_layer():
    bench = load_benchmark("xquad", SHARED / "xquad", langs=["en", "de"], limit=1)
    evaluation = Evaluation(bench, "m", EvalSettings(modes=("dense",), layers=(4, 8)))
    for layer, base in ((4, 0.2), (8, 0.4)):
        for i, task in enumerate(bench.tasks):
            evaluation.scores.append(Score("dense", layer, "mrr@10", "pair", task.key, base + 0.1 * i))
    rows = {(r["layer"], r["scope"]): r["value"] for r in evaluation.summary()}
    assert rows[(8, "mean")] == pytest.approx(0.55) and rows[(8, "monolingual")] == pytest.approx(0.55)
    assert rows[(4, "cross-lingual")] == pytest.approx(0.35)  # en-de 0.3, de-en 0.4
    assert evaluation.best() == [{"mode": "dense", "layer": 8, "value": pytest.approx(0.55)}]
    result = evaluation.to_dict()
    assert result["results"][1] == {"mode": "dense", "layer": 4, "metric": "mrr@10", "pair": "en-de", "value": 0.3}


# -- the command, end to end ---------------------------------------------------------
def outputs(tmp_path: Path) -> list[str]:
    return ["--out", str(tmp_path / "r.json"), "--report", str(tmp_path / "r.md"), "--plot", str(tmp_path / "r.png"),
            "--run-file", str(tmp_path / "r.trec")]


def check_outputs(tmp_path: Path, benchmark: str, modes: set[str], field: str) -> dict:
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["benchmark"] == benchmark and {r["mode"] for r in result["results"]} == modes
    assert all(field in r and set(r) == {"mode", "layer", "metric", field, "value"} for r in result["results"])
    assert {"primary_metric", "best", "scores", "settings"} <= set(result["summary"])
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "r.md").read_text().startswith(f"# xlsearch evaluate {benchmark}")
    lines = (tmp_path / "r.trec").read_text().splitlines()
    assert lines and all(len(line.split()) == 6 and line.split()[1] == "Q0" for line in lines)
    return result


def test_cli_xquad_sweep_with_tiny_model(tmp_path, tiny_deberta_dir, capsys):
    argv = ["evaluate", "xquad", "--data", str(SHARED / "xquad"), "--model", str(tiny_deberta_dir),
            "--layers", "1,3", "--langs", "en", "zh", "--limit", "1", "--chunk-tokens", "128", "--chunk-overlap", "16"]
    assert main(argv + outputs(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "configuration" in out and "hybrid L1" in out and "questions (rows) x paragraphs (columns)" in out
    result = check_outputs(tmp_path, "xquad", {"dense", "lexical", "hybrid"}, "pair")
    assert {r["layer"] for r in result["results"] if r["mode"] == "dense"} == {1, 3}
    assert {r["metric"] for r in result["results"]} == {"mrr@10", "ndcg@10", "recall@1", "recall@5", "recall@20"}
    assert {s["scope"] for s in result["summary"]["scores"]} == {"mean", "monolingual", "cross-lingual"}
    tags = {line.split()[5] for line in (tmp_path / "r.trec").read_text().splitlines()}
    assert tags == {"xlsearch-dense-L1", "xlsearch-dense-L3", "xlsearch-lexical", "xlsearch-hybrid-L1",
                    "xlsearch-hybrid-L3"}


def test_cli_tatoeba_and_xquad_r_with_tiny_model(tmp_path, tiny_deberta_dir, capsys):
    base = ["--model", str(tiny_deberta_dir), "--layers", "2", "--limit", "8"]
    assert main(["evaluate", "tatoeba", "--data", str(SHARED / "tatoeba"), "--langs", "deu,cmn"] + base
                + outputs(tmp_path)) == 0
    result = check_outputs(tmp_path, "tatoeba", {"dense", "lexical", "hybrid"}, "pair")
    assert {r["pair"] for r in result["results"]} == {"deu-eng", "eng-deu", "cmn-eng", "eng-cmn"}
    assert "deu" in capsys.readouterr().out
    assert main(["evaluate", "xquad-r", "--data", str(SHARED / "xquad-r"), "--langs", "en", "de", "--limit", "1",
                 "--modes", "dense,hybrid", "--fusion", "linear"] + base[:4] + outputs(tmp_path)) == 0
    result = check_outputs(tmp_path, "xquad-r", {"dense", "hybrid"}, "lang")
    assert {r["metric"] for r in result["results"]} == {"map@20"} and result["summary"]["settings"]["fusion"] == "linear"


def test_cli_beir_index_reuse_and_existing_index(tmp_path, tiny_deberta_dir, beir_dir, capsys):
    cache = tmp_path / "cache"
    argv = ["evaluate", "beir", "--data", str(beir_dir), "--model", str(tiny_deberta_dir), "--layers", "2",
            "--index", str(cache)]
    assert main(argv + outputs(tmp_path)) == 0
    first = check_outputs(tmp_path, "beir", {"dense", "lexical", "hybrid"}, "lang")
    assert (cache / "corpus" / "L2" / "manifest.json").is_file()
    assert main(argv + ["--out", str(tmp_path / "again.json")]) == 0  # reuses the index: same numbers
    assert json.loads((tmp_path / "again.json").read_text())["results"] == first["results"]
    lexical = {r["metric"]: r["value"] for r in first["results"] if r["mode"] == "lexical"}
    assert lexical["recall@100"] == 1.0 and lexical["mrr@10"] > 0.5
    # an index built by `xlsearch index` from the corpus, searched as it is, with no model loaded
    index = tmp_path / "idx"
    assert main(["index", str(beir_dir / "corpus.jsonl"), "--index", str(index), "--model", str(tiny_deberta_dir),
                 "--layer", "2"]) == 0
    assert main(["evaluate", "beir", "--data", str(beir_dir), "--index", str(index), "--modes", "lexical",
                 "--out", str(tmp_path / "existing.json")]) == 0
    existing = json.loads((tmp_path / "existing.json").read_text())
    assert {r["metric"]: r["value"] for r in existing["results"]} == lexical
    assert main(["evaluate", "xquad", "--data", str(SHARED / "xquad"), "--index", str(index), "--limit", "1"]) == 1
    assert "has 12 collections" in capsys.readouterr().err
    # the index's own model in another precision than its vectors': refused, naming both
    assert main(["evaluate", "beir", "--data", str(beir_dir), "--index", str(index), "--modes", "dense",
                 "--precision", "int8"]) == 1
    assert "computed in fp32, not int8" in capsys.readouterr().err


def test_cli_lexical_needs_no_model(tmp_path, capsys):
    argv = ["evaluate", "xquad", "--data", str(SHARED / "xquad"), "--pairs", "mono", "--langs", "zh", "th",
            "--limit", "40", "--out", str(tmp_path / "r.json")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "model none (lexical only)" in out and "monolingual" in out
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["model"] is None and result["summary"]["settings"]["lexical_unit"] == "document"
    mrr = {r["pair"]: r["value"] for r in result["results"] if r["metric"] == "mrr@10"}
    assert mrr["zh-zh"] > 0.9 and mrr["th-th"] > 0.9


def test_plot_without_matplotlib_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    argv = ["evaluate", "tatoeba", "--data", str(SHARED / "tatoeba"), "--langs", "deu", "--limit", "3",
            "--plot", str(tmp_path / "p.png")]
    assert main(argv) == 1
    assert "pip install 'xlsearch[eval]'" in capsys.readouterr().err and not (tmp_path / "p.png").exists()


def test_index_cache_with_another_slice_is_rebuilt(tmp_path, tiny_deberta_dir):
    cache = tmp_path / "cache"
    base = ["evaluate", "tatoeba", "--data", str(SHARED / "tatoeba"), "--langs", "deu", "--model",
            str(tiny_deberta_dir), "--layers", "1", "--modes", "lexical", "--index", str(cache)]
    assert main(base + ["--limit", "6", "--out", str(tmp_path / "a.json")]) == 0
    assert main(base + ["--limit", "3", "--out", str(tmp_path / "b.json")]) == 0
    fresh = tmp_path / "fresh"
    shutil.rmtree(cache)
    assert main(base[:-1] + [str(fresh), "--limit", "3", "--out", str(tmp_path / "c.json")]) == 0
    assert json.loads((tmp_path / "b.json").read_text())["results"] == \
        json.loads((tmp_path / "c.json").read_text())["results"]


def test_cli_center_languages_switch(tmp_path, tiny_deberta_dir, beir_dir):
    cache = tmp_path / "cache"
    argv = ["evaluate", "beir", "--data", str(beir_dir), "--model", str(tiny_deberta_dir), "--layers", "2",
            "--modes", "dense", "--index", str(cache), "--center-languages", "--out", str(tmp_path / "c.json")]
    assert main(argv) == 0
    result = json.loads((tmp_path / "c.json").read_text())
    assert result["summary"]["settings"]["center_languages"] is True
    manifest = json.loads((cache / "corpus" / "L2" / "manifest.json").read_text())
    assert manifest["config"]["center_languages"] is True
    assert [r["mode"] for r in result["results"]] and {r["mode"] for r in result["results"]} == {"dense"}
