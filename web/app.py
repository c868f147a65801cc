"""``create_app``: the Flask application factory (``gunicorn 'web:create_app()'``)."""

from __future__ import annotations

from flask import Flask

from desq.archive import Archive
from desq.files import FileService
from desq.index_cache import RedisIndexTier
from desq.settings import Settings, load_settings
from desq.storage import Storage, storage_for
from desq.storage.counting import CountingStorage
from web import metrics
from web.errors import register_error_handlers
from web.files import files
from web.health import health
from web.openapi import openapi


def create_app(settings: Settings | None = None, *, storage: Storage | None = None) -> Flask:
    """The files API for ``settings`` (default: loaded from ``--config``/``DESQ_*``)."""
    settings = settings or load_settings()
    app = Flask("desq")
    app.extensions["desq.settings"] = settings
    counted = CountingStorage(storage or storage_for(settings, max_pool_connections=64), on_request=metrics.storage_request)
    shared = RedisIndexTier(settings.web.index_cache_url) if settings.web.index_cache_url else None
    archive = Archive(counted, cache_bytes=settings.web.index_cache_bytes, on_cache=metrics.cache_event, shared=shared)
    app.extensions["desq.files"] = FileService(settings, archive)
    app.json.sort_keys = False  # keep JSON answers in the order the contract lists their keys
    register_error_handlers(app)
    metrics.instrument(app)
    for blueprint in (health, files, metrics.metrics, openapi):
        app.register_blueprint(blueprint)
    return app
