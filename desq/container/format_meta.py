"""Container format v2: the metadata records of a frame HEAD (pure: no I/O).

Metadata is a run of ``(u8 tag, u16 length, value)`` records; readers skip tags they do not
know. ``docs/format.md`` describes them; ``format`` re-exports every name here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timezone

from desq.container.errors import CorruptContainer, WriterError

MAX_META_BYTES = 8192
META_RECORD = struct.Struct("<BH")
TAG_CONTENT_TYPE = 1
TAG_PATH = 2
TAG_CREATED_AT = 3  # i64 microseconds since 1970-01-01 UTC
TAG_EXTERNAL_KEY = 4
_I64 = struct.Struct("<q")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_MICROSECOND = datetime.resolution


@dataclass(frozen=True, slots=True)
class Meta:
    """The metadata a frame carries besides name and size."""

    content_type: str | None = None
    path: str | None = None
    created_at: datetime | None = None
    external_key: str | None = None


def encode_meta(meta: Meta) -> bytes:
    """Meta -> its compact TLV encoding; WriterError on values that cannot be stored."""
    parts = []
    for tag, value in ((TAG_CONTENT_TYPE, meta.content_type), (TAG_PATH, meta.path), (TAG_EXTERNAL_KEY, meta.external_key)):
        if value is None:
            continue
        if not isinstance(value, str):
            raise WriterError(f"metadata values must be strings, got {value!r}")
        try:
            raw = value.encode("utf-8")
        except UnicodeEncodeError:
            raise WriterError(f"metadata value {value!r} is not valid UTF-8 text") from None
        parts.append(META_RECORD.pack(tag, len(raw)) + raw)
    if meta.created_at is not None:
        created = meta.created_at
        if not isinstance(created, datetime) or created.utcoffset() is None:
            raise WriterError(f"created_at must be a datetime with a time zone, got {created!r}")
        micros = (created - _EPOCH) // _ONE_MICROSECOND
        try:
            _EPOCH + micros * _ONE_MICROSECOND
        except OverflowError:
            raise WriterError(f"created_at {created.isoformat()} is outside the years 1..9999 in UTC") from None
        parts.append(META_RECORD.pack(TAG_CREATED_AT, 8) + _I64.pack(micros))
    encoded = b"".join(parts)
    if len(encoded) > MAX_META_BYTES:
        raise WriterError(f"metadata is {len(encoded)} bytes; at most {MAX_META_BYTES} are allowed")
    return encoded


def decode_meta(raw: bytes | memoryview, where: str) -> Meta:
    """TLV bytes -> Meta; CorruptContainer on truncated or repeated records."""
    values: dict[int, object] = {}
    pos, end = 0, len(raw)
    while pos < end:
        if pos + META_RECORD.size > end:
            raise CorruptContainer(f"{where}: metadata record header is truncated")
        tag, length = META_RECORD.unpack_from(raw, pos)
        pos += META_RECORD.size
        value = bytes(raw[pos : pos + length])
        if len(value) != length:
            raise CorruptContainer(f"{where}: metadata record runs past its end")
        pos += length
        if tag in values:
            raise CorruptContainer(f"{where}: metadata tag {tag} appears twice")
        if tag == TAG_CREATED_AT:
            if length != 8:
                raise CorruptContainer(f"{where}: created_at is {length} bytes, not 8")
            try:
                values[tag] = _EPOCH + _I64.unpack(value)[0] * _ONE_MICROSECOND
            except OverflowError:
                raise CorruptContainer(f"{where}: created_at is out of range") from None
        elif tag in (TAG_CONTENT_TYPE, TAG_PATH, TAG_EXTERNAL_KEY):
            try:
                values[tag] = value.decode("utf-8")
            except UnicodeDecodeError:
                raise CorruptContainer(f"{where}: metadata tag {tag} is not valid UTF-8") from None
        else:
            values[tag] = None  # a tag from a later writer: skipped
    return Meta(
        content_type=values.get(TAG_CONTENT_TYPE),  # type: ignore[arg-type]
        path=values.get(TAG_PATH),  # type: ignore[arg-type]
        created_at=values.get(TAG_CREATED_AT),  # type: ignore[arg-type]
        external_key=values.get(TAG_EXTERNAL_KEY),  # type: ignore[arg-type]
    )
