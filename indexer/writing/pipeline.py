"""Index a collection from files: validate every record, then stream them into the index."""
from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import COMMIT_CHUNKS, MAX_DOCUMENT_CHARS, IndexConfig
from ..document import Document
from ..errors import IndexMismatchError, XlsearchError
from ..text.corpus import CorpusReport, read_documents
from .sharded import open_writer
from .writer import IndexWriter, Progress, UpsertStats

if TYPE_CHECKING:
    from ..encoding.protocol import TextEncoder

log = logging.getLogger(__name__)


def validate_inputs(paths: Sequence[str | Path], skip_bad: bool = False,
                    max_chars: int = MAX_DOCUMENT_CHARS) -> CorpusReport:
    """Read every record once, so a bad one stops the run before anything changes
    (``max_chars``: the longest document text accepted).

    Raises:
        CorpusError: The first bad record (file and line), unless ``skip_bad``.
    """
    report = CorpusReport()
    for _ in read_documents(paths, skip_bad, report, max_chars):
        pass
    return report


def build_index(paths: Sequence[str | Path], directory: str | Path, encoder: TextEncoder,
                config: IndexConfig, skip_bad: bool = False,
                progress_factory: Callable[[int], Progress] | None = None,
                commit_chunks: int = COMMIT_CHUNKS, shards: int | None = None,
                validated: CorpusReport | None = None,
                max_chars: int = MAX_DOCUMENT_CHARS) -> tuple[UpsertStats, CorpusReport]:
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
    report = validated if validated is not None else validate_inputs(paths, skip_bad, max_chars)
    with open_writer(directory, encoder, config, shards) as writer:
        progress = progress_factory(report.documents) if progress_factory else None
        stats = writer.upsert(read_documents(paths, skip_bad, max_chars=max_chars), progress, commit_chunks)
        writer.commit()
    return stats, report


def index_documents(directory: Path, docs: Sequence[Document], encoder: TextEncoder, config: IndexConfig,
                    progress: Progress | None = None) -> None:
    """Index ``docs`` (already in memory) into ``directory``, as an evaluation does.

    An index already there is updated, so unchanged documents cost nothing; one built
    with other settings, or holding other documents, is rebuilt.

    Raises:
        XlsearchError: The index could not be built even from scratch.
    """
    for attempt in range(2):
        try:
            with IndexWriter(directory, encoder, config) as writer:
                writer.upsert(docs, progress if attempt == 0 else None)
                manifest = writer.commit()
            if manifest.documents == len({doc.id for doc in docs}):
                return
            log.warning("%s holds documents of another slice; rebuilding it", directory)
        except IndexMismatchError as exc:
            log.warning("%s was built with other settings (%s); rebuilding it", directory, exc)
        shutil.rmtree(directory, ignore_errors=True)
    raise XlsearchError(f"{directory}: could not build the evaluation index")
