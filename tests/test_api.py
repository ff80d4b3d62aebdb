"""The HTTP API through FastAPI's test client: every endpoint, every error, no 500 on any input."""
from __future__ import annotations

import asyncio
import json
import logging
import shutil
import threading
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from conftest import SAMPLE
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xlsearch.api.http.app import create_app
from xlsearch.api.http.deps import get_settings, needs_key
from xlsearch.api.http.errors import public_message
from xlsearch.api.http.routes import router
from xlsearch.api.settings import Settings
from xlsearch.indexer.writing.writer import IndexWriter
from xlsearch.indexer.errors import IndexMismatchError
from xlsearch.search.searcher import Searcher

SAMPLE_DOCS = {d["id"]: d for d in map(json.loads, SAMPLE.read_text(encoding="utf-8").splitlines())}
KEY = "s3cret-key"


def make_settings(index: Path, model: Path, **changes) -> Settings:
    return Settings(index=index, model=str(model), device="cpu", **changes)


@pytest.fixture
def client(sample_index, tiny_deberta_dir):
    with TestClient(create_app(make_settings(sample_index, tiny_deberta_dir))) as client:
        yield client


@pytest.fixture(scope="module")
def shared_client(sample_index_master, tiny_deberta_dir, tmp_path_factory):
    """One app for the read-only and property-based tests (they may add documents, never delete)."""
    index = tmp_path_factory.mktemp("api") / "index"
    shutil.copytree(sample_index_master, index)
    with TestClient(create_app(make_settings(index, tiny_deberta_dir))) as client:
        yield client


def ids(response) -> list[str]:
    return [hit["id"] for hit in response.json()["hits"]]


def assert_error(response, status: int, error: str, *words: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error and isinstance(body["detail"], str)
    for word in words:
        assert word in body["detail"], body["detail"]
    return body


# -- health, info ------------------------------------------------------------
def test_health_is_503_until_the_model_and_index_are_loaded(sample_index, tiny_deberta_dir):
    app = create_app(make_settings(sample_index, tiny_deberta_dir))
    before = TestClient(app)  # no `with`: the lifespan hook has not run
    assert_error(before.get("/health"), 503, "not_ready", "loading")
    assert_error(before.post("/search", json={"query": "tea"}), 503, "not_ready")
    with TestClient(app) as client:
        assert client.get("/health").json() == {"status": "ok"}


def test_search_pages_with_offset(shared_client):
    first = shared_client.get("/search", params={"q": "tea volcano", "k": 6}).json()["hits"]
    second = shared_client.post("/search", json={"query": "tea volcano", "k": 3, "offset": 3})
    assert len(first) == 6 and [h["id"] for h in second.json()["hits"]] == [h["id"] for h in first[3:]]
    assert shared_client.post("/search", json={"query": "tea", "k": 10, "offset": 995}).status_code == 422


def test_any_id_is_reachable_with_the_query_form(sample_index, tiny_deberta_dir):
    """HTTP clients fold dot segments in paths (a/../b becomes b); ?id= reaches every id as it is."""
    app = create_app(make_settings(sample_index, tiny_deberta_dir))
    ids = ["a/../b", "..", ".", "notes/./x"]
    with TestClient(app) as client:
        assert client.post("/documents", json=[{"id": i, "text": f"dot segments {n}"} for n, i in enumerate(ids)]
                           ).status_code == 200
        for doc_id in ids:
            assert client.get("/document", params={"id": doc_id}).json()["id"] == doc_id
        assert client.get("/documents/en-tea-01").status_code == 200
        assert client.delete("/document", params={"id": "a/../b"}).json()["deleted"] == "a/../b"
        assert client.get("/document", params={"id": "a/../b"}).status_code == 404
        assert client.get("/document", params={"id": ".."}).status_code == 200  # the others untouched
        assert_error(client.get("/document", params={"id": "missing"}), 404, "document_not_found")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_nothing_from_the_network(shared_client, page):
    """Swagger UI and ReDoc come from the installed package, so the docs work offline."""
    import re

    html = shared_client.get(page).text
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html) + re.findall(r"url: *'([^']+)'", html)
    scripts = [a for a in assets if a.endswith(".js")]
    assert scripts and not [a for a in assets if a.startswith(("http:", "https:", "//"))]
    for asset in assets:
        response = shared_client.get(asset)
        assert response.status_code == 200 and len(response.content) > 0, asset


