"""desq/leftovers.py: staging objects, uploads and unreferenced big files, listed and removed safely."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from desq.archive import store_external
from desq.cli import run
from desq.container import ContainerWriter
from desq.deployment import Deployment
from desq.leftovers import Leftover, find, human, owner, remove_big_files, safe_age
from desq.pipeline.lease import Leases
from desq.pipeline.night import recover
from desq.settings import load_settings
from desq.storage import ObjectInfo, PendingUpload, Storage, open_storage
from desq.storage.local import LocalStorage

NOW = datetime(2025, 11, 21, 12, 0, tzinfo=timezone.utc)
DAY = 86400


def container(storage: Storage, key: str, big: list[str] = [], small: int = 2) -> None:  # noqa: B006 - never mutated
    """A container at ``key`` with ``small`` small members and ``big`` stored beside it."""
    refs = [store_external(storage, key, name, [name.encode() * 10], len(name) * 10) for name in big]
    with storage.open_upload(key) as upload:
        writer = ContainerWriter(upload)
        for i in range(small):
            writer.add(f"s{i}", b"small %d" % i)
        for name, ref in zip(big, refs):
            writer.add_external(name, size=ref.size, checksum=ref.checksum, block_checksums=ref.block_checksums, external_key=ref.external_key)
        writer.close()
        upload.commit()


def age(root: Path, key: str, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(root / key, (then, then))


def desq(capsysbinary: pytest.CaptureFixture[bytes], *args: str) -> tuple[int, str, str]:
    code = run(list(args))
    out, err = capsysbinary.readouterr()
    return code, out.decode(), err.decode()


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("20251120/FE.des.staging-1f", ("staging", "20251120/FE.des")),
        ("FE.des.staging-1f", ("staging", "FE.des")),
        ("20251120/FE.des.big/0123abcd", ("big file", "20251120/FE.des")),
        ("FE.des.big/0123abcd", ("big file", "FE.des")),
        ("20251120/FE.des", None),
        ("20251120/.big/x", None),
        ("_desq/night.json", None),
        ("20251120/FE.des.big", None),
    ],
)
def test_owner(key: str, expected: tuple[str, str] | None) -> None:
    assert owner(key) == expected


def test_human_ages() -> None:
    assert [human(timedelta(seconds=s)) for s in (-3, 0, 59, 60, 725, 3600, 25_320, DAY, 3 * DAY + 4 * 3600 + 59)] == ["0s", "0s", "59s", "1m0s", "12m5s", "1h0m", "7h2m", "1d0h", "3d4h"]


def test_safe_age_is_at_least_twice_the_lease() -> None:
    assert safe_age(300) == timedelta(hours=6) and safe_age(86400) == timedelta(days=2) and safe_age(5, timedelta(0)) == timedelta(seconds=10)


def test_find_keeps_what_a_container_references_or_might() -> None:
    info = lambda key, hours: ObjectInfo(key, 10, "e", NOW - timedelta(hours=hours))  # noqa: E731
    objects = [
        info("d/A.des", 30), info("d/A.des.big/used", 30), info("d/A.des.big/orphan", 30),
        info("d/B.des", 30), info("d/B.des.big/unknown", 30),
        info("d/C.des.big/no-container", 1), info("d/A.des.staging-9", 8), info("_desq/night.json", 1),
    ]
    refs = {"d/A.des": frozenset({"d/A.des.big/used"}), "d/B.des": None}
    found = find(objects, [PendingUpload("d/D.des.staging-2", NOW - timedelta(minutes=5))], refs)
    assert [(f.key, f.kind, f.container) for f in found] == [
        ("d/A.des.big/orphan", "big file", "d/A.des"),
        ("d/A.des.staging-9", "staging", "d/A.des"),
        ("d/C.des.big/no-container", "big file", "d/C.des"),
        ("d/D.des.staging-2", "upload", "d/D.des"),
    ]
    lines = [f.line(NOW, timedelta(hours=6)) for f in found]
    assert lines[0] == "leftover d/A.des.big/orphan: big file no container references (of d/A.des), 10 bytes, 1d6h old"
    assert lines[1].endswith("8h0m old") and lines[2].endswith("1h0m old (young: a packer may be writing it)")
    assert lines[3] == "leftover d/D.des.staging-2: upload never committed (of d/D.des), size unknown, 5m0s old (young: a packer may be writing it)"
    assert Leftover("k", "staging", "c", None, None).line(NOW, timedelta(hours=6)).endswith("size unknown, age unknown")


@pytest.fixture
def site(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local archive with leftovers of every kind, old and young, and desq's tables in SQLite."""
    monkeypatch.setenv("DESQ_STATE_DB_URL", f"sqlite:///{in_tmp / 'state.db'}")
    monkeypatch.setenv("DESQ_PIPELINE_LEASE_SECONDS", "60")
    root = in_tmp / "desq-data" / "archive"
    storage = LocalStorage(root)
    container(storage, "20251120/00.des", big=["kept-1", "kept-2"])
    store_external(storage, "20251120/00.des", "dropped", [b"x" * 7], 7)  # a pack that failed after storing it
    store_external(storage, "20251120/01.des", "never-published", [b"y" * 5], 5)  # the packer died before publishing
    store_external(storage, "20251120/02.des", "young", [b"z" * 3], 3)  # a packer at work
    storage.put("20251120/03.des.staging-abc", b"old staging")
    lease = Leases(sa.create_engine(f"sqlite:///{in_tmp / 'state.db'}")).acquire("pack:20251120/04.des", "a packer at work", 600)
    assert lease is not None
    storage.put(f"20251120/04.des.staging-{lease.token:x}", b"young staging")
    (root / "20251120" / ".desq-upload-0123abcd-05.des.staging-1").write_bytes(b"half")  # a crashed writer's
    for key in storage.list():
        if not key.key.startswith(("20251120/02.des.big/", "20251120/04.des.staging-")):
            age(root, key.key, 2 * DAY)
    temp = next((root / "20251120").glob(".desq-upload-*"))
    os.utime(temp, (time.time() - 2 * DAY,) * 2)
    return root


