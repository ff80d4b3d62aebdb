"""The FastAPI application: ``create_app(settings)``, the lifespan hook, middleware and handlers.

    uvicorn --factory xlsearch.api.http.app:create_app   # settings from XLSEARCH_INDEX, XLSEARCH_MODEL, ...
    xlsearch serve --index DIR                # the same, from command-line options
"""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool

from ...indexer.errors import XlsearchError

from .deps import get_settings, needs_key
from .errors import JSONResponse, install_error_handlers
from .middleware import BodyLimitMiddleware, KeyGateMiddleware, RequestLogMiddleware
from .openapi import install_openapi
from .routes import router
from .service import IndexService
from ..settings import Settings

log = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the model and index once, before the first request; close them at shutdown.

    A failure to load (no index, a model that cannot be loaded or does not match the
    index) is kept in ``app.state.startup_error`` for ``xlsearch serve`` to report.
    """
    settings: Settings = app.state.settings
    try:
        service = await run_in_threadpool(IndexService, settings.index, settings.model, settings.device,
                                          settings.batch_size, settings.precision, settings.threads)
    except XlsearchError as exc:
        app.state.startup_error = exc
        raise
    app.state.service = service
    manifest = service.searcher.index.manifest
    log.info("serving %s: %d documents, %d chunks, model %s layer %d", settings.index, manifest.documents,
             manifest.chunks, manifest.config.model_name, manifest.config.layer)
    try:
        yield
    finally:
        app.state.service = None
        service.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app serving ``settings.index`` (default: :func:`api.deps.get_settings`, from the environment).

    Explicit settings are bound to the ``get_settings`` dependency of this app; tests may
    override it again through ``app.dependency_overrides``.
    """
    if settings is None:
        settings = get_settings()
    try:
        app_version = version("xlsearch")
    except PackageNotFoundError:
        app_version = "0"
    # /docs and /redoc serve Swagger UI and ReDoc from the fastapi-offline package, not a CDN: they work offline.
    app = FastAPIOffline(title="xlsearch", version=app_version, lifespan=lifespan, default_response_class=JSONResponse,
                         description="Cross-lingual semantic search: index documents in any language, query in any other.")
    app.state.settings = settings
    app.state.service = None
    app.state.startup_error = None
    app.dependency_overrides[get_settings] = lambda: settings
    index = settings.index
    install_error_handlers(app, hide=[str(index), str(index.expanduser().resolve())], routes=router.routes)
    install_openapi(app, settings)
    app.include_router(router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(KeyGateMiddleware, routes=router.routes, api_key=settings.api_key,  # outside the body limit
                       needs_key=lambda route: needs_key(route, settings))
    app.add_middleware(RequestLogMiddleware)
    return app
