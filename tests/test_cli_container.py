"""``desq ls/cat/verify/fsck`` on v2 and DES v1 containers, healthy and damaged."""

from __future__ import annotations

from pathlib import Path

import pytest

from desq.cli import run
from desq.container import ContainerWriter
from des_v1_writer import V1Member, write_v1

MEMBERS = {"20251120_1": b"hello\n", "zażółć.txt": "gęś\n".encode(), "empty": b""}


def make(path: Path, members: dict[str, bytes] = MEMBERS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh, ContainerWriter(fh) as w:
        for name, data in members.items():
            w.add(name, data)
    return path


def damage(path: Path, needle: bytes) -> Path:
    data = bytearray(path.read_bytes())
    data[data.index(needle)] ^= 0x01
    bad = path.with_name("bad-" + path.name)
    bad.write_bytes(bytes(data))
    return bad


def desq(capsysbinary: pytest.CaptureFixture[bytes], *args: str) -> tuple[int, bytes, str]:
    code = run(list(args))
    out, err = capsysbinary.readouterr()
    return code, out, err.decode()


def test_ls_and_cat(in_tmp: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    make(in_tmp / "c.des")
    assert desq(capsysbinary, "ls", "c.des") == (0, "20251120_1\t6\nzażółć.txt\t6\nempty\t0\n".encode(), "")
    assert desq(capsysbinary, "cat", "c.des", "zażółć.txt")[:2] == (0, "gęś\n".encode())
    assert desq(capsysbinary, "cat", "c.des", "empty")[:2] == (0, b"")


def test_keys_under_the_local_archive(in_tmp: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    make(in_tmp / "desq-data" / "archive" / "20251120" / "FE.des")
    assert desq(capsysbinary, "cat", "20251120/FE.des", "20251120_1")[:2] == (0, b"hello\n")
    code, out, _ = desq(capsysbinary, "verify", "--all")
    assert code == 0 and b"ok  20251120/FE.des: 3 members" in out


def test_des_v1_is_read_too(in_tmp: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    (in_tmp / "old.des").write_bytes(write_v1([V1Member("scan-1.tif", b"II*\x00", mime="image/tiff"), V1Member("ąę", b"")]))
    assert desq(capsysbinary, "ls", "old.des")[:2] == (0, "scan-1.tif\t4\nąę\t0\n".encode())
    assert desq(capsysbinary, "cat", "old.des", "scan-1.tif")[:2] == (0, b"II*\x00")
    assert desq(capsysbinary, "verify", "old.des")[0] == 0


def test_verify_names_each_bad_member(in_tmp: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    good = make(in_tmp / "c.des")
    bad = damage(good, b"hello")
    code, out, err = desq(capsysbinary, "verify", str(good), str(bad))
    assert code == 1
    assert f"BAD {bad}: 20251120_1: data checksum does not match".encode() in out and f"ok  {good}".encode() in out
    assert err.splitlines()[-1] == "desq: error: 1 of 2 container(s) failed verification"


def test_cat_never_writes_bytes_that_failed(in_tmp: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    bad = damage(make(in_tmp / "c.des"), b"hello")
    code, out, err = desq(capsysbinary, "cat", str(bad), "20251120_1")
    assert (code, out) == (1, b"") and "checksum" in err


def test_fsck_salvage(in_tmp: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    good = make(in_tmp / "c.des")
    assert desq(capsysbinary, "fsck", str(good))[0] == 0
    bad = damage(good, b"hello")
    code, out, err = desq(capsysbinary, "fsck", str(bad), "--salvage", "fixed.des")
    assert code == 1 and b"salvaged 2 intact members into fixed.des" in out and "salvaged 2 members" in err
    assert desq(capsysbinary, "ls", "fixed.des")[1] == "zażółć.txt\t6\nempty\t0\n".encode()
    code, _, err = desq(capsysbinary, "fsck", str(bad), "--salvage", "fixed.des")
    assert code == 1 and "never overwrites" in err


@pytest.mark.parametrize(
    "args",
    [
        ("ls", "missing.des"),
        ("ls", "junk.des"),
        ("ls", "../outside.des"),
        ("cat", "c.des", "no-such-member"),
        ("cat", "junk.des", "x"),
        ("verify", "junk.des"),
        ("fsck", "junk.des"),
        ("ls", "empty.des"),
    ],
)
def test_bad_input_is_one_line_exit_1(in_tmp: Path, capsysbinary: pytest.CaptureFixture[bytes], args: tuple[str, ...]) -> None:
    make(in_tmp / "c.des")
    (in_tmp / "junk.des").write_bytes(b"\x00" * 200)
    (in_tmp / "empty.des").write_bytes(b"")
    code, out, err = desq(capsysbinary, *args)
    assert code == 1 and err.splitlines()[-1].startswith("desq: error: ")
    assert "Traceback" not in err


def test_usage_errors(in_tmp: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert desq(capsysbinary, "verify")[0] == 2
    assert desq(capsysbinary, "cat", "c.des")[0] == 2
    assert desq(capsysbinary, "ls")[0] == 2


@pytest.mark.integration
def test_commands_read_an_s3_archive(
    in_tmp: Path, capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch, s3_endpoint: str, s3_bucket: str
) -> None:
    import boto3

    local = make(in_tmp / "c.des")
    boto3.client("s3", endpoint_url=s3_endpoint).put_object(Bucket=s3_bucket, Key="arch/20251120/FE.des", Body=local.read_bytes())
    monkeypatch.setenv("DESQ_ARCHIVE_URL", f"s3://{s3_bucket}/arch")
    monkeypatch.setenv("DESQ_ARCHIVE_S3_ENDPOINT_URL", s3_endpoint)
    assert desq(capsysbinary, "ls", "20251120/FE.des")[:2] == (0, "20251120_1\t6\nzażółć.txt\t6\nempty\t0\n".encode())
    assert desq(capsysbinary, "cat", "20251120/FE.des", "20251120_1")[:2] == (0, b"hello\n")
    code, out, _ = desq(capsysbinary, "verify", "--all")
    assert code == 0 and out == b"ok  20251120/FE.des: 3 members\n"
    code, out, _ = desq(capsysbinary, "locate", "20251120_1")
    import json

    assert code == 0 and json.loads(out)["length"] == 6 and json.loads(out)["offset"] > 0
    code, _, err = desq(capsysbinary, "ls", "20251120/00.des")
    assert code == 1 and err.startswith("desq: error: no container at '20251120/00.des'")


def test_s3_without_credentials_is_one_clear_line(in_tmp: Path, capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(in_tmp / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(in_tmp / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("DESQ_ARCHIVE_URL", "s3://archive-bucket/x")
    monkeypatch.setenv("DESQ_ARCHIVE_S3_ENDPOINT_URL", "http://127.0.0.1:1")
    code, _, err = desq(capsysbinary, "ls", "20251120/FE.des")
    assert code == 1 and err.count("\n") == 1 and "no S3 credentials" in err


def test_locate_reports_the_member_once_packed(in_tmp: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    import json

    assert json.loads(desq(capsysbinary, "locate", "20251120_1")[1])["offset"] is None
    make(in_tmp / "desq-data" / "archive" / "20251120" / "FE.des")
    record = json.loads(desq(capsysbinary, "locate", "20251120_1")[1])
    assert record["length"] == 6 and record["offset"] > 16 and record["container"] == "20251120/FE.des"
    assert json.loads(desq(capsysbinary, "locate", "20251120_2")[1])["offset"] is None  # its container is not there