def test_verify_all_lists_leftovers_with_ages_and_exits_0(site: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    code, out, err = desq(capsysbinary, "verify", "--all")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "ok  20251120/00.des: 4 members"
    leftovers = [line for line in lines if line.startswith("leftover ")]
    keys = [line.split(":")[0].removeprefix("leftover ") for line in leftovers]
    storage = LocalStorage(site)
    big = {info.key.rpartition("/")[0]: info.key for info in storage.list() if ".big/" in info.key and not info.key.startswith("20251120/00.des.big/")}
    dropped = [k for k in (i.key for i in storage.list()) if k.startswith("20251120/00.des.big/")]
    assert len(dropped) == 3
    assert len(leftovers) == 6 and keys == sorted(keys)
    assert sum("big file no container references (of 20251120/00.des), 7 bytes, 2d0h old" in line for line in leftovers) == 1
    assert f"leftover {big['20251120/01.des.big']}: big file no container references (of 20251120/01.des), 5 bytes, 2d0h old" in leftovers
    assert any(line.startswith(f"leftover {big['20251120/02.des.big']}:") and line.endswith("(young: a packer may be writing it)") for line in leftovers)
    assert "leftover 20251120/03.des.staging-abc: staging object (of 20251120/03.des), 11 bytes, 2d0h old" in leftovers
    assert any(line.startswith("leftover 20251120/04.des.staging-") and line.endswith("(young: a packer may be writing it)") for line in leftovers)
    assert "leftover 20251120/05.des.staging-1: upload never committed (of 20251120/05.des), 4 bytes, 2d0h old" in leftovers
    assert "desq: warning: 6 leftover(s)" in err and "garbage, not damage" in err


def test_recover_removes_old_leftovers_keeps_young_and_referenced_ones(site: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    storage = LocalStorage(site)
    before = {i.key for i in storage.list()}
    code, out, _ = desq(capsysbinary, "recover")
    assert code == 0
    after = {i.key for i in storage.list()}
    removed = sorted(before - after)
    assert [line.removeprefix("removed ") for line in out.splitlines()[:-1]] == sorted(removed, key=lambda k: (".big/" in k, k))
    assert out.splitlines()[-1].endswith("removed 1 stale staging object(s) and 2 big file(s) no container references")
    assert "aborted 1 abandoned upload(s)" in out
    assert "20251120/03.des.staging-abc" in removed and any(k.startswith("20251120/04.des.staging-") for k in after)
    assert {k.rpartition("/")[0] for k in removed if ".big/" in k} == {"20251120/00.des.big", "20251120/01.des.big"}
    assert sum(k.startswith("20251120/00.des.big/") for k in after) == 2 and any(k.startswith("20251120/02.des.big/") for k in after)
    assert desq(capsysbinary, "verify", "--all")[1].splitlines()[0] == "ok  20251120/00.des: 4 members"
    assert desq(capsysbinary, "recover")[1].splitlines() == ["cleared 0 expired lease(s), aborted 0 abandoned upload(s), removed 0 stale staging object(s) and 0 big file(s) no container references"]


def test_big_files_are_kept_while_a_packer_holds_the_lease(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "archive")
    store_external(storage, "d/00.des", "busy", [b"b"], 1)
    for info in storage.list():
        age(tmp_path / "archive", info.key, 2 * DAY)
    leases = Leases(sa.create_engine(f"sqlite:///{tmp_path / 'state.db'}"))
    lease = leases.acquire("pack:d/00.des", "packer", 600)
    assert lease is not None
    assert remove_big_files(storage, leases, timedelta(hours=1)) == []
    lease.release()
    assert len(remove_big_files(storage, leases, timedelta(hours=1))) == 1 and list(storage.list()) == []


def test_big_files_a_staging_object_or_an_unreadable_container_references_are_kept(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    storage = LocalStorage(root)
    container(storage, "d/00.des.staging-5", big=["staged"])  # verified, not yet published
    container(storage, "d/01.des", big=["in-a-damaged-one"])
    (root / "d" / "01.des").write_bytes((root / "d" / "01.des").read_bytes()[:-10])
    for info in storage.list():
        age(root, info.key, 2 * DAY)
    leases = Leases(sa.create_engine(f"sqlite:///{tmp_path / 'state.db'}"))
    assert remove_big_files(storage, leases, timedelta(hours=1)) == []


@pytest.mark.integration
def test_s3_staging_objects_uploads_and_big_files(s3_endpoint: str, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    import boto3

    monkeypatch.setenv("DESQ_ARCHIVE_URL", f"s3://{s3_bucket}/arch")
    monkeypatch.setenv("DESQ_ARCHIVE_S3_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("DESQ_STATE_DB_URL", f"sqlite:///{tmp_path / 'state.db'}")
    monkeypatch.setenv("DESQ_PIPELINE_LEASE_SECONDS", "5")
    storage = open_storage(f"s3://{s3_bucket}/arch", s3_endpoint_url=s3_endpoint)
    container(storage, "20251120/00.des", big=["kept"])
    store_external(storage, "20251120/01.des", "orphan", [b"o" * 9], 9)
    storage.put("20251120/02.des.staging-abc", b"staged")
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_multipart_upload(Bucket=s3_bucket, Key="arch/20251120/03.des.staging-7")
    code, out, err = desq(capsysbinary, "verify", "--all")
    assert code == 0 and out.splitlines()[0] == "ok  20251120/00.des: 3 members"
    leftovers = [line for line in out.splitlines() if line.startswith("leftover ")]
    assert len(leftovers) == 3 and all("(young: a packer may be writing it)" in line for line in leftovers if "upload" not in line)
    assert any(line.startswith("leftover 20251120/01.des.big/") and "9 bytes" in line for line in leftovers)
    assert any(line.startswith("leftover 20251120/02.des.staging-abc: staging object (of 20251120/02.des), 6 bytes,") for line in leftovers)
    assert any(line.startswith("leftover 20251120/03.des.staging-7: upload never committed (of 20251120/03.des), size unknown,") for line in leftovers)
    assert "desq: warning: 3 leftover(s)" in err

    report = recover(Deployment(load_settings()), older_than=timedelta(0))
    assert (report.staging, report.uploads, report.big_files) == (1, 1, 0)  # the big file is younger than twice the lease
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    leases = Leases(sa.create_engine(f"sqlite:///{tmp_path / 'state.db'}"))
    removed = remove_big_files(storage, leases, timedelta(0))
    assert len(removed) == 1 and removed[0].startswith("20251120/01.des.big/")
    left = sorted(i.key for i in storage.list())
    assert left[0] == "20251120/00.des" and len(left) == 2 and left[1].startswith("20251120/00.des.big/")
    code, out, err = desq(capsysbinary, "verify", "--all")
    assert (code, out) == (0, "ok  20251120/00.des: 3 members\n") and "warning" not in err
