"""The shared index tier in real Redis: a fresh reader warms from it; a replaced container is read again."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from desq.archive import Archive
from desq.index_cache import RedisIndexTier
from desq.storage.counting import CountingStorage
from desq.storage.local import LocalStorage
from sources import build

pytestmark = pytest.mark.integration
KEY = "20251120/FE.des"


@pytest.fixture
def tier(redis_url: str) -> RedisIndexTier:
    return RedisIndexTier(redis_url.rsplit("/", 1)[0] + "/4")


def test_a_second_process_warms_from_redis(tmp_path: Path, tier: RedisIndexTier) -> None:
    key = f"{uuid.uuid4().hex[:8]}/FE.des"
    storage = CountingStorage(LocalStorage(tmp_path))
    storage.put(key, build([("a", b"first"), ("b", b"second")]))
    Archive(storage, shared=tier).read(key, "a")  # cold: suffix + frame, and the index goes to Redis
    storage.requests.clear()
    fresh = Archive(storage, shared=tier)  # another worker: empty memory
    assert fresh.read(key, "b") == b"second" and len(storage.requests) == 1
    storage.put(key, build([("a", b"replaced!"), ("b", b"replaced too")]))
    assert Archive(storage, shared=tier).read(key, "b") == b"replaced too"  # stale entry refused, reread
    storage.requests.clear()
    assert Archive(storage, shared=tier).read(key, "a") == b"replaced!" and len(storage.requests) == 1


def test_redis_down_is_only_a_miss(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.put(KEY, build([("a", b"x")]))
    assert Archive(storage, shared=RedisIndexTier("redis://127.0.0.1:1/0")).read(KEY, "a") == b"x"
