"""Liveness: ``GET /healthz`` answers 200 while the process is up."""

from flask import Blueprint, jsonify

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz():  # noqa: ANN201 - a Flask view
    """200 while the process is up; touches nothing else."""
    return jsonify(status="ok")
