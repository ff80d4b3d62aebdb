"""Benchmark loaders: documents to index, queries to ask and which documents are relevant.

Each loader reads local files (see ``../shared/benchmarks/README.md`` for the sources)
and returns a :class:`Benchmark`: named *collections* of documents, and *tasks*, each a
query set searched against one collection and scored on its own.

* ``tatoeba``: for each language xx, the xx side and the English side of the pair are
  two collections; task ``xx-eng`` asks every xx sentence against the English side
  (its translation on the same line is the one relevant document) and ``eng-xx`` the
  reverse. Accuracy@1.
* ``xquad``: each language's 240 paragraphs are a collection; task ``A-B`` asks the
  questions in language A against the paragraphs in B (paragraphs align by position,
  questions by id). MRR@10, nDCG@10, Recall@1/5/20.
* ``xquad-r``: LAReQA's pool of answer sentences of all languages is one collection;
  task ``A`` asks the questions in A; the sentence holding the answer, in every
  language, is relevant. mAP@20.
* ``beir``: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``; one task.
  nDCG@10, Recall@100, MRR@10.

A missing or malformed file raises :class:`BenchmarkError` naming the file and line
(or, inside a JSON document, the path to the bad value).
"""
from __future__ import annotations

import csv
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...indexer.document import Document
from ...indexer.errors import BenchmarkError, CorpusError
from ...indexer.text.records import read_records

log = logging.getLogger(__name__)

BENCHMARKS = ("tatoeba", "xquad", "xquad-r", "beir")
# XTREME's Tatoeba subset (Hu et al. 2020), as LASER's ISO 639-3 codes.
TATOEBA_XTREME = ("afr", "ara", "ben", "bul", "cmn", "deu", "ell", "est", "eus", "fin", "fra", "heb", "hin",
                  "hun", "ind", "ita", "jav", "jpn", "kat", "kaz", "kor", "mal", "mar", "nld", "pes", "por",
                  "rus", "spa", "swh", "tam", "tel", "tgl", "tha", "tur", "urd", "vie")
BEIR_DISTRACTORS = 10  # with --limit N, a BEIR slice keeps 10 N unjudged documents besides the judged ones



@dataclass(frozen=True)
class Task:
    """One query set searched against one collection.

    Attributes:
        key: What the task is reported under: a language (``ar``) or a pair (``ar-de``).
        kind: ``lang`` or ``pair``: the field ``key`` goes in, in results.
        collection: Name of the collection searched.
        queries: Query id -> text.
        qrels: Query id -> relevant document id -> relevance (> 0).
        group: Summary group (``monolingual``, ``xx-eng``...), or None.
    """

    key: str
    kind: str
    collection: str
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    group: str | None = None


@dataclass(frozen=True)
class Benchmark:
    """Collections and tasks of one benchmark, with the metrics it is scored on.

    Attributes:
        name: One of :data:`BENCHMARKS`.
        collections: Collection name -> its documents.
        tasks: Every task, in report order.
        metrics: Metric names (see :mod:`search.metrics`); the first is the primary one.
        depth: Documents retrieved per query (the largest metric cutoff).
    """

    name: str
    collections: dict[str, list[Document]]
    tasks: list[Task]
    metrics: tuple[str, ...]
    depth: int
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def primary(self) -> str:
        return self.metrics[0]


def load_benchmark(name: str, path: str | Path, langs: list[str] | None = None, limit: int | None = None,
                   pairs: str = "all", split: str = "test") -> Benchmark:
    """Load a benchmark from a local folder (or, for ``beir``, a BEIR dataset folder).

    Args:
        name: ``tatoeba``, ``xquad``, ``xquad-r`` or ``beir``.
        path: The folder holding the benchmark's files.
        langs: Languages to keep (tatoeba: ISO 639-3 codes or the preset ``xtreme``);
            default every language found.
        limit: Keep a slice: the first ``limit`` sentence pairs per language (tatoeba),
            paragraphs per language (xquad, xquad-r) or queries (beir).
        pairs: xquad only: ``all`` (the full matrix), ``mono`` (question and paragraph
            language equal), ``cross`` (unequal) or a comma list such as ``ar-en,de-en``.
        split: beir only: the qrels file ``qrels/<split>.tsv``.

    Raises:
        BenchmarkError: Unknown benchmark or language, missing or malformed file.
    """
    root = Path(path)
    if not root.is_dir():
        raise BenchmarkError(f"{root}: no such benchmark folder")
    if limit is not None and limit < 1:
        raise BenchmarkError(f"limit must be >= 1, got {limit}")
    loaders = {"tatoeba": _load_tatoeba, "xquad": _load_xquad, "xquad-r": _load_xquad_r, "beir": _load_beir}
    if name not in loaders:
        raise BenchmarkError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
    options = {"tatoeba": {}, "xquad": {"pairs": pairs}, "xquad-r": {}, "beir": {"split": split}}[name]
    if name == "beir" and langs:
        raise BenchmarkError("--langs does not apply to beir; a BEIR dataset is one query set")
    return loaders[name](root, langs, limit, **options)