def test_documents_are_listed_a_page_at_a_time(shared_client):
    first = shared_client.get("/documents", params={"limit": 30}).json()
    rest = shared_client.get("/documents", params={"offset": 30, "limit": 1000}).json()
    ids = [d["id"] for d in first["documents"] + rest["documents"]]
    assert first["total"] == rest["total"] == len(ids) >= 52 and ids == sorted(ids)
    assert set(first["documents"][0]) == {"id", "text", "title", "lang", "metadata"}
    assert shared_client.get("/documents", params={"offset": first["total"]}).json()["documents"] == []
    assert shared_client.get("/documents", params={"limit": 0}).status_code == 422


def test_info_shows_the_manifest_and_counts(shared_client):
    info = shared_client.get("/info").json()
    assert info["config"]["layer"] == 2 and info["config"]["chunk_tokens"] == 64
    assert info["format_version"] == 2 and info["documents"] >= 52
    assert info["stored"]["documents"] == info["documents"] and info["stored"]["chunks"] == info["chunks"]
    assert info["config"]["model_name"] == "tiny-deberta"  # a local model by its folder's name
    assert "/tmp" not in shared_client.get("/info").text  # no path of the server's disk


def test_openapi_schema_documents_every_endpoint(shared_client):
    paths = shared_client.get("/openapi.json").json()["paths"]
    assert set(paths) == {"/health", "/info", "/search", "/documents", "/document", "/documents/{doc_id}", "/embed",
                          "/optimize"}
    assert set(paths["/documents/{doc_id}"]) == {"get", "delete"} and set(paths["/search"]) == {"get", "post"}
    assert shared_client.get("/docs").status_code == 200


def _secured(schema: dict) -> set[tuple[str, str]]:
    return {(method, path) for path, item in schema["paths"].items() for method, op in item.items()
            if op.get("security")}


def test_openapi_schema_says_what_this_server_does(shared_client, sample_index, tiny_deberta_dir):
    schema = shared_client.get("/openapi.json").json()
    assert _secured(schema) == set()  # no key on this server: nothing is secured
    components = schema["components"]["schemas"]
    assert "HTTPValidationError" not in components and "errors" in components["ErrorOut"]["properties"]
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if "422" in operation["responses"]:
                ref = operation["responses"]["422"]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorOut"), (method, path)
    layer = components["EmbedRequest"]["properties"]["layer"]
    depth = shared_client.app.state.service.encoder.num_layers
    assert [o.get("maximum") for o in layer["anyOf"] if o.get("type") == "integer"] == [depth]
    writes = {("post", "/documents"), ("delete", "/documents/{doc_id}"), ("delete", "/document"), ("post", "/optimize")}
    with TestClient(create_app(make_settings(sample_index, tiny_deberta_dir, api_key=KEY))) as client:
        assert _secured(client.get("/openapi.json").json()) == writes
    with TestClient(create_app(make_settings(sample_index, tiny_deberta_dir, api_key=KEY,
                                             protect_reads=True))) as client:
        everything = {(m, p) for p, item in client.get("/openapi.json").json()["paths"].items() for m in item}
        assert _secured(client.get("/openapi.json").json()) == everything - {("get", "/health")}


# -- search ------------------------------------------------------------------
def test_post_search_returns_the_cli_json_hits(shared_client, encoder):
    response = shared_client.post("/search", json={"query": "绿茶 水温", "k": 3})
    assert response.status_code == 200
    body = response.json()
    searcher = Searcher(shared_client.app.state.settings.index, encoder=encoder)
    expected = searcher.search("绿茶 水温", k=3).to_dict()
    searcher.close()
    assert body["query"] == expected["query"] and body["mode"] == "hybrid"
    assert [h["id"] for h in body["hits"]] == [h["id"] for h in expected["hits"]] and body["hits"][0]["id"] == "zh-tea-01"
    for got, want in zip(body["hits"], expected["hits"]):
        assert set(got) == set(want) and got["passage"] == want["passage"]
        assert got["score"] == pytest.approx(want["score"], rel=1e-5)


