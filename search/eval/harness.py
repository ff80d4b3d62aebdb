"""The evaluation harness: index a benchmark with the product's own code, ask its queries, score the runs.

Retrieval goes through the same code as ``xlsearch search``. With a model, each
collection is indexed by :class:`~indexer.writing.IndexWriter` (chunking, title,
analyzer, BM25, FAISS) once per layer and searched by :class:`~search.Searcher`
in every mode. A layer sweep encodes each text once: :class:`LayerCache` stands in
for the encoder, pools every requested layer from one forward pass and serves the
later layers from memory. Without a model (lexical mode only), each document is
one BM25 entry of the same analyzer and :class:`~indexer.lexical.BM25Index`
(chunking needs the model's tokenizer). An existing index can be searched as it is.

Progress is reported through a callback ``progress(stage, done, total)``;
nothing here prints.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...indexer.config import ANALYZER
from ...indexer.encoding.protocol import ModelFacts
from ...indexer.text.analysis import analyze
from ...indexer.config import MEAN_NO_SPECIAL, IndexConfig
from ...indexer.document import Document
from ...indexer.errors import QueryError, XlsearchError
from ...indexer.store.lexical import BM25Index
from ...indexer.store.storage import index_exists

from .benchmarks import Benchmark, Task
from .metrics import mean_metrics
from ..options import DEFAULT_FUSION, FUSIONS, MODES
from ..searcher import Searcher

if TYPE_CHECKING:  # torch loads with the model, for a dense or hybrid sweep only
    from ...indexer.encoding.encoder import Encoder

log = logging.getLogger(__name__)

ASK_STEP = 200  # queries handed to search_many at once (and progress reported after each step)

Progress = Callable[[str, int, int], None]  # (stage, items done since the last call, stage total)
Hits = list[tuple[str, float]]  # (document id, score), best first
# Indexes documents into a directory (updating an index built with the same settings, rebuilding
# any other): (directory, documents, encoder, config, progress(documents, chunks)).
IndexBuilder = Callable[[Path, Sequence[Document], Any, IndexConfig, Callable[[int, int], None]], None]


@dataclass(frozen=True)
class EvalSettings:
    """How to run an evaluation (per-query settings as in ``Searcher.search``).

    Attributes:
        modes: Retrieval modes, from :data:`search.MODES`.
        layers: Layers to sweep for the dense and hybrid modes; empty: the model's own
            (``indexer.sentence_config``).
        pooling, query_prompt, document_prompt: As in :class:`~indexer.config.IndexConfig`;
            None: the model's own.
        fusion, alpha: Hybrid fusion and the dense side's weight.
        chunk_tokens, chunk_overlap: Chunking of the evaluation indexes.
        center_languages: Build the evaluation indexes with language centering
            (queries are centered by their detected language).
        index_dir: Keep the evaluation indexes here and reuse them on the next run
            (or, if it is an xlsearch index itself, search it as it is); None: a
            temporary folder, removed afterwards.
        keep_runs: Keep every ranked list (for a TREC run file).
    """

    modes: tuple[str, ...] = ("lexical",)
    layers: tuple[int, ...] = ()
    pooling: str | None = None
    query_prompt: str | None = None
    document_prompt: str | None = None
    fusion: str = DEFAULT_FUSION
    alpha: float = 0.5
    chunk_tokens: int = IndexConfig.chunk_tokens
    chunk_overlap: int = IndexConfig.chunk_overlap
    center_languages: bool = False
    index_dir: Path | None = None
    keep_runs: bool = False

    def __post_init__(self) -> None:
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise XlsearchError(f"unknown mode {', '.join(bad) or '(none)'}; choose from {', '.join(MODES)}")
        if self.fusion not in FUSIONS:
            raise XlsearchError(f"unknown fusion {self.fusion!r}; choose one of {', '.join(FUSIONS)}")
        if any(layer < 0 for layer in self.layers):
            raise XlsearchError(f"layers must be >= 0, got {list(self.layers)}")

    @property
    def needs_model(self) -> bool:
        return any(mode != "lexical" for mode in self.modes)


@dataclass(frozen=True)
class Score:
    """One number of the results: a metric of one mode and layer on one task."""

    mode: str
    layer: int | None  # None for lexical, which no layer changes
    metric: str
    kind: str  # "lang" or "pair"
    key: str
    value: float

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "layer": self.layer, "metric": self.metric, self.kind: self.key,
                "value": round(self.value, 6)}


@dataclass
class Evaluation:
    """Everything one evaluation produced; :meth:`to_dict` is the ``--out`` JSON."""

    benchmark: Benchmark
    model: str | None
    settings: EvalSettings
    scores: list[Score] = field(default_factory=list)
    runs: dict[str, dict[str, Hits]] = field(default_factory=dict)  # tag -> "task/qid" -> hits
    seconds: float = 0.0
    lexical_unit: str = "chunk"

    @property
    def configs(self) -> list[tuple[str, int | None]]:
        """(mode, layer) pairs in the order they were run."""
        return list(dict.fromkeys((s.mode, s.layer) for s in self.scores))

    def summary(self) -> list[dict[str, Any]]:
        """Macro averages over tasks: ``scope`` is ``mean`` (all tasks) or a task group."""
        groups = {t.key: t.group for t in self.benchmark.tasks}
        cells: dict[tuple, list[float]] = {}
        for s in self.scores:
            for scope in ("mean", groups.get(s.key)):
                if scope is not None:
                    cells.setdefault((s.mode, s.layer, s.metric, scope), []).append(s.value)
        return [{"mode": m, "layer": layer, "metric": metric, "scope": scope, "value": round(float(np.mean(v)), 6)}
                for (m, layer, metric, scope), v in cells.items()]

    def best(self) -> list[dict[str, Any]]:
        """The best layer of each mode by the primary metric's mean."""
        best: dict[str, dict[str, Any]] = {}
        for row in self.summary():
            if row["metric"] != self.benchmark.primary or row["scope"] != "mean":
                continue
            if row["mode"] not in best or row["value"] > best[row["mode"]]["value"]:
                best[row["mode"]] = {"mode": row["mode"], "layer": row["layer"], "value": row["value"]}
        return list(best.values())

    def to_dict(self) -> dict[str, Any]:
        settings = asdict(self.settings)
        settings["index_dir"] = str(self.settings.index_dir) if self.settings.index_dir else None
        settings.pop("keep_runs")
        return {"benchmark": self.benchmark.name, "model": self.model,
                "results": [s.to_dict() for s in self.scores],
                "summary": {"primary_metric": self.benchmark.primary, "metrics": list(self.benchmark.metrics),
                            "best": self.best(), "scores": self.summary(),
                            "tasks": {t.key: len(t.queries) for t in self.benchmark.tasks},
                            "documents": {name: len(docs) for name, docs in self.benchmark.collections.items()},
                            "settings": {**settings, "analyzer": ANALYZER, "lexical_unit": self.lexical_unit,
                                         **self.benchmark.source},
                            "seconds": round(self.seconds, 1)}}


