"""The OpenAPI schema of one server, made to say what that server does.

FastAPI describes every endpoint that declares a key dependency as secured and a 422 as
its own ``HTTPValidationError``; this server answers 422 with :class:`ErrorOut` (with
``errors``), needs the key on writes only when it has one and on reads only with
``--protect-reads``, and takes ``/embed`` layers up to its model's depth.
"""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from ..settings import Settings
from .deps import needs_key
from .routes import router

SCHEME = "HTTPBearer"


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Replace ``app.openapi`` with one that describes this server's key, errors and limits."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            _errors_are_error_out(schema)
            _security_as_configured(schema, {(method.lower(), route.path_format)
                                             for route in router.routes if needs_key(route, settings)
                                             for method in getattr(route, "methods", ())})
            if not _embed_layers(schema, app):
                return schema  # the model is still loading: its depth goes in once it is loaded
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


def _operations(schema: dict[str, Any]):
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            yield path, method, operation


def _errors_are_error_out(schema: dict[str, Any]) -> None:
    ref = {"$ref": "#/components/schemas/ErrorOut"}
    for _, _, operation in _operations(schema):
        answer = operation.get("responses", {}).get("422")
        if answer is not None:
            answer["content"] = {"application/json": {"schema": ref}}
            answer["description"] = "Invalid request: `errors` lists every field that is wrong"
    for name in ("HTTPValidationError", "ValidationError"):
        schema.get("components", {}).get("schemas", {}).pop(name, None)


def _security_as_configured(schema: dict[str, Any], guarded: set[tuple[str, str]]) -> None:
    """Security on the operations that ask for the key, and nowhere else."""
    for path, method, operation in _operations(schema):
        if (method, path) in guarded:
            operation["security"] = [{SCHEME: []}]
        else:
            operation.pop("security", None)
    if not guarded:
        schema.get("components", {}).get("securitySchemes", {}).pop(SCHEME, None)


def _embed_layers(schema: dict[str, Any], app: FastAPI) -> bool:
    """``/embed``'s layer bounded by the model's depth; False while the model is not loaded."""
    service = getattr(app.state, "service", None)
    layer = (schema.get("components", {}).get("schemas", {}).get("EmbedRequest", {})
             .get("properties", {}).get("layer"))
    if service is None or layer is None:
        return False
    depth = service.encoder.num_layers
    for option in layer.get("anyOf", [layer]):
        if option.get("type") == "integer":
            option["maximum"] = depth
    layer["description"] = f"hidden layer to pool, 0..{depth} for this server's model (default: the index's layer)"
    return True
