"""ASGI middleware: the API key checked before any body is read (401), a request body size
limit (413) and one log line per request."""
from __future__ import annotations

import logging
import time

import hmac
from collections.abc import Callable
from typing import Any

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_response

log = logging.getLogger(__name__)


class KeyGateMiddleware:
    """Answer 401 to a request that needs the API key and lacks it, before its body is read.

    Which requests need the key is read from the routes themselves (``needs_key``, from the
    dependencies they declare). The dependencies still check the key too; this gate only
    makes sure that an unauthenticated client cannot make the server read or parse a body.

    Args:
        routes: The API router's routes.
        api_key: The server's key (None: nothing to check).
        needs_key: Whether a route asks for the key.
    """

    def __init__(self, app: ASGIApp, routes, api_key: str | None, needs_key: Callable[[Any], bool]):
        self.app, self.routes, self.needs_key = app, routes, needs_key
        self.key = None if api_key is None else api_key.encode("utf-8", "surrogateescape")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.key is not None and self._needs_key(scope) and not self._has_key(scope):
            await error_response(401, "unauthorized", "missing or wrong API key; send `Authorization: Bearer <key>`",
                                 headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _needs_key(self, scope: Scope) -> bool:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return self.needs_key(route)
        return False

    def _has_key(self, scope: Scope) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, given = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.key)


class BodyLimitMiddleware:
    """Refuse a body over ``max_bytes`` with 413, from its Content-Length or while it streams in.

    The body is read here (at most ``max_bytes``) and handed on whole, so the app
    never starts work on a request it would have to abandon half-way.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit():
                await error_response(400, "bad_request", "invalid Content-Length header")(scope, receive, send)
                return
            if int(length) > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = f"{self.max_bytes / 2 ** 20:.1f} MiB" if self.max_bytes >= 2 ** 20 else f"{self.max_bytes} bytes"
        await error_response(413, "body_too_large", f"request body over the limit of {limit}; "
                             "send fewer documents per request")(scope, receive, send)


CLIENT_CLOSED = 499  # nginx's code for a request whose client went away before any answer


class RequestLogMiddleware:
    """Log ``METHOD /path STATUS 12.3ms`` at INFO once per request (no query string, no body).

    A request that ended without an answer is logged as 499 when the client went away
    (nothing failed: the body never arrived), as 500 when the app raised.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status: int | None = None
        failed = True

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
            failed = False
        finally:
            if status is None:
                status = 500 if failed else CLIENT_CLOSED
            path = scope["path"] if scope["path"].isprintable() else ascii(scope["path"])
            log.info("%s %s %d %.1fms", scope["method"], path, status,
                     (time.perf_counter() - start) * 1000)
