"""S3's XML bodies: the error document and the answers of ListBuckets, GetBucketLocation,
ListObjectsV2 and ListObjects, in S3's namespace.

Listing entries carry no ETag: the member's checksum lies beside its bytes, not in the container's
index, so an ETag would cost one storage request per key. Every client desq is tested with treats
it as optional (boto3, aws-cli, rclone, s3fs); GetObject and HeadObject carry it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING
from urllib.parse import quote

from desq.s3.requests import ListParams

if TYPE_CHECKING:
    from desq.s3.paging import Page

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'
OWNER = "<Owner><ID>desq</ID><DisplayName>desq</DisplayName></Owner>"
# Characters XML 1.0 cannot carry at all, escaped or not.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def escape(value: str) -> str:
    """``value`` as XML character data (a character XML cannot carry becomes U+FFFD)."""
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _NOT_XML.sub("\ufffd", value)


def element(name: str, value: str | int | bool) -> str:
    """``<name>value</name>``; booleans as S3 writes them."""
    if isinstance(value, bool):
        value = "true" if value else "false"
    return f"<{name}>{escape(str(value))}</{name}>"


def timestamp(moment: datetime) -> str:
    """S3's ISO 8601 form, in UTC with milliseconds: ``2025-11-20T08:30:00.000Z``."""
    utc = moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def error(code: str, message: str, resource: str, request_id: str) -> bytes:
    """S3's ``<Error>`` document."""
    body = element("Code", code) + element("Message", message) + element("Resource", resource) + element("RequestId", request_id)
    return (HEAD + f"<Error>{body}</Error>").encode("utf-8")


def _document(root: str, parts: Iterable[str]) -> bytes:
    return (HEAD + f'<{root} xmlns="{NS}">' + "".join(parts) + f"</{root}>").encode("utf-8")


def list_buckets(bucket: str, created: datetime) -> bytes:
    """ListBuckets: the one bucket."""
    buckets = "<Buckets><Bucket>" + element("Name", bucket) + element("CreationDate", timestamp(created)) + "</Bucket></Buckets>"
    return _document("ListAllMyBucketsResult", [OWNER, buckets])


def location(region: str) -> bytes:
    """GetBucketLocation: empty for us-east-1, as S3 answers."""
    return _document("LocationConstraint", [escape(region) if region != "us-east-1" else ""])


def _encoded(value: str, params: ListParams) -> str:
    return quote(value, safe="/") if params.encode_url else value


def list_bucket(bucket: str, params: ListParams, page: Page, *, next_token: str | None = None) -> bytes:
    """ListObjectsV2 (``params.version`` 2) or ListObjects (1) of one page."""
    parts = [element("Name", bucket), element("Prefix", _encoded(params.prefix, params))]
    if params.version == 2:
        if params.start_after:
            parts.append(element("StartAfter", _encoded(params.start_after, params)))
        if params.token is not None:
            parts.append(element("ContinuationToken", params.token))
        parts.append(element("KeyCount", len(page.entries) + len(page.common_prefixes)))
    else:
        parts.append(element("Marker", _encoded(params.marker, params)))
    parts.append(element("MaxKeys", params.max_keys))
    if params.delimiter is not None:
        parts.append(element("Delimiter", _encoded(params.delimiter, params)))
    if params.encode_url:
        parts.append(element("EncodingType", "url"))
    parts.append(element("IsTruncated", page.truncated))
    if params.version == 1 and page.truncated and params.delimiter is not None and page.next_after is not None:
        parts.append(element("NextMarker", _encoded(page.next_after, params)))
    owner = OWNER if params.fetch_owner else ""
    for entry in page.entries:
        parts.append(
            "<Contents>" + element("Key", _encoded(entry.key, params)) + element("LastModified", timestamp(entry.last_modified))
            + element("Size", entry.size) + owner + element("StorageClass", "STANDARD") + "</Contents>"
        )
    for prefix in page.common_prefixes:
        parts.append("<CommonPrefixes>" + element("Prefix", _encoded(prefix, params)) + "</CommonPrefixes>")
    if next_token is not None:
        parts.append(element("NextContinuationToken", next_token))
    return _document("ListBucketResult", parts)
