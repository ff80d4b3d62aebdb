"""Indexer side of xlsearch: read corpora, chunk, embed, and write the index stores."""
from .build import IndexWriter, UpsertStats, check_compatible, resolve_config
from .config import IndexConfig, Manifest
from .docstore import DocStore, Document
from .encoder import Encoder
from .errors import XlsearchError
from .indexing import build_index
from .model import LoadedModel, load_model

__all__ = ["DocStore", "Document", "Encoder", "IndexConfig", "IndexWriter", "LoadedModel", "Manifest",
           "UpsertStats", "XlsearchError", "build_index", "check_compatible", "load_model", "resolve_config"]
