"""``create_app``: the Flask application factory (``gunicorn 'web:create_app()'``)."""

from __future__ import annotations

import threading

from flask import Flask
from werkzeug.routing import PathConverter

from desq.archive import Archive
from desq.files import FileService
from desq.index_cache import RedisIndexTier
from desq.settings import Settings, load_settings
from desq.storage import Storage, storage_for
from desq.storage.ec import ec_of
from desq.storage.counting import CountingStorage
from web import metrics
from web.errors import register_error_handlers
from web.batch import batch, routed
from web.files import Presigner, files
from web.health import health
from web.openapi import openapi


class NamePath(PathConverter):
    """werkzeug's ``path`` converter, matching newlines too."""

    regex = r"[^/][\s\S]*?"


def file_service(settings: Settings, storage: Storage | None = None) -> FileService:
    """desq's read path as the web roles use it: the archive storage counted in the metrics, with
    the cached indexes (and the shared Redis tier when configured)."""
    plain = storage or storage_for(settings, max_pool_connections=64)
    coded = ec_of(plain)
    if coded is not None:
        coded.events.listen(metrics.ec_event)
    counted = CountingStorage(plain, on_request=metrics.storage_request)
    shared = RedisIndexTier(settings.web.index_cache_url) if settings.web.index_cache_url else None
    archive = Archive(counted, cache_bytes=settings.web.index_cache_bytes, on_cache=metrics.cache_event, shared=shared)
    path_of = None
    if "{path}" in settings.web.original_url:
        from desq.source.paths import SourcePaths

        path_of = SourcePaths(settings)
    return FileService(settings, archive, documents=plain, path_of=path_of)


def create_app(settings: Settings | None = None, *, storage: Storage | None = None, role: str = "files") -> Flask:
    """The files API (``role="files"``), the router (``role="router"``) or the read-only S3 API
    (``role="s3"``) for ``settings``."""
    settings = settings or load_settings()
    app = Flask("desq")
    # A name may hold a newline (werkzeug's path converter would stop there: a 404, not the layout's
    # 400), and a "//" in it is never merged into a redirect to another name.
    app.url_map.merge_slashes = False
    app.url_map.converters["path"] = NamePath
    app.extensions["desq.settings"] = settings
    app.json.sort_keys = False
    register_error_handlers(app)
    metrics.instrument(app)
    if role == "router":
        from web import router

        router.install(app, settings)
        for blueprint in (metrics.metrics, openapi, routed):
            app.register_blueprint(blueprint)
        app.add_url_rule("/healthz", "healthz", lambda: {"status": "ok"})
        return app
    if role == "s3":
        from web import s3

        s3.install(app, settings, file_service(settings, storage))
        return app
    if role != "files":
        raise ValueError(f"role must be 'files', 'router' or 's3', got {role!r}")
    app.extensions["desq.files"] = file_service(settings, storage)
    app.extensions["desq.presigner"] = Presigner(settings.source.s3_endpoint_url or settings.archive.s3_endpoint_url)
    if settings.web.registry_url and settings.web.advertise_url:
        from web.registry import announce

        app.extensions["desq.heartbeat"] = announce(settings.web.registry_url, settings.web.advertise_url, settings.web.health_interval, threading.Event())
    for blueprint in (health, files, batch, metrics.metrics, openapi):
        app.register_blueprint(blueprint)
    return app
