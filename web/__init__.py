"""The web side: the files API and the router, as blueprints of one Flask app factory.

``create_app`` is imported on first use: gunicorn's master imports ``web.access_log`` and
``web.worker`` from this package, and must not import the app's storage clients (boto3, urllib3,
redis) before a gevent worker has monkey-patched ``ssl`` and ``socket`` under them.
"""

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from web.app import create_app

        return create_app
    raise AttributeError(f"module 'web' has no attribute {name!r}")
