"""Subcommands index, search, delete and info: their arguments and what they do.

Each ``run_*`` takes parsed arguments and returns the exit code.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ...indexer.config import COMMIT_CHUNKS, KINDS, MAX_DOCUMENT_CHARS
from ...indexer.errors import QueryError, XlsearchError
from ...search.queries import read_queries
from ...search.options import DEFAULT_FUSION, FUSION_HELP, FUSIONS, MODES

if TYPE_CHECKING:  # the stores load with the first search, not with the parser
    from ...search.searcher import Searcher, SearchResult

from ..settings import requested_model
from .options import (add_batch_size_option, add_chunk_options, add_embedding_options, add_model_options,
                      add_precision_option, filter_option, layer_option, positive_int, unit_float)


def add_parsers(subparsers) -> None:
    """Register index, search, delete, info and check on the ``xlsearch`` parser."""
    _add_index(subparsers)
    _add_search(subparsers)
    _add_maintenance(subparsers)


def _add_index(subparsers) -> None:
    index = subparsers.add_parser("index", help="add or update documents in an index",
                                  description="Chunk, embed and index documents (JSONL, CSV/TSV, BEIR "
                                  "corpus.jsonl, or folders of .txt/.md). Re-indexing an id replaces it.")
    index.add_argument("paths", nargs="+", metavar="PATH", help="corpus files or folders")
    index.add_argument("--index", required=True, metavar="DIR", help="index directory (created if new)")
    add_model_options(index)
    index.add_argument("--layer", type=layer_option, help="hidden layer to pool, 0 = embeddings (default auto: "
                       "the last layer of a sentence-embedding model, two thirds of the depth of a raw encoder, "
                       "8 of mdeberta-v3-base's 12)")
    add_embedding_options(index)
    add_chunk_options(index, set_defaults=False)
    add_batch_size_option(index)
    add_precision_option(index)
    index.add_argument("--dense-index", choices=list(KINDS),
                       help="FAISS index kind: flat-ip exact search (default); ivf-flat or ivf-sq8 approximate "
                       "inverted lists for about a million chunks and more (ivf-sq8: a quarter of the memory); "
                       "approximate kinds search exactly until they hold 50,000 vectors")
    index.add_argument("--center-languages", action="store_const", const=True, default=None,
                       help="subtract each language's mean vector from document and query vectors "
                       "(recorded in the index; helps raw multilingual encoders across languages)")
    index.add_argument("--shards", type=positive_int,
                       help="build a new index as N shards, documents assigned by a hash of their id "
                       "(fixed for the life of the index; search and updates route by id)")
    index.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                       help="chunk and encode on a Ray cluster: no value starts a local one, 'auto' joins "
                       "the running cluster, or ray://HOST:PORT (needs pip install 'xlsearch[ray]')")
    index.add_argument("--workers", type=positive_int,
                       help="with --ray: encoder actors (default: one per GPU, else one per CPU)")
    index.add_argument("--max-document-chars", type=positive_int, default=MAX_DOCUMENT_CHARS, metavar="N",
                       help=f"longest document text accepted, in characters (default {MAX_DOCUMENT_CHARS:,}); a longer "
                       "one is a bad record")
    index.add_argument("--skip-bad", action="store_true", help="skip bad records and report how many, "
                       "instead of stopping at the first")
    index.add_argument("--commit-chunks", type=positive_int, default=COMMIT_CHUNKS,
                       help=f"commit after at least this many new chunks, so a killed run keeps its work "
                       f"(default {COMMIT_CHUNKS}, or an eighth of the index if larger)")
    index.set_defaults(handler=run_index)


def _add_search(subparsers) -> None:
    search = subparsers.add_parser("search", help="query an index",
                                   description="Search an index with a query in any language, or with every "
                                   "query of a file (--queries), writing a TREC run (--run) as Pyserini does.")
    search.add_argument("query", nargs="?", help="query text (or give --queries)")
    search.add_argument("--queries", type=Path, metavar="FILE", help="answer every query of FILE in one process: "
                        "JSONL (id and query/text), TSV (id<TAB>query) or TREC topics (<top> <num> <title>)")
    search.add_argument("--run", type=Path, metavar="FILE", help="with --queries: write the hits as a TREC run "
                        "(qid Q0 docid rank score tag) instead of printing them")
    search.add_argument("--run-tag", help="the run's tag (default xlsearch-MODE)")
    search.add_argument("--index", required=True, metavar="DIR", help="index directory")
    search.add_argument("-k", type=int, default=10, help="number of documents (default 10)")
    search.add_argument("--offset", type=int, default=0, help="hits to skip, for paging: --offset 10 -k 10 is "
                        "the second page (offset + k at most 1000; default 0)")
    search.add_argument("--mode", default="hybrid", choices=list(MODES), help="retrieval mode (default hybrid)")
    search.add_argument("--fusion", default=DEFAULT_FUSION, choices=list(FUSIONS),
                        help=f"hybrid fusion: {FUSION_HELP}")
    search.add_argument("--alpha", type=unit_float, default=0.5,
                        help="weight of the dense side in hybrid fusion, 0..1 (default 0.5)")
    search.add_argument("--lang", help="only documents in this language (as stored in their lang field)")
    search.add_argument("--filter", action="append", type=filter_option, metavar="KEY=VALUE",
                        help="only documents whose metadata field KEY equals VALUE (a JSON number, true/false, "
                        "or else a string); repeat for several fields, all must match, as the API's filter")
    search.add_argument("--layer", type=int, help="must equal the index's layer (checked)")
    search.add_argument("--query-lang", help="language of the query, for indexes built with "
                        "--center-languages (default: detected)")
    search.add_argument("--nprobe", type=positive_int, help="inverted lists scanned per query in an ivf-* "
                        "dense index: more is slower and closer to exact (default: the index's choice)")
    search.add_argument("--json", action="store_true", help="print one JSON object")
    add_model_options(search)
    add_precision_option(search)
    search.set_defaults(handler=run_search)


def _add_maintenance(subparsers) -> None:
    """delete, info, optimize and check: commands that need no model."""
    delete = subparsers.add_parser("delete", help="remove documents from an index",
                                   description="Remove documents by id from all three stores.")
    delete.add_argument("ids", nargs="+", metavar="ID", help="document ids")
    delete.add_argument("--index", required=True, metavar="DIR", help="index directory")
    delete.set_defaults(handler=run_delete)

    info = subparsers.add_parser("info", help="show an index's model, settings and counts",
                                 description="Summarise an index: model, settings, counts and files "
                                 "(--json: the committed manifest itself, with every file's size and SHA-256).")
    info.add_argument("--index", required=True, metavar="DIR", help="index directory")
    info.add_argument("--json", action="store_true", help="print the manifest and stored counts as JSON")
    info.set_defaults(handler=run_info)

    optimize = subparsers.add_parser("optimize", help="merge an index's segments into one",
                                     description="Merge every segment of an index into one and purge the "
                                     "chunks deleted since they were written. Readers keep searching the old "
                                     "segments until they pick up the new commit.")
    optimize.add_argument("--index", required=True, metavar="DIR", help="index directory")
    optimize.set_defaults(handler=run_optimize)

    check = subparsers.add_parser("check", help="verify an index's files and stores",
                                  description="Verify files against the manifest's sizes and SHA-256, "
                                  "and that the document store, dense and lexical indexes hold the same "
                                  "chunks. Exit 0 when healthy, 1 with the list of problems.")
    check.add_argument("--index", required=True, metavar="DIR", help="index directory")
    check.set_defaults(handler=run_check)


def _progress_factory(total: int):
    """A tqdm bar over documents that also shows chunks/s; silent when stderr is no terminal."""
    from tqdm import tqdm

    bar = tqdm(total=total, unit="doc", desc="indexing", disable=None, file=sys.stderr)
    state = {"chunks": 0}

    def update(documents: int, chunks: int) -> None:
        state["chunks"] += chunks
        if chunks:
            rate = state["chunks"] / max(bar.format_dict["elapsed"], 1e-9)
            bar.set_postfix(chunks=state["chunks"], chunks_per_s=f"{rate:.1f}", refresh=False)
        bar.update(documents)

    return update


def run_index(args: argparse.Namespace) -> int:
    from ...indexer.writing.pipeline import build_index, validate_inputs
    from ...indexer.writing.writer import resolve_config
    from ...indexer.encoding.model import load_model

    config = resolve_config(args.index, model_name=requested_model(args.model),
                            layer=args.layer, pooling=args.pooling, query_prompt=args.query_prompt,
                            document_prompt=args.document_prompt, chunk_tokens=args.chunk_tokens,
                            chunk_overlap=args.chunk_overlap, center_languages=args.center_languages,
                            dense_index=args.dense_index, precision=args.precision)
    if args.workers is not None and args.ray is None:
        raise XlsearchError("--workers needs --ray")
    if args.ray is not None:
        from ...indexer.writing.ray import RayOptions, build_index_ray

        options = RayOptions(address=None if args.ray == "local" else args.ray, workers=args.workers)
        stats, report = build_index_ray(args.paths, args.index, config, options, device=args.device,
                                        precision=config.precision, batch_size=args.batch_size,
                                        skip_bad=args.skip_bad, progress_factory=_progress_factory,
                                        commit_chunks=args.commit_chunks, shards=args.shards,
                                        max_chars=args.max_document_chars)
    else:
        # bad input is reported before the model loads
        validated = validate_inputs(args.paths, args.skip_bad, args.max_document_chars)
        loaded = load_model(config.model_name, args.device)  # an unreachable hub fails here, before torch loads
        from ...indexer.encoding.encoder import Encoder

        encoder = Encoder(loaded, batch_size=args.batch_size, precision=config.precision)
        stats, report = build_index(args.paths, args.index, encoder, config, skip_bad=args.skip_bad,
                                    progress_factory=_progress_factory, commit_chunks=args.commit_chunks,
                                    shards=args.shards, validated=validated, max_chars=args.max_document_chars)
    print(f"indexed {report.documents} documents into {args.index}: {stats.added} added, "
          f"{stats.replaced} replaced, {stats.unchanged} unchanged, {stats.chunks} chunks embedded")
    if report.bad:
        print(f"skipped {len(report.bad)} bad records:", file=sys.stderr)
        for message in report.bad[:20]:
            print(f"  {message}", file=sys.stderr)
        if len(report.bad) > 20:
            print(f"  ... and {len(report.bad) - 20} more", file=sys.stderr)
    return 0


def run_search(args: argparse.Namespace) -> int:
    from ...search.searcher import Searcher

    if (args.query is None) == (args.queries is None):
        raise XlsearchError("give a query or --queries FILE (one of them)")
    if args.run is not None and args.queries is None:
        raise XlsearchError("--run needs --queries")
    queries = [(None, args.query)] if args.queries is None else read_queries(args.queries)
    searcher = Searcher(args.index, model=requested_model(args.model),
                        layer=args.layer, device=args.device, precision=args.precision, nprobe=args.nprobe)
    run: dict[str, list[tuple[str, float]]] = {}
    try:
        for (qid, text), result in zip(queries, _answers(searcher, args, [text for _, text in queries])):
            if isinstance(result, QueryError):
                if qid is None:
                    raise result
                print(f"warning: query {qid}: {result}; skipped", file=sys.stderr)
                continue
            if args.run is not None:
                run[qid] = [(hit.id, hit.score) for hit in result.hits]
            elif args.json:
                print(json.dumps({**({"qid": qid} if qid is not None else {}), **result.to_dict()}, ensure_ascii=False))
            else:
                print((f"query {qid}: {text}\n" if qid is not None else "")
                      + format_result(result, first_rank=args.offset + 1, bold=sys.stdout.isatty()))
    finally:
        searcher.close()
    if args.run is not None:
        from ...search.eval.metrics import write_trec_run

        write_trec_run(args.run, {args.run_tag or f"xlsearch-{args.mode}": run})
        print(f"answered {len(run)} of {len(queries)} queries; run written to {args.run}")
    return 0


def _answers(searcher: Searcher, args: argparse.Namespace, texts: list[str]) -> list[SearchResult | QueryError]:
    """Each query's result (or the QueryError that refused it), their vectors encoded in batches."""
    return searcher.search_many(texts, k=args.k, mode=args.mode, fusion=args.fusion, alpha=args.alpha,
                                lang=args.lang, filter=dict(args.filter) if args.filter else None,
                                query_lang=args.query_lang, offset=args.offset)


