"""The anchor of the HTTP benchmarks: a bare Flask app serving members from memory.

    gunicorn -c deploy/gunicorn.conf.py 'bench.bare_app:create()'   (BARE_MEMBERS=<folder>)

Every file in ``$BARE_MEMBERS`` is read into a dict when a worker loads the app; ``/files/<name>``
returns its bytes with the content type desq gives them, nothing else (no storage, no checksums).
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask, Response


def create() -> Flask:
    """The app over the members in ``$BARE_MEMBERS`` (one file per member, named as the member)."""
    members = {p.name: p.read_bytes() for p in Path(os.environ["BARE_MEMBERS"]).iterdir()}
    app = Flask("bare")

    @app.get("/files/<path:name>")
    def get_file(name: str) -> Response:
        data = members.get(name)
        if data is None:
            return Response(status=404)
        return Response(data, mimetype="application/octet-stream")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