class LayerCache(ModelFacts):
    """A :class:`~indexer.encoding.protocol.TextEncoder` that pools all sweep layers from one forward pass per text.

    ``encode(texts, layer)`` for a layer of the sweep encodes the texts it has not
    seen with ``encode_layers(texts, layers)`` and keeps every layer's vectors, so
    indexing or searching the same texts at another layer costs no forward pass.
    ``loaded`` is the encoder's, and with it ``tokenizer``, ``dim`` and ``num_layers``.

    Args:
        encoder: The real encoder.
        layers: The layers of the sweep.
    """

    def __init__(self, encoder: Encoder, layers: Sequence[int]):
        self.encoder = encoder
        self.layers = tuple(sorted(set(layers)))
        self._row = {layer: i for i, layer in enumerate(self.layers)}
        self._vectors: dict[tuple[str, str, str], np.ndarray] = {}  # (pooling, prompt, text) -> (layers, dim)
        self.forward_texts = 0  # texts that went through the model

    @property
    def loaded(self):
        return self.encoder.loaded

    @property
    def precision(self) -> str:
        return self.encoder.precision

    def __len__(self) -> int:
        return len(self._vectors)

    def encode(self, texts: Sequence[str], layer: int, progress: Callable[[int], None] | None = None,
               *, pooling: str = MEAN_NO_SPECIAL, prompt: str = "") -> np.ndarray:
        """Like :meth:`Encoder.encode`; texts seen before (at any sweep layer) are not encoded again."""
        if layer not in self._row:
            return self.encoder.encode(texts, layer, progress, pooling=pooling, prompt=prompt)
        missing = [t for t in dict.fromkeys(texts) if (pooling, prompt, t) not in self._vectors]
        if missing:
            pooled = self.encoder.encode_layers(missing, self.layers, progress, pooling=pooling, prompt=prompt)
            stacked = np.stack([pooled[layer_] for layer_ in self.layers], axis=1)
            self._vectors.update(((pooling, prompt, t), v) for t, v in zip(missing, stacked))
            self.forward_texts += len(missing)
        row = self._row[layer]
        if not texts:
            return np.zeros((0, self.encoder.dim), np.float32)
        return np.stack([self._vectors[(pooling, prompt, t)][row] for t in texts])

    def retain(self, texts: set[str]) -> None:
        """Forget every text but these (a finished collection's chunks are not needed again)."""
        self._vectors = {key: v for key, v in self._vectors.items() if key[2] in texts}