def test_get_search_for_browsers(shared_client):
    response = shared_client.get("/search", params={"q": "火山", "k": 2, "mode": "lexical", "lang": "ja"})
    assert response.status_code == 200 and ids(response)[0] == "ja-volcano-01"
    assert all(hit["lang"] == "ja" and hit["scores"]["dense"] is None for hit in response.json()["hits"])


def test_filter_applies_before_the_top_k_is_cut(shared_client):
    howto = {i for i, d in SAMPLE_DOCS.items() if d.get("source") == "howto"}
    assert 3 <= len(howto) < len(SAMPLE_DOCS)
    response = shared_client.post("/search", json={"query": "volcano eruption lava", "k": len(howto),
                                                   "filter": {"source": "howto"}})
    assert response.status_code == 200 and set(ids(response)) == howto
    assert all(hit["metadata"] == {"source": "howto"} for hit in response.json()["hits"])  # hits carry it


@pytest.mark.parametrize("body, field", [
    ({"query": ""}, "query"),
    ({"query": " \t\n "}, "query"),
    ({"query": "x" * 2001}, "query"),
    ({"query": "tea", "k": 0}, "k"),
    ({"query": "tea", "k": 1001}, "k"),
    ({"query": "tea", "k": "10"}, "k"),
    ({"query": "tea", "k": 2.5}, "k"),
    ({"query": 42}, "query"),
    ({"query": "tea", "mode": "fuzzy"}, "mode"),
    ({"query": "tea", "fusion": "max"}, "fusion"),
    ({"query": "tea", "alpha": 1.5}, "alpha"),
    ({"query": "tea", "lang": ""}, "lang"),
    ({"query": "tea", "filter": {"source": {"nested": 1}}}, "filter.source"),
    ({"query": "tea", "filter": ["source"]}, "filter"),
    ({"query": "tea", "top_k": 5}, "top_k"),
    ({"k": 5}, "query"),
    (["tea"], "body"),
])
def test_bad_search_bodies_are_422_naming_the_field(shared_client, body, field):
    result = assert_error(shared_client.post("/search", json=body), 422, "invalid_request", field)
    assert field in [e["field"] for e in result["errors"]]


@pytest.mark.parametrize("content", [b"{not json", b'{"query": "tea", "alpha": NaN}', b'{"query": "\\ud800"}',
                                     b"\xff\xfe", b'{"query": "tea", "k": 1e999}'])
def test_malformed_json_is_a_4xx(shared_client, content):
    response = shared_client.post("/search", content=content, headers={"content-type": "application/json"})
    assert response.status_code in (400, 422) and "error" in response.json()


@pytest.mark.parametrize("params, field", [({}, "q"), ({"q": " "}, "q"), ({"q": "tea", "k": 0}, "k"),
                                           ({"q": "tea", "k": "ten"}, "k"), ({"q": "tea", "mode": "x"}, "mode")])
def test_bad_get_search_is_422(shared_client, params, field):
    assert_error(shared_client.get("/search", params=params), 422, "invalid_request", field)


def test_body_over_the_limit_is_413(sample_index, tiny_deberta_dir):
    app = create_app(make_settings(sample_index, tiny_deberta_dir, max_body_bytes=1000))
    with TestClient(app) as client:
        big = {"query": "tea", "lang": "x" * 2000}
        assert_error(client.post("/search", json=big), 413, "body_too_large", "limit")

        def chunks():  # no Content-Length: the limit holds while the body streams in
            yield b'{"query": "'
            for _ in range(50):
                yield b"tea " * 10
            yield b'"}'

        assert_error(client.post("/search", content=chunks(), headers={"content-type": "application/json"}),
                     413, "body_too_large")
        assert client.post("/search", json={"query": "tea", "k": 1}).status_code == 200


