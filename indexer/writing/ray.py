"""Index on a Ray cluster: reading, chunking and encoding run as a Ray Data pipeline.

::

    input files --flat_map(read)--> documents --map_batches(ChunkAndEncode, actor pool)--> encoded
    documents --iter_rows--> the driver's writer (IndexWriter or ShardedWriter) --> atomic commits

Each actor of the pool loads the model once (on a GPU when the cluster has them) and
chunks and embeds batches of documents exactly as :class:`indexer.writing.IndexWriter`
does (same :func:`indexer.writing.document_pieces`, same encoder). The driver keeps the
pipeline's order, so chunk ids and every stored row equal a single-process build; the
vectors equal it to floating-point tolerance (batches are padded differently). The
driver stores, analyzes for BM25 and commits every ``commit_chunks`` chunks, each
commit atomic, so a killed run keeps what it committed.

Ray is imported here only: ``xlsearch index --ray`` needs ``pip install 'xlsearch[ray]'``.
The input paths must be readable by every worker (a local cluster, or shared storage).
"""
from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import COMMIT_CHUNKS, MAX_DOCUMENT_CHARS
from .writer import Progress, UpsertStats
from ..text.pieces import Piece, document_pieces, with_language
from ..config import IndexConfig
from ..text.corpus import CorpusReport, read_documents
from ..document import Document
from ..encoding.encoder import Encoder, encode_documents
from ..errors import XlsearchError
from .pipeline import validate_inputs
from ..encoding.model import load_model
from ..encoding.sentence_config import settle_config
from .sharded import open_writer

log = logging.getLogger(__name__)

DOCS_PER_BATCH = 16  # documents per actor call: about one encoder batch of chunks
BLOCK_BYTES = 16 << 10  # ~16 KiB of text per block: seconds of encoding each, so the overhead is small


@dataclasses.dataclass(frozen=True)
class RayOptions:
    """How to run on Ray.

    Attributes:
        address: ``None`` starts a local cluster, ``"auto"`` joins the running one,
            ``"ray://host:port"`` a remote one.
        workers: Encoder actors; default: one per GPU if the cluster has GPUs, else per CPU.
        cpus_per_worker: CPUs (and torch threads) of each actor on a CPU cluster.
    """

    address: str | None = None
    workers: int | None = None
    cpus_per_worker: int = 1


