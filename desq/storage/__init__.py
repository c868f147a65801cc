"""Archive storage: a local folder or S3 (AWS, Ceph RGW, MinIO), behind one interface."""

from __future__ import annotations

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


def open_storage(url: str, *, s3_endpoint_url: str = "", **s3_options: Any) -> Storage:
    """The backend for an archive url: ``s3://bucket/prefix``, ``file:///abs/path`` or a plain path."""
    if url.startswith("s3://"):
        from desq.storage.s3 import S3Storage

        return S3Storage(url, endpoint_url=s3_endpoint_url, **s3_options)
    from desq.storage.local import LocalStorage

    if url.startswith("file://"):
        return LocalStorage(unquote(urlsplit(url).path))
    return LocalStorage(url)


def storage_for(settings: Settings, **s3_options: Any) -> Storage:
    """The archive storage the settings name."""
    return open_storage(settings.archive.url, s3_endpoint_url=settings.archive.s3_endpoint_url, **s3_options)