# -- documents -----------------------------------------------------------------
def test_add_search_get_replace_delete(client):
    doc = {"id": "zz-quokka", "title": "Quokkas", "text": "The quokka smiles at tourists on Rottnest Island.",
           "lang": "en", "metadata": {"source": "api-test", "year": 2024}}
    added = client.post("/documents", json=[doc])
    assert added.status_code == 200, added.text
    assert added.json() == {"added": 1, "replaced": 0, "unchanged": 0, "chunks": 1, "documents": 53,
                            "generation": added.json()["generation"]}
    found = client.post("/search", json={"query": "quokka Rottnest", "k": 3})
    assert ids(found)[0] == "zz-quokka"
    assert client.post("/search", json={"query": "tea", "k": 5, "filter": {"source": "api-test"}}).json()["hits"][0][
        "id"] == "zz-quokka"
    assert client.get("/documents/zz-quokka").json() == doc
    assert client.post("/documents", json=[doc]).json()["unchanged"] == 1
    changed = client.post("/documents", json=[{**doc, "text": "Quokkas eat leaves at night."}]).json()
    assert (changed["replaced"], changed["documents"]) == (1, 53)
    assert client.get("/documents/zz-quokka").json()["text"] == "Quokkas eat leaves at night."
    deleted = client.delete("/documents/zz-quokka")
    assert deleted.status_code == 200 and deleted.json()["deleted"] == "zz-quokka"
    assert deleted.json()["documents"] == 52
    assert "zz-quokka" not in ids(client.post("/search", json={"query": "quokka Rottnest", "k": 3}))
    assert_error(client.get("/documents/zz-quokka"), 404, "document_not_found", "zz-quokka")
    assert_error(client.delete("/documents/zz-quokka"), 404, "document_not_found")


def test_ids_with_slashes_and_unicode(client):
    doc = {"id": "notes/日本/a b.md", "text": "Matcha whisking technique."}
    assert client.post("/documents", json=[doc]).status_code == 200
    assert client.get("/documents/notes/%E6%97%A5%E6%9C%AC/a%20b.md").json()["text"] == doc["text"]
    assert client.delete("/documents/notes/日本/a b.md").status_code == 200


@pytest.mark.parametrize("body, field", [
    ([], "body"),
    ({"id": "a", "text": "b"}, "body"),
    ([{"id": "a"}], "body[0].text"),
    ([{"id": "a", "text": "   "}], "body[0].text"),
    ([{"id": "", "text": "b"}], "body[0].id"),
    ([{"id": "x" * 1025, "text": "b"}], "body[0].id"),
    ([{"id": "a\nb", "text": "b"}], "body[0].id"),
    ([{"id": 7, "text": "b"}], "body[0].id"),
    ([{"id": "a", "text": "b", "title": 3}], "body[0].title"),
    ([{"id": "a", "text": "b", "metadata": [1]}], "body[0].metadata"),
    ([{"id": "a", "text": "b", "source": "wiki"}], "body[0].source"),
    ([{"id": "a", "text": "b"}, {"id": "a", "text": "c"}], "body[1].id"),
    ([{"id": f"d{i}", "text": "t"} for i in range(1001)], "body"),
])
def test_bad_documents_are_422_and_change_nothing(client, body, field):
    assert_error(client.post("/documents", json=body), 422, "invalid_request", field)
    assert client.get("/info").json()["documents"] == 52


def test_metadata_must_be_storable_json(client):
    raw = b'[{"id": "a", "text": "b", "metadata": {"x": [1, NaN]}}]'
    response = client.post("/documents", content=raw, headers={"content-type": "application/json"})
    assert_error(response, 422, "invalid_request", "metadata", "finite")
    deep: dict = {}
    for _ in range(30):
        deep = {"d": deep}
    assert_error(client.post("/documents", json=[{"id": "a", "text": "b", "metadata": deep}]), 422,
                 "invalid_request", "nested")


