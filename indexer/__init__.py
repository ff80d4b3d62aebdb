"""Indexer side of xlsearch: read corpora, chunk, embed, and write the index stores."""
from .build.writer import IndexWriter, UpsertStats, check_compatible, resolve_config
from .config import IndexConfig, Manifest
from .store.docstore import DocStore, Document
from .encoding.encoder import Encoder
from .errors import XlsearchError
from .build.pipeline import build_index
from .encoding.model import LoadedModel, load_model

__all__ = ["DocStore", "Document", "Encoder", "IndexConfig", "IndexWriter", "LoadedModel", "Manifest",
           "UpsertStats", "XlsearchError", "build_index", "check_compatible", "load_model", "resolve_config"]
