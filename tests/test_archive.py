"""Containers on storage (both backends): request budget, replacement under a reader, big files."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from desq.archive import Archive, external_key_for, store_external
from desq.container import ChecksumMismatch, ContainerWriter, MemberNotFound
from desq.storage import StaleObject
from desq.storage.counting import CountingStorage
from desq.storage.local import LocalStorage
from desq.storage.s3 import S3Storage
from sources import build

MiB = 1 << 20
KEY = "20251120/FE.des"


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CountingStorage]:
    if request.param == "local":
        yield CountingStorage(LocalStorage(tmp_path / "archive"))
        return
    endpoint, bucket = request.getfixturevalue("s3_endpoint"), request.getfixturevalue("s3_bucket")
    yield CountingStorage(S3Storage(f"s3://{bucket}/desq", endpoint_url=endpoint, part_size=5 * MiB))


def members(tag: bytes, count: int = 300) -> list[tuple[str, bytes]]:
    return [(f"20251120_{i}", tag + os.urandom(200 + i)) for i in range(count)]


def test_cold_read_two_requests_warm_one(storage: CountingStorage) -> None:
    content = dict(members(b"v1"))
    storage.put(KEY, build(content.items()))
    storage.requests.clear()
    archive = Archive(storage)
    assert archive.read(KEY, "20251120_7") == content["20251120_7"]
    assert len(storage.requests) == 2, storage.requests
    for name in ("20251120_8", "20251120_299", "20251120_0"):
        storage.requests.clear()
        assert archive.read(KEY, name) == content[name]
        assert len(storage.requests) == 1, storage.requests
    storage.requests.clear()
    assert archive.meta(KEY, "20251120_9").size == len(content["20251120_9"])
    assert len(storage.requests) == 1
    with pytest.raises(MemberNotFound):
        archive.read(KEY, "20251120_nope")


def test_a_replaced_container_never_yields_old_bytes(storage: CountingStorage) -> None:
    old, new = dict(members(b"OLD")), dict(members(b"NEW-and-longer"))
    storage.put(KEY, build(old.items()))
    archive = Archive(storage)
    assert archive.read(KEY, "20251120_5").startswith(b"OLD")
    storage.put(KEY, build(new.items()))  # same names, other offsets: the cached index is stale
    for name in ("20251120_5", "20251120_6", "20251120_250"):
        assert archive.read(KEY, name) == new[name]
    assert dict(archive.read_many(KEY, ["20251120_1", "20251120_2"])) == {k: new[k] for k in ("20251120_1", "20251120_2")}


def test_a_replacement_mid_stream_stops_the_stream(storage: CountingStorage) -> None:
    blob = os.urandom(5 * MiB)
    storage.put(KEY, build([("big", blob)]))
    archive = Archive(storage)
    chunks = archive.iter_range(KEY, "big", 0, 4 * MiB, chunk_size=MiB)
    assert next(chunks) == blob[:MiB]
    storage.put(KEY, build([("big", os.urandom(5 * MiB))]))
    with pytest.raises(StaleObject):
        list(chunks)
    assert b"".join(archive.iter_range(KEY, "big", 0, 10)) != blob[:10]  # reopened: the new bytes


def test_big_member_stored_beside_its_container(storage: CountingStorage) -> None:
    blob = os.urandom(7 * MiB + 3)
    ref = store_external(storage, KEY, "20251120_big", (blob[i : i + MiB] for i in range(0, len(blob), MiB)), len(blob), content_type="video/mp4")
    assert ref.external_key == external_key_for(KEY, "20251120_big") and ref.external_key.startswith("FE.des.big/")
    out = io.BytesIO()
    with ContainerWriter(out) as w:
        w.add("20251120_small", b"s")
        w.add_external("20251120_big", size=ref.size, checksum=ref.checksum, block_checksums=ref.block_checksums, external_key=ref.external_key, content_type="video/mp4")
    storage.put(KEY, out.getvalue())
    archive = Archive(storage)
    assert archive.read(KEY, "20251120_big") == blob
    assert b"".join(archive.iter_range(KEY, "20251120_big", 3 * MiB - 5, 5 * MiB + 5)) == blob[3 * MiB - 5 : 5 * MiB + 5]
    assert archive.meta(KEY, "20251120_big").content_type == "video/mp4"
    assert archive.open(KEY).verify() == []
    storage.put(f"20251120/{ref.external_key}", blob[:-1] + b"\x00")  # the big object damaged
    with pytest.raises(ChecksumMismatch):
        archive.read(KEY, "20251120_big")


def test_a_failed_big_upload_leaves_nothing(storage: CountingStorage) -> None:
    def broken() -> Iterator[bytes]:
        yield os.urandom(6 * MiB)
        raise OSError("the original vanished")

    with pytest.raises(OSError):
        store_external(storage, KEY, "x", broken(), 10 * MiB)
    assert list(storage.list()) == []
    from desq.container import WriterError

    with pytest.raises(WriterError):
        store_external(storage, KEY, "x", [b"abc"], 4)
    assert list(storage.list()) == []


def test_the_index_cache_is_bounded(storage: CountingStorage) -> None:
    for day in range(5):
        storage.put(f"2025112{day}/00.des", build(members(b"x", 100)))
    archive = Archive(storage, cache_bytes=2 * (100 * 24 + 256))
    for day in range(5):
        archive.read(f"2025112{day}/00.des", "20251120_1")
    storage.requests.clear()  # (the puts above count too)
    archive.read("20251124/00.des", "20251120_2")
    assert len(storage.requests) == 1  # still cached
    archive.read("20251120/00.des", "20251120_2")
    assert len(storage.requests) == 3  # evicted: opened again


def test_missing_container(storage: CountingStorage) -> None:
    from desq.storage import NotFound

    with pytest.raises(NotFound):
        Archive(storage).read("20251120/00.des", "x")