def test_a_write_while_another_process_writes_is_409_without_paths(client, encoder):
    index = client.app.state.settings.index
    with IndexWriter(index):  # holds the index's writer lock, as another process would
        response = client.post("/documents", json=[{"id": "a", "text": "b"}])
        body = assert_error(response, 409, "index_locked", "another process is writing")
        assert_error(client.delete("/documents/en-tea-01"), 409, "index_locked")
    assert str(index) not in body["detail"] and "/tmp" not in body["detail"]
    assert client.get("/documents/en-tea-01").status_code == 200
    assert client.post("/documents", json=[{"id": "a", "text": "b"}]).status_code == 200


# -- embed -----------------------------------------------------------------------
def test_embed_returns_the_encoder_vectors(shared_client, encoder):
    texts = ["green tea", "緑茶の淹れ方"]
    body = shared_client.post("/embed", json={"texts": texts}).json()
    assert body["layer"] == 2 and body["dim"] == encoder.dim and len(body["vectors"]) == 2
    np.testing.assert_allclose(body["vectors"], encoder.encode(texts, 2), atol=1e-6)
    other = shared_client.post("/embed", json={"texts": texts, "layer": 0}).json()
    assert other["layer"] == 0
    np.testing.assert_allclose(other["vectors"], encoder.encode(texts, 0), atol=1e-6)


@pytest.mark.parametrize("body, field", [({"texts": []}, "texts"), ({"texts": ["a"], "layer": 4}, "layer"),
                                         ({"texts": ["a"], "layer": -1}, "layer"), ({"texts": [""]}, "texts[0]"),
                                         ({"texts": "abc"}, "texts"), ({"texts": ["a"] * 257}, "texts")])
def test_bad_embed_is_422(shared_client, body, field):
    assert_error(shared_client.post("/embed", json=body), 422, "invalid_request", field)


# -- auth ------------------------------------------------------------------------
def test_writes_need_the_api_key_and_a_wrong_key_changes_nothing(sample_index, tiny_deberta_dir):
    app = create_app(make_settings(sample_index, tiny_deberta_dir, api_key=KEY))
    doc = [{"id": "k1", "text": "key test"}]
    with TestClient(app) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"}):
            response = client.post("/documents", json=doc, headers=headers)
            assert_error(response, 401, "unauthorized", "API key")
            assert response.headers["www-authenticate"] == "Bearer"
            assert_error(client.delete("/documents/en-tea-01", headers=headers), 401, "unauthorized")
        assert client.get("/info").json()["documents"] == 52 and client.get("/documents/en-tea-01").status_code == 200
        assert client.post("/search", json={"query": "tea"}).status_code == 200  # reads stay open
        good = {"Authorization": f"Bearer {KEY}"}
        assert client.post("/documents", json=doc, headers=good).status_code == 200
        assert client.delete("/documents/k1", headers=good).status_code == 200


def test_the_key_is_checked_before_the_body_is_read(sample_index, tiny_deberta_dir):
    """An unauthenticated client gets 401 whatever it sends: the body is never read or parsed."""
    app = create_app(make_settings(sample_index, tiny_deberta_dir, api_key=KEY, protect_reads=True))
    with TestClient(app) as client:
        for path in ("/documents", "/embed", "/search"):
            response = client.post(path, content=b"{not json", headers={"content-type": "application/json"})
            assert_error(response, 401, "unauthorized")

    from xlsearch.api.http.middleware import KeyGateMiddleware

    async def receive():
        raise AssertionError("the gate read the body")

    sent = []

    async def send(message):
        sent.append(message)

    settings = make_settings(sample_index, tiny_deberta_dir, api_key=KEY)
    gate = KeyGateMiddleware(None, router.routes, KEY, lambda route: needs_key(route, settings))
    scope = {"type": "http", "method": "POST", "path": "/documents", "headers": [], "query_string": b"",
             "root_path": ""}
    asyncio.run(gate(scope, receive, send))
    assert sent[0]["status"] == 401


def test_one_embed_request_is_bounded_in_characters(shared_client):
    body = {"texts": ["x" * 20_000] * 6}  # each text allowed, 120,000 characters in all
    assert_error(shared_client.post("/embed", json=body), 422, "invalid_request", "100,000")


