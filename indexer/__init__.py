"""Indexer side of xlsearch: read corpora, chunk, embed, and write the index stores.

Rooms: ``text`` (corpora, validation, chunking, analysis), ``encoding`` (models and
pooling), ``store`` (the on-disk format), ``build`` (writers and pipelines) and
``tasks`` (model jobs that never touch an index). Names below load on first use.
"""
from .lazy import lazy_exports

_EXPORTS = {
    "Document": ".document", "DocStore": ".store.docstore", "IndexConfig": ".config", "Manifest": ".config",
    "check_compatible": ".compat", "XlsearchError": ".errors",
    "Encoder": ".encoding.encoder", "LoadedModel": ".encoding.model", "load_model": ".encoding.model",
    "IndexWriter": ".writing.writer", "UpsertStats": ".writing.writer", "resolve_config": ".writing.writer",
    "build_index": ".writing.pipeline",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