class LexicalRetriever:
    """BM25 over whole documents with the product's analyzer and BM25 settings; needs no model.

    A document's terms are those of ``title + "\\n" + text``, as the index writer
    prefixes a title to each chunk.
    """

    def __init__(self, docs: Sequence[Document], config: IndexConfig | None = None,
                 progress: Callable[[int], None] | None = None):
        config = config or IndexConfig()
        self.ids = [doc.id for doc in docs]
        self.index = BM25Index(k1=config.bm25_k1, b=config.bm25_b, epsilon=config.bm25_epsilon)
        step = 1000
        for start in range(0, len(docs), step):
            batch = docs[start:start + step]
            terms = [analyze(f"{d.title}\n{d.text}" if d.title and d.title.strip() else d.text) for d in batch]
            self.index.add(list(range(start, start + len(batch))), terms)
            if progress:
                progress(len(batch))

    def search(self, query: str, k: int) -> Hits:
        rows, scores = self.index.search(analyze(query), k)
        return [(self.ids[r], float(s)) for r, s in zip(rows.tolist(), scores.tolist())]


def evaluate(benchmark: Benchmark, encoder: Encoder | None, settings: EvalSettings,
             progress: Progress | None = None, *, build: IndexBuilder | None = None) -> Evaluation:
    """Run every mode (and layer) of ``settings`` on ``benchmark`` and score it.

    Args:
        benchmark: From :func:`search.benchmarks.load_benchmark`.
        encoder: The model; None is allowed for lexical mode only (or, with an
            existing index in ``settings.index_dir``, to use the index's own model).
        settings: Modes, layers, fusion and where the indexes go.
        progress: Called as ``progress(stage, done, total)`` for the stages
            ``encoding`` (query texts), ``indexing`` (documents) and ``searching`` (queries).
        build: Indexes a collection for a dense or hybrid sweep
            (``indexer.writing.pipeline.index_documents``; search reads indexes, it never writes them).

    Raises:
        XlsearchError: A mode needs a model and none was given, a layer does not exist,
            or an existing index does not fit the benchmark.
    """
    started = time.monotonic()
    report = progress or (lambda stage, done, total: None)
    evaluation = Evaluation(benchmark, encoder.loaded.name if encoder else None, settings)
    existing = settings.index_dir is not None and index_exists(settings.index_dir)
    if settings.needs_model and encoder is None and not existing:
        raise XlsearchError(f"modes {', '.join(m for m in settings.modes if m != 'lexical')} need a model: "
                            "pass --model or set XLSEARCH_MODEL (lexical mode needs none)")
    with _single_thread_faiss():
        if existing:
            _evaluate_existing(evaluation, encoder, report)
        elif encoder is None:
            evaluation.lexical_unit = "document"
            _evaluate_lexical(evaluation, report)
        elif build is None:
            raise TypeError("evaluate: a model sweep indexes each collection and needs build=")
        else:
            _evaluate_sweep(evaluation, encoder, report, build)
    evaluation.seconds = time.monotonic() - started
    return evaluation


