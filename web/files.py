"""``GET``/``HEAD /files/<name>`` and ``GET /meta/<name>`` (CONTRACT section 6).

Ranges, If-None-Match and 416 follow werkzeug's parsing of the request over a view of the member
(its first byte is offset 0, its size the complete length); only the bytes asked for are read from
storage, streamed, and each block is checked before it is sent. A multi-range request is answered
with the whole file, which RFC 9110 allows a server to do; so is a Range whose If-Range does not
name the file's exact (strong) ETag. A suffix range longer than the file means all of it.
"""

from __future__ import annotations

import hmac
import os
import threading
import zlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

from flask import Blueprint, Response, current_app, jsonify, redirect, request, send_file
from werkzeug.datastructures import ContentRange, Range

from desq.container import ChecksumMismatch, ContainerError, CorruptContainer, MemberNotFound
from desq.files import FileService, FilesError, NotFoundError, original_root
from desq.storage import NotFound, StorageError, StorageUnavailable
from desq.storage.s3 import s3_client
from web import metrics
from web.errors import error_response

files = Blueprint("files", __name__)


def service() -> FileService:
    return current_app.extensions["desq.files"]


class Presigner:
    """Presigned GET URLs of S3 originals (uid mode, files newer than the cutoff) from one S3
    client per app, built on the first presign and then shared by every thread."""

    def __init__(self, endpoint_url: str) -> None:
        self.endpoint_url = endpoint_url
        self._client: Any = None
        self._lock = threading.Lock()

    def client(self) -> Any:
        """The app's S3 client (boto3 clients are thread-safe; building one is not cheap)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = s3_client(self.endpoint_url)
        return self._client

    def url(self, bucket: str, key: str) -> str:
        """A URL that GETs ``key`` of ``bucket`` for the next 15 minutes."""
        return self.client().generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=900)


def bearer_token(header: str) -> bytes:
    """The token of an ``Authorization: Bearer <token>`` header, b"" for any other header.

    RFC 9110 makes the scheme case-insensitive and RFC 6750 puts one or more spaces after it.
    """
    scheme, _, token = header.strip(" \t").partition(" ")
    if scheme.lower() != "bearer":
        return b""
    return token.strip(" \t").encode("utf-8", "replace")


@files.before_request
def require_token() -> Response | None:
    """401 unless ``web.api_tokens`` is empty or the request carries one of them."""
    tokens = current_app.extensions["desq.settings"].web.api_tokens
    if not tokens:
        return None
    given = bearer_token(request.headers.get("Authorization", ""))
    # Compare against every token, whatever matches, so timing says nothing about which one.
    ok = False
    for token in tokens:
        ok |= hmac.compare_digest(given, token.encode())
    if ok:
        return None
    response = error_response(401, "unauthorized", "a valid 'Authorization: Bearer <token>' header is required")
    response.headers["WWW-Authenticate"] = 'Bearer realm="desq"'
    return response


def etag_of(meta: Any) -> str:
    """A member's strong ETag (unquoted): its checksum and size; the files API and the s3 role both send it."""
    if meta.checksum is not None:
        return f"{meta.checksum:08x}-{meta.size:x}"
    # DES v1 stores no checksum: name and size, hashed the same in every worker process.
    return f"v1-{meta.size:x}-{zlib.crc32(meta.name.encode('utf-8')):08x}"


def _failure(exc: Exception) -> Response:
    if isinstance(exc, FilesError):
        return error_response(exc.status, exc.code, str(exc))
    if isinstance(exc, (MemberNotFound, NotFound)):
        return error_response(404, "not_found", "no such file in the archive")
    if isinstance(exc, (ChecksumMismatch, CorruptContainer)):
        current_app.logger.error("integrity error: %s", exc)
        return error_response(500, "integrity_error", "the stored file failed its checksum; no bytes were sent")
    if isinstance(exc, (StorageUnavailable, StorageError)):
        current_app.logger.warning("storage unavailable: %s", exc)
        return error_response(503, "unavailable", "the archive storage did not answer; try again")
    if isinstance(exc, ContainerError):
        return error_response(500, "integrity_error", str(exc))
    raise exc


def _bounds(ranges: Range, size: int) -> tuple[int, int] | None:
    """``[start, stop)`` of the one byte range asked for in a file of ``size`` bytes; None if unsatisfiable.

    A suffix longer than the file means all of it (RFC 9110 14.1.2); werkzeug would refuse it.
    """
    start, stop = ranges.ranges[0]
    if stop is None and start < 0:
        return (max(0, size + start), size) if size else None
    return ranges.range_for_length(size)


