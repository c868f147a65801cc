"""A shared tier of container indexes in Redis, so a fresh worker warms without storage reads.

Each entry is a container's INDEX + FOOTER (24 bytes a member, plus 64) with the version (ETag)
it came from. A reader opened from it is pinned to that version, so a replaced container is
refused by storage, dropped here, and read again. Redis being down only ever costs a miss.
"""

from __future__ import annotations

import logging

import redis

log = logging.getLogger(__name__)
PREFIX = "desq:index:"


class RedisIndexTier:
    """``get``/``put``/``drop`` of (etag, index blob) by container key."""

    def __init__(self, url: str, *, ttl_seconds: int = 7 * 86400, max_blob: int = 64 << 20) -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._ttl = ttl_seconds
        self._max_blob = max_blob

    def get(self, key: str) -> tuple[str, bytes] | None:
        try:
            value = self._redis.get(PREFIX + key)
        except redis.RedisError as exc:
            log.warning("index cache unavailable: %s", exc)
            return None
        if not value or b"\n" not in value:
            return None
        etag, _, blob = value.partition(b"\n")
        return etag.decode("utf-8", "replace"), blob

    def put(self, key: str, etag: str, blob: bytes) -> None:
        if len(blob) > self._max_blob or "\n" in etag:
            return
        try:
            self._redis.set(PREFIX + key, etag.encode() + b"\n" + blob, ex=self._ttl)
        except redis.RedisError as exc:
            log.warning("index cache unavailable: %s", exc)

    def drop(self, key: str) -> None:
        try:
            self._redis.delete(PREFIX + key)
        except redis.RedisError as exc:
            log.warning("index cache unavailable: %s", exc)
