"""Every error the API answers with: JSON ``{"error": <code>, "detail": <message>}``.

xlsearch's own errors map to HTTP statuses by class (the closest class in the MRO
wins). Bad input is a 4xx; conditions of the server itself (a damaged or missing
index, a disk that refuses a commit) are 503. Messages never show file paths or
stack traces; unexpected exceptions become a bare 500 and are logged with their
traceback.
"""
from __future__ import annotations

import http
import json
import logging
import re
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse as StarletteJSONResponse

from ...indexer.errors import (
    BenchmarkError,
    ChunkError,
    ConfigError,
    CorpusError,
    DocumentNotFoundError,
    IndexFormatError,
    IndexLockedError,
    IndexMismatchError,
    IndexNotFoundError,
    IndexWriteError,
    LayerError,
    MaskedLMHeadMissingError,
    MetricError,
    ModelLoadError,
    QueryError,
    XlsearchError,
)

log = logging.getLogger(__name__)

STATUS: dict[type[XlsearchError], tuple[int, str]] = {
    QueryError: (422, "invalid_query"),
    CorpusError: (422, "invalid_document"),
    ConfigError: (422, "invalid_setting"),
    LayerError: (422, "invalid_setting"),
    DocumentNotFoundError: (404, "document_not_found"),
    IndexLockedError: (409, "index_locked"),
    IndexMismatchError: (409, "index_mismatch"),
    IndexNotFoundError: (503, "index_unavailable"),
    IndexFormatError: (503, "index_damaged"),
    ChunkError: (503, "index_damaged"),  # stores that disagree on a chunk id
    IndexWriteError: (503, "write_failed"),
    ModelLoadError: (503, "model_unavailable"),
    MaskedLMHeadMissingError: (503, "model_unavailable"),
    BenchmarkError: (400, "bad_request"),  # evaluation only; listed so that every error has its answer
    MetricError: (400, "bad_request"),
    XlsearchError: (400, "bad_request"),
}
MAX_LISTED_ERRORS = 20
_ABSOLUTE_PATH = re.compile(r"(?<![\w./~>-])/[\w.@%+~-][^\s'\",;:()\[\]{}<>]*")


class JSONResponse(StarletteJSONResponse):
    """JSON that always encodes: an unpaired surrogate is written as its ``\\udXXX`` escape."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return text.encode("utf-8", "backslashreplace")


class ApiError(Exception):
    """An answer other than 2xx that the API gives on purpose."""

    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers


def error_response(status_code: int, error: str, detail: str, headers: dict[str, str] | None = None,
                   **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, **extra}, status_code=status_code, headers=headers)


def public_message(message: str, hide: Sequence[str] = ()) -> str:
    """``message`` with the paths in ``hide`` shown as ``<index>`` and any other absolute path as ``<path>``."""
    for path in sorted(filter(None, hide), key=len, reverse=True):
        message = message.replace(path, "<index>")
    return _ABSOLUTE_PATH.sub("<path>", message)


def status_of(exc: XlsearchError) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return STATUS[XlsearchError]


def field_name(loc: Sequence[Any]) -> str:
    """``("body", "filter", "source")`` -> ``filter.source``; ``("body", 3, "text")`` -> ``body[3].text``."""
    parts = list(loc)
    if len(parts) > 1 and parts[0] in ("body", "query", "path", "header") and not isinstance(parts[1], int):
        parts = parts[1:]
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def validation_errors(errors: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """Field and message of each pydantic error, without echoing the input."""
    out = []
    for error in errors[:MAX_LISTED_ERRORS]:
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if error.get("type") == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "")
            message = f"invalid JSON ({reason} at character {error['loc'][-1]})" if reason else "invalid JSON"
            out.append({"field": "body", "message": message})
            continue
        out.append({"field": field_name(error.get("loc", ())), "message": message})
    return out


def install_error_handlers(app: FastAPI, hide: Sequence[str] = (), routes: Sequence = ()) -> None:
    """Register the handlers; ``hide`` lists paths never to show (the index directory); ``routes``
    are the app's routes, whose methods a 405 lists."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.error, exc.detail, exc.headers)

    @app.exception_handler(XlsearchError)
    async def xlsearch_error(request: Request, exc: XlsearchError) -> JSONResponse:
        status, code = status_of(exc)
        if status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc)
        return error_response(status, code, public_message(str(exc), hide))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = validation_errors(exc.errors())
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        if len(exc.errors()) > 5:
            detail += f" (and {len(exc.errors()) - 5} more)"
        return error_response(422, "invalid_request", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        try:
            code = http.HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
        except ValueError:
            code = "error"
        if exc.status_code == 400:  # FastAPI could not decode the body (not UTF-8): as malformed JSON is
            errors = [{"field": "body", "message": "not valid UTF-8 JSON"}]
            return error_response(422, "invalid_request", "body: not valid UTF-8 JSON", errors=errors)
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:  # Starlette names the first matching route's methods only
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(routes, request.scope))}
        return error_response(exc.status_code, code, str(exc.detail), headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal_error", "internal server error; the server log has the details")


def allowed_methods(routes: Sequence, scope: dict) -> list[str]:
    """Every method one of ``routes`` answers at the request's path (the ``Allow`` of a 405)."""
    from starlette.routing import Match

    methods: set[str] = set()
    for route in routes:
        match, _ = route.matches({**scope, "method": "GET"})
        if match != Match.NONE and getattr(route, "methods", None):
            methods |= set(route.methods)
    return sorted(methods)
