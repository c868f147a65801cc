"""``/healthz`` (the process is up) and ``/readyz`` (its storage answers)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from desq.published import PUBLISHED
from desq.storage import NotFound, StorageError
from web.errors import error_response

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz() -> Response:
    """200 while the process is up; touches nothing else."""
    return jsonify(status="ok")


@health.get("/readyz")
def readyz() -> Response:
    """200 when the archive storage answers (a missing object is an answer), else 503."""
    storage = current_app.extensions["desq.files"].archive.storage
    try:
        storage.head(PUBLISHED)
    except NotFound:
        pass
    except StorageError as exc:
        return error_response(503, "unavailable", f"the archive storage does not answer: {exc}")
    return jsonify(status="ready")
