"""The s3 role with the real clients: boto3, aws-cli, rclone and s3fs, signing with credentials,
against ``desq serve --role s3`` and against gunicorn (two workers, so a continuation token made by
one is read by the other), over one archive; every write refused and the archive unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import requests
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from desq.storage.local import LocalStorage
from archives import pack
from s3_fixtures import ACCESS_KEY, BIN, CREDENTIALS, OTHER_KEY, SECRET_KEY, Server, key_of, s3fs_python, sample_files, snapshot

FILES = sample_files()
KEYS = sorted((key_of(name) for name in FILES), key=lambda k: k.encode())
DAY2 = {key_of(n).split("/", 1)[1]: FILES[n][0] for n in FILES if n.startswith("20251121_")}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("s3-archive") / "archive"
    pack(LocalStorage(folder), FILES)
    return folder


@pytest.fixture(scope="module", params=["serve", "gunicorn"])
def server(request: pytest.FixtureRequest, archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("s3-logs") / f"{request.param}.log"
    running = Server(request.param, {"DESQ_ARCHIVE_URL": str(archive), "DESQ_S3_CREDENTIALS": CREDENTIALS}, log)
    before = snapshot(archive)
    yield running
    running.stop()
    assert snapshot(archive) == before, "the archive changed"
    assert "Traceback" not in log.read_text(errors="replace")


def client(server: Server, key: str = ACCESS_KEY, secret: str = SECRET_KEY, **config: object):  # noqa: ANN201
    return boto3.client(
        "s3", endpoint_url=server.url, aws_access_key_id=key, aws_secret_access_key=secret, region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4", retries={"max_attempts": 1}, **config),
    )


def refused(call) -> tuple[str, int]:  # noqa: ANN001
    with pytest.raises(ClientError) as info:
        call()
    return info.value.response["Error"]["Code"], info.value.response["ResponseMetadata"]["HTTPStatusCode"]


# --- boto3 ----------------------------------------------------------------------------------------


def test_boto3_lists_by_pages(server: Server) -> None:
    s3 = client(server)
    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket="desq", PaginationConfig={"PageSize": 40}))
    assert len(pages) == -(-len(KEYS) // 40)
    assert [o["Key"] for p in pages for o in p.get("Contents", [])] == KEYS
    sizes = {o["Key"]: o["Size"] for p in pages for o in p["Contents"]}
    assert sizes == {key_of(n): len(d) for n, (d, _, _) in FILES.items()}
    v1 = list(s3.get_paginator("list_objects").paginate(Bucket="desq", Prefix="20251120/", PaginationConfig={"PageSize": 100}))
    assert [o["Key"] for p in v1 for o in p["Contents"]] == [k for k in KEYS if k.startswith("20251120/")]
    days = s3.list_objects_v2(Bucket="desq", Delimiter="/")
    assert [p["Prefix"] for p in days["CommonPrefixes"]] == ["20251120/", "20251121/"]
    # botocore asks for encoding-type=url itself and decodes; asked for by the caller, it leaves keys encoded
    assert s3.list_objects_v2(Bucket="desq", Prefix="20251121/20251121_a", EncodingType="url")["Contents"][0]["Key"] == "20251121/20251121_a%20b%2Bc%26d"
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["desq"]
    s3.head_bucket(Bucket="desq")
    assert s3.get_bucket_location(Bucket="desq")["LocationConstraint"] is None


def test_boto3_gets_heads_and_presigns(server: Server) -> None:
    s3 = client(server)
    big, content_type, created = FILES["20251121_big"]
    part = s3.get_object(Bucket="desq", Key="20251121/20251121_big", Range="bytes=1000-1999")
    assert part["Body"].read() == big[1000:2000] and part["ContentRange"] == f"bytes 1000-1999/{len(big)}"
    head = s3.head_object(Bucket="desq", Key="20251121/20251121_big")
    assert (head["ContentLength"], head["ContentType"], head["LastModified"]) == (len(big), content_type, created)
    whole = s3.get_object(Bucket="desq", Key="20251121/20251121_zażółć", IfMatch=s3.head_object(Bucket="desq", Key="20251121/20251121_zażółć")["ETag"])
    assert whole["Body"].read() == "gęś".encode()
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "desq", "Key": "20251121/20251121_a b+c&d"}, ExpiresIn=300)
    for _ in range(2):  # a presigned URL serves until it expires
        answer = requests.get(url, timeout=30)
        assert (answer.status_code, answer.content) == (200, b"odd name")
    assert "X-Amz-Signature" not in server.log_path.read_text(errors="replace")  # no query string is logged
    assert refused(lambda: s3.get_object(Bucket="desq", Key="20251121/nope")) == ("NoSuchKey", 404)
    assert refused(lambda: s3.list_objects_v2(Bucket="other")) == ("NoSuchBucket", 404)


def test_boto3_wrong_credentials_are_refused(server: Server) -> None:
    assert refused(lambda: client(server, secret="not-the-secret-at-all").list_objects_v2(Bucket="desq")) == ("SignatureDoesNotMatch", 403)
    assert refused(lambda: client(server, key="NOSUCHKEYID0001").get_object(Bucket="desq", Key="20251120/20251120_1")) == ("InvalidAccessKeyId", 403)
    assert refused(lambda: client(server, key=OTHER_KEY).list_objects_v2(Bucket="desq")) == ("SignatureDoesNotMatch", 403)
    anonymous = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1", config=Config(signature_version=UNSIGNED, s3={"addressing_style": "path"}))
    assert refused(lambda: anonymous.get_object(Bucket="desq", Key="20251120/20251120_1")) == ("AccessDenied", 403)
    expired = client(server).generate_presigned_url("get_object", Params={"Bucket": "desq", "Key": "20251120/20251120_1"}, ExpiresIn=1)
    time.sleep(2.5)
    answer = requests.get(expired, timeout=30)
    assert answer.status_code == 403 and b"<Code>AccessDenied</Code>" in answer.content and b"file 1" not in answer.content


def test_boto3_writes_are_refused(server: Server) -> None:
    s3 = client(server)
    key = "20251120/20251120_1"
    for call in (
        lambda: s3.put_object(Bucket="desq", Key=key, Body=b"overwritten"),
        lambda: s3.put_object(Bucket="desq", Key="20251122/new", Body=b"x" * 100_000),
        lambda: s3.delete_object(Bucket="desq", Key=key),
        lambda: s3.create_multipart_upload(Bucket="desq", Key="20251122/big"),
        lambda: s3.copy_object(Bucket="desq", Key="20251122/copy", CopySource={"Bucket": "desq", "Key": key}),
        lambda: s3.delete_objects(Bucket="desq", Delete={"Objects": [{"Key": key}]}),
        lambda: s3.create_bucket(Bucket="another"),
        lambda: s3.put_object_acl(Bucket="desq", Key=key, ACL="public-read"),
    ):
        assert refused(call) == ("AccessDenied", 403)
    assert s3.get_object(Bucket="desq", Key=key)["Body"].read() == FILES["20251120_1"][0]


# --- aws-cli, rclone, s3fs ---------------------------------------------------------------------------


def run(argv: list[str], env: dict[str, str], **kw: object) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, **kw)  # type: ignore[call-overload]
    assert done.returncode == 0, (argv[:3], done.stdout[-2000:], done.stderr[-2000:])
    return done.stdout


def aws_env(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "aws-config"
    config.write_text("[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DESQ_"))}
    return base | {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_CONFIG_FILE": str(config),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true",
    }


def test_aws_cli(server: Server, tmp_path: Path) -> None:
    env = aws_env(tmp_path)
    aws = [str(BIN / "aws"), "--endpoint-url", server.url, "s3"]
    assert run(aws + ["ls", "s3://desq/"], env).split() == ["PRE", "20251120/", "PRE", "20251121/"]
    listed = [line.split()[-1] for line in run(aws + ["ls", "--recursive", "s3://desq/20251120/"], env).splitlines()]
    assert listed == [k for k in KEYS if k.startswith("20251120/")]
    run(aws + ["cp", "s3://desq/20251121/20251121_big", str(tmp_path / "big")], env)
    assert (tmp_path / "big").read_bytes() == FILES["20251121_big"][0]
    target = tmp_path / "day"
    run(aws + ["sync", "s3://desq/20251121/", str(target)], env)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == DAY2
    again = run(aws + ["sync", "s3://desq/20251121/", str(target)], env)
    assert "download:" not in again, again


def test_rclone(server: Server, tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DESQ_", "RCLONE_"))}
    env = base | {
        "RCLONE_CONFIG": str(tmp_path / "rclone.conf"), "RCLONE_CONFIG_DESQ_TYPE": "s3", "RCLONE_CONFIG_DESQ_PROVIDER": "Other",
        "RCLONE_CONFIG_DESQ_ENDPOINT": server.url, "RCLONE_CONFIG_DESQ_ACCESS_KEY_ID": ACCESS_KEY,
        "RCLONE_CONFIG_DESQ_SECRET_ACCESS_KEY": SECRET_KEY, "RCLONE_CONFIG_DESQ_FORCE_PATH_STYLE": "true",
        "RCLONE_CONFIG_DESQ_REGION": "us-east-1",
    }
    assert run(["rclone", "lsf", "desq:desq"], env).split() == ["20251120/", "20251121/"]
    assert sorted(run(["rclone", "lsf", "desq:desq/20251121"], env).splitlines()) == sorted(DAY2)
    target = tmp_path / "day"
    run(["rclone", "copy", "desq:desq/20251121", str(target)], env)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == DAY2
    # No MD5 in common (desq's ETags are not MD5s): rclone check compares names and sizes, and
    # --download compares the bytes themselves.
    run(["rclone", "check", "desq:desq/20251121", str(target)], env)
    run(["rclone", "check", "--download", "desq:desq/20251121", str(target)], env)
    (target / "20251121_zażółć").write_bytes("gęsi".encode())
    done = subprocess.run(["rclone", "check", "--download", "desq:desq/20251121", str(target)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1


S3FS_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, sys
    import s3fs
    url, key, secret = sys.argv[1:4]
    fs = s3fs.S3FileSystem(key=key, secret=secret, endpoint_url=url, client_kwargs={"region_name": "us-east-1"}, config_kwargs={"s3": {"addressing_style": "path"}})
    out = {"days": fs.ls("desq"), "day": fs.ls("desq/20251121"), "cat": fs.cat("desq/20251121/20251121_zażółć").decode()}
    with fs.open("desq/20251121/20251121_big", "rb", block_size=65536) as f:
        f.seek(1_000_000); a = f.read(100)
        f.seek(-50, 2); b = f.read()
        f.seek(10); c = f.read(5)
    out["reads"] = [a.hex(), b.hex(), c.hex()]
    out["size"] = fs.info("desq/20251121/20251121_big")["size"]
    print(json.dumps(out))
    """
)


def test_s3fs(server: Server, tmp_path: Path) -> None:
    script = tmp_path / "s3fs_read.py"
    script.write_text(S3FS_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DESQ_"))} | {"AWS_EC2_METADATA_DISABLED": "true"}
    out = json.loads(run([str(s3fs_python()), str(script), server.url, ACCESS_KEY, SECRET_KEY], env))
    big = FILES["20251121_big"][0]
    assert out["days"] == ["desq/20251120", "desq/20251121"]
    assert out["day"] == ["desq/" + k for k in KEYS if k.startswith("20251121/")]
    assert out["cat"] == "gęś" and out["size"] == len(big)
    assert out["reads"] == [big[1_000_000:1_000_100].hex(), big[-50:].hex(), big[10:15].hex()]
