"""The web side: the files API and the router, as blueprints of one Flask app factory."""

from web.app import create_app

__all__ = ["create_app"]
