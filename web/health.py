"""``/healthz`` (the process is up) and ``/readyz`` (its storage answers)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from desq.published import PUBLISHED
from desq.storage import NotFound, StorageError
from desq.storage.ec import ec_of
from web.errors import error_response

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz() -> Response:
    """200 while the process is up; touches nothing else."""
    return jsonify(status="ok")


@health.get("/readyz")
def readyz() -> Response:
    """200 when the archive storage answers (a missing object is an answer), else 503. An
    erasure-coded archive is ready while at most M of its nodes are down."""
    storage = current_app.extensions["desq.files"].archive.storage
    coded = ec_of(storage)
    if coded is not None:
        down = [f"{url}: {why}" for url, why in coded.node_states() if why is not None]
        if len(down) > coded.m:
            return error_response(503, "unavailable", f"{len(down)} of {len(coded.nodes)} archive nodes are down, at most {coded.m} may be: {'; '.join(down)}")
        return jsonify(status="ready", nodes_down=down) if down else jsonify(status="ready")
    try:
        storage.head(PUBLISHED)
    except NotFound:
        pass
    except StorageError as exc:
        return error_response(503, "unavailable", f"the archive storage does not answer: {exc}")
    return jsonify(status="ready")
