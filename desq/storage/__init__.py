"""Archive storage: a local folder or S3 (AWS, Ceph RGW, MinIO), behind one interface."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from desq.settings import Settings
from desq.storage.base import (
    AccessDenied,
    BucketNotFound,
    InvalidKey,
    NoCredentials,
    NotFound,
    ObjectInfo,
    PendingUpload,
    RangeError,
    StaleObject,
    Storage,
    StorageError,
    StorageUnavailable,
    Upload,
    check_key,
    join_key,
)

__all__ = [
    "AccessDenied", "BucketNotFound", "InvalidKey", "NoCredentials", "NotFound", "ObjectInfo", "PendingUpload", "RangeError",
    "StaleObject", "Storage", "StorageError", "StorageUnavailable", "Upload", "check_key", "join_key",
    "open_storage", "storage_for",
]


def open_storage(url: str, *, s3_endpoint_url: str = "", nodes: Sequence[str] = (), **s3_options: Any) -> Storage:
    """The backend for an archive url: ``s3://bucket/prefix``, ``file:///abs/path``, a plain path,
    or ``ec://K+M`` over ``nodes`` (each of the others, an s3:// one with ``?endpoint=URL`` allowed)."""
    if url.startswith("ec://"):
        from desq.settings_checks import ec_code
        from desq.storage.ec import ECStorage

        try:
            k, m = ec_code(url)
        except ValueError as exc:
            raise StorageError(str(exc)) from None
        return ECStorage([_node(node, s3_endpoint_url, s3_options) for node in nodes], k, m)
    if url.startswith("s3://"):
        from desq.storage.s3 import S3Storage

        return S3Storage(url, endpoint_url=s3_endpoint_url, **s3_options)
    from desq.storage.local import LocalStorage

    if url.startswith("file://"):
        return LocalStorage(unquote(urlsplit(url).path))
    return LocalStorage(url)


def _node(spec: str, s3_endpoint_url: str, s3_options: dict[str, Any]) -> Storage:
    url, _, query = spec.partition("?")
    endpoint = query.removeprefix("endpoint=") if query else s3_endpoint_url
    if url.startswith("ec://"):
        raise StorageError(f"node {spec!r}: a node cannot be another erasure-coded archive")
    if not url.startswith("s3://"):
        return open_storage(url)
    # A node that does not answer is read around (degraded) rather than waited out with retries.
    options = {"max_attempts": 3, "connect_timeout": 2.0} | s3_options
    return open_storage(url, s3_endpoint_url=endpoint, **options)


def storage_for(settings: Settings, **s3_options: Any) -> Storage:
    """The archive storage the settings name."""
    archive = settings.archive
    return open_storage(archive.url, s3_endpoint_url=archive.s3_endpoint_url, nodes=archive.nodes, **s3_options)
