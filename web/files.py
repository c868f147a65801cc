"""``GET``/``HEAD /files/<name>`` and ``GET /meta/<name>`` (CONTRACT section 6).

Conditional headers and ranges are decided by ``desq.conditional`` in RFC 9110's order (412, 304,
then 206/416) before any of the member's bytes are read; only the bytes asked for are then read
from storage, streamed, and each block is checked before it is sent. Every 200, 206 and 304 carries
the ETag, Cache-Control (``web.cache_max_age``; private when tokens are on) and, for members with a
created_at, Last-Modified. The Content-Type is the stored one exactly.
"""

from __future__ import annotations

import hmac
import mimetypes
import os
import threading
import zlib
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote, urlsplit

from flask import Blueprint, Response, current_app, jsonify, redirect, request

from desq.conditional import PRECONDITIONS, Answer, Validators, cache_control, decide, http_date, last_modified, needs_validators, served_type
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


class FileResponse(Response):
    """A Response whose 304 keeps Last-Modified: werkzeug drops it with RFC 2616's entity headers,
    but RFC 9110 15.4.5 lets a 304 carry what guides cache updates, and CONTRACT section 6 sends it."""

    def get_wsgi_headers(self, environ: Any) -> Any:
        headers = super().get_wsgi_headers(environ)
        if self.status_code == 304 and "Last-Modified" in self.headers:
            headers["Last-Modified"] = self.headers["Last-Modified"]
        return headers


_ASKED = {name: "HTTP_" + name.upper().replace("-", "_") for name in (*PRECONDITIONS, "Range", "If-Range")}


def asked() -> dict[str, str]:
    """The request's conditional and Range headers, read from the WSGI environ once (werkzeug's
    headers object scans all of it for each name looked up)."""
    environ = request.environ
    return {name: environ[key] for name, key in _ASKED.items() if key in environ}


def validators_of(meta: Any) -> Validators:
    """What conditional headers compare with: the member's ETag and Last-Modified (its created_at)."""
    return Validators(etag_of(meta), last_modified(meta.created_at, datetime.now(timezone.utc)))


def file_headers(validators: Validators) -> dict[str, str]:
    """ETag, Cache-Control and (when the file's time is known) Last-Modified: the same on its 200, 206 and 304."""
    web = service().settings.web
    headers = {"ETag": f'"{validators.etag}"', "Cache-Control": cache_control(web.cache_max_age, private=bool(web.api_tokens))}
    if validators.last_modified is not None:
        headers["Last-Modified"] = http_date(validators.last_modified)
    return headers


def refusal(status: int, size: int) -> Response:
    """The JSON 412 or 416 (with ``Content-Range: bytes */size``) of a file of ``size`` bytes."""
    if status == 412:
        return error_response(412, "precondition_failed", "If-Match or If-Unmodified-Since does not hold for this file")
    response = error_response(416, "bad_range", f"the range is outside the file's {size} bytes")
    response.headers["Content-Range"] = f"bytes */{size}"
    return response


def _original(url: str) -> Response:
    """uid mode, a file newer than the cutoff: a 307 to where it lives (S3: a presigned URL), or
    for a file:// original, the file itself, never one outside the template's folder (a symbolic
    link out of it included)."""
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
        return _live_file(path)
    response = redirect(url, code=307)
    response.headers["Cache-Control"] = "no-store"  # a presigned URL expires; an archived file is served here
    return response