# -- reading files -------------------------------------------------------------
def _read_text(path: Path) -> str:
    if not path.is_file():
        raise BenchmarkError(f"{path}: file not found")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise BenchmarkError(f"{path}:{line}: not valid UTF-8 (byte {exc.start})") from None


def _read_lines(path: Path) -> list[str]:
    """Non-empty lines (an empty line is an error: parallel files must align)."""
    lines = _read_text(path).splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            raise BenchmarkError(f"{path}:{number}: empty line")
    return lines


def _read_json(path: Path) -> Any:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise BenchmarkError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None


def _get(obj: Any, key: str | int, kind: type, path: Path, where: str) -> Any:
    """``obj[key]`` checked to be a ``kind`` (a non-empty one for str), else a BenchmarkError naming it."""
    try:
        value = obj[key]
    except (KeyError, IndexError, TypeError):
        raise BenchmarkError(f"{path}: {where}: missing {key!r}") from None
    if not isinstance(value, kind) or (kind is str and not value.strip()):
        raise BenchmarkError(f"{path}: {where}.{key}: expected a non-empty {kind.__name__}")
    return value


def _select(found: list[str], langs: list[str] | None, what: str, presets: dict[str, tuple[str, ...]]) -> list[str]:
    """The requested languages (presets expanded), each checked to exist; default all found."""
    if not langs:
        return found
    wanted: list[str] = []
    for lang in langs:
        wanted += presets.get(lang, (lang,))
    unknown = [lang for lang in wanted if lang not in found]
    if unknown:
        raise BenchmarkError(f"no {what} data for {', '.join(unknown)}; available: {' '.join(found)}")
    return list(dict.fromkeys(wanted))


# -- tatoeba -------------------------------------------------------------------
def _load_tatoeba(root: Path, langs: list[str] | None, limit: int | None) -> Benchmark:
    found = sorted(m.group(1) for p in root.glob("tatoeba.*-eng.eng")
                   if (m := re.fullmatch(r"tatoeba\.([a-z]+)-eng\.eng", p.name)))
    if not found:
        raise BenchmarkError(f"{root}: no tatoeba.xxx-eng.eng files (expected LASER's data/tatoeba/v1 layout)")
    collections: dict[str, list[Document]] = {}
    tasks: list[Task] = []
    for lang in _select(found, langs, "tatoeba", {"xtreme": TATOEBA_XTREME}):
        source, english = root / f"tatoeba.{lang}-eng.{lang}", root / f"tatoeba.{lang}-eng.eng"
        xx, en = _read_lines(source), _read_lines(english)
        if len(xx) != len(en):
            raise BenchmarkError(f"{source}: {len(xx)} lines, but {english} has {len(en)}; the files must align")
        xx, en = xx[:limit], en[:limit]
        collections[f"{lang}.{lang}"] = [Document(f"{lang}:{i}", t, lang=lang) for i, t in enumerate(xx)]
        collections[f"{lang}.eng"] = [Document(f"eng:{i}", t, lang="eng") for i, t in enumerate(en)]
        for src, tgt, texts in ((lang, "eng", xx), ("eng", lang, en)):
            queries = {f"{src}:{i}": t for i, t in enumerate(texts)}
            qrels = {f"{src}:{i}": {f"{tgt}:{i}": 1} for i in range(len(texts))}
            group = "xx-eng" if tgt == "eng" else "eng-xx"
            tasks.append(Task(f"{src}-{tgt}", "pair", f"{lang}.{tgt}", queries, qrels, group))
    return Benchmark("tatoeba", collections, tasks, ("accuracy@1",), depth=10)


# -- xquad ---------------------------------------------------------------------
def _squad(path: Path, limit: int | None) -> list[dict[str, Any]]:
    """The paragraphs of a SQuAD v1.1 file, each checked: ``context`` and ``qas`` with ids and questions."""
    data = _get(_read_json(path), "data", list, path, "top level")
    paragraphs = []
    for a, article in enumerate(data):
        for p, paragraph in enumerate(_get(article, "paragraphs", list, path, f"data[{a}]")):
            where = f"data[{a}].paragraphs[{p}]"
            _get(paragraph, "context", str, path, where)
            for q, qa in enumerate(_get(paragraph, "qas", list, path, where)):
                for key in ("id", "question"):
                    _get(qa, key, str, path, f"{where}.qas[{q}]")
            paragraphs.append(paragraph)
    return paragraphs[:limit]