def _if_range_holds(etag: str) -> bool:
    """No If-Range, or one naming exactly this strong ETag (RFC 9110 13.1.5); else the Range is ignored."""
    value = request.headers.get("If-Range")
    return value is None or value.strip() == f'"{etag}"'


def _original(url: str) -> Response:
    """uid mode, a file newer than the cutoff: a 307 to where it lives (S3: a presigned URL), or
    for a file:// original, the file itself (Range and ETag by werkzeug), never one outside the
    template's folder (a symbolic link out of it included)."""
    parts = urlsplit(url)
    if parts.scheme == "s3":
        url = current_app.extensions["desq.presigner"].url(parts.netloc, unquote(parts.path.lstrip("/")))
    elif parts.scheme == "file":
        path = unquote(parts.path)
        if any(part in (".", "..") for part in path.split("/")):
            return error_response(400, "bad_request", "a uid of '.' or '..' cannot name an original file")
        root = os.path.realpath(original_root(service().settings.web.original_url))
        if os.path.commonpath([root, os.path.realpath(path)]) != root:
            return error_response(404, "not_found", "the original is outside the folder of web.original_url")
        if not os.path.isfile(path):
            return error_response(404, "not_found", "the original is not there")
        return send_file(path, conditional=True, etag=True)
    return redirect(url, code=307)


def stream(first: bytes, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """A member's checked bytes, its first chunk already read (so that a failed check is still an
    error status), counted in the bytes-served metric once sent."""
    if first:
        yield first
    served = len(first)
    for chunk in chunks:
        served += len(chunk)
        yield chunk
    metrics.BYTES.inc(served)


@files.route("/files/<path:name>", methods=["GET", "HEAD"])
def get_file(name: str) -> Response:
    try:
        target = service().locate(name, request.args.get("created_at"))
        if target.original is not None:
            return _original(target.original)
        archive = service().archive
        start, stop, partial = 0, None, False
        ranges = request.range
        size = archive.size_hint(target.container, target.name) if ranges is not None else None
        if ranges is not None and ranges.units == "bytes" and len(ranges.ranges) == 1 and size is not None:
            bounds = _bounds(ranges, size)
            if bounds is None:
                if "If-Range" not in request.headers or _if_range_holds(etag_of(archive.meta(target.container, target.name))):
                    response = error_response(416, "bad_range", f"the range is outside the file's {size} bytes")
                    response.headers["Content-Range"] = ContentRange("bytes", None, None, size).to_header()
                    return response
            else:
                (start, stop), partial = bounds, True
        meta, chunks = archive.open_range(target.container, target.name, start, stop)
        etag = etag_of(meta)
        if partial and not _if_range_holds(etag):  # not the file the client holds part of: all of it
            meta, chunks = archive.open_range(target.container, target.name)
            start, stop, partial = 0, None, False
        if request.if_none_match.contains_weak(etag):  # If-None-Match compares weakly (RFC 9110 13.1.2)
            response = Response(status=304)
            response.set_etag(etag)
            return response
        stop = meta.size if stop is None else stop
        first = next(chunks, b"") if request.method != "HEAD" else b""
    except Exception as exc:  # noqa: BLE001 - mapped to the contract's errors, re-raised if unknown
        return _failure(exc)

    response = Response(stream(first, chunks) if request.method != "HEAD" else b"", status=206 if partial else 200, mimetype=meta.content_type or "application/octet-stream", direct_passthrough=True)
    response.headers["Content-Length"] = str(stop - start)
    response.headers["Accept-Ranges"] = "bytes"
    response.set_etag(etag)
    if partial:
        response.headers["Content-Range"] = ContentRange("bytes", start, stop, meta.size).to_header()
    return response


@files.get("/meta/<path:name>")
def get_meta(name: str) -> Response:
    try:
        target = service().locate(name, request.args.get("created_at"))
        if target.original is not None:
            raise NotFoundError(f"{name} is not in the archive yet (created after the cutoff)")
        archive = service().archive
        meta = archive.meta(target.container, target.name)
        member = archive.find(target.container, target.name)
    except Exception as exc:  # noqa: BLE001
        return _failure(exc)
    return jsonify(
        name=target.name, size=meta.size, content_type=meta.content_type or "application/octet-stream", etag=f'"{etag_of(meta)}"',
        container=target.container, shard=target.shard, offset=member.offset if member else None,
    )