def test_protect_reads_guards_every_endpoint_but_health(sample_index, tiny_deberta_dir):
    app = create_app(make_settings(sample_index, tiny_deberta_dir, api_key=KEY, protect_reads=True))
    good = {"Authorization": f"Bearer {KEY}"}
    calls = [("get", "/info", None), ("post", "/search", {"query": "tea"}), ("get", "/search?q=tea", None),
             ("get", "/documents/en-tea-01", None), ("post", "/embed", {"texts": ["tea"]})]
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        for method, path, body in calls:
            assert_error(client.request(method, path, json=body), 401, "unauthorized")
            assert client.request(method, path, json=body, headers=good).status_code == 200


def test_settings_dependency_can_be_overridden(client):
    client.app.dependency_overrides[get_settings] = lambda: Settings(index=Path("unused"), api_key=KEY)
    assert_error(client.post("/documents", json=[{"id": "a", "text": "b"}]), 401, "unauthorized")


# -- serving behaviour -------------------------------------------------------------
def test_health_answers_while_a_search_is_encoding(client):
    service = client.app.state.service
    release, started = threading.Event(), threading.Event()
    search = service.search

    def slow_search(*args):
        started.set()
        release.wait(10)
        return search(*args)

    service.search = slow_search
    results = []
    worker = threading.Thread(target=lambda: results.append(client.post("/search", json={"query": "tea"})))
    worker.start()
    try:
        assert started.wait(10)
        begin = time.perf_counter()
        assert client.get("/health").status_code == 200
        assert time.perf_counter() - begin < 2.0
    finally:
        release.set()
        worker.join(10)
    assert results and results[0].status_code == 200


def test_one_log_line_per_request(client, caplog):
    with caplog.at_level(logging.INFO, logger="xlsearch.api.http.middleware"):
        client.post("/search", json={"query": "tea", "k": 1})
        client.get("/documents/missing")
    lines = [r.getMessage() for r in caplog.records if r.name == "xlsearch.api.http.middleware"]
    assert len(lines) == 2
    assert lines[0].startswith("POST /search 200 ") and lines[0].endswith("ms")
    assert lines[1].startswith("GET /documents/missing 404 ")


def test_unknown_routes_and_methods_are_json(shared_client):
    assert_error(shared_client.get("/nope"), 404, "not_found")
    assert_error(shared_client.put("/search"), 405, "method_not_allowed")


def test_threads_setting_limits_torch(sample_index, tiny_deberta_dir):
    import torch

    before = torch.get_num_threads()
    try:
        with TestClient(create_app(make_settings(sample_index, tiny_deberta_dir, threads=1))) as client:
            seen = []  # threads started from now on (the server's workers) use 1
            worker = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
            worker.start()
            worker.join()
            assert seen == [1]
            service = client.app.state.service
            search, during = service.searcher.search, []

            def noting_threads(*args, **kwargs):
                during.append(torch.get_num_threads())
                return search(*args, **kwargs)

            service.searcher.search = noting_threads
            assert client.post("/search", json={"query": "tea", "k": 1}).status_code == 200
            assert during == [1] and service.cores.cap == 1 and service.cores.running == 0
    finally:
        torch.set_num_threads(before)


def test_a_model_that_does_not_match_the_index_stops_start_up(sample_index, tiny_bert_dir):
    app = create_app(make_settings(sample_index, tiny_bert_dir))
    with pytest.raises(IndexMismatchError), TestClient(app):
        pass
    assert isinstance(app.state.startup_error, IndexMismatchError) and app.state.service is None


def test_the_server_encodes_in_the_index_s_precision_and_refuses_another(sample_index, tiny_deberta_dir):
    with TestClient(create_app(make_settings(sample_index, tiny_deberta_dir))) as client:  # precision None: the index's
        assert client.app.state.service.encoder.precision == "fp32"
    app = create_app(make_settings(sample_index, tiny_deberta_dir, precision="int8"))
    with pytest.raises(IndexMismatchError, match="computed in fp32, not int8"), TestClient(app):
        pass