def _tasks_of(benchmark: Benchmark) -> dict[str, list[Task]]:
    by_collection: dict[str, list[Task]] = {}
    for task in benchmark.tasks:
        by_collection.setdefault(task.collection, []).append(task)
    return by_collection


def _queries(benchmark: Benchmark) -> int:
    return sum(len(t.queries) for t in benchmark.tasks)


def _record(evaluation: Evaluation, mode: str, layer: int | None, task: Task, run: dict[str, Hits]) -> None:
    """Score one task's run and keep the run when asked to."""
    ranked = {qid: [doc for doc, _ in hits] for qid, hits in run.items()}
    for metric, value in mean_metrics(ranked, task.qrels, evaluation.benchmark.metrics).items():
        evaluation.scores.append(Score(mode, layer, metric, task.kind, task.key, value))
    if evaluation.settings.keep_runs:
        tag = f"xlsearch-{mode}" + ("" if layer is None else f"-L{layer}")
        target = evaluation.runs.setdefault(tag, {})
        target.update({f"{task.key}/{qid}": hits for qid, hits in run.items()})


def _ask(search: Callable[[list[str]], list[Hits | QueryError]], task: Task, report: Progress,
         total: int) -> dict[str, Hits]:
    """Each query's hits, the queries searched together (``search``: texts to hits, or the QueryError
    that refused one) in steps of :data:`ASK_STEP`."""
    run: dict[str, Hits] = {}
    asked = list(task.queries.items())
    for start in range(0, len(asked), ASK_STEP):
        step = asked[start:start + ASK_STEP]
        for (qid, _), found in zip(step, search([text for _, text in step]), strict=True):
            if isinstance(found, QueryError):  # e.g. a query the analyzer and tokenizer reduce to nothing
                log.warning("task %s, query %s: %s; scored as retrieving nothing", task.key, qid, found)
                found = []
            run[qid] = found
        report("searching", len(step), total)
    return run


def _evaluate_lexical(evaluation: Evaluation, report: Progress) -> None:
    benchmark = evaluation.benchmark
    total_docs = sum(len(benchmark.collections[c]) for c in _tasks_of(benchmark))
    total = _queries(benchmark)
    for name, tasks in _tasks_of(benchmark).items():
        retriever = LexicalRetriever(benchmark.collections[name],
                                     progress=lambda n: report("indexing", n, total_docs))
        for task in tasks:
            run = _ask(lambda texts: [retriever.search(text, benchmark.depth) for text in texts], task, report, total)
            _record(evaluation, "lexical", None, task, run)


def _search_fn(searcher: Searcher, mode: str, settings: EvalSettings,
               depth: int) -> Callable[[list[str]], list[Hits | QueryError]]:
    def search(queries: list[str]) -> list[Hits | QueryError]:
        found = searcher.search_many(queries, k=depth, mode=mode, fusion=settings.fusion, alpha=settings.alpha)
        return [r if isinstance(r, QueryError) else [(hit.id, hit.score) for hit in r.hits] for r in found]
    return search


