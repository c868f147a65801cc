"""The storage conformance suite, run on the local backend and on S3 (moto_server over HTTP)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from desq.settings import load_settings
from desq.storage import NotFound, Storage, open_storage, storage_for
from desq.storage.local import TEMP_PREFIX, LocalStorage
from desq.storage.s3 import S3Storage
from storage_conformance import StorageConformance


class TestLocalStorage(StorageConformance):
    @pytest.fixture
    def storage(self, tmp_path: Path) -> Storage:
        return LocalStorage(tmp_path / "archive")


@pytest.mark.integration
class TestS3Storage(StorageConformance):
    @pytest.fixture
    def storage(self, s3_endpoint: str, s3_bucket: str) -> Iterator[Storage]:
        yield S3Storage(f"s3://{s3_bucket}/archive", endpoint_url=s3_endpoint, part_size=5 << 20)


def test_urls_pick_the_backend(tmp_path: Path, aws_env: None) -> None:
    assert isinstance(open_storage(str(tmp_path)), LocalStorage)
    assert open_storage(tmp_path.as_uri()).root == tmp_path
    s3 = open_storage("s3://abc/some/prefix", s3_endpoint_url="http://127.0.0.1:1")
    assert isinstance(s3, S3Storage) and (s3.bucket, s3.prefix) == ("abc", "some/prefix")
    settings = load_settings(env={"DESQ_ARCHIVE_URL": "s3://abc/x", "DESQ_ARCHIVE_S3_ENDPOINT_URL": "http://127.0.0.1:1"})
    assert isinstance(storage_for(settings), S3Storage)


def test_a_local_key_never_leaves_the_root(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "a")
    (tmp_path / "secret").write_bytes(b"s")
    for key in ("../secret", "x/../../secret"):
        with pytest.raises(ValueError):
            storage.read(key, 0, 1)


def test_local_recent_uploads_are_spared(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    upload = storage.open_upload("k")
    upload.write(b"in progress")
    assert storage.abort_stale_uploads(3600) == 0
    upload.commit()
    assert storage.read("k", 0, 2) == b"in"


def test_s3_recent_uploads_are_spared(aws_env: None) -> None:
    from datetime import datetime, timedelta, timezone

    from botocore.stub import Stubber

    storage = S3Storage("s3://abc/pfx", endpoint_url="http://127.0.0.1:1")
    now = datetime.now(timezone.utc)
    with Stubber(storage.client) as stub:
        stub.add_response(
            "list_multipart_uploads",
            {"Uploads": [
                {"Key": "pfx/old", "UploadId": "u1", "Initiated": now - timedelta(hours=2)},
                {"Key": "pfx/live", "UploadId": "u2", "Initiated": now - timedelta(minutes=5)},
            ]},
            {"Bucket": "abc", "Prefix": "pfx/"},
        )
        stub.add_response("abort_multipart_upload", {}, {"Bucket": "abc", "Key": "pfx/old", "UploadId": "u1"})
        assert storage.abort_stale_uploads(3600) == 1
        stub.assert_no_pending_responses()


def test_local_folders_keep_the_rules_of_list(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "a")
    assert list(storage.folders()) == []  # no root yet
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "x.des").write_bytes(b"x")
    storage.put("20251120/FE.des", b"x")
    (tmp_path / "a" / "20251121").symlink_to(tmp_path / "outside")  # a link to a folder is not walked by list either
    (tmp_path / "a" / "20251122").mkdir()
    (tmp_path / "a" / "20251122" / "x.des").symlink_to(tmp_path / "outside" / "x.des")  # a link out of the root
    (tmp_path / "a" / f"{TEMP_PREFIX}1-20251123").mkdir()
    (tmp_path / "a" / f"{TEMP_PREFIX}1-20251123" / "x.des").write_bytes(b"x")
    (tmp_path / "a" / "back\\slash").mkdir()
    (tmp_path / "a" / "back\\slash" / "x.des").write_bytes(b"x")
    (tmp_path / "a" / "20251124").mkdir()  # left empty
    assert [o.key for o in storage.list()] == ["20251120/FE.des"]
    assert list(storage.folders()) == ["20251120"] == list(Storage.folders(storage))
    assert list(storage.folders("2025112")) == ["20251120"] and list(storage.folders("20251121")) == []
    file_root = LocalStorage(tmp_path / "outside" / "x.des")
    assert list(file_root.folders()) == [] == list(file_root.list())


def test_counting_adds_up_the_bytes_its_reads_returned(tmp_path: Path) -> None:
    from desq.storage.counting import CountingStorage

    counted = CountingStorage(LocalStorage(tmp_path))
    counted.put("d/a.des", b"0123456789")
    assert counted.bytes_read == 0
    assert counted.read("d/a.des", 2, 3) == b"234"
    assert counted.read_suffix("d/a.des", 4)[0] == b"6789"
    assert counted.read_suffix("d/a.des", 100)[0] == b"0123456789"  # clipped to the object: what came back counts
    assert b"".join(counted.iter_read("d/a.des", 0, 10, chunk_size=4)) == b"0123456789"
    counted.head("d/a.des")
    with pytest.raises(NotFound):
        counted.read("d/missing.des", 0, 1)
    assert counted.bytes_read == 3 + 4 + 10 + 10
    assert [r.split()[0] for r in counted.requests] == ["put", "read", "suffix", "suffix", "read", "read", "read", "head", "read"]


def test_local_reads_resolve_no_whole_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read with no link on its way costs an lstat a folder, not a realpath of every part of the path."""
    storage = LocalStorage(tmp_path / "a")
    storage.put("20251120/FE.des", b"abcdef")
    storage.read("20251120/FE.des", 0, 1)
    resolved: list[str] = []
    realpath = os.path.realpath
    monkeypatch.setattr(os.path, "realpath", lambda path, **kw: resolved.append(path) or realpath(path, **kw))
    assert storage.read("20251120/FE.des", 1, 3) == b"bcd"
    assert storage.read_suffix("20251120/FE.des", 2)[0] == b"ef" and storage.head("20251120/FE.des").size == 6
    assert resolved == []


def test_local_links_inside_the_root_are_still_read(tmp_path: Path) -> None:
    root = tmp_path / "root"
    storage = LocalStorage(root)
    storage.put("20251120/FE.des", b"member")
    (root / "20251120" / "alias.des").symlink_to(root / "20251120" / "FE.des")
    (root / "20251121").symlink_to("20251120")
    for key in ("20251120/alias.des", "20251121/FE.des", "20251121/alias.des"):
        assert storage.read(key, 0, 6) == b"member" and storage.head(key).size == 6, key


def test_a_local_root_link_pointed_elsewhere_is_followed(tmp_path: Path) -> None:
    for folder in ("one", "two"):
        LocalStorage(tmp_path / folder).put("d/k.des", folder.encode())
    (tmp_path / "root").symlink_to(tmp_path / "one")
    storage = LocalStorage(tmp_path / "root")
    assert storage.read("d/k.des", 0, 3) == b"one"
    (tmp_path / "root").unlink()
    (tmp_path / "root").symlink_to(tmp_path / "two")
    assert storage.read("d/k.des", 0, 3) == b"two"
    (tmp_path / "root").unlink()
    with pytest.raises(NotFound):
        storage.read("d/k.des", 0, 3)
