"""Indexing on a local Ray cluster builds the same index as one process, sharded or not."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, xquad_documents

from xlsearch.indexer.config import IndexConfig
from xlsearch.indexer.store.docstore import DOCS_FILE, DocStore
from xlsearch.indexer.writing.pipeline import build_index
from xlsearch.indexer.writing.ray import RayOptions, build_index_ray
from xlsearch.indexer.store.shard_layout import index_directories
from xlsearch.indexer.store.check import check_any
from xlsearch.search.searcher import Searcher

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[str]]:
    docs, questions = xquad_documents(per_language=50)  # 300 real paragraphs in six languages
    for i, doc in enumerate(docs[::7]):  # some without lang (detected on the workers), some with a title
        doc.pop("lang")
        doc["title"] = f"Absatz {i}"
    for doc in docs[:100]:  # whole Ray blocks without any title or metadata (null columns)
        doc.pop("title", None)
    path = tmp_path_factory.mktemp("ray") / "docs.jsonl"
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    return path, questions


def stored(directory: Path) -> tuple[list, list, dict[int, np.ndarray]]:
    """Documents, chunks and vectors by chunk id of every shard of an index."""
    docs, chunks, vectors = [], [], {}
    searcher = Searcher(directory)
    try:
        for part in searcher.index.parts:
            for segment in part.segments.values():
                ids, found = segment.dense.all_vectors()
                vectors.update(zip(ids.tolist(), found))
    finally:
        searcher.close()
    for path in index_directories(directory):
        store = DocStore(path / DOCS_FILE)
        docs += store.db.execute("SELECT * FROM documents ORDER BY id").fetchall()
        # every column but the segment (which depends on when each run committed)
        chunks += store.db.execute("SELECT chunk_id, doc_id, start, end, text, checksum FROM chunks "
                                   "ORDER BY chunk_id").fetchall()
        store.close()
    return sorted(docs), sorted(chunks), vectors


def assert_same_index(one: Path, other: Path, questions: list[str], encoder) -> None:
    docs_a, chunks_a, vectors_a = stored(one)
    docs_b, chunks_b, vectors_b = stored(other)
    assert len(docs_a) == 300 and docs_a == docs_b  # ids, texts, detected languages, metadata, checksums
    assert len(chunks_a) > 300 and chunks_a == chunks_b  # chunk ids, offsets and texts
    assert vectors_a.keys() == vectors_b.keys()
    ids = sorted(vectors_a)
    np.testing.assert_allclose(np.stack([vectors_a[i] for i in ids]), np.stack([vectors_b[i] for i in ids]),
                               atol=1e-5)
    a, b = Searcher(one, encoder=encoder), Searcher(other, encoder=encoder)
    try:
        for query in questions:
            for mode in ("lexical", "hybrid"):
                assert ([h.id for h in a.search(query, k=10, mode=mode).hits]
                        == [h.id for h in b.search(query, k=10, mode=mode).hits])
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("shards", [None, 2])
def test_ray_index_equals_the_single_process_index(ray_cluster, corpus, encoder, remembering_encoder, tmp_path,
                                                   shards):
    config = IndexConfig(model_name=encoder.loaded.name, layer=2, chunk_tokens=64, chunk_overlap=8)
    # the reference: chunks embedded in this process, once for both parametrisations (the Ray
    # workers below embed everything themselves, in their own processes)
    build_index([corpus[0]], tmp_path / "local", remembering_encoder, config, shards=shards)
    stats, report = build_index_ray([corpus[0]], tmp_path / "ray", config, RayOptions(workers=2), device="cpu",
                                    batch_size=8, commit_chunks=300, shards=shards)
    assert (stats.added, report.documents) == (300, 300)
    assert check_any(tmp_path / "ray") == []
    assert_same_index(tmp_path / "local", tmp_path / "ray", corpus[1], encoder)
    # A rerun with one document changed embeds only that one: the workers skip the rest.
    lines = corpus[0].read_text(encoding="utf-8").splitlines()
    changed = json.loads(lines[5])
    changed["text"] += " Ein neuer Satz am Ende."
    edited = tmp_path / "edited.jsonl"
    edited.write_text("\n".join(lines[:5] + [json.dumps(changed, ensure_ascii=False)] + lines[6:]) + "\n",
                      encoding="utf-8")
    embedded = []
    again, _ = build_index_ray([edited], tmp_path / "ray", config, RayOptions(workers=2), device="cpu",
                               shards=shards, progress_factory=lambda total: lambda docs, chunks: embedded.append(chunks))
    assert (again.added, again.replaced, again.unchanged) == (0, 1, 299)
    assert sum(embedded) == again.chunks >= 1
    assert check_any(tmp_path / "ray") == []


def test_without_ray_flag_nothing_of_ray_is_imported(tmp_path, tiny_deberta_dir):
    code = ("import sys\nfrom xlsearch.api.cli.main import main\n"
            f"code = main(['index', {str(REPO / 'data' / 'sample.jsonl')!r}, '--index', {str(tmp_path / 'i')!r}, "
            f"'--model', {str(tiny_deberta_dir)!r}, '--layer', '1', '--chunk-tokens', '64', '--chunk-overlap', '8', "
            "'--shards', '2'])\n"
            "assert code == 0, code\nassert not any(m == 'ray' or m.startswith('ray.') for m in sys.modules)\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=300)


def test_cli_index_with_ray_builds_a_checked_index(ray_cluster, tmp_path, tiny_deberta_dir, capsys):
    from xlsearch.api.cli.main import main

    index = str(tmp_path / "index")
    assert main(["index", str(REPO / "data" / "sample.jsonl"), "--index", index, "--model", str(tiny_deberta_dir),
                 "--layer", "1", "--chunk-tokens", "64", "--chunk-overlap", "8", "--ray", "--workers", "2",
                 "--shards", "2"]) == 0
    assert "indexed 52 documents" in capsys.readouterr().out
    assert main(["check", "--index", index]) == 0
    assert main(["search", "--index", index, "green tea", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["hits"]
