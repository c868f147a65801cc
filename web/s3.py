"""The s3 role: the archive as one read-only, path-style S3 bucket (CONTRACT section 8).

``/<bucket>/<YYYYMMDD>/<name>`` is a member, read through the same ``FileService`` and ``Archive``
as the files API (same ETag, same checks). Only ``s3.bucket`` is a bucket: ``/healthz``, ``/readyz``
and ``/metrics`` are the role's own paths (settings refuse a bucket of those names), any other
first segment is NoSuchBucket. Every answer is S3's: XML bodies and errors, ``x-amz-request-id``.
Writes are refused before authentication (nothing is hashed, nothing changes); reads are
authenticated (SigV4) when ``s3.credentials`` is set, then decided by ``desq.s3.requests``.
Objects carry ETag and Last-Modified but, like S3's own objects stored without that metadata, no
Cache-Control: S3 clients do not cache, and sync tools would copy one onto every object they write.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import PathConverter

from desq.conditional import PRECONDITIONS, Validators, http_date, served_type
from desq.container import ChecksumMismatch, ContainerError, MemberNotFound
from desq.files import FileService, FilesError
from desq.layout import yyyymmdd
from desq.s3 import xml
from desq.s3.listing import Lister, ListingError
from desq.s3.paging import Page
from desq.s3.requests import READS, WRITES, Operation, S3Error, byte_range, decide, listing_after, preconditions
from desq.s3.sigv4 import STATUS as AUTH_STATUS
from desq.s3.sigv4 import AuthError
from desq.s3.tokens import decode_token, encode_token
from desq.settings import Settings
from desq.storage import NotFound, StorageError
from web import metrics
from web.files import FileResponse, stream, validators_of
from web.health import health
from web.s3_auth import authenticate

s3 = Blueprint("s3", __name__)
METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"]
CREATED = datetime(1970, 1, 1, tzinfo=timezone.utc)
"""The bucket's CreationDate in ListBuckets: the archive has no single one."""
DRAIN_BYTES = 8 << 20
"""A refused write's body is read and dropped up to this size (so its client reads the answer
instead of a reset); a larger one gets the answer and the connection is closed."""


class AnyPath(PathConverter):
    """Every path, empty, with newlines or with a leading slash: S3's errors answer them all."""

    regex = r"[\s\S]*"
    part_isolating = False  # werkzeug would guess True: the regex names no "/"


class Role:
    """What the s3 role's views share: settings, the read path, the lister and the token key."""

    def __init__(self, settings: Settings, service: FileService) -> None:
        self.settings = settings
        self.service = service
        self.secrets = settings.s3.secrets()
        self.lister = Lister(service.archive.storage, settings.layout, on_request=metrics.s3_listing_request)
        self.token_key = token_key(settings)


def token_key(settings: Settings) -> bytes:
    """The continuation tokens' HMAC key, the same in every worker and instance of one deployment:
    derived from the bucket, the archive url and the credentials (so unguessable once any are set)."""
    material = json.dumps([settings.s3.bucket, settings.archive.url, sorted(settings.s3.credentials)])
    return hashlib.sha256(b"desq-s3-continuation-token\0" + material.encode()).digest()


def install(app: Flask, settings: Settings, service: FileService) -> None:
    """Make ``app`` the s3 role over ``service``: the bucket, health, metrics, XML errors."""
    app.extensions["desq.files"] = service
    app.extensions["desq.s3"] = Role(settings, service)
    app.url_map.converters["s3path"] = AnyPath
    for blueprint in (health, metrics.metrics, s3):
        app.register_blueprint(blueprint)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = "MethodNotAllowed" if status == 405 else "InvalidRequest" if status < 500 else "InternalError"
        return error_response(S3Error(code, exc.description or exc.name))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        app.logger.exception("unhandled error")
        return error_response(S3Error("InternalError", "We encountered an internal error. Please try again."))


def role() -> Role:
    return current_app.extensions["desq.s3"]


def request_id() -> str:
    if "s3_request_id" not in g:
        g.s3_request_id = uuid.uuid4().hex[:16].upper()
    return g.s3_request_id


def error_response(exc: S3Error) -> Response:
    """S3's XML error for ``exc``, with the request's id."""
    body = xml.error(exc.code, exc.message, request.path, request_id())
    response = Response(body, status=exc.status, content_type="application/xml")
    response.headers.update(exc.headers)
    return response


@s3.after_request
def _identify(response: Response) -> Response:
    response.headers["x-amz-request-id"] = request_id()
    response.headers["x-amz-id-2"] = request_id()
    metrics.s3_request(g.get("s3_operation", "Invalid"), response.status_code)
    return response


def _drain() -> bool:
    """Read and drop a refused write's body; False when it was too large to (close the connection)."""
    if (request.content_length or 0) > DRAIN_BYTES:
        return False
    left = DRAIN_BYTES
    while left > 0:
        chunk = request.stream.read(min(left, 1 << 16))
        if not chunk:
            return True
        left -= len(chunk)
    return False


