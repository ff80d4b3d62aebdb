"""`xlsearch serve` as a real process on a free loopback port, talked to over HTTP."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import SAMPLE, free_port, start_server

from xlsearch.api.cli.main import main
from xlsearch.indexer.errors import XlsearchError

SAMPLE_TEXT = {d["id"]: d["text"] for d in map(json.loads, SAMPLE.read_text(encoding="utf-8").splitlines())}
KEY = "server-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def server(sample_index_master, tiny_deberta_dir, tmp_path_factory):
    """One running server over a private index copy for this module; yields (base URL, stderr log path).

    The tests use their own document ids and leave the sample documents as they were.
    """
    tmp_path = tmp_path_factory.mktemp("server")
    sample_index = tmp_path / "index"
    shutil.copytree(sample_index_master, sample_index)
    log = tmp_path / "server.log"
    process, url = start_server(sample_index, tiny_deberta_dir, log, key=KEY)
    try:
        yield url, log
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal
    assert process.returncode in (0, -15) and "Application shutdown complete" in log.read_text(), log.read_text()


def search_ids(client: httpx.Client, query: str, **options) -> list[str]:
    response = client.post("/search", json={"query": query, **options})
    assert response.status_code == 200, response.text
    return [hit["id"] for hit in response.json()["hits"]]


@pytest.mark.slow
def test_add_search_delete_search_over_http(server):
    url, log = server
    doc = {"id": "srv-axolotl", "title": "Axolotl", "text": "The axolotl regrows its limbs in Lake Xochimilco.",
           "lang": "en", "metadata": {"source": "server-test"}}
    with httpx.Client(base_url=url, timeout=30) as client:
        assert "srv-axolotl" not in search_ids(client, "axolotl Xochimilco", k=5)
        assert client.post("/documents", json=[doc]).status_code == 401
        added = client.post("/documents", json=[doc], headers=AUTH)
        assert added.status_code == 200 and added.json()["added"] == 1
        assert search_ids(client, "axolotl Xochimilco", k=5)[0] == "srv-axolotl"
        assert client.get("/search", params={"q": "axolotl", "k": 1, "mode": "lexical"}).json()["hits"][0][
            "id"] == "srv-axolotl"
        assert client.get("/documents/srv-axolotl").json()["metadata"] == {"source": "server-test"}
        assert client.delete("/documents/srv-axolotl", headers=AUTH).status_code == 200
        assert "srv-axolotl" not in search_ids(client, "axolotl Xochimilco", k=5)
        assert client.get("/documents/srv-axolotl").status_code == 404
        assert client.post("/search", json={"query": " "}).status_code == 422
    lines = log.read_text()
    assert "POST /documents 401 " in lines and "POST /documents 200 " in lines and "DELETE /documents/srv-axolotl 200" in lines


@pytest.mark.slow
def test_concurrent_searches_during_writes(server):
    """4 clients search while documents are added and deleted: every answer is 200 and whole."""
    url, _ = server
    new_text = {f"srv-new-{i}": f"Searchable zeppelin number {i} floats over the harbour." for i in range(6)}
    failures: list[str] = []
    counts = [0] * 4
    stop = threading.Event()

    def check(hit: dict) -> None:
        text = SAMPLE_TEXT.get(hit["id"]) or new_text.get(hit["id"])
        if text is None or text[hit["start"]:hit["end"]] != hit["passage"]:
            failures.append(f"inconsistent hit {hit}")

    def searcher(slot: int) -> None:
        queries = ["zeppelin harbour", "green tea", "volcano"]
        with httpx.Client(base_url=url, timeout=30) as client:
            for n in range(1000):
                if stop.is_set() and n >= 5:
                    break
                response = client.post("/search", json={"query": queries[n % 3], "k": 5})
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text}")
                    continue
                for hit in response.json()["hits"]:
                    check(hit)
                counts[slot] += 1

    threads = [threading.Thread(target=searcher, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    with httpx.Client(base_url=url, timeout=30, headers=AUTH) as writer:
        for doc_id, text in new_text.items():
            assert writer.post("/documents", json=[{"id": doc_id, "text": text}]).status_code == 200
            assert doc_id in search_ids(writer, f"zeppelin number {doc_id[-1]}", k=10, mode="lexical")
        for doc_id in list(new_text)[:3]:
            assert writer.delete(f"/documents/{doc_id}").status_code == 200
            assert doc_id not in search_ids(writer, "zeppelin harbour", k=10, mode="lexical")
        assert writer.get("/health", timeout=5).status_code == 200
    stop.set()
    for thread in threads:
        thread.join(60)
    assert not failures, failures[:3]
    assert all(count >= 5 for count in counts), counts
    with httpx.Client(base_url=url, timeout=30) as client:
        for doc_id in list(new_text)[3:]:
            assert client.get(f"/documents/{doc_id}").status_code == 200
            assert client.delete(f"/documents/{doc_id}", headers=AUTH).status_code == 200
        assert client.get("/info").json()["documents"] == len(SAMPLE_TEXT)


def test_serve_reports_a_missing_index_in_one_line(tmp_path, capsys):
    assert main(["serve", "--index", str(tmp_path / "missing"), "--port", str(free_port())]) == 1
    err = capsys.readouterr().err
    assert "error: " in err and "no such index directory" in err and "Traceback" not in err


def test_serve_options_reach_the_settings(tmp_path, monkeypatch):
    from xlsearch.api.cli.main import build_parser
    from xlsearch.api.cli.serve import settings_from_args

    monkeypatch.setenv("XLSEARCH_API_KEY", "k")
    monkeypatch.setenv("XLSEARCH_MODEL", "/models/m")
    args = build_parser().parse_args(["serve", "--index", str(tmp_path), "--protect-reads", "--batch-size", "8",
                                      "--max-body-mb", "0.5", "--device", "cpu", "--threads", "1",
                                      "--precision", "int8"])
    settings = settings_from_args(args)
    assert settings.precision == "int8"
    assert settings_from_args(build_parser().parse_args(["serve", "--index", str(tmp_path)])).precision is None
    assert (settings.index, settings.api_key, settings.model, settings.device) == (Path(tmp_path), "k", "/models/m",
                                                                                   "cpu")
    assert settings.protect_reads and settings.batch_size == 8 and settings.max_body_bytes == 2 ** 19
    assert settings.threads == 1
    assert (args.host, args.port) == ("127.0.0.1", 8000)


@pytest.mark.parametrize("key, message", [("", "set but empty"), ("   ", "set but empty"),
                                          ("clé-secrète", "printable ASCII"), ("two words", "printable ASCII")])
def test_an_api_key_no_client_could_send_refuses_to_start(tmp_path, monkeypatch, capsys, key, message):
    """An empty XLSEARCH_API_KEY used to turn authentication off without a word."""
    from xlsearch.api.settings import Settings

    monkeypatch.setenv("XLSEARCH_API_KEY", key)
    assert main(["serve", "--index", str(tmp_path), "--port", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: XLSEARCH_API_KEY") and message in err and err.count("\n") == 1
    monkeypatch.setenv("XLSEARCH_INDEX", str(tmp_path))
    with pytest.raises(XlsearchError, match=message):
        Settings.from_env()


@pytest.mark.slow
def test_sigkill_of_the_server_loses_no_acknowledged_write(sample_index_master, tiny_deberta_dir, tmp_path):
    """Kill the server (SIGKILL) 4 times while a client writes one document per request, each kill
    after a different number of acknowledged writes (so some land inside a commit or a merge),
    restart it each time: every write it answered 200 is there, the index passes check, and the
    server that holds the writer for its life leaves no lock behind."""
    import random
    import signal

    from xlsearch.indexer.store.check import check_index
    from xlsearch.indexer.store.storage import committed_manifest

    index, log = tmp_path / "index", tmp_path / "server.log"
    shutil.copytree(sample_index_master, index)
    rng = random.Random(7)
    acknowledged: list[str] = []
    for kill in range(4):
        process, url = start_server(index, tiny_deberta_dir, log)
        stop = threading.Event()

        def write(base: int) -> None:
            with httpx.Client(base_url=url, timeout=30) as client:
                for n in range(base, base + 1000):
                    if stop.is_set():
                        return
                    doc = {"id": f"kill-{n}", "text": f"Document {n} written before a kill.", "lang": "en"}
                    try:
                        if client.post("/documents", json=[doc]).status_code == 200:
                            acknowledged.append(doc["id"])
                    except httpx.TransportError:
                        return  # killed mid-request: not acknowledged

        writer = threading.Thread(target=write, args=(1000 * kill,))
        target = len(acknowledged) + rng.randint(3, 14)
        writer.start()
        deadline = time.monotonic() + 60
        while len(acknowledged) < target and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.05))  # a moment more: inside the next request
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        stop.set()
        writer.join(30)
        assert len(acknowledged) >= target, log.read_text()[-3000:]
    assert check_index(index) == []
    process, url = start_server(index, tiny_deberta_dir, log)
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            for doc_id in acknowledged:
                assert client.get("/document", params={"id": doc_id}).status_code == 200, doc_id
            after = client.post("/documents", json=[{"id": "after", "text": "After the kills."}])
            assert after.status_code == 200, (after.text, log.read_text()[-3000:])
    finally:
        process.terminate()
        process.wait(15)
    manifest = committed_manifest(index)
    print(f"{len(acknowledged)} acknowledged writes kept over 4 kills; {len(manifest.segments)} segments")
    assert manifest.documents >= len(acknowledged) + 52


def test_one_thread_setting_caps_torch_blas_and_faiss():
    """`serve --threads N` runs limit_threads(N): checked in a child, since it holds for the process."""
    code = ("import faiss, torch\nfrom threadpoolctl import threadpool_info\n"
            "from xlsearch.indexer.threads import limit_threads\nlimit_threads(1)\n"
            "blas = [p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas']\n"
            "print(torch.get_num_threads(), faiss.omp_get_max_threads(), blas)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    torch_threads, faiss_threads, blas = done.stdout.split(maxsplit=2)
    assert (torch_threads, faiss_threads) == ("1", "1") and blas.strip() not in ("[]", "") and set(eval(blas)) == {1}
