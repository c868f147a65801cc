"""Which S3 operation a request asks for, and its parameters, checked before any storage request.

``decide`` maps a method, a decoded path-style path (``/<bucket>/<key>``) and the query to one
``Operation`` or raises ``S3Error`` with S3's code. Writes of every kind (PUT, POST, DELETE: objects,
multipart uploads, ``?acl``, ``?tagging``, ``?delete``) are refused with ``AccessDenied`` before
anything else is looked at. ``preconditions`` and ``byte_range`` decide a GetObject's answer from its
headers in RFC 9110's order (S3 follows it) with ``desq.conditional``, as S3's errors.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timezone

from desq import conditional
from desq.errors import LayoutError
from desq.layout import parse_yyyymmdd

STATUS: dict[str, int] = {
    "AccessDenied": 403,
    "InvalidArgument": 400,
    "InvalidRequest": 400,
    "InvalidRange": 416,
    "KeyTooLongError": 400,
    "MethodNotAllowed": 405,
    "NoSuchBucket": 404,
    "NoSuchKey": 404,
    "PreconditionFailed": 412,
    "ServiceUnavailable": 503,
    "InternalError": 500,
}
"""S3 error code -> HTTP status, for the codes this module and the edge answer with."""

MAX_KEYS = 1000
MAX_KEY_BYTES = 1024
READS = frozenset({"GET", "HEAD"})
WRITES = frozenset({"PUT", "POST", "DELETE", "PATCH"})
SUBRESOURCES = frozenset({
    "accelerate", "acl", "analytics", "attributes", "cors", "delete", "encryption", "intelligent-tiering",
    "inventory", "legal-hold", "lifecycle", "logging", "metrics", "notification", "object-lock",
    "ownershipControls", "partNumber", "policy", "policyStatus", "publicAccessBlock", "replication",
    "requestPayment", "restore", "retention", "select", "tagging", "torrent", "uploadId", "uploads",
    "versionId", "versioning", "versions", "website",
})
"""S3's sub-resources besides ``location``: this API serves none of them (other query names are ignored, as S3 does)."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f\ufffd]")
_INTEGER = re.compile(r"[0-9]{1,10}")


