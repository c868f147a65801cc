"""Errors as JSON ``{"error": "<code>", "message": "..."}`` (CONTRACT section 6)."""

from __future__ import annotations

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

# HTTP status -> the contract's error code, for errors raised by Flask/werkzeug themselves.
_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 412: "precondition_failed", 416: "bad_range", 503: "unavailable"}


def error_response(status: int, code: str, message: str) -> Response:
    """A JSON error answer."""
    response = jsonify(error=code, message=message)
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    """Answer every HTTP error, and any unexpected failure, in the contract's JSON shape."""

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        response = error_response(status, _CODES.get(status, "http_error"), exc.description or exc.name)
        for name, value in exc.get_headers():
            if name.lower() not in ("content-type", "content-length"):
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        app.logger.exception("unhandled error")
        return error_response(500, "internal_error", "internal error")
