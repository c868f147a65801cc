"""``create_app``: the Flask application factory (``gunicorn 'web:create_app()'``)."""

from __future__ import annotations

from flask import Flask

from desq.settings import Settings, load_settings
from web.errors import register_error_handlers
from web.health import health


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app for ``settings`` (default: loaded from ``--config``/``DESQ_*``)."""
    app = Flask("desq")
    app.extensions["desq.settings"] = settings or load_settings()
    app.json.sort_keys = False  # keep JSON answers in the order the contract lists their keys
    register_error_handlers(app)
    app.register_blueprint(health)
    return app