def _live_file(path: str) -> Response:
    """A file:// original, decided like a member (in RFC 9110's order) from what the file is now:
    its ETag from its inode, size and mtime, Last-Modified its mtime, and ``Cache-Control: no-cache``
    (it is not archived yet and may still change)."""
    handle = open(path, "rb")  # noqa: SIM115 - closed by the body, or below
    try:
        info = os.fstat(handle.fileno())
        moment = last_modified(datetime.fromtimestamp(info.st_mtime, timezone.utc), datetime.now(timezone.utc))
        validators = Validators(f"live-{info.st_ino:x}-{info.st_size:x}-{info.st_mtime_ns:x}", moment)
        answer = decide(asked(), info.st_size, validators)
        if answer.status in (200, 206) and request.method == "GET":
            handle.seek(answer.start)
            body: Any = _read_file(handle, answer.stop - answer.start)
        else:
            handle.close()
            body = b""
    except BaseException:
        handle.close()
        raise
    if answer.status in (412, 416):
        return refusal(answer.status, info.st_size)
    headers = {"ETag": f'"{validators.etag}"', "Cache-Control": "no-cache"}
    if moment is not None:
        headers["Last-Modified"] = http_date(moment)
    if answer.status == 304:
        return FileResponse(status=304, headers=headers)
    kind = mimetypes.guess_type(os.path.basename(path))[0] or "application/octet-stream"
    response = Response(body, status=answer.status, content_type=kind, headers=headers, direct_passthrough=True)
    response.headers["Content-Length"] = str(answer.stop - answer.start)
    response.headers["Accept-Ranges"] = "bytes"
    if answer.status == 206:
        response.headers["Content-Range"] = f"bytes {answer.start}-{answer.stop - 1}/{info.st_size}"
    return response


def _read_file(handle: Any, length: int, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """``length`` bytes of an open file from where it is, then the file closed (also if the client leaves)."""
    try:
        while length > 0:
            chunk = handle.read(min(chunk_size, length))
            if not chunk:
                return
            length -= len(chunk)
            yield chunk
    finally:
        handle.close()


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


def created_at() -> str | None:
    """The request's ``created_at`` parameter (werkzeug parses the query string only when there is one)."""
    return request.args.get("created_at") if request.environ.get("QUERY_STRING") else None


@files.route("/files/<path:name>", methods=["GET", "HEAD"])
def get_file(name: str) -> Response:
    """A member: decided from the index's size and, when a conditional header needs them, its
    metadata; its bytes are read only for a 200 or 206 GET."""
    method = request.method
    files_service = service()
    try:
        target = files_service.locate(name, created_at())
        if target.original is not None:
            return _original(target.original)
        archive = files_service.archive
        headers = asked()
        meta: Any = None
        validators: Validators | None = None
        if not headers and method == "GET":
            # Nothing to decide: a 200 of the whole member, its size confirmed by the one read.
            meta, chunks = archive.open_range(target.container, target.name)
            answer = Answer(200, 0, meta.size)
        else:
            size = archive.size_hint(target.container, target.name)
            if size is None or needs_validators(headers):
                meta = archive.meta(target.container, target.name)
                size, validators = meta.size, validators_of(meta)
            answer = decide(headers, size, validators)
            if answer.status in (412, 416):
                return refusal(answer.status, size)
            if answer.status == 304:
                assert validators is not None
                return FileResponse(status=304, headers=file_headers(validators))
            chunks = iter(())
            if method == "GET":
                meta, chunks = archive.open_range(target.container, target.name, answer.start, answer.stop)
            elif meta is None:
                meta = archive.meta(target.container, target.name)
        first = next(chunks, b"")
        length = answer.stop - answer.start
        if method == "GET" and len(first) == length:
            # All of it is checked and in hand (one block, or one read of a small range): one
            # bytes body is one write, not a generator's; what the stream still runs (a check
            # after its last block) runs now, before the status is sent.
            first += b"".join(chunks)
            chunks = iter(())
    except Exception as exc:  # noqa: BLE001 - mapped to the contract's errors, re-raised if unknown
        return _failure(exc)

    response_headers = [*file_headers(validators or validators_of(meta)).items(), ("Content-Type", served_type(meta.content_type)), ("Content-Length", str(length)), ("Accept-Ranges", "bytes")]
    if answer.status == 206:
        response_headers.append(("Content-Range", f"bytes {answer.start}-{answer.stop - 1}/{meta.size}"))
    body: Any = ()  # a HEAD's; not b"": werkzeug would make its Content-Length 0
    if method == "GET" and len(first) == length:
        metrics.BYTES.inc(length)
        body = (first,)
    elif method == "GET":
        body = stream(first, chunks)
    return Response(body, status=answer.status, headers=response_headers, direct_passthrough=True)


@files.get("/meta/<path:name>")
def get_meta(name: str) -> Response:
    try:
        target = service().locate(name, created_at())
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