def test_public_messages_hide_paths():
    message = "/srv/idx: another process is writing (it holds /srv/idx/.lock); model /models/m failed"
    assert public_message(message, ["/srv/idx"]) == (
        "<index>: another process is writing (it holds <index>/.lock); model <path> failed")
    assert public_message("k must be between 1 and 1000, got 5") == "k must be between 1 and 1000, got 5"


# -- no input gets a 500 ------------------------------------------------------------
surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, categories=["Cs"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(st.characters() | surrogates, max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


def near(valid: st.SearchStrategy) -> st.SearchStrategy:
    return valid | json_values


search_bodies = st.fixed_dictionaries({}, optional={
    "query": near(st.text(max_size=30)), "k": near(st.integers(-5, 1005)),
    "mode": near(st.sampled_from(["hybrid", "dense", "lexical"])), "fusion": near(st.sampled_from(["rrf", "linear"])),
    "alpha": near(st.floats(-0.5, 1.5)), "lang": near(st.sampled_from(["en", "zh", ""])),
    "filter": near(st.dictionaries(st.sampled_from(["source", "x"]), json_values, max_size=2))})
documents = st.fixed_dictionaries({}, optional={
    "id": near(st.text(max_size=12)), "text": near(st.text(max_size=40)), "title": near(st.text(max_size=10)),
    "lang": near(st.text(max_size=4)), "metadata": near(st.dictionaries(st.text(max_size=5), json_values, max_size=3))})
embed_bodies = st.fixed_dictionaries({}, optional={"texts": near(st.lists(st.text(max_size=20), max_size=3)),
                                                   "layer": near(st.integers(-2, 6))})
requests = st.one_of(
    st.tuples(st.just("/search"), near(search_bodies)),
    st.tuples(st.just("/documents"), near(st.lists(near(documents), max_size=3))),
    st.tuples(st.just("/embed"), near(embed_bodies)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests)
def test_no_json_body_gets_a_500(shared_client, request):
    path, body = request
    response = shared_client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
    assert response.status_code < 500, (path, body, response.text)
    if response.status_code >= 400:
        assert {"error", "detail"} <= set(response.json())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(["/search", "/documents", "/embed"]), raw=st.binary(max_size=60),
       content_type=st.sampled_from(["application/json", "text/plain", None]))
def test_no_raw_body_gets_a_500(shared_client, path, raw, content_type):
    headers = {"content-type": content_type} if content_type else {}
    response = shared_client.post(path, content=raw, headers=headers)
    assert 400 <= response.status_code < 500 and "error" in response.json()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params=st.dictionaries(st.sampled_from(["q", "k", "mode", "fusion", "alpha", "lang", "filter"]),
                              st.text(max_size=12), max_size=5),
       doc_id=st.text(st.characters(codec="utf-8"), min_size=1, max_size=12))
def test_no_query_string_or_id_gets_a_500(shared_client, params, doc_id):
    assert shared_client.get("/search", params=params).status_code < 500
    assert shared_client.get(f"/documents/{quote(doc_id, safe='')}").status_code < 500


def test_query_lang_is_accepted_and_validated(shared_client):
    response = shared_client.post("/search", json={"query": "tea", "k": 2, "mode": "dense", "query_lang": "en"})
    assert response.status_code == 200 and len(response.json()["hits"]) == 2
    assert_error(shared_client.post("/search", json={"query": "tea", "query_lang": 5}), 422, "invalid_request",
                 "query_lang")


def test_a_wrong_method_names_every_method_of_the_path(shared_client):
    """Found by the fuzzer: Starlette's 405 listed only the first matching route's methods."""
    response = shared_client.request("OPTIONS", "/search")
    assert response.status_code == 405 and response.headers["allow"] == "GET, POST"
    assert shared_client.request("PUT", "/documents").headers["allow"] == "GET, POST"


def test_a_body_that_is_not_utf8_is_a_422_like_any_malformed_json(shared_client):
    """Found by the fuzzer: FastAPI answered an undocumented 400 for a body it could not decode."""
    response = shared_client.post("/search", content=b"\xff\xfe<", headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": "body", "message": "not valid UTF-8 JSON"}]
