"""`import xlsearch`: the public Python API, and what importing it costs."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import xlsearch
from xlsearch.indexer.errors import ConfigError, IndexMismatchError, IndexNotFoundError, QueryError
from xlsearch.indexer.text.corpus import CorpusError

DOCS = [
    {"id": "moon-es", "text": "Neil Armstrong pisó la Luna en 1969 con el Apolo 11.", "lang": "es"},
    {"id": "tea-en", "text": "Green tea is brewed with water below the boil.", "lang": "en", "source": "wiki"},
    {"id": "volcano-de", "text": "Der Vulkan Ätna auf Sizilien ist sehr aktiv.", "lang": "de"},
]


def test_open_add_search_delete_in_a_few_lines(tmp_path, tiny_deberta_dir):
    with xlsearch.open_index(tmp_path / "i", model=str(tiny_deberta_dir), layer=2) as index:
        stats = index.add(DOCS)
        assert (stats.added, stats.replaced) == (3, 0)
        assert index.search("Armstrong Luna", k=1, mode="lexical")[0].id == "moon-es"
        hits = index.search("Green tea water", k=3)
        assert hits[0].id == "tea-en" and hits[0].metadata == {"source": "wiki"}
        assert index.search("tea", k=3, filter={"source": "wiki"}, mode="lexical")[0].id == "tea-en"
        queries = ["Green tea water", "Armstrong Luna", "Vulkan Ätna"]
        assert [[h.id for h in hits] for hits in index.search_many(queries, k=2)] == \
            [[h.id for h in index.search(q, k=2)] for q in queries]
        with pytest.raises(QueryError, match="query 1: "):
            index.search_many(["tea", "   "])
        with pytest.raises(TypeError, match="list of query strings"):
            index.search_many("tea")  # not three queries 't', 'e', 'a'
        assert index.delete(["volcano-de", "nope"]) == ["volcano-de"]
        assert "volcano-de" not in [h.id for h in index.search("Vulkan Ätna", k=3)]
    # Reopened without naming the model: the index's own, as recorded, with its settings.
    with xlsearch.open_index(tmp_path / "i") as index:
        assert index.config.model_name == str(tiny_deberta_dir) and index.config.layer == 2
        assert index.add([xlsearch.Document("x", "Apollo 11 landed in 1969.", lang="en")]).added == 1
        assert index.search("Apollo", k=1, mode="lexical")[0].id == "x"
        index.optimize()  # three commits' segments, one with a deleted document, merged into one
        assert index.search("Apollo", k=1, mode="lexical")[0].id == "x"
    from xlsearch.indexer.store.storage import committed_manifest

    assert len(committed_manifest(tmp_path / "i").segments) == 1


def test_an_index_keeps_its_precision(tmp_path, tiny_deberta_dir):
    with xlsearch.open_index(tmp_path / "i", model=str(tiny_deberta_dir), layer=2, precision="int8") as index:
        index.add(DOCS)
        assert index.search("Green tea water", k=1, mode="dense")[0].id == "tea-en"
    with xlsearch.open_index(tmp_path / "i") as index:  # reopened: the recorded precision, for both sides
        assert index.config.precision == "int8"
        assert index.add([xlsearch.Document("x", "Apollo 11 landed in 1969.", lang="en")]).added == 1
        assert index.search("Apollo 11", k=1, mode="dense")[0].id == "x"
    with pytest.raises(IndexMismatchError, match="precision='int8', not 'fp32'"):
        xlsearch.open_index(tmp_path / "i", precision="fp32")
    with pytest.raises(ConfigError, match="unknown precision 'int4'"):
        xlsearch.open_index(tmp_path / "new", precision="int4")


def test_manifest_names_the_model_that_made_the_vectors(tmp_path, encoder):
    """A writer given an encoder and a config naming another model records the encoder's."""
    from xlsearch.indexer.writing.writer import IndexWriter
    from xlsearch.indexer.config import IndexConfig

    with IndexWriter(tmp_path / "i", encoder, IndexConfig(layer=2)) as writer:  # default model_name
        writer.upsert([xlsearch.Document("a", "some text")])
        manifest = writer.commit()
    assert manifest.config.model_name == encoder.loaded.name != IndexConfig().model_name