def _squad_files(root: Path, pattern: str, langs: list[str] | None, what: str) -> dict[str, Path]:
    found = {m.group(1): p for p in sorted(root.glob(pattern.replace("LANG", "*")))
             if (m := re.fullmatch(re.escape(pattern).replace("LANG", "([a-z]{2,3})"), p.name))}
    if not found:
        raise BenchmarkError(f"{root}: no {pattern.replace('LANG', 'xx')} files found")
    return {lang: found[lang] for lang in _select(sorted(found), langs, what, {})}


def _pair_filter(pairs: str, langs: list[str]) -> list[tuple[str, str]]:
    every = [(a, b) for a in langs for b in langs]
    if pairs == "all":
        return every
    if pairs in ("mono", "cross"):
        return [(a, b) for a, b in every if (a == b) == (pairs == "mono")]
    wanted = [tuple(p.strip().split("-")) for p in pairs.split(",") if p.strip()]
    bad = [("-".join(p)) for p in wanted if len(p) != 2 or p not in every]
    if bad or not wanted:
        raise BenchmarkError(f"pairs {pairs!r}: use all, mono, cross or Q-P pairs of loaded languages "
                             f"({' '.join(langs)}), e.g. ar-en,de-en" + (f"; not valid: {', '.join(bad)}" if bad else ""))
    return wanted  # type: ignore[return-value]


def _load_xquad(root: Path, langs: list[str] | None, limit: int | None, pairs: str) -> Benchmark:
    files = _squad_files(root, "xquad.LANG.json", langs, "xquad")
    wanted = _pair_filter(pairs, list(files))  # checked before any file is read
    collections: dict[str, list[Document]] = {}
    questions: dict[str, dict[str, str]] = {}  # lang -> question id -> text
    gold: dict[str, int] = {}  # question id -> paragraph position
    for lang, path in files.items():
        paragraphs = _squad(path, limit)
        collections[lang] = [Document(f"{lang}:{i}", p["context"], lang=lang) for i, p in enumerate(paragraphs)]
        questions[lang] = {}
        for i, paragraph in enumerate(paragraphs):
            for qa in paragraph["qas"]:
                if gold.setdefault(qa["id"], i) != i:
                    raise BenchmarkError(f"{path}: question {qa['id']} is on paragraph {i}, but on paragraph "
                                         f"{gold[qa['id']]} in another language; the files must align")
                questions[lang][qa["id"]] = qa["question"]
    tasks = []
    for a, b in wanted:
        qrels = {qid: {f"{b}:{gold[qid]}": 1} for qid in questions[a]}
        group = "monolingual" if a == b else "cross-lingual"
        tasks.append(Task(f"{a}-{b}", "pair", b, questions[a], qrels, group))
    return Benchmark("xquad", collections, tasks, ("mrr@10", "ndcg@10", "recall@1", "recall@5", "recall@20"),
                     depth=20)


# -- xquad-r (LAReQA) ----------------------------------------------------------
def _answer_sentence(paragraph: dict[str, Any], qa: dict[str, Any], path: Path, where: str) -> int | None:
    """Index of the sentence holding the answer's start (None when no sentence does, as LAReQA skips it)."""
    answers = _get(qa, "answers", list, path, where)
    start = _get(answers[0] if answers else {}, "answer_start", int, path, f"{where}.answers[0]")
    for s, (begin, end) in enumerate(paragraph["sentence_breaks"]):
        if begin <= start < end:
            return s
    return None


