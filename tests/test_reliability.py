"""Lose nothing: killed runs, damaged files, full or read-only disks, concurrent readers and writers."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import pytest

from conftest import REPO, sib_sentences
from xlsearch.indexer.writing.writer import IndexWriter
from xlsearch.indexer.store.check import check_index
from xlsearch.indexer.document import Document
from xlsearch.indexer.errors import IndexFormatError, IndexWriteError
from xlsearch.indexer.store.storage import committed_manifest, open_docstore
from xlsearch.search.index.loader import load_index
from xlsearch.search.searcher import Searcher

CRASH_LANGS = ["eng_Latn", "deu_Latn", "zho_Hans", "arb_Arab", "rus_Cyrl", "hin_Deva", "tha_Thai", "jpn_Jpan"]


@pytest.fixture(scope="module")
def crash_corpus(tmp_path_factory) -> tuple[Path, list[str]]:
    """160 real sentences in 8 languages, one document each, in a fixed order."""
    path = tmp_path_factory.mktemp("crash") / "corpus.jsonl"
    records = [{"id": f"{lang}-{i}", "text": text, "lang": lang[:3]}
               for lang in CRASH_LANGS for i, text in enumerate(sib_sentences(lang, "dev", 20))]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path, [r["id"] for r in records]


def run_cli(args, model_dir, **kwargs):
    env = {**os.environ, "XLSEARCH_MODEL": str(model_dir), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "xlsearch.api.cli.main", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def stored_ids(directory: Path) -> set[str]:
    store, _ = open_docstore(directory)
    try:
        return {r[0] for r in store.db.execute("SELECT id FROM documents")}
    finally:
        store.close()


@pytest.mark.slow
def test_sigkill_during_indexing_keeps_the_last_commit(tiny_deberta_dir, crash_corpus, tmp_path):
    """Kill `xlsearch index` at random moments; each time the index opens, passes check,
    holds exactly a committed prefix of the input, and a rerun finishes without re-embedding it."""
    corpus, ids = crash_corpus
    base = tmp_path / "base"
    head = tmp_path / "head.jsonl"
    head.write_text("".join(corpus.read_text(encoding="utf-8").splitlines(keepends=True)[:40]), encoding="utf-8")
    done = run_cli(["index", str(head), "--index", str(base), "--layer", "2"], tiny_deberta_dir)
    assert done.wait(timeout=120) == 0, done.stderr.read()
    rng = random.Random(1234)
    base_generation = committed_manifest(base).generation
    prefixes = []
    for trial in range(20):
        directory = tmp_path / f"trial{trial}"
        shutil.copytree(base, directory)
        process = run_cli(["index", str(corpus), "--index", str(directory), "--commit-chunks", "4"], tiny_deberta_dir)
        wait_for_new_commit(directory, base_generation, process)
        time.sleep(rng.uniform(0.0, 2.5))  # somewhere in the stream of commits, wherever it falls
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        assert check_index(directory) == [], f"trial {trial}"
        kept = stored_ids(directory)
        n = len(kept)
        assert n >= 40 and kept == set(ids[:n]), f"trial {trial}: not a prefix of the input"
        index = load_index(directory)
        assert index.manifest.documents == n and len(index.dense) == index.manifest.chunks
        index.close()
        prefixes.append(n)
    assert len(set(prefixes)) > 3, f"kills did not spread over the run: {prefixes}"
    resume = run_cli(["index", str(corpus), "--index", str(tmp_path / f"trial{prefixes.index(min(prefixes))}")],
                     tiny_deberta_dir)
    out, err = resume.communicate(timeout=180)
    assert resume.returncode == 0, err
    assert f"{len(ids) - min(prefixes)} added" in out and f"{min(prefixes)} unchanged" in out


def wait_for_new_commit(directory: Path, generation: int, process: subprocess.Popen, timeout: float = 120) -> None:
    """Return once the index in ``directory`` has a commit newer than ``generation``."""
    end = time.time() + timeout
    while time.time() < end and process.poll() is None:
        try:
            if committed_manifest(directory).generation > generation:
                return
        except IndexFormatError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"no new commit in {directory} (exit code {process.poll()})")


def damaged_copies(sample_index: Path, tmp_path: Path):
    """(file name, damaged index copy) for every file of the index, truncated or with flipped bytes."""
    manifest = committed_manifest(sample_index)
    names = sorted(manifest.files) + ["docs.sqlite", "manifest.json"]
    for name in names:
        for how in ("truncate", "flip"):
            copy = tmp_path / f"{name.replace('/', '_')}-{how}"
            shutil.copytree(sample_index, copy)
            path = copy / name
            data = bytearray(path.read_bytes())
            if how == "truncate":
                data = data[: len(data) // 2]
            elif name == "docs.sqlite":  # damage content SQLite itself cannot notice
                at = data.index("Green tea".encode())
                data[at:at + 9] = b"Greem tea"
            else:
                for offset in range(len(data) // 3, len(data) // 3 + 64):
                    if offset < len(data):
                        data[offset] ^= 0xFF
            path.write_bytes(bytes(data))
            yield name, how, copy


def test_every_damaged_file_is_reported(sample_index, tmp_path):
    tried = 0
    for name, how, copy in damaged_copies(sample_index, tmp_path):
        tried += 1
        problems = check_index(copy)
        assert problems, f"{how} {name}: check found nothing"
        if name == "manifest.json":
            assert "manifest.json" in problems[0]
            continue
        with pytest.raises(IndexFormatError):
            Searcher(copy).search("green tea", mode="lexical")
    assert tried == 2 * (len(committed_manifest(sample_index).files) + 2)


def test_healthy_index_passes_check_and_cli_exit_codes(sample_index, capsys):
    from xlsearch.api.cli.main import main

    assert check_index(sample_index) == []
    assert main(["check", "--index", str(sample_index)]) == 0
    assert "ok" in capsys.readouterr().out
    (sample_index / "dense.1.faiss").write_bytes(b"garbage")
    assert main(["check", "--index", str(sample_index)]) == 1
    err = capsys.readouterr().err
    assert "problems" in err and "dense.1.faiss" in err


def test_injected_disk_full_keeps_the_old_index(sample_index, encoder, monkeypatch):
    config = load_index(sample_index).manifest.config
    before = stored_ids(sample_index)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with IndexWriter(sample_index, encoder, config) as writer:
        writer.upsert([Document(id="more", text="One more document.")])
        monkeypatch.setattr("xlsearch.indexer.writing.writer.save_bm25", full)
        with pytest.raises(IndexWriteError, match="No space left on device.*the index is unchanged"):
            writer.commit()
    assert stored_ids(sample_index) == before and check_index(sample_index) == []


@pytest.fixture
def small_mount(tmp_path):
    """A 1 MiB tmpfs (root only); the test fails with the reason when mounting is impossible."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}); "
                    "test_injected_disk_full_keeps_the_old_index covers the same path")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(mount: Path, leave: int) -> Path:
    """Fill the mount with one file until only about ``leave`` bytes are free."""
    filler = mount / "filler"
    free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
    with open(filler, "wb") as handle:
        handle.write(b"\0" * max(0, free - leave))
    return filler


