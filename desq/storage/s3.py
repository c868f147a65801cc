"""The S3 backend (AWS S3, Ceph RGW, MinIO) with boto3.

Requests, their retries and their errors are ``S3Objects``' (see ``desq.storage.s3_objects``).
Ranged reads pinned to a version send ``If-Match`` and turn 412 into StaleObject. Uploads buffer at
most one part in memory and are aborted on any failure, so nothing half-written becomes visible.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from desq.storage.base import ObjectInfo, PendingUpload, RangeError, StaleObject, Storage, StorageError, StorageUnavailable, Upload, check_key, top_folder
from desq.storage.s3_objects import TRANSIENT_BODY_ERRORS, S3Objects, s3_client, s3_error

__all__ = ["MAX_PARTS", "PART_SIZE", "TRANSIENT_BODY_ERRORS", "S3Storage", "s3_client"]

T = TypeVar("T")

PART_SIZE = 8 << 20
MAX_PARTS = 10_000
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class S3Storage(Storage):
    """Objects under ``s3://bucket/prefix``."""

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str = "",
        max_pool_connections: int = 32,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = 5,
        part_size: int = PART_SIZE,
        client: Any = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise StorageError(f"{url!r} is not an s3://bucket/prefix URL")
        self.url = url
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.part_size = max(5 << 20, part_size)
        self.max_attempts = max_attempts
        self._objects = S3Objects(
            endpoint_url, max_attempts=max_attempts, client=client,
            max_pool_connections=max_pool_connections, connect_timeout=connect_timeout, read_timeout=read_timeout,
        )
        self.client = self._objects.client

    # --- keys and calls ---------------------------------------------------------------------

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, fn: Callable[..., T], **kwargs: Any) -> T:
        return self._objects.call(what, fn, Bucket=self.bucket, **kwargs)

    def _get_body(self, what: str, key: str, *, if_match: str | None, byte_range: str) -> tuple[bytes, dict[str, Any]]:
        """GET a range and read its body (a body that breaks off is asked for again)."""
        opened = self._objects.get(what, self.bucket, key, if_match=if_match, Range=byte_range)
        body, last = self._objects.read_body(what, opened)
        return body, last.response

    # --- reads ------------------------------------------------------------------------------

    def read(self, key: str, offset: int, length: int, *, if_match: str | None = None) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError(f"bad range offset={offset} length={length}")
        full = self._key(key)
        if length == 0:
            return b""
        what = f"reading {self.url}/{key}"
        body, response = self._get_body(what, full, if_match=if_match, byte_range=f"bytes={offset}-{offset + length - 1}")
        if len(body) != length:
            total = _total_size(response)
            if total is not None and offset + length > total:
                raise RangeError(f"{what}: range {offset}+{length} runs past the end ({total} bytes)")
            raise StorageUnavailable(f"{what}: got {len(body)} of {length} bytes")
        return body

    def read_suffix(self, key: str, length: int, *, if_match: str | None = None) -> tuple[bytes, ObjectInfo]:
        full = self._key(key)
        what = f"reading {self.url}/{key}"
        if length <= 0:
            info = self.head(key)
            if if_match and info.etag != if_match:
                raise StaleObject(f"{what}: the object changed since it was opened")
            return b"", info
        try:
            body, response = self._get_body(what, full, if_match=if_match, byte_range=f"bytes=-{length}")
        except RangeError:  # an empty object has no suffix to return
            info = self.head(key)
            return b"", info
        total = _total_size(response)
        size = total if total is not None else len(body)
        return body, ObjectInfo(key=key, size=size, etag=response["ETag"], modified=response.get("LastModified"))

    def head(self, key: str) -> ObjectInfo:
        response = self._call(f"looking up {self.url}/{key}", self.client.head_object, Key=self._key(key))
        return ObjectInfo(key=key, size=response["ContentLength"], etag=response["ETag"], modified=response.get("LastModified"))

    # --- writes -----------------------------------------------------------------------------

    def open_upload(self, key: str, *, content_type: str | None = None, staged: bool = False) -> Upload:
        return _S3Upload(self, key, self._key(key), content_type)

    def publish(self, staging: str, key: str) -> ObjectInfo:
        """Server-side copy (multipart for big objects), pinned to the staged version, then delete it."""
        source = self.head(staging)
        what = f"publishing {self.url}/{staging} as {key}"
        try:
            self.client.copy(
                {"Bucket": self.bucket, "Key": self._key(staging)}, self.bucket, self._key(key),
                ExtraArgs={"CopySourceIfMatch": source.etag},
            )
        except (ClientError, BotoCoreError) as exc:
            raise s3_error(exc, what) from exc
        published = self.head(key)
        if published.size != source.size:
            raise StorageError(f"{what}: the copy has {published.size} bytes, the staged object {source.size}")
        self.delete(staging)
        return published

    def delete(self, key: str) -> None:
        self._call(f"deleting {self.url}/{key}", self.client.delete_object, Key=self._key(key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = f"{self.prefix}/" if self.prefix else ""
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base + prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(key=item["Key"][len(base) :], size=item["Size"], etag=item["ETag"], modified=item.get("LastModified"))
        except (ClientError, BotoCoreError) as exc:
            raise s3_error(exc, f"listing {self.url}/{prefix}") from exc

    def folders(self, prefix: str = "") -> Iterator[str]:
        """One ``Delimiter="/"`` listing (a request per 1,000 folders and top-level objects)."""
        base = f"{self.prefix}/" if self.prefix else ""
        found: set[str] = set()
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base + prefix, Delimiter="/"):
                under = [p["Prefix"] for p in page.get("CommonPrefixes", [])] + [item["Key"] for item in page.get("Contents", [])]
                found.update(folder for key in under if (folder := top_folder(key[len(base) :])) is not None)
        except (ClientError, BotoCoreError) as exc:
            raise s3_error(exc, f"listing the folders of {self.url}/{prefix}") from exc
        yield from sorted(found)

    def uploads(self) -> Iterator[PendingUpload]:
        base = f"{self.prefix}/" if self.prefix else ""
        paginator = self.client.get_paginator("list_multipart_uploads")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base):
                for upload in page.get("Uploads", []):
                    yield PendingUpload(key=upload["Key"][len(base) :], started=upload.get("Initiated"))
        except (ClientError, BotoCoreError) as exc:
            raise s3_error(exc, f"listing the uploads in progress under {self.url}") from exc

    def abort_stale_uploads(self, older_than_seconds: float) -> int:
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=older_than_seconds)
        base = f"{self.prefix}/" if self.prefix else ""
        aborted = 0
        paginator = self.client.get_paginator("list_multipart_uploads")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base):
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] < cutoff:
                        self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                        aborted += 1
        except (ClientError, BotoCoreError) as exc:
            raise s3_error(exc, f"aborting abandoned uploads under {self.url}") from exc
        return aborted