def format_result(result: SearchResult, width: int = 160, first_rank: int = 1, bold: bool = False) -> str:
    """Human-readable listing of a result, one block per hit (``bold``: the matched words in ANSI bold)."""
    if not result.hits:
        return f"no documents match {result.query!r}"
    lines = []
    for rank, hit in enumerate(result.hits, first_rank):
        scores = "  ".join(f"{name} {value:.4f}" for name, value in hit.scores.items() if value is not None)
        title = f"  {hit.title}" if hit.title else ""
        lines.append(f"{rank:>3}. {hit.id} [{hit.lang or '?'}] score {hit.score:.4f} ({scores}){title}")
        lines.append("     " + _passage(hit, width, bold))
    return "\n".join(lines)


def _passage(hit, width: int, bold: bool) -> str:
    """The passage on one line, cut at ``width`` characters, its highlights in bold on a terminal."""
    text, marks = hit.passage[:width], [(a, b) for a, b in hit.highlights if b <= width]
    if bold:
        for start, end in reversed(marks):
            text = f"{text[:start]}\033[1m{text[start:end]}\033[0m{text[end:]}"
    return " ".join(text.split()) + ("..." if len(hit.passage) > width else "")


def run_delete(args: argparse.Namespace) -> int:
    from ...indexer.writing.sharded import open_writer

    with open_writer(args.index) as writer:
        found = writer.delete(args.ids)
        writer.commit()
    for doc_id in args.ids:
        if doc_id not in found:
            print(f"warning: no document with id {doc_id!r}", file=sys.stderr)
    print(f"deleted {len(found)} of {len(set(args.ids))} documents from {args.index}")
    return 0


