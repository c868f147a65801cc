"""One conformance suite for every storage backend (fsspec's tests/abstract style).

A backend's test module subclasses ``StorageConformance`` and provides a ``storage`` fixture
giving an empty store; every test here must pass unchanged for every backend.
"""

from __future__ import annotations

import io
import os

import pytest

from desq.storage import InvalidKey, NotFound, RangeError, StaleObject, Storage, StorageError

MiB = 1 << 20
BAD_KEYS = ["", "/abs/x.des", "a/../b", "a//b", "./a", "a/.", "a\\b", "a\x00b", "a\nb", "x" * 1100]


class StorageConformance:
    """The behaviour every Storage promises."""

    held_bytes = 6 * MiB
    """Bytes after which an upload in progress is held by the server (more than one S3 part)."""

    def test_put_read_head(self, storage: Storage) -> None:
        info = storage.put("20251120/FE.des", b"0123456789")
        assert (info.key, info.size) == ("20251120/FE.des", 10) and info.etag
        assert storage.head("20251120/FE.des").etag == info.etag
        assert storage.read("20251120/FE.des", 0, 10) == b"0123456789"
        assert storage.read("20251120/FE.des", 3, 4) == b"3456"
        assert storage.read("20251120/FE.des", 10, 0) == b""
        assert b"".join(storage.iter_read("20251120/FE.des", 1, 8, chunk_size=3)) == b"12345678"

    def test_read_suffix(self, storage: Storage) -> None:
        storage.put("k", b"0123456789")
        data, info = storage.read_suffix("k", 4)
        assert (data, info.size) == (b"6789", 10)
        assert storage.read_suffix("k", 100)[0] == b"0123456789"
        assert storage.read_suffix("k", 0) == (b"", storage.head("k"))

    def test_empty_object(self, storage: Storage) -> None:
        storage.put("empty", b"")
        assert storage.head("empty").size == 0
        data, info = storage.read_suffix("empty", 64)
        assert (data, info.size) == (b"", 0)

    def test_put_from_a_file_object(self, storage: Storage) -> None:
        blob = os.urandom(3 * MiB + 7)
        assert storage.put("f", io.BytesIO(blob)).size == len(blob)
        assert storage.read("f", 0, len(blob)) == blob

    def test_missing_objects(self, storage: Storage) -> None:
        for call in (lambda: storage.head("nope"), lambda: storage.read("nope", 0, 1), lambda: storage.read_suffix("nope", 10)):
            with pytest.raises(NotFound):
                call()

    def test_reads_past_the_end(self, storage: Storage) -> None:
        storage.put("k", b"0123456789")
        with pytest.raises(RangeError):
            storage.read("k", 8, 5)
        with pytest.raises(RangeError):
            storage.read("k", 20, 1)
        with pytest.raises(ValueError):
            storage.read("k", -1, 2)

    def test_replace_is_atomic_and_changes_the_version(self, storage: Storage) -> None:
        old = storage.put("k", b"old contents")
        new = storage.put("k", b"new contents!")
        assert new.etag != old.etag and storage.head("k") == storage.head("k")
        assert storage.read("k", 0, 13) == b"new contents!"
        with pytest.raises(StaleObject):
            storage.read("k", 0, 3, if_match=old.etag)
        with pytest.raises(StaleObject):
            storage.read_suffix("k", 3, if_match=old.etag)
        assert storage.read("k", 0, 3, if_match=storage.head("k").etag) == b"new"

    def test_streaming_upload_many_parts(self, storage: Storage) -> None:
        blob = os.urandom(11 * MiB + 5)
        with storage.open_upload("big/x.des") as upload:
            for at in range(0, len(blob), 1_000_000):
                upload.write(blob[at : at + 1_000_000])
            info = upload.commit()
        assert info.size == len(blob) and storage.head("big/x.des").size == len(blob)
        assert storage.read("big/x.des", 0, len(blob)) == blob

    def test_an_upload_is_invisible_until_commit(self, storage: Storage) -> None:
        storage.put("k", b"old")
        upload = storage.open_upload("k")
        upload.write(os.urandom(6 * MiB))
        upload.write(b"tail")
        assert storage.read("k", 0, 3) == b"old" and [o.key for o in storage.list()] == ["k"]
        upload.abort()
        upload.abort()
        assert storage.read("k", 0, 3) == b"old" and [o.key for o in storage.list()] == ["k"]
        with pytest.raises(StorageError):
            upload.write(b"more")

    def test_a_failure_inside_an_upload_aborts_it(self, storage: Storage) -> None:
        with pytest.raises(RuntimeError):
            with storage.open_upload("k") as upload:
                upload.write(b"partial")
                raise RuntimeError("packer died")
        with pytest.raises(NotFound):
            storage.head("k")
        assert list(storage.list()) == []

    def test_an_upload_finishes_once(self, storage: Storage) -> None:
        upload = storage.open_upload("k")
        upload.write(b"x")
        upload.commit()
        with pytest.raises(StorageError):
            upload.write(b"y")
        with pytest.raises(StorageError):
            upload.commit()

    def test_publish_moves_atomically(self, storage: Storage) -> None:
        storage.put("20251120/FE.des", b"old")
        storage.put("20251120/FE.des.staging-1", b"new container")
        info = storage.publish("20251120/FE.des.staging-1", "20251120/FE.des")
        assert info.size == 13 and storage.read("20251120/FE.des", 0, 13) == b"new container"
        assert [o.key for o in storage.list("20251120/")] == ["20251120/FE.des"]
        with pytest.raises(NotFound):
            storage.publish("20251120/FE.des.staging-1", "20251120/FE.des")
        storage.put("a/new.des.staging", b"first")
        assert storage.publish("a/new.des.staging", "b/new.des").key == "b/new.des"

    def test_delete(self, storage: Storage) -> None:
        storage.put("k", b"x")
        storage.delete("k")
        storage.delete("k")
        with pytest.raises(NotFound):
            storage.head("k")

    def test_list_by_prefix(self, storage: Storage) -> None:
        for key in ("20251121/00.des", "20251120/FE.des", "20251120/01.des", "other/x", "20251120/FE.des.big/ab"):
            storage.put(key, b"x")
        assert [o.key for o in storage.list("2025112")] == ["20251120/01.des", "20251120/FE.des", "20251120/FE.des.big/ab", "20251121/00.des"]
        assert [o.key for o in storage.list("20251120/")] == ["20251120/01.des", "20251120/FE.des", "20251120/FE.des.big/ab"]
        assert [o.key for o in storage.list("20251120/F")] == ["20251120/FE.des", "20251120/FE.des.big/ab"]
        assert [o.key for o in storage.list("nothing/")] == []
        assert len(list(storage.list())) == 5 and all(o.size == 1 for o in storage.list())

    def test_folders_are_the_distinct_top_level_folders_sorted(self, storage: Storage) -> None:
        for key in ("20251121/00.des", "20251120/FE.des", "20251120/01.des", "20251120/FE.des.big/ab", "a/x", "a-b/x", "ab/c/d/e",
                    "other/x", "top.des", "20251122", "zażółć/空"):
            storage.put(key, b"x")
        everything = ["20251120", "20251121", "a", "a-b", "ab", "other", "zażółć"]  # by name: "a-b/x" sorts before "a/x"
        for prefix, want in [("", everything), ("2025112", ["20251120", "20251121"]), ("20251120", ["20251120"]), ("a", ["a", "a-b", "ab"]),
                             ("a-", ["a-b"]), ("top", []), ("top.des", []), ("20251122", []), ("nothing", []), ("zaż", ["zażółć"]),
                             ("a/", ["a"]), ("a/x", ["a"]), ("a/y", []), ("ab/c/", ["ab"]), ("20251120/F", ["20251120"]), ("20251120/X", [])]:
            got = list(storage.folders(prefix))
            assert got == want, prefix
            assert got == list(Storage.folders(storage, prefix)), prefix  # the backend's own way agrees with the default one
        assert list(storage.folders()) == everything

    def test_folders_hold_committed_objects_only(self, storage: Storage) -> None:
        storage.put("20251120/FE.des", b"x")
        upload = storage.open_upload("20251121/00.des")
        upload.write(os.urandom(self.held_bytes))
        assert list(storage.folders()) == ["20251120"]  # an upload in progress is no object yet
        upload.commit()
        assert list(storage.folders()) == ["20251120", "20251121"]
        storage.delete("20251121/00.des")
        with storage.open_upload("20251122/00.des") as aborted:
            aborted.write(b"partial")
            aborted.abort()
        assert list(storage.folders()) == ["20251120"] == list(Storage.folders(storage))

    def test_unicode_keys(self, storage: Storage) -> None:
        storage.put("20251120/zażółć 空.des", b"u")
        assert storage.read("20251120/zażółć 空.des", 0, 1) == b"u"
        assert [o.key for o in storage.list("20251120/")] == ["20251120/zażółć 空.des"]

    @pytest.mark.parametrize("key", BAD_KEYS)
    def test_bad_keys(self, storage: Storage, key: str) -> None:
        for call in (
            lambda: storage.put(key, b"x"),
            lambda: storage.read(key, 0, 1),
            lambda: storage.read_suffix(key, 1),
            lambda: storage.head(key),
            lambda: storage.delete(key),
            lambda: storage.open_upload(key),
        ):
            with pytest.raises(InvalidKey):
                call()

    def test_abandoned_uploads_are_aborted(self, storage: Storage) -> None:
        # That recent uploads are spared is tested per backend: moto dates every upload 2010.
        upload = storage.open_upload("k")
        upload.write(os.urandom(self.held_bytes))
        assert storage.abort_stale_uploads(0) == 1
        assert list(storage.list()) == []
        upload.abort()