def multipart_etag(part_etags: list[str]) -> str | None:
    """The ETag S3 gives an object completed from parts with these ETags: the MD5 of their MD5s and
    the count (None when a part's ETag is not an MD5, as with SSE-KMS)."""
    digests = bytearray()
    for etag in part_etags:
        hexed = etag.strip('"')
        if not re.fullmatch(r"[0-9a-fA-F]{32}", hexed):
            return None
        digests += bytes.fromhex(hexed)
    return f'"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{len(part_etags)}"'


def _total_size(response: dict[str, Any]) -> int | None:
    match = _CONTENT_RANGE.fullmatch(response.get("ContentRange") or "")
    if match and match.group(3) != "*":
        return int(match.group(3))
    if not response.get("ContentRange"):
        return response.get("ContentLength")
    return None


class _S3Upload(Upload):
    """A multipart upload created only once a whole part is buffered; small objects are one PUT."""

    def __init__(self, storage: S3Storage, key: str, full_key: str, content_type: str | None) -> None:
        self._s3 = storage
        self._key = key
        self._full = full_key
        self._extra = {"ContentType": content_type} if content_type else {}
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._size = 0
        self._done = False

    def _what(self) -> str:
        return f"writing {self._s3.url}/{self._key}"

    def write(self, data: bytes | memoryview) -> int:
        if self._done:
            raise StorageError(f"{self._what()}: the upload is already finished")
        self._buffer += data
        self._size += len(data)
        try:
            while len(self._buffer) >= self._s3.part_size:
                self._send_part(self._s3.part_size)
        except StorageError:
            self.abort()
            raise
        return len(data)

    def _send_part(self, length: int) -> None:
        s3 = self._s3
        if self._upload_id is None:
            created = s3._call(self._what(), s3.client.create_multipart_upload, Key=self._full, **self._extra)
            self._upload_id = created["UploadId"]
        if len(self._parts) >= MAX_PARTS:
            raise StorageError(f"{self._what()}: more than {MAX_PARTS} parts; raise the part size")
        number = len(self._parts) + 1
        body = bytes(self._buffer[:length])
        del self._buffer[:length]
        sent = s3._call(self._what(), s3.client.upload_part, Key=self._full, UploadId=self._upload_id, PartNumber=number, Body=body)
        self._parts.append({"PartNumber": number, "ETag": sent["ETag"]})

    def commit(self) -> ObjectInfo:
        if self._done:
            raise StorageError(f"{self._what()}: the upload is already finished")
        s3 = self._s3
        try:
            if self._upload_id is None:
                done = s3._call(self._what(), s3.client.put_object, Key=self._full, Body=bytes(self._buffer), **self._extra)
            else:
                if self._buffer:
                    self._send_part(len(self._buffer))
                done = self._complete()
        except StorageError:
            self.abort()
            raise
        self._done = True
        self._buffer = bytearray()
        return ObjectInfo(key=self._key, size=self._size, etag=done["ETag"], modified=None)

    def _complete(self) -> dict[str, Any]:
        """CompleteMultipartUpload, through the patient client. When its answer is lost (a timeout, then
        retries that find the upload already gone), the object is there if its ETag is the one these
        parts make: then it was completed."""
        s3 = self._s3
        try:
            return s3._call(
                self._what(), s3._objects.patient_client.complete_multipart_upload,
                Key=self._full, UploadId=self._upload_id, MultipartUpload={"Parts": self._parts},
            )
        except StorageError as failed:
            expected = multipart_etag([part["ETag"] for part in self._parts])
            try:
                found = s3.head(self._key)
            except StorageError:
                raise failed from None
            if expected is None or found.etag != expected or found.size != self._size:
                raise
            return {"ETag": found.etag}

    def abort(self) -> None:
        self._done = True
        self._buffer = bytearray()
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            try:
                self._s3.client.abort_multipart_upload(Bucket=self._s3.bucket, Key=self._full, UploadId=upload_id)
            except (ClientError, BotoCoreError):
                pass  # `desq recover` aborts what is left (abort_stale_uploads)