def import_ray():
    """``ray`` (with Ray Data), or an XlsearchError that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise XlsearchError("--ray needs Ray: pip install 'xlsearch[ray]'") from None
    return ray


class ChunkAndEncode:
    """A Ray Data actor: holds the model; turns a batch of documents into chunks and vectors.

    ``known`` holds the sorted checksums of the documents the index already has: those
    come back marked ``unchanged``, neither chunked nor embedded (a rerun re-embeds nothing).
    """

    def __init__(self, model: str, config: dict[str, Any], device: str, precision: str, batch_size: int,
                 threads: int, known: np.ndarray):
        import torch

        from ..allocator import retain_freed_memory

        torch.set_num_threads(threads)
        retain_freed_memory()
        self.config = IndexConfig(**config)
        self.encoder = Encoder(load_model(model, device), batch_size=batch_size, precision=precision)
        self.known = known

    def __call__(self, batch) -> dict[str, list]:
        docs = [with_language(_document(row)) for row in batch.to_pylist()]  # a pyarrow Table: nulls stay None
        checksums = np.array([int(doc.row()[-1], 16) for doc in docs], dtype=np.uint64)
        unchanged = np.isin(checksums, self.known).tolist()
        pieces = [[] if same else document_pieces(doc, self.encoder.tokenizer, self.config)
                  for doc, same in zip(docs, unchanged)]
        vectors = encode_documents(self.encoder, [p.input for ps in pieces for p in ps], self.config)
        out: dict[str, list] = {"id": [], "title": [], "text": [], "lang": [], "metadata": [],
                                "unchanged": unchanged, "pieces": [], "vectors": []}
        start = 0
        for doc, ps in zip(docs, pieces):
            for key, value in _fields(doc).items():
                out[key].append(value)
            out["pieces"].append(json.dumps([[p.start, p.end, p.input[: len(p.input) - len(p.text)]] for p in ps]))
            out["vectors"].append(np.ascontiguousarray(vectors[start:start + len(ps)], np.float32).tobytes())
            start += len(ps)
        return out


def read_file(row: dict[str, Any], skip_bad: bool, max_chars: int) -> Iterator[dict[str, Any]]:
    """A Ray Data flat_map: every document of one input path, as rows. A generator, so
    Ray cuts its output into blocks as it streams (a list would be one block: one actor)."""
    for doc in read_documents([row["path"]], skip_bad, max_chars=max_chars):
        yield _fields(doc)


def build_index_ray(paths: Sequence[str | Path], directory: str | Path, config: IndexConfig,
                    options: RayOptions, device: str = "auto", precision: str = "fp32", batch_size: int = 32,
                    skip_bad: bool = False, progress_factory: Callable[[int], Progress] | None = None,
                    commit_chunks: int = COMMIT_CHUNKS, shards: int | None = None,
                    max_chars: int = MAX_DOCUMENT_CHARS) -> tuple[UpsertStats, CorpusReport]:
    """:func:`indexer.indexing.build_index` with chunking and encoding on a Ray cluster.

    Raises:
        CorpusError: A bad record (checked on the driver before anything runs), unless ``skip_bad``.
        XlsearchError: Ray is not installed, or the cluster cannot be reached.
    """
    ray = import_ray()
    report = validate_inputs(paths, skip_bad, max_chars)
    if not ray.is_initialized():
        try:
            ray.init(address=options.address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = options.address or "a new local cluster"
            raise XlsearchError(f"cannot start or reach Ray at {where} ({str(exc).splitlines()[0]})") from None
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0)) if device != "cpu" else 0
    workers = options.workers or gpus or max(1, int(resources.get("CPU", 1)) // options.cpus_per_worker)
    log.info("indexing on Ray: %d workers, %s", workers, f"{gpus} GPUs" if gpus else "CPU only")
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # chunk ids as in one process
    context.target_max_block_size = BLOCK_BYTES  # the reader's output splits into blocks for every actor

    loaded = load_model(config.model_name, "cpu")  # for the writer: tokenizer, fingerprint, dimension
    config = settle_config(config, loaded)  # the actors chunk and embed with the numbers the index records
    files = [{"path": str(Path(p).resolve())} for p in paths]
    stats = UpsertStats()
    with open_writer(directory, Encoder(loaded, precision=precision), config, shards) as writer:
        actor = {"model": config.model_name, "config": dataclasses.asdict(config), "device": "cuda" if gpus else "cpu",
                 "precision": precision, "batch_size": batch_size, "threads": options.cpus_per_worker,
                 "known": writer.stored_checksums()}
        dataset = (ray.data.from_items(files, override_num_blocks=len(files))
                   .flat_map(read_file, fn_kwargs={"skip_bad": skip_bad, "max_chars": max_chars}, num_cpus=0)  # I/O: never waits for actors
                   .map_batches(ChunkAndEncode, batch_size=DOCS_PER_BATCH, batch_format="pyarrow",
                                compute=ray.data.ActorPoolStrategy(size=workers), fn_constructor_kwargs=actor,
                                num_cpus=0 if gpus else options.cpus_per_worker, num_gpus=1 if gpus else 0))
        progress = progress_factory(report.documents) if progress_factory else None
        for row in dataset.iter_rows():
            doc, pieces, vectors = _encoded(row, loaded.dim)
            if row["unchanged"] and not writer.is_unchanged(doc):
                raise XlsearchError(f"document {doc.id!r}: a worker found it unchanged, the index disagrees")
            writer.add_encoded(doc, pieces, vectors, stats, commit_chunks)
            if progress:
                progress(1, len(pieces))
        writer.commit()
    return stats, report


def _fields(doc: Document) -> dict[str, Any]:
    return {"id": doc.id, "title": doc.title, "text": doc.text, "lang": doc.lang,
            "metadata": json.dumps(doc.metadata, ensure_ascii=False)}


def _document(row: dict[str, Any]) -> Document:
    return Document(id=row["id"], text=row["text"], title=row["title"], lang=row["lang"],
                    metadata=json.loads(row["metadata"]))


def _encoded(row: dict[str, Any], dim: int) -> tuple[Document, list[Piece], np.ndarray]:
    """The driver's side of :class:`ChunkAndEncode`'s output row."""
    doc = _document(row)
    pieces = [Piece(start, end, doc.text[start:end], prefix + doc.text[start:end])
              for start, end, prefix in json.loads(row["pieces"])]
    vectors = np.frombuffer(row["vectors"], np.float32).reshape(len(pieces), dim)
    return doc, pieces, vectors