class S3Error(Exception):
    """A request answered with S3's XML error ``code``; ``headers`` go on the answer."""

    def __init__(self, code: str, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = STATUS[code]
        self.headers = dict(headers or {})


@dataclass(frozen=True, slots=True)
class ListParams:
    """The parameters of ListObjectsV2 (``version`` 2) or ListObjects (``version`` 1)."""

    version: int
    prefix: str = ""
    delimiter: str | None = None
    max_keys: int = MAX_KEYS
    start_after: str = ""
    token: str | None = None
    marker: str = ""
    encode_url: bool = False
    fetch_owner: bool = False


@dataclass(frozen=True, slots=True)
class Operation:
    """One S3 operation on the bucket; ``day`` and ``name`` locate a GetObject/HeadObject's member."""

    name: str
    key: str = ""
    day: date | None = None
    member: str = ""
    listing: ListParams | None = None


def decide(method: str, path: str, args: Mapping[str, str], bucket: str) -> Operation:
    """The operation of a path-style request (``path`` percent-decoded); S3Error if it is refused."""
    if method in WRITES:
        raise S3Error("AccessDenied", f"desq's S3 API is read-only: {method} changes nothing")
    if method not in READS:
        raise S3Error("MethodNotAllowed", f"the method {method} is not allowed against this resource", headers={"Allow": "GET, HEAD"})
    asked, _, key = path.removeprefix("/").partition("/")
    if not asked:
        if method == "HEAD" or key:
            raise S3Error("MethodNotAllowed", "only GET / (ListBuckets) is served above the bucket", headers={"Allow": "GET"})
        return Operation("ListBuckets")
    if asked != bucket:
        raise S3Error("NoSuchBucket", "The specified bucket does not exist")
    served = sorted(SUBRESOURCES.intersection(args))
    if served:
        raise S3Error("InvalidRequest", f"desq's S3 API does not serve the ?{served[0]} sub-resource")
    if key:
        day, name = parse_key(key)
        return Operation("GetObject" if method == "GET" else "HeadObject", key=key, day=day, member=name)
    if method == "HEAD":
        return Operation("HeadBucket")
    if "location" in args:
        return Operation("GetBucketLocation")
    list_type = args.get("list-type")
    if list_type not in (None, "2"):
        raise S3Error("InvalidArgument", f"list-type must be 2 (ListObjectsV2) or absent (ListObjects), not {list_type!r}")
    return Operation("ListObjectsV2" if list_type == "2" else "ListObjects", listing=list_params(args, 2 if list_type else 1))


def parse_key(key: str) -> tuple[date, str]:
    """``<YYYYMMDD>/<name>`` -> (day, name); NoSuchKey for a key of another shape, S3's 400s for a bad one."""
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError", f"Your key is too long: at most {MAX_KEY_BYTES} bytes")
    if _CONTROL.search(key) or any(0xD800 <= ord(c) <= 0xDFFF for c in key):
        raise S3Error("InvalidArgument", "the key holds a control character or bytes that are not UTF-8")
    if any(part in (".", "..") for part in key.split("/")):
        raise S3Error("InvalidArgument", "a key segment of '.' or '..' names no object here")
    day_text, _, name = key.partition("/")
    if not name or "/" in name:
        raise S3Error("NoSuchKey", "The specified key does not exist.")
    try:
        return parse_yyyymmdd(day_text), name
    except LayoutError:
        raise S3Error("NoSuchKey", "The specified key does not exist.") from None


def _text_arg(args: Mapping[str, str], name: str) -> str:
    value = args.get(name, "")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise S3Error("InvalidArgument", f"{name} is longer than {MAX_KEY_BYTES} bytes")
    if "\x00" in value or any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise S3Error("InvalidArgument", f"{name} holds NUL or bytes that are not UTF-8")
    return value


def list_params(args: Mapping[str, str], version: int) -> ListParams:
    """The checked listing parameters; InvalidArgument names the one that is wrong."""
    raw = args.get("max-keys")
    if raw is None:
        max_keys = MAX_KEYS
    else:
        if not _INTEGER.fullmatch(raw.strip()) or int(raw) > 2**31 - 1:
            raise S3Error("InvalidArgument", "Provided max-keys not an integer or within integer range")
        max_keys = min(int(raw), MAX_KEYS)
    encoding = args.get("encoding-type")
    if encoding is not None and encoding.lower() != "url":
        raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request")
    token = args.get("continuation-token") if version == 2 else None
    if token is not None and not token:
        raise S3Error("InvalidArgument", "The continuation token provided is incorrect")
    return ListParams(
        version=version,
        prefix=_text_arg(args, "prefix"),
        delimiter=_text_arg(args, "delimiter") or None,
        max_keys=max_keys,
        start_after=_text_arg(args, "start-after") if version == 2 else "",
        token=token,
        marker=_text_arg(args, "marker") if version == 1 else "",
        encode_url=encoding is not None,
        fetch_owner=version == 1 or args.get("fetch-owner", "").lower() == "true",
    )


def listing_after(params: ListParams, decode: Callable[[str], str]) -> str:
    """The exclusive position a listing starts after: start-after or marker, or the token's if later.

    ``decode`` reads a continuation token (raising ValueError for one that is not ours).
    """
    after = params.start_after if params.version == 2 else params.marker
    if params.token is None:
        return after
    try:
        return max(after, decode(params.token))
    except ValueError:
        raise S3Error("InvalidArgument", "The continuation token provided is incorrect") from None


# --- GetObject / HeadObject: conditions and ranges, decided by desq.conditional -----------------


def preconditions(headers: Mapping[str, str], etag: str, last_modified: datetime | None) -> int | None:
    """412, 304, or None (serve), from the conditional headers in RFC 9110 13.2.2's order (S3 follows it)."""
    return conditional.preconditions(headers, conditional.Validators(etag, conditional.last_modified(last_modified, datetime.now(timezone.utc))))


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``[start, stop)`` of a single ``Range: bytes=``, or None (the whole file); InvalidRange
    (416, with ``Content-Range: bytes */size``) when it is unsatisfiable."""
    try:
        return conditional.byte_range(header, size)
    except conditional.Unsatisfiable as exc:
        raise S3Error("InvalidRange", "The requested range is not satisfiable", headers={"Content-Range": exc.content_range}) from None
