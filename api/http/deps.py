"""Dependencies the routes declare with ``Depends``: settings, the loaded service, the API key.

``get_settings`` reads the environment once (``lru_cache``); :func:`api.app.create_app`
binds it to explicit settings instead, and tests override it through
``app.dependency_overrides`` like any FastAPI dependency.
"""
from __future__ import annotations

import hmac
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .errors import ApiError
from .service import IndexService
from ..settings import Settings


@lru_cache
def get_settings() -> Settings:
    """Settings from the environment, read once per process."""
    return Settings.from_env()


SettingsDep = Annotated[Settings, Depends(get_settings)]
_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <XLSEARCH_API_KEY>`, when the server "
                     "has a key: on writes always, on reads with --protect-reads")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def get_service(request: Request) -> IndexService:
    """The loaded model and index; 503 until the start-up hook has loaded them."""
    service = getattr(request.app.state, "service", None)
    if service is None:
        raise ApiError(503, "not_ready", "the model and index are still loading; retry shortly")
    return service


ServiceDep = Annotated[IndexService, Depends(get_service)]


def _check_key(settings: Settings, credentials: HTTPAuthorizationCredentials | None) -> None:
    if settings.api_key is None:
        return
    given = credentials.credentials.encode("utf-8", "surrogateescape") if credentials else b""
    if not (credentials and hmac.compare_digest(given, settings.api_key.encode("utf-8", "surrogateescape"))):
        raise ApiError(401, "unauthorized", "missing or wrong API key; send `Authorization: Bearer <key>`",
                       headers={"WWW-Authenticate": "Bearer"})


def require_write_key(settings: SettingsDep, credentials: Credentials) -> None:
    """Writes need the API key whenever the server has one."""
    _check_key(settings, credentials)


def require_read_key(settings: SettingsDep, credentials: Credentials) -> None:
    """Reads need the API key only with ``protect_reads``."""
    if settings.protect_reads:
        _check_key(settings, credentials)


def needs_key(route, settings: Settings) -> bool:
    """Whether ``route`` asks for the API key on a server with ``settings``: read from the key
    dependency the route declares, so the key gate and the OpenAPI schema agree with the routes."""
    if settings.api_key is None:
        return False
    calls = {d.call for d in getattr(getattr(route, "dependant", None), "dependencies", ())}
    return require_write_key in calls or (settings.protect_reads and require_read_key in calls)
