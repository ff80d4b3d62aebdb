"""The endpoints. Each validates its input, then calls :class:`api.service.IndexService`
in the thread pool (model forward passes, disk and SQLite never run on the event loop).
Writes queue on one lock per process; another process writing gets 409.
"""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Request
from fastapi import Query as QueryParam
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse

from ...indexer.document import Document
from ...indexer.text.validation import MAX_ID_CHARS
from ...search.options import MAX_K

from .deps import ServiceDep, require_read_key, require_write_key
from .errors import ApiError, JSONResponse, error_response
from .schemas import (
    MAX_DOCUMENTS,
    MAX_LANG_CHARS,
    DeleteResponse,
    DocumentList,
    DocumentIn,
    DocumentOut,
    EmbedRequest,
    EmbedResponse,
    ErrorOut,
    Fusion,
    Health,
    Mode,
    OptimizeResponse,
    Query,
    SearchRequest,
    SearchResponse,
    UpsertResponse,
)
from .page import PAGE
from .service import document_out, shorten

MAX_PAGE = 1000  # documents one GET /documents returns at most


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorOut} for status in statuses}


READ = [Depends(require_read_key)]
WRITE = [Depends(require_write_key)]
router = APIRouter()


@router.get("/", include_in_schema=False, response_class=HTMLResponse)
async def search_page() -> HTMLResponse:
    """The search page: a query box and the hits, built in the browser from ``GET /search``."""
    return HTMLResponse(PAGE)


@router.get("/health", response_model=Health, responses=_errors(503), summary="200 once the model and index are loaded")
async def health(request: Request) -> Any:
    if getattr(request.app.state, "service", None) is None:
        return error_response(503, "not_ready", "the model and index are still loading", status="loading")
    return {"status": "ok"}


@router.get("/info", dependencies=READ, responses=_errors(401, 503),
            summary="The index's manifest (model, layer, chunking, counts) and stored counts")
async def info(service: ServiceDep) -> dict[str, Any]:
    return await run_in_threadpool(service.info)


@router.post("/search", response_model=SearchResponse, dependencies=READ, responses=_errors(401, 413, 422, 503),
             summary="Top-k documents for a query; the hits of `xlsearch search --json`")
async def search(body: SearchRequest, service: ServiceDep) -> Any:
    return await run_in_threadpool(service.search, body.query, body.k, body.mode, body.fusion, body.alpha,
                                   body.lang, body.filter, body.query_lang, body.offset)


@router.get("/search", response_model=SearchResponse, dependencies=READ, responses=_errors(401, 422, 503),
            summary="Search from a browser: /search?q=...&k=...")
async def search_get(
        service: ServiceDep,
        q: Annotated[Query, QueryParam(description="query text")],
        k: Annotated[int, QueryParam(ge=1, le=MAX_K)] = 10,
        offset: Annotated[int, QueryParam(ge=0, le=MAX_K - 1, description="hits to skip, for paging")] = 0,
        mode: Mode = "hybrid",
        fusion: Fusion = "auto",
        alpha: Annotated[float, QueryParam(ge=0.0, le=1.0, allow_inf_nan=False)] = 0.5,
        lang: Annotated[str | None, QueryParam(min_length=1, max_length=MAX_LANG_CHARS)] = None) -> Any:
    return await run_in_threadpool(service.search, q, k, mode, fusion, alpha, lang, None, None, offset)


@router.post("/documents", response_model=UpsertResponse, dependencies=WRITE,
             responses=_errors(401, 409, 413, 422, 503),
             summary="Add or replace documents; on 200 they are durable and searchable")
async def add_documents(
        documents: Annotated[list[DocumentIn], Body(min_length=1, max_length=MAX_DOCUMENTS)],
        service: ServiceDep) -> Any:
    seen: set[str] = set()
    for i, doc in enumerate(documents):
        if doc.id in seen:
            raise ApiError(422, "invalid_request", f"body[{i}].id: duplicate id {shorten(doc.id)!r} in this request")
        seen.add(doc.id)
    docs = [Document(id=d.id, text=d.text, title=d.title or None, lang=d.lang, metadata=d.metadata)
            for d in documents]
    async with service.write_lock:
        return await run_in_threadpool(service.upsert, docs)


@router.get("/documents", response_model=DocumentList, dependencies=READ, responses=_errors(401, 422, 503),
            summary="The stored documents in id order, a page at a time")
async def list_documents(
        service: ServiceDep,
        offset: Annotated[int, QueryParam(ge=0, le=2 ** 62, description="documents to skip")] = 0,
        limit: Annotated[int, QueryParam(ge=1, le=MAX_PAGE, description=f"documents to return (1..{MAX_PAGE})")] = 100,
) -> Any:
    return await run_in_threadpool(service.list_documents, offset, limit)


@router.get("/document", response_model=DocumentOut, dependencies=READ, responses=_errors(401, 404, 422, 503),
            summary="A stored document by ?id=, for any id (one with . or .. path segments too)")
async def get_document_by_query(id: Annotated[str, QueryParam(min_length=1, max_length=MAX_ID_CHARS)],
                                service: ServiceDep) -> Any:
    return document_out(await run_in_threadpool(service.get_document, id))


@router.delete("/document", response_model=DeleteResponse, dependencies=WRITE,
               responses=_errors(401, 404, 409, 422, 503), summary="Remove a document by ?id=, for any id")
async def delete_document_by_query(id: Annotated[str, QueryParam(min_length=1, max_length=MAX_ID_CHARS)],
                                   service: ServiceDep) -> Any:
    async with service.write_lock:
        return await run_in_threadpool(service.delete, id)


@router.get("/documents/{doc_id:path}", response_model=DocumentOut, dependencies=READ,
            responses=_errors(401, 404, 503), summary="A stored document (URL-encode ids with / ? # %)")
async def get_document(doc_id: Annotated[str, Path()], service: ServiceDep) -> Any:
    return document_out(await run_in_threadpool(service.get_document, doc_id))


@router.delete("/documents/{doc_id:path}", response_model=DeleteResponse, dependencies=WRITE,
               responses=_errors(401, 404, 409, 503), summary="Remove a document from all three stores")
async def delete_document(doc_id: Annotated[str, Path()], service: ServiceDep) -> Any:
    async with service.write_lock:
        return await run_in_threadpool(service.delete, doc_id)


@router.post("/optimize", response_model=OptimizeResponse, dependencies=WRITE, responses=_errors(401, 409, 503),
             summary="Merge the index's segments into one, purging deleted chunks")
async def optimize(service: ServiceDep) -> Any:
    async with service.write_lock:
        return await run_in_threadpool(service.optimize)


@router.post("/embed", response_model=EmbedResponse, dependencies=READ, responses=_errors(401, 413, 422, 503),
             summary="Pooled, L2-normalised vectors of texts at a layer of the index's model")
async def embed(body: EmbedRequest, service: ServiceDep) -> Any:
    layer = service.config.layer if body.layer is None else body.layer
    if layer > service.encoder.num_layers:
        raise ApiError(422, "invalid_request",
                       f"layer: must be between 0 and {service.encoder.num_layers} for this model, got {layer}")
    vectors = await run_in_threadpool(service.embed, body.texts, layer, body.input_type)
    return JSONResponse({"layer": layer, "dim": int(vectors.shape[1]), "vectors": vectors.tolist()})
