"""Request and response bodies of the HTTP API, with the limits every field has.

Requests are strict (no type coercion: ``"k": "10"`` is refused) and refuse
unknown fields, so a misspelt option is a 422 naming it rather than a silent default.
"""
from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from ...indexer.config import MAX_DOCUMENT_CHARS
from ...indexer.text.validation import MAX_ID_CHARS, id_problem, text_problem
from ...search.options import FUSION_HELP, MAX_K

MAX_QUERY_CHARS = 2000
MAX_DOCUMENTS = 1000
MAX_TEXT_CHARS = MAX_DOCUMENT_CHARS  # as every input path
MAX_TITLE_CHARS = 2000
MAX_LANG_CHARS = 35  # the longest BCP 47 tags people use
MAX_FILTER_KEYS = 32
MAX_FILTER_CHARS = 1000
MAX_METADATA_DEPTH = 16
MAX_EMBED_TEXTS = 256
MAX_EMBED_CHARS = 20_000
MAX_EMBED_TOTAL_CHARS = 100_000  # one /embed request's whole work: about 25,000 tokens
INT64 = 2 ** 63

Mode = Literal["hybrid", "dense", "lexical"]
Fusion = Literal["auto", "backed", "anchored", "evidence", "rrf", "linear", "zscore", "dbsf"]


def _unicode(value: str) -> str:
    problem = text_problem(value, "the text")
    if problem:
        raise ValueError(problem)
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or only whitespace")
    return _unicode(value)


def _document_id(value: str) -> str:
    problem = id_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _check_json(value: Any, where: str, depth: int = 0) -> None:
    """Refuse what cannot be stored as JSON and read back: NaN, unpaired surrogates, deep nesting."""
    if depth > MAX_METADATA_DEPTH:
        raise ValueError(f"{where}: nested deeper than {MAX_METADATA_DEPTH} levels")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: numbers must be finite")
    if isinstance(value, str):
        if text_problem(value, where):
            raise ValueError(text_problem(value, where))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]", depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():  # JSON keys are strings
            _check_json(key, f"{where} key", depth + 1)
            _check_json(item, f"{where}.{key}", depth + 1)
    elif not (value is None or isinstance(value, (bool, int, float))):
        raise ValueError(f"{where}: not a JSON value")


Text = Annotated[str, AfterValidator(_unicode)]
Query = Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS), AfterValidator(_not_blank)]
Lang = Annotated[str, Field(min_length=1, max_length=MAX_LANG_CHARS), AfterValidator(_not_blank)]
FilterKey = Annotated[str, Field(min_length=1, max_length=MAX_FILTER_CHARS), AfterValidator(_unicode)]


def _filter_value(value: Any) -> str | int | float | bool:
    """One exact-match value: a string, a 64-bit integer, a finite number or a boolean."""
    if isinstance(value, str) and len(value) <= MAX_FILTER_CHARS:
        return _unicode(value)
    if isinstance(value, bool) or (isinstance(value, int) and -INT64 <= value < INT64):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise ValueError(f"must be a string (at most {MAX_FILTER_CHARS} characters), a 64-bit integer, "
                     "a finite number or a boolean")


FilterValue = Annotated[Any, AfterValidator(_filter_value)]


class StrictModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class SearchRequest(StrictModel):
    """A query; the fields mean what ``xlsearch search``'s options mean."""

    query: Query = Field(description=f"query text in any language, 1..{MAX_QUERY_CHARS} characters")
    k: int = Field(10, ge=1, le=MAX_K, description="number of documents to return")
    offset: int = Field(0, ge=0, le=MAX_K - 1, description="hits to skip, for paging (offset + k <= 1000)")
    mode: Mode = Field("hybrid", description="hybrid fuses dense and lexical; or one of them alone")
    fusion: Fusion = Field("auto", description=f"hybrid fusion: {FUSION_HELP}")
    alpha: float = Field(0.5, ge=0.0, le=1.0, allow_inf_nan=False, description="weight of the dense side, 0..1")
    lang: Lang | None = Field(None, description="only documents whose lang is this")
    query_lang: Lang | None = Field(None, description="the query's language, for indexes built with "
                                    "--center-languages (default: detected)")
    filter: dict[FilterKey, FilterValue] | None = Field(
        None, max_length=MAX_FILTER_KEYS, examples=[{"source": "wiki"}],
        description="only documents whose metadata has exactly these values; applied before the top k is cut")