def _load_xquad_r(root: Path, langs: list[str] | None, limit: int | None) -> Benchmark:
    files = _squad_files(root, "LANG.json", langs, "xquad-r")
    documents: list[Document] = []
    questions: dict[str, dict[str, str]] = {}
    answers: dict[str, dict[str, int]] = {}  # question id -> relevant sentence ids (every language)
    for lang, path in files.items():
        questions[lang] = {}
        for p, paragraph in enumerate(_squad(path, limit)):
            where = f"paragraph {p}"
            breaks = _get(paragraph, "sentence_breaks", list, path, where)
            context = paragraph["context"]
            if not all(isinstance(b, list) and len(b) == 2 and 0 <= b[0] < b[1] <= len(context) for b in breaks):
                raise BenchmarkError(f"{path}: {where}.sentence_breaks: expected [start, end] offsets into context")
            documents += [Document(f"{lang}:{p}:{s}", context[b:e], lang=lang) for s, (b, e) in enumerate(breaks)]
            for q, qa in enumerate(paragraph["qas"]):
                sentence = _answer_sentence(paragraph, qa, path, f"{where}.qas[{q}]")
                if sentence is None:
                    log.warning("%s: question %s: no sentence holds the answer; skipped (as LAReQA does)",
                                path, qa["id"])
                    continue
                questions[lang][qa["id"]] = qa["question"]
                answers.setdefault(qa["id"], {})[f"{lang}:{p}:{sentence}"] = 1
    tasks = [Task(lang, "lang", "pool", qs, {qid: answers[qid] for qid in qs}) for lang, qs in questions.items()]
    return Benchmark("xquad-r", {"pool": documents}, tasks, ("map@20",), depth=20)


# -- beir ----------------------------------------------------------------------
def _jsonl(path: Path) -> list[dict[str, Any]]:
    """A BEIR ``corpus.jsonl`` or ``queries.jsonl``, read by the product's one record reader
    (its file problems become BenchmarkError with the same ``file:line`` message)."""
    _require(path)
    records = []
    try:
        for where, record in read_records(path, "jsonl"):
            if isinstance(record, CorpusError):
                raise BenchmarkError(str(record))
            for key in ("_id", "text"):
                if not isinstance(record.get(key), (str, int)) or not str(record[key]).strip():
                    if key == "text" and "_id" in record and isinstance(record.get("title"), str) and record["title"]:
                        continue  # a BEIR document may have only a title
                    raise BenchmarkError(f"{where}: missing or empty {key!r}")
            records.append(record)
    except CorpusError as exc:  # the file cannot be read at all
        raise BenchmarkError(str(exc)) from None
    return records


def _beir_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with open(_require(path), encoding="utf-8", newline="") as handle:
        rows = csv.reader(handle, delimiter="\t")
        for number, row in enumerate(rows, 1):
            if number == 1 and row[:1] == ["query-id"]:
                continue  # header
            if not row:
                continue
            if len(row) != 3:
                raise BenchmarkError(f"{path}:{number}: expected query-id, corpus-id and score separated by tabs")
            try:
                qrels.setdefault(row[0], {})[row[1]] = int(float(row[2]))
            except ValueError:
                raise BenchmarkError(f"{path}:{number}: score {row[2]!r} is not a number") from None
    return qrels


def _require(path: Path) -> Path:
    if not path.is_file():
        raise BenchmarkError(f"{path}: file not found")
    return path


def _load_beir(root: Path, langs: list[str] | None, limit: int | None, split: str) -> Benchmark:
    qrels_path = root / "qrels" / f"{split}.tsv"
    qrels = _beir_qrels(qrels_path)
    queries_all = {str(r["_id"]): str(r["text"]) for r in _jsonl(root / "queries.jsonl")}
    corpus = [Document(str(r["_id"]), str(r.get("text") or r.get("title")), title=r.get("title") or None,
                       lang=r.get("lang") if isinstance(r.get("lang"), str) else None)
              for r in _jsonl(root / "corpus.jsonl")]
    ids = {doc.id for doc in corpus}
    missing = [qid for qid in qrels if qid not in queries_all]
    if missing:
        log.warning("%s: %d judged queries are not in queries.jsonl (e.g. %s); skipped", qrels_path,
                    len(missing), missing[0])
    unknown = sum(doc not in ids for judged in qrels.values() for doc in judged)
    if unknown:
        log.warning("%s: %d judgments name documents that are not in corpus.jsonl", qrels_path, unknown)
    judged = [qid for qid in queries_all if qid in qrels and any(r > 0 for r in qrels[qid].values())]
    if not judged:
        raise BenchmarkError(f"{qrels_path}: no query of queries.jsonl has a relevant document")
    judged = judged[:limit]
    if limit is not None:
        relevant = {doc for qid in judged for doc in qrels[qid]}
        others = [doc for doc in corpus if doc.id not in relevant][:BEIR_DISTRACTORS * limit]
        keep = relevant | {doc.id for doc in others}
        corpus = [doc for doc in corpus if doc.id in keep]
    task = Task("all", "lang", "corpus", {qid: queries_all[qid] for qid in judged}, {q: qrels[q] for q in judged})
    return Benchmark("beir", {"corpus": corpus}, [task], ("ndcg@10", "recall@100", "mrr@10"), depth=100,
                     source={"split": split})
