"""The search page at / in a real browser (Debian's chromium, driven by Selenium), offline."""
from __future__ import annotations

import shutil
import threading
import time

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
if CHROMIUM is None or DRIVER is None:  # .ci/run installs both; say loudly what a run without them misses
    pytest.skip("no chromium/chromedriver: the search page is not tested in a browser here "
                "(apt-get install chromium chromium-driver)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the test extra")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from conftest import free_port  # noqa: E402
from xlsearch.api.settings import Settings  # noqa: E402



@pytest.fixture(scope="module")
def server(sample_index_master, tiny_deberta_dir, tmp_path_factory):
    import uvicorn

    from xlsearch.api.http.app import create_app

    index = tmp_path_factory.mktemp("page") / "index"
    shutil.copytree(sample_index_master, index)  # the tests write to it
    port = free_port()
    app = create_app(Settings(index=index, model=str(tiny_deberta_dir), device="cpu"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.started, "the server did not start"
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def test_a_query_shows_hits_with_highlights(server, browser, tmp_path):
    browser.get(server)
    assert browser.title == "xlsearch"
    browser.find_element(By.ID, "q").send_keys("火山")
    browser.find_element(By.CSS_SELECTOR, "#mode option[value=lexical]").click()
    browser.find_element(By.ID, "go").click()
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#hits li"))
    hits = browser.find_elements(By.CSS_SELECTOR, "#hits li")
    langs = [h.find_element(By.CLASS_NAME, "lang").text for h in hits]
    assert set(langs) <= {"zh", "ja"} and langs  # only the documents that share the words
    assert {m.text for m in browser.find_elements(By.CSS_SELECTOR, "#hits mark")} == {"火山"}
    assert browser.find_element(By.ID, "status").text == f"{len(hits)} document{'s' if len(hits) > 1 else ''} (lexical)"
    shot = tmp_path / "search-page.png"
    browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a language filter and an error are shown as such
    browser.find_element(By.ID, "lang").send_keys("ja")
    browser.find_element(By.ID, "go").click()
    WebDriverWait(browser, 30).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#hits li") and all(
            e.text == "ja" for e in d.find_elements(By.CSS_SELECTOR, "#hits .lang")))


def test_markup_in_a_document_is_shown_as_text(server, browser):
    """Hits are built with DOM calls: a title holding <script> or <img onerror> stays text."""
    import httpx

    doc = {"id": "xss", "title": "<img src=x onerror=alert(1)>", "text": "markup zebra <b>bold</b>", "lang": "en"}
    assert httpx.post(server + "documents", json=[doc]).status_code == 200
    browser.get(server)
    browser.find_element(By.ID, "q").send_keys("zebra")
    browser.find_element(By.CSS_SELECTOR, "#mode option[value=lexical]").click()
    browser.find_element(By.ID, "go").click()
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#hits li"))
    assert browser.find_element(By.CSS_SELECTOR, "#hits .title").text == doc["title"]
    assert not browser.find_elements(By.CSS_SELECTOR, "#hits img, #hits b")