def _evaluate_sweep(evaluation: Evaluation, encoder: Encoder, report: Progress, build: IndexBuilder) -> None:
    """Index each collection once per layer (texts encoded once) and search it in every mode."""
    from ...indexer.encoding.encoder import encode_queries
    from ...indexer.encoding.sentence_config import settle_config

    benchmark, settings = evaluation.benchmark, evaluation.settings
    for layer in settings.layers:
        if layer > encoder.num_layers:
            raise XlsearchError(f"layer {layer} does not exist: {encoder.loaded.name} has layers "
                                f"0..{encoder.num_layers}")
    settled = settle_config(_config(encoder, settings, None), encoder.loaded)
    layers = settings.layers or (settled.layer,)
    layers = layers if settings.needs_model else layers[:1]
    # Every evaluation index gets these numbers (a reused --index built otherwise is rebuilt),
    # and the results record them rather than 'auto'.
    settings = evaluation.settings = dataclasses.replace(
        settings, layers=tuple(layers), pooling=settled.pooling, query_prompt=settled.query_prompt,
        document_prompt=settled.document_prompt)
    cache = LayerCache(encoder, layers)
    queries = list(dict.fromkeys(q for t in benchmark.tasks for q in t.queries.values()))
    query_texts = set(queries)
    if settings.needs_model:
        encode_queries(cache, queries, dataclasses.replace(settled, layer=layers[0]),
                       progress=lambda n: report("encoding", n, len(queries)))
    by_collection = _tasks_of(benchmark)
    total_docs = sum(len(benchmark.collections[c]) for c in by_collection) * len(layers)
    per_layer = [m for m in settings.modes if m != "lexical"]
    total = _queries(benchmark) * (len(per_layer) * len(layers) + ("lexical" in settings.modes))
    with _index_root(settings.index_dir) as root:
        for name, tasks in by_collection.items():
            for i, layer in enumerate(layers):
                directory = root / _safe(name) / f"L{layer}"
                build(directory, benchmark.collections[name], cache, _config(encoder, settings, layer),
                      lambda docs, chunks: report("indexing", docs, total_docs))
                if i == len(layers) - 1:
                    cache.retain(query_texts)  # this collection's chunk vectors are not needed again
                searcher = Searcher(directory, encoder=cache)
                try:
                    modes = per_layer + (["lexical"] if i == 0 and "lexical" in settings.modes else [])
                    for mode in modes:
                        for task in tasks:
                            run = _ask(_search_fn(searcher, mode, settings, benchmark.depth), task, report, total)
                            _record(evaluation, mode, None if mode == "lexical" else layer, task, run)
                finally:
                    searcher.close()
                if settings.index_dir is None:
                    shutil.rmtree(directory, ignore_errors=True)
    evaluation.scores.sort(key=lambda s: (settings.modes.index(s.mode), s.layer or 0))


def _config(encoder: Encoder | LayerCache, settings: EvalSettings, layer: int | None) -> IndexConfig:
    """The settings of an evaluation index (None: the model's own, settled by the writer)."""
    return IndexConfig(model_name=encoder.loaded.name, layer=layer, chunk_tokens=settings.chunk_tokens,
                       chunk_overlap=settings.chunk_overlap, center_languages=settings.center_languages,
                       pooling=settings.pooling, query_prompt=settings.query_prompt,
                       document_prompt=settings.document_prompt)


def _evaluate_existing(evaluation: Evaluation, encoder: Encoder | None, report: Progress) -> None:
    """Search the index in ``settings.index_dir`` as it is (one collection; the index's own layer)."""
    benchmark, settings = evaluation.benchmark, evaluation.settings
    if len(benchmark.collections) != 1:
        raise XlsearchError(f"{settings.index_dir} is an xlsearch index, but {benchmark.name} has "
                            f"{len(benchmark.collections)} collections; give --index a new or empty folder "
                            "to keep one index per collection there")
    searcher = Searcher(settings.index_dir, encoder=encoder)
    try:
        layer = searcher.index.manifest.config.layer
        if evaluation.model is None:
            evaluation.model = searcher.index.manifest.config.model_name
        total = _queries(benchmark) * len(settings.modes)
        for mode in settings.modes:
            for task in benchmark.tasks:
                run = _ask(_search_fn(searcher, mode, settings, benchmark.depth), task, report, total)
                _record(evaluation, mode, None if mode == "lexical" else layer, task, run)
    finally:
        searcher.close()


@contextmanager
def _single_thread_faiss() -> Iterator[None]:
    """One OpenMP thread for FAISS while evaluating.

    A filtered or approximate search is one FAISS call per query (or per batch of a few tens), and
    FAISS's OpenMP threads cost about 16 ms per single-vector search on 2 cores (0.02 ms on one
    thread), which would dominate the run time.
    """
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


@contextmanager
def _index_root(index_dir: Path | None) -> Iterator[Path]:
    if index_dir is not None:
        index_dir.mkdir(parents=True, exist_ok=True)
        yield index_dir
        return
    with tempfile.TemporaryDirectory(prefix="xlsearch-eval-") as tmp:
        yield Path(tmp)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