def test_real_full_disk_and_read_only_disk_keep_the_old_index(sample_index_master, encoder, small_mount):
    directory = small_mount / "index"
    shutil.copytree(sample_index_master, directory)
    (directory / ".lock").unlink(missing_ok=True)
    config = load_index(directory).manifest.config
    before = stored_ids(directory)
    text = " ".join(sib_sentences("eng_Latn", limit=60))
    filler = fill(small_mount, leave=16 * 1024)
    with IndexWriter(directory, encoder, config) as writer:
        writer.upsert([Document(id=f"big-{i}", text=text) for i in range(3)])
        with pytest.raises(IndexWriteError, match="No space left on device.*the index is unchanged"):
            writer.commit()
    filler.unlink()
    assert stored_ids(directory) == before and check_index(directory) == []
    subprocess.run(["mount", "-o", "remount,ro", str(small_mount)], check=True)
    try:
        with pytest.raises(IndexWriteError, match="cannot write to the index .*Read-only file system"):
            IndexWriter(directory, encoder, config)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_mount)], check=True)
    assert stored_ids(directory) == before and check_index(directory) == []


def test_concurrent_searches_see_only_committed_states(sample_index, encoder):
    """Each commit swaps one pair of 'marker' documents for the next; a search must see a whole pair."""
    config = load_index(sample_index).manifest.config
    with IndexWriter(sample_index, encoder, config) as writer:
        writer.upsert([Document(id="pair-0-a", text="zymurgy marker zero"),
                       Document(id="pair-0-b", text="zymurgy marker zero too")])
        writer.commit()
    searcher = Searcher(sample_index, encoder=encoder)
    stop, answers, errors = threading.Event(), [], []

    def read():
        while not stop.is_set():
            try:
                hits = searcher.search("zymurgy", k=10, mode="hybrid").hits
                answers.append(sorted(h.id for h in hits if h.id.startswith("pair-")))
            except Exception:  # noqa: BLE001 - any failure is the test's finding
                errors.append(traceback.format_exc())

    readers = [threading.Thread(target=read) for _ in range(2)]
    for thread in readers:
        thread.start()
    for i in range(1, 9):
        with IndexWriter(sample_index, encoder, config) as writer:
            writer.delete([f"pair-{i - 1}-a", f"pair-{i - 1}-b"])
            writer.upsert([Document(id=f"pair-{i}-a", text=f"zymurgy marker {i}"),
                           Document(id=f"pair-{i}-b", text=f"zymurgy marker {i} too")])
            writer.commit()
    stop.set()
    for thread in readers:
        thread.join(timeout=60)
    assert not errors, errors[0]
    assert answers and all(a == [f"pair-{a[0].split('-')[1]}-a", f"pair-{a[0].split('-')[1]}-b"] for a in answers)
    final = sorted(h.id for h in searcher.search("zymurgy", k=10).hits if h.id.startswith("pair-"))
    assert final == ["pair-8-a", "pair-8-b"]
    searcher.close()