@s3.route("/", defaults={"path": ""}, methods=METHODS)
@s3.route("/<s3path:path>", methods=METHODS)
def dispatch(path: str) -> Response:
    """Every request under the role's root: decide, authenticate, answer."""
    try:
        operation: Operation | None = decide(request.method, request.path, request.args, role().settings.s3.bucket)
        refused = None
    except S3Error as exc:
        operation, refused = None, exc
    g.s3_operation = operation.name if operation else "Write" if request.method in WRITES else "Invalid"
    try:
        if request.method in READS and role().secrets:
            authenticate(request, role().secrets, role().settings.s3.region)
        if refused is not None:
            raise refused
        assert operation is not None
        return HANDLERS[operation.name](operation)
    except AuthError as exc:
        return error_response(_auth_error(exc))
    except S3Error as exc:
        response = error_response(exc)
        if request.method in WRITES and not _drain():
            response.headers["Connection"] = "close"
        return response
    except Exception as exc:  # noqa: BLE001 - mapped to S3's errors, re-raised if unknown
        return error_response(_failure(exc))


def _auth_error(exc: AuthError) -> S3Error:
    error = S3Error("AccessDenied", exc.message)
    error.code, error.status = exc.code, AUTH_STATUS.get(exc.code, 403)
    return error


def _failure(exc: Exception) -> S3Error:
    if isinstance(exc, (FilesError, MemberNotFound, NotFound)):
        return S3Error("NoSuchKey", "The specified key does not exist.")
    if isinstance(exc, (ChecksumMismatch, ContainerError)):
        current_app.logger.error("integrity error: %s", exc)
        return S3Error("InternalError", "The stored object failed its checksum; no bytes were sent.")
    if isinstance(exc, ListingError):
        current_app.logger.error("listing failed: %s", exc)
        return S3Error("InternalError", "A container of this listing cannot be read; no partial listing is sent.")
    if isinstance(exc, StorageError):
        current_app.logger.warning("storage unavailable: %s", exc)
        return S3Error("ServiceUnavailable", "The archive storage did not answer; please try again.")
    raise exc


# --- the operations ---------------------------------------------------------------------------


def _xml(body: bytes) -> Response:
    return Response(body, content_type="application/xml")


def list_buckets(_: Operation) -> Response:
    return _xml(xml.list_buckets(role().settings.s3.bucket, CREATED))


def head_bucket(_: Operation) -> Response:
    response = Response(status=200)
    response.headers["x-amz-bucket-region"] = role().settings.s3.region
    return response


def bucket_location(_: Operation) -> Response:
    return _xml(xml.location(role().settings.s3.region))


def list_objects(operation: Operation) -> Response:
    params = operation.listing
    assert params is not None
    key = role().token_key
    after = listing_after(params, lambda token: decode_token(token, key))
    if params.max_keys == 0:
        page = Page(entries=[], common_prefixes=[], truncated=False, next_after=None)
    else:
        page = role().lister.page(prefix=params.prefix, delimiter=params.delimiter, after=after, max_keys=params.max_keys)
    token = encode_token(page.next_after, key) if params.version == 2 and page.truncated and page.next_after is not None else None
    return _xml(xml.list_bucket(role().settings.s3.bucket, params, page, next_token=token))


def get_object(operation: Operation) -> Response:
    """GetObject / HeadObject: preconditions (412/304) before the range (416), then the bytes."""
    service = role().service
    assert operation.day is not None
    where = service.place(operation.member, operation.day.isoformat())
    if where.name != operation.member or not where.container.startswith(yyyymmdd(operation.day) + "/"):
        raise S3Error("NoSuchKey", "The specified key does not exist.")
    archive = service.archive
    meta: Any = None
    verdict = None
    size = archive.size_hint(where.container, where.name)
    conditional = any(name in request.headers for name in PRECONDITIONS)
    if size is None or conditional:  # decided from the metadata, before any of the bytes are read
        meta = archive.meta(where.container, where.name)
        size = meta.size
        validators = validators_of(meta)
        verdict = preconditions(request.headers, validators.etag, validators.last_modified)
    if verdict == 412:
        raise S3Error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold")
    if verdict == 304:
        return FileResponse(status=304, headers=_object_headers(validators))
    bounds = byte_range(request.headers.get("Range"), size)
    chunks = None
    if request.method == "HEAD":
        meta = meta or archive.meta(where.container, where.name)
    else:
        meta, chunks = archive.open_range(where.container, where.name, *(bounds or (0, None)))
    headers = _object_headers(validators_of(meta))
    start, stop = bounds or (0, meta.size)
    first = next(chunks, b"") if chunks is not None else b""
    body = stream(first, chunks) if chunks is not None else b""
    response = Response(body, status=206 if bounds else 200, content_type=served_type(meta.content_type), headers=headers, direct_passthrough=True)
    response.headers["Content-Length"] = str(stop - start)
    if bounds:
        response.headers["Content-Range"] = f"bytes {start}-{stop - 1}/{meta.size}"
    return response


def _object_headers(validators: Validators) -> dict[str, str]:
    headers = {"ETag": f'"{validators.etag}"', "Accept-Ranges": "bytes"}
    if validators.last_modified is not None:
        headers["Last-Modified"] = http_date(validators.last_modified)
    return headers


HANDLERS = {
    "ListBuckets": list_buckets,
    "HeadBucket": head_bucket,
    "GetBucketLocation": bucket_location,
    "ListObjectsV2": list_objects,
    "ListObjects": list_objects,
    "GetObject": get_object,
    "HeadObject": get_object,
}
