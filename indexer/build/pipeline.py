"""Index a collection from files: validate every record, then stream them into the index."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from .writer import COMMIT_CHUNKS, Progress, UpsertStats
from ..config import IndexConfig
from ..text.corpus import CorpusReport, read_documents
from ..encoding.encoder import Encoder
from .sharded import open_writer


def validate_inputs(paths: Sequence[str | Path], skip_bad: bool = False) -> CorpusReport:
    """Read every record once, so a bad one stops the run before anything changes.

    Raises:
        CorpusError: The first bad record (file and line), unless ``skip_bad``.
    """
    report = CorpusReport()
    for _ in read_documents(paths, skip_bad, report):
        pass
    return report


def build_index(paths: Sequence[str | Path], directory: str | Path, encoder: Encoder,
                config: IndexConfig, skip_bad: bool = False,
                progress_factory: Callable[[int], Progress] | None = None,
                commit_chunks: int = COMMIT_CHUNKS, shards: int | None = None,
                validated: CorpusReport | None = None) -> tuple[UpsertStats, CorpusReport]:
    """Index every document of ``paths`` into ``directory``.

    The inputs are read twice: a first pass validates every record (so a bad one
    stops the run before anything changes) and counts documents for the progress
    bar; the second chunks, embeds and stores them, committing every
    ``commit_chunks`` new chunks or more. Each commit is atomic; a run that is
    killed keeps its committed documents, and running it again skips them
    (identical documents are not re-embedded). ``shards``: see :func:`indexer.shards.open_writer`.
    ``validated``: the report of a :func:`validate_inputs` pass the caller already made (the CLI
    validates before it loads the model, so a bad record is reported in a second, not after it).

    Raises:
        CorpusError: A bad record, unless ``skip_bad``.
        IndexMismatchError: ``directory`` holds an index of another model or setting.
    """
    report = validated if validated is not None else validate_inputs(paths, skip_bad)
    with open_writer(directory, encoder, config, shards) as writer:
        progress = progress_factory(report.documents) if progress_factory else None
        stats = writer.upsert(read_documents(paths, skip_bad), progress, commit_chunks)
        writer.commit()
    return stats, report
