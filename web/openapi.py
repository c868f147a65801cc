"""The OpenAPI document of the HTTP surface, served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from desq import __version__
from desq.layout import MAX_NAME_BYTES
from desq.mode import mode_for
from desq.settings import Settings
from web.batch import openapi_operation

openapi = Blueprint("openapi", __name__)

_ERROR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_NAME = {"name": "name", "in": "path", "required": True, "description": "name-mode name, or the uid in uid mode", "schema": {"type": "string"}}
_CREATED = {"name": "created_at", "in": "query", "required": False, "description": "uid mode: YYYY-MM-DD or ISO 8601", "schema": {"type": "string"}}
_CONDITIONAL = ("Range", "If-Match", "If-Unmodified-Since", "If-None-Match", "If-Modified-Since", "If-Range")
_AUTH: list[dict[str, list[str]]] = [{}, {"bearer": []}]


def _file_op(summary: str, body: bool) -> dict[str, Any]:
    ok = {"description": "the file", "headers": {h: {"schema": {"type": "string"}} for h in ("ETag", "Accept-Ranges", "Cache-Control", "Last-Modified")}}
    if body:
        ok["content"] = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    return {
        "summary": summary,
        "parameters": [_NAME, _CREATED, *({"name": h, "in": "header", "required": False, "schema": {"type": "string"}} for h in _CONDITIONAL)],
        "security": _AUTH,
        "responses": {
            "200": ok, "206": ok | {"description": "part of the file"}, "304": {"description": "not modified", "headers": ok["headers"]},
            "307": {"description": "uid mode: not archived yet, read it from the original"},
            "400": _ERROR, "401": _ERROR, "404": _ERROR, "412": _ERROR, "416": _ERROR, "500": _ERROR, "503": _ERROR,
        },
    }


SPEC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "desq files API", "version": __version__},
    "paths": {
        "/files/{name}": {"get": _file_op("one archived file, whole or a range", True), "head": _file_op("the headers of that file", False)},
        "/meta/{name}": {
            "get": {
                "summary": "where a file is and what it is",
                "parameters": [_NAME, _CREATED],
                "security": _AUTH,
                "responses": {"200": {"description": "metadata", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Meta"}}}}, "400": _ERROR, "401": _ERROR, "404": _ERROR, "500": _ERROR, "503": _ERROR},
            }
        },
        "/healthz": {"get": {"summary": "the process is up", "responses": {"200": {"description": "up"}}}},
        "/readyz": {"get": {"summary": "the storage answers", "responses": {"200": {"description": "ready"}, "503": _ERROR}}},
        "/metrics": {"get": {"summary": "Prometheus text format", "responses": {"200": {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {"type": "object", "required": ["error", "message"], "properties": {"error": {"type": "string"}, "message": {"type": "string"}}},
            "Meta": {
                "type": "object",
                "required": ["name", "size", "content_type", "etag", "container", "shard", "offset"],
                "properties": {
                    "name": {"type": "string"}, "size": {"type": "integer"}, "content_type": {"type": "string"}, "etag": {"type": "string"},
                    "container": {"type": "string"}, "shard": {"type": "string"}, "offset": {"type": "integer", "nullable": True},
                },
            },
        },
    },
}


def spec_for(settings: Settings) -> dict[str, Any]:
    """The document for this deployment: the name pattern of its mode; uid mode needs created_at."""
    import copy

    spec = copy.deepcopy(SPEC)
    mode = mode_for(settings.layout)
    name = {"type": "string", "pattern": mode.name_pattern(), "maxLength": MAX_NAME_BYTES}
    created = None
    if mode.takes_created_at:
        created = {"name": "created_at", "in": "query", "required": True, "description": "YYYY-MM-DD or ISO 8601", "schema": {"type": "string", "format": "date"}}
    for path in ("/files/{name}", "/meta/{name}"):
        for operation in spec["paths"][path].values():
            params = [p for p in operation["parameters"] if p["name"] != "created_at"]
            params = [p | {"schema": name} if p["name"] == "name" else p for p in params]
            operation["parameters"] = params + ([created] if created else [])
    spec["paths"]["/batch"] = {"post": openapi_operation(mode)}
    return spec


@openapi.get("/openapi.json")
def spec() -> Response:
    return jsonify(spec_for(current_app.extensions["desq.settings"]))