class DocumentIn(StrictModel):
    """A document to add; one with an existing id replaces it."""

    id: Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS), AfterValidator(_document_id)]
    text: Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS), AfterValidator(_not_blank)]
    title: Annotated[Text, Field(max_length=MAX_TITLE_CHARS)] | None = None
    lang: Lang | None = None
    metadata: dict[str, Any] = Field(default_factory=dict, examples=[{"source": "wiki", "year": 2024}],
                                     description="any JSON object; search filters match its top-level values")

    @field_validator("metadata")
    @classmethod
    def _storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_json(value, "metadata")
        return value


class EmbedRequest(StrictModel):
    texts: list[Annotated[str, Field(min_length=1, max_length=MAX_EMBED_CHARS), AfterValidator(_not_blank)]] = Field(
        min_length=1, max_length=MAX_EMBED_TEXTS, description="texts to embed (longer ones are cut at 512 tokens)")
    layer: int | None = Field(None, ge=0, le=1000, description="hidden layer to pool (default: the index's layer)")
    input_type: Literal["document", "query"] = Field(
        "document", description="which of the index's prompts goes before each text (E5: 'passage: ' or 'query: '); "
        "vectors are pooled as the index pools them")

    @model_validator(mode="after")
    def _bounded_work(self) -> EmbedRequest:
        total = sum(len(text) for text in self.texts)
        if total > MAX_EMBED_TOTAL_CHARS:
            raise ValueError(f"texts hold {total:,} characters in all, over the limit of {MAX_EMBED_TOTAL_CHARS:,} "
                             "per request; send fewer or shorter texts per request")
        return self


# -- responses --------------------------------------------------------------
class Health(BaseModel):
    status: str


class HitOut(BaseModel):
    id: str
    score: float = Field(description="higher is better: cosine (dense), BM25 (lexical) or the fused score")
    title: str | None
    lang: str | None
    passage: str = Field(description="text of the document's best chunk")
    chunk_id: int
    start: int = Field(description="character offset of the passage in the document text")
    end: int
    scores: dict[str, float | None] = Field(description="the best chunk's dense (cosine) and lexical (BM25) scores")
    metadata: dict[str, Any] = Field(default_factory=dict, description="the document's metadata")
    highlights: list[tuple[int, int]] = Field(
        default_factory=list, description="[start, end) character spans of the passage whose words match "
        "the query's terms (what BM25 matched), in order")


class SearchResponse(BaseModel):
    query: str
    mode: str
    hits: list[HitOut]


class DocumentOut(BaseModel):
    id: str
    text: str
    title: str | None
    lang: str | None
    metadata: dict[str, Any]


class DocumentList(BaseModel):
    documents: list[DocumentOut] = Field(description="in id order (by code point)")
    offset: int
    limit: int
    total: int = Field(description="documents in the index")


class UpsertResponse(BaseModel):
    added: int
    replaced: int
    unchanged: int = Field(description="documents identical to the stored ones, skipped")
    chunks: int = Field(description="chunks embedded")
    documents: int = Field(description="documents in the index after the commit")
    generation: int


class DeleteResponse(BaseModel):
    deleted: str
    documents: int
    generation: int


class OptimizeResponse(BaseModel):
    documents: int
    chunks: int
    segments: int = Field(description="segments after the merge (one per shard)")
    generation: int


class EmbedResponse(BaseModel):
    layer: int
    dim: int
    vectors: list[list[float]] = Field(description="one L2-normalised vector per text, in order")


class FieldError(BaseModel):
    field: str = Field(description="where in the request: body, texts[3], filter.source, q...")
    message: str


class ErrorOut(BaseModel):
    error: str = Field(description="a stable code, e.g. invalid_request, document_not_found, index_locked")
    detail: str = Field(description="what is wrong, naming the field")
    errors: list[FieldError] | None = Field(None, description="422 invalid_request only: every field that is wrong")
