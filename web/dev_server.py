"""``desq serve``'s development server, whose request log leaves out query strings as gunicorn's
does (``deploy/gunicorn.conf.py``): a presigned URL's signature, a token or a created_at stays out."""

from __future__ import annotations

from werkzeug.serving import WSGIRequestHandler


def without_query(request_line: str) -> str:
    """``GET /a?b HTTP/1.1`` as ``GET /a HTTP/1.1``; anything else unchanged but for its query."""
    parts = request_line.split(" ")
    if len(parts) == 3:
        parts[1] = parts[1].split("?", 1)[0]
        return " ".join(parts)
    return request_line.split("?", 1)[0]


class QueryFreeHandler(WSGIRequestHandler):
    """werkzeug's request handler, logging each request line without its query string."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # werkzeug builds the line from ``path`` (or ``requestline`` when there is none): cut both,
        # and put the path back for whatever runs after the log line.
        path = getattr(self, "path", None)
        self.requestline = without_query(self.requestline)
        if path is not None:
            self.path = path.split("?", 1)[0]
        try:
            super().log_request(code, size)
        finally:
            if path is not None:
                self.path = path
