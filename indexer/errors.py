"""Named exceptions shared by every layer of xlsearch.

All of them derive from :class:`XlsearchError`; the CLI prints ``error: <message>``
and exits 1 on one, the API maps them to 4xx answers. Messages say what broke and
how to fix it.
"""
from __future__ import annotations


class XlsearchError(Exception):
    """Base class of every error xlsearch raises on purpose."""


class CorpusError(XlsearchError):
    """A corpus file or record is unreadable or invalid (message starts ``file:line:``)."""


class ModelLoadError(XlsearchError):
    """The encoder model or its tokenizer could not be loaded."""


class IndexNotFoundError(XlsearchError):
    """The index directory does not exist or holds no xlsearch index."""


class IndexFormatError(XlsearchError):
    """The index exists but cannot be read by this version, or is damaged."""


class IndexMismatchError(XlsearchError):
    """The index was built with another model, layer or setting than the one asked for."""


class IndexLockedError(XlsearchError):
    """Another process is writing to the index."""


class QueryError(XlsearchError):
    """A search request is invalid (empty query, k out of range, unknown mode...)."""


class DocumentNotFoundError(XlsearchError):
    """A document id is not in the index."""


class IndexWriteError(XlsearchError):
    """A change could not be written (disk full, read-only, I/O error); the index is unchanged."""


class ConfigError(XlsearchError, ValueError):
    """An index setting is invalid (e.g. chunk overlap too large, an unknown dense index kind)."""


class LayerError(ConfigError):
    """A hidden layer is malformed or outside the model's range; the message gives the valid range."""


class ChunkError(XlsearchError, ValueError):
    """Chunk ids or token lists given to a store are invalid (duplicate, unknown or non-integer ids)."""


class MaskedLMHeadMissingError(ModelLoadError):
    """The checkpoint lacks trained masked-LM weights; predictions would be random."""


class BenchmarkError(XlsearchError):
    """A benchmark file is missing or malformed (the message names the file and line)."""


class MetricError(XlsearchError, ValueError):
    """A metric name is unknown or lacks its cutoff (the message lists the valid ones)."""