def test_another_process_reads_while_this_one_writes(sample_index, encoder, tiny_deberta_dir):
    script = (
        "import sys, time\n"
        "from xlsearch.search.searcher import Searcher\n"
        "s = Searcher(sys.argv[1])\n"
        "seen = set()\n"
        "end = time.time() + 25\n"
        "while time.time() < end and 'pair-5-a' not in seen:\n"
        "    ids = sorted(h.id for h in s.search('zymurgy', k=10, mode='lexical').hits)\n"
        "    assert len(ids) in (0, 2) and (not ids or ids[0][:-1] == ids[1][:-1]), ids\n"
        "    seen.update(ids)\n"
        "print(len(seen))\n")
    reader = subprocess.Popen([sys.executable, "-c", script, str(sample_index)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    config = load_index(sample_index).manifest.config
    time.sleep(3)
    for i in range(6):
        with IndexWriter(sample_index, encoder, config) as writer:
            writer.delete([f"pair-{i - 1}-a", f"pair-{i - 1}-b"])
            writer.upsert([Document(id=f"pair-{i}-a", text=f"zymurgy {i}"),
                           Document(id=f"pair-{i}-b", text=f"zymurgy {i} b")])
            writer.commit()
        time.sleep(0.3)
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    assert int(out) >= 2


def test_two_writers_in_two_processes_are_refused(sample_index, tiny_deberta_dir, encoder):
    config = load_index(sample_index).manifest.config
    with IndexWriter(sample_index, encoder, config):
        process = run_cli(["delete", "--index", str(sample_index), "en-tea-01"], tiny_deberta_dir)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 1 and "another process is writing" in err
    assert "en-tea-01" in stored_ids(sample_index)


def test_strange_ids_round_trip_or_are_refused(sample_index, encoder, tmp_path):
    from xlsearch.indexer.text.corpus import read_documents
    from xlsearch.indexer.errors import CorpusError

    strange = ["../x", "/etc/passwd", "a b", "🙂", "id'; DROP TABLE documents;--", "x" * 1024]
    path = tmp_path / "strange.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": f"strange id {n}"}) + "\n"
                            for n, i in enumerate(strange)), encoding="utf-8")
    config = load_index(sample_index).manifest.config
    with IndexWriter(sample_index, encoder, config) as writer:
        writer.upsert(read_documents([path]))
        writer.commit()
    assert set(strange) <= stored_ids(sample_index) and check_index(sample_index) == []
    for bad, message in [("a\x00b", r"control character U\+0000"), ("x" * 10240, "limit is 1024"),
                         ("\ud800", "unpaired surrogate")]:
        path.write_text(json.dumps({"id": bad, "text": "t"}) + "\n", encoding="utf-8")
        with pytest.raises(CorpusError, match=message):
            list(read_documents([path]))
