"""Build settings of an index and the manifest that records them.

Config flows one way: CLI flags (or API settings) produce an :class:`IndexConfig`,
``build`` writes it into the manifest with what was measured at build time (model
fingerprint, dimension, counts), and ``search`` reads it back and refuses an index
it cannot use.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .errors import ConfigError, IndexFormatError

FORMAT_VERSION = 2  # 2: segments and tombstones (1: one generation of files per commit)
# Name of the lexical analyzer (indexer.text.analysis); changed whenever its output changes,
# so that an index analyzed otherwise is refused rather than searched with mismatched terms.
ANALYZER = "unicode-bigram-arabic-prefix5-v2"
# Dense index kinds (indexer.store.dense, indexer.store.ann): exact, and approximate inverted files.
EXACT = "flat-ip"
APPROXIMATE = ("ivf-flat", "ivf-sq8")
KINDS = (EXACT, *APPROXIMATE)
DEFAULT_MODEL = "microsoft/mdeberta-v3-base"
DEFAULT_LAYER = 8  # the layer `auto` picks for DEFAULT_MODEL: two thirds of its 12 (indexer.sentence_config)
NORMALIZATION = "l2"
# How token vectors become one vector (``indexer.pooling`` does it); each name is recorded in manifests.
MEAN_NO_SPECIAL = "mean-tokens-no-special"  # mean over real tokens, [CLS]/[SEP]-like tokens left out
MEAN = "mean-tokens"  # mean over every token the model saw, special tokens included (sentence-transformers')
CLS = "cls"  # the first token's vector
POOLINGS = (MEAN_NO_SPECIAL, MEAN, CLS)
PRECISIONS = ("fp32", "bf16", "fp16", "int8")  # matmul precisions of the encoder (``indexer.encoding.encoder``)
BATCH_SIZE = 32  # texts per forward pass of the encoder
DEVICES = ("auto", "cpu", "cuda")  # where a model runs; auto = cuda when available
# Longest document text accepted (characters), by every input path: it bounds what chunking one
# document holds (its token offsets: 38 MiB of peak memory measured at this length).
MAX_DOCUMENT_CHARS = 2_000_000
COMMIT_CHUNKS = 4096  # a long indexing run commits at least this often (in new chunks), so it can resume


def check_kind(kind: str) -> str:
    """Return ``kind`` if it is a known dense index kind.

    Raises:
        ConfigError: Unknown kind (a ValueError); the message lists the valid ones.
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown dense index kind {kind!r}; choose one of {', '.join(KINDS)}")
    return kind


def check_pooling(pooling: str) -> str:
    """``pooling`` itself when it is a known mode.

    Raises:
        ConfigError: Naming the valid modes.
    """
    if pooling not in POOLINGS:
        raise ConfigError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    return pooling


@dataclass(frozen=True)
class IndexConfig:
    """Settings that decide what an index contains; fixed for the life of the index.

    Attributes:
        model_name: Hub id or local directory of the encoder, or ``multilingual-e5-small``.
        layer: Hidden layer to pool (0 = embedding output, N = last of N layers); None
            (``auto``): the model's own (see ``indexer.sentence_config``).
        chunk_tokens: Maximum tokens per chunk, special tokens and title included.
        chunk_overlap: Tokens repeated between consecutive chunks of one document.
        analyzer: Name of the lexical analyzer (see ``indexer.analysis``).
        bm25_k1, bm25_b, bm25_epsilon: Okapi BM25 parameters (rank-bm25's defaults).
        pooling: How token vectors become one vector (:data:`POOLINGS`); None: the model's own.
        query_prompt, document_prompt: Text put before each query / each chunk before it is
            embedded (``"query: "``, ``"passage: "`` for E5); never seen by BM25. None: the model's own.
        normalization: Vector normalisation (recorded, not configurable).
        dense_index: FAISS index kind (see ``indexer.ann``): ``flat-ip`` exact search
            (default); ``ivf-flat`` or ``ivf-sq8`` approximate inverted-file search
            for collections of about a million chunks and more (``ivf-sq8`` stores
            vectors in 8 bits: a quarter of the memory). Approximate kinds stay exact
            until the index holds 50,000 vectors.
        center_languages: Subtract each language's mean vector from document and
            query vectors before normalising (see ``indexer.centering``).
        precision: The encoder's matmul precision (:data:`PRECISIONS`) for documents and queries
            alike: vectors of different precisions are never mixed in one index or compared.
        format_version: On-disk format of the whole index directory.
    """

    model_name: str = DEFAULT_MODEL
    layer: int | None = None
    chunk_tokens: int = 256
    chunk_overlap: int = 32
    analyzer: str = ANALYZER
    bm25_k1: float = 1.5
    bm25_b: float = 0.75
    bm25_epsilon: float = 0.25
    pooling: str | None = None
    query_prompt: str | None = None
    document_prompt: str | None = None
    normalization: str = NORMALIZATION
    dense_index: str = "flat-ip"
    center_languages: bool = False
    precision: str = "fp32"
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        check_kind(self.dense_index)  # ConfigError naming the valid kinds
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.pooling is not None:
            check_pooling(self.pooling)
        if self.layer is not None and self.layer < 0:
            raise ConfigError(f"layer must be >= 0, got {self.layer}")
        if self.chunk_tokens < 16:
            raise ConfigError(f"chunk_tokens must be >= 16, got {self.chunk_tokens}")
        if not 0 <= self.chunk_overlap < self.chunk_tokens // 2:
            raise ConfigError(
                f"chunk_overlap must be in [0, chunk_tokens/2), got {self.chunk_overlap}"
            )


def utc_now() -> str:
    """Current time as an ISO 8601 UTC string (seconds)."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` holds: the config plus facts measured at build time.

    ``segments`` lists the live segments in order, each ``{"name", "rows", "live", "created"}``
    (rows in its files, chunks not deleted since, the generation that wrote it); ``files`` maps
    each of their files and the centroids file (relative path) to its ``size`` and ``sha256``;
    opening the index verifies them.
    """

    config: IndexConfig
    model_fingerprint: str
    dim: int
    num_layers: int
    documents: int = 0
    chunks: int = 0
    generation: int = 0
    created: str = field(default_factory=utc_now)
    updated: str = field(default_factory=utc_now)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    segments: list[dict[str, Any]] = field(default_factory=list)

    @property
    def centroids(self) -> str | None:
        """The language means' file (``center_languages``), relative to the index directory."""
        return next((path for path in self.files if path.startswith("centroids.")), None)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["format_version"] = self.config.format_version
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str, source: str) -> Manifest:
        """Parse and validate a manifest; ``source`` names it in error messages.

        Raises:
            IndexFormatError: Not JSON, another format version, or missing fields.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise IndexFormatError(f"{source}: manifest is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise IndexFormatError(f"{source}: manifest is not a JSON object")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise IndexFormatError(
                f"{source}: index format {version}, this xlsearch reads format "
                f"{FORMAT_VERSION}. Rebuild it with `xlsearch index`."
            )
        try:
            # Indexes written before prompts existed embedded their texts as they are.
            config = IndexConfig(**{"query_prompt": "", "document_prompt": "", **data["config"]})
            fields = {f.name for f in dataclasses.fields(cls)} - {"config"}
            return cls(config=config, **{k: data[k] for k in fields if k in data})
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexFormatError(f"{source}: manifest is incomplete or invalid ({exc})") from None

    def replace(self, **changes: Any) -> Manifest:
        return dataclasses.replace(self, **changes)