def test_bad_input_is_named(tmp_path, tiny_deberta_dir):
    with pytest.raises(ConfigError, match="unknown index setting 'chunk_size'"):
        xlsearch.open_index(tmp_path / "i", model=str(tiny_deberta_dir), chunk_size=100)
    index = xlsearch.open_index(tmp_path / "i", model=str(tiny_deberta_dir), layer=1)
    with pytest.raises(IndexNotFoundError):
        index.search("anything", mode="lexical")
    with pytest.raises(CorpusError, match="document 1: record 'b' has no text"):
        index.add([{"id": "a", "text": "fine"}, {"id": "b", "text": " "}])
    index.add(DOCS[:1])
    with pytest.raises(IndexMismatchError, match="chunk_tokens"):
        xlsearch.open_index(tmp_path / "i", chunk_tokens=128)


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_import_xlsearch_loads_no_torch():
    loaded = _modules_after("import xlsearch; xlsearch.open_index; xlsearch.Document")
    assert "torch" not in loaded and "transformers" not in loaded


@pytest.mark.parametrize("argv", [["--help"], ["info", "--index", "{index}"], ["check", "--index", "{index}"],
                                  ["search", "--index", "{index}", "volcano", "--mode", "lexical"],
                                  ["delete", "--index", "{index}", "nothing-here"]])
def test_commands_that_need_no_model_load_no_torch(argv, sample_index):
    """`--help`, info, check, delete and lexical search start without torch or transformers."""
    argv = [a.format(index=sample_index) for a in argv]
    code = (f"import sys\nfrom xlsearch.api.cli.main import main\nsys.argv = ['xlsearch', *{argv!r}]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass")
    loaded = _modules_after(code)
    assert "torch" not in loaded and "transformers" not in loaded


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_pages_follow_one_ranking(sample_index, mode):
    """offset skips hits of the same ranking: page 2 of 5 is hits 6..10 of one top 10."""
    from xlsearch.indexer.errors import QueryError
    from xlsearch.search.searcher import Searcher

    searcher = Searcher(sample_index)
    try:
        top = [h.id for h in searcher.search("tea volcano", k=10, mode=mode).hits]
        page = [h.id for h in searcher.search("tea volcano", k=5, mode=mode, offset=5).hits]
        assert len(top) == 10 and page == top[5:]
        with pytest.raises(QueryError, match="offset must be between 0 and 995"):
            searcher.search("tea", k=5, offset=996)
    finally:
        searcher.close()


def test_listing_a_sharded_index_merges_shards_in_id_order(tmp_path, encoder):
    from xlsearch.indexer.config import IndexConfig
    from xlsearch.indexer.store.shard_layout import list_documents
    from xlsearch.indexer.writing.sharded import open_writer

    docs = [xlsearch.Document(f"doc-{i:03d}", f"text number {i}") for i in range(40)]
    with open_writer(tmp_path / "s", encoder, IndexConfig(layer=2), shards=3) as writer:
        writer.upsert(docs)
        writer.commit()
    page, total = list_documents(tmp_path / "s", 7, 10)
    assert total == 40 and [d.id for d in page] == [f"doc-{i:03d}" for i in range(7, 17)]
    assert [d.id for d in list_documents(tmp_path / "s", 35, 10)[0]] == [f"doc-{i:03d}" for i in range(35, 40)]


def test_an_unreachable_hub_model_fails_before_torch_loads(tmp_path, sample_index):
    """A hub id that is not cached, on a machine without the hub: one line, and no torch imported."""
    import os

    sample = Path(__file__).resolve().parents[1] / "data" / "sample.jsonl"
    for argv in (["index", str(sample), "--index", str(tmp_path / "i")], ["search", "--index", str(sample_index), "tea"]):
        code = (f"import sys\nfrom xlsearch.api.cli.main import main\n"
                f"assert main([*{argv!r}, '--model', 'nobody/not-cached-model']) == 1\n"
                "print(' '.join(sys.modules))")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert done.returncode == 0, done.stderr
        assert "not in the local Hugging Face cache and HF_HUB_OFFLINE is set" in done.stderr
        assert "--model multilingual-e5-small" in done.stderr and len(done.stderr.strip().splitlines()) == 1
        assert "torch" not in done.stdout.split()