def run_optimize(args: argparse.Namespace) -> int:
    from ...indexer.writing.sharded import open_writer

    with open_writer(args.index) as writer:
        manifest = writer.optimize()
    print(f"{args.index}: {manifest.documents:,} documents, {manifest.chunks:,} chunks "
          f"in {len(manifest.segments)} segment(s) (generation {manifest.generation})")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from ...indexer.store.shard_layout import sharded_info

    info = sharded_info(args.index)
    print(json.dumps(info, indent=2, ensure_ascii=False, sort_keys=True) if args.json else format_info(info))
    return 0


def format_info(info: dict) -> str:
    """``xlsearch info`` for a person: what the index holds and how it was built."""
    config = info["config"]
    prompts = (f"prompts {config['query_prompt']!r} / {config['document_prompt']!r}"
               if config.get("query_prompt") or config.get("document_prompt") else "no prompts")
    lines = [
        f"documents  {info['documents']:,} in {info['chunks']:,} chunks"
        + (f" (generation {info['generation']})" if "generation" in info else ""),
        f"model      {config['model_name']} (fingerprint {info['model_fingerprint']})",
        f"vectors    layer {config['layer']} of {info['num_layers']}, {config['pooling']}, {prompts}, "
        f"{info['dim']} dimensions, {config.get('precision', 'fp32')}, {config['dense_index']}"
        + (", languages centered" if config.get("center_languages") else ""),
        f"chunks     up to {config['chunk_tokens']} tokens, {config['chunk_overlap']} shared",
        f"lexical    BM25 k1={config['bm25_k1']} b={config['bm25_b']}, analyzer {config['analyzer']}",
        f"updated    {info['updated']} (created {info['created']})",
    ]
    if "segments" in info:
        deleted = sum(s["rows"] - s["live"] for s in info["segments"])
        lines.append(f"segments   {len(info['segments'])}, {deleted:,} deleted chunks not purged yet")
    if "files" in info:
        size = sum(f["size"] for f in info["files"].values())
        lines.append(f"files      {len(info['files'])}, {size / 2 ** 20:.1f} MiB besides the document store")
    for shard in info.get("shards", []):
        lines.append(f"shard      {shard['directory']}: {shard['documents']:,} documents, {shard['chunks']:,} chunks")
    return "\n".join(lines)


def run_check(args: argparse.Namespace) -> int:
    from ...indexer.store.check import check_any

    problems = check_any(args.index)
    if problems:
        print(f"{args.index}: {len(problems)} problems", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"{args.index}: ok")
    return 0
