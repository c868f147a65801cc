"""The S3 API's authentication edge: a Flask request as sent on the wire, verified by desq.s3.sigv4."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from urllib.parse import quote, urlsplit

import flask

from desq.s3.sigv4 import SignedRequest, verify

MAX_HASHED_BODY = 1 << 20
"""Bodies up to this size are read to check x-amz-content-sha256; larger ones (writes, which the
read-only API refuses anyway) are left unread."""

_WIRE_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "#")


def _wire(value: str) -> str:
    """A WSGI string (bytes as latin-1) with every non-ASCII or control byte percent-encoded."""
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError:
        raw = value.encode("utf-8")
    return quote(raw, safe=_WIRE_SAFE)


def _header_text(value: str) -> str:
    try:
        return value.encode("latin-1").decode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return value


def raw_path(environ: Mapping[str, object]) -> str:
    """The path as the client sent it: gunicorn's RAW_URI or werkzeug's REQUEST_URI without the
    query, else SCRIPT_NAME + PATH_INFO percent-encoded again."""
    uri = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if isinstance(uri, str) and uri:
        path = uri.split("?", 1)[0].split("#", 1)[0]
        if "://" in path:
            path = urlsplit(path).path
        return _wire(path) or "/"
    path = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
    try:
        raw = path.encode("latin-1")
    except UnicodeEncodeError:
        raw = path.encode("utf-8")
    return quote(raw, safe="/") or "/"


def signed_request(request: flask.Request) -> SignedRequest:
    """The request as sent on the wire, for verification."""
    environ = request.environ
    headers = [(name, _header_text(value)) for name, value in request.headers.items()]
    return SignedRequest.of(request.method, raw_path(environ), _wire(str(environ.get("QUERY_STRING", ""))), headers)



def _body(request: flask.Request) -> bytes | None:
    length = request.content_length
    if length is None:
        return None if "transfer-encoding" in request.headers else b""
    return request.get_data(cache=True) if length <= MAX_HASHED_BODY else None


def authenticate(request: flask.Request, secrets: Mapping[str, str], region: str, *, now: datetime | None = None) -> str | None:
    """None when no credentials are configured (anonymous reads), else the access key id that
    validly signed ``request``; raises desq.s3.sigv4.AuthError otherwise."""
    if not secrets:
        return None
    when = now or datetime.now(timezone.utc)
    return verify(signed_request(request), secrets, region=region, now=when, body=_body(request))
