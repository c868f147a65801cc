"""The files API (CONTRACT section 6) through Flask's test client: every answer and error."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from desq.container import ContainerWriter
from desq.published import publish
from desq.layout import Layout
from desq.settings import load_settings
from desq.storage.local import LocalStorage
from web import create_app

MiB = 1 << 20
FILES = {
    "20251120_1": (b"hello, archive\n", "text/plain"),
    "20251120_42": (b"", None),
    "20251120_big": (os.urandom(3 * MiB + 11), "application/pdf"),
    "20251120_zażółć": ("gęś".encode(), "text/plain; charset=utf-8"),
}


def build_archive(root: Path, files: dict[str, tuple[bytes, str | None]], layout: Layout) -> dict[str, str]:
    """Containers holding ``files`` where the layout puts them; returns name -> container key."""
    by_key: dict[str, list[str]] = {}
    for name in files:
        by_key.setdefault(layout.locate_name(name).container if layout.mode == "name" else "", []).append(name)
    storage = LocalStorage(root)
    for key, names in by_key.items():
        out = io.BytesIO()
        with ContainerWriter(out) as w:
            for name in names:
                data, kind = files[name]
                w.add(name, data, content_type=kind)
        storage.put(key, out.getvalue())
    return {n: k for k, ns in by_key.items() for n in ns}


@pytest.fixture
def archive_dir(tmp_path: Path) -> Path:
    build_archive(tmp_path / "archive", FILES, load_settings(env={}).layout)
    return tmp_path / "archive"


def client_for(archive_dir: Path, **env: str) -> FlaskClient:
    return create_app(load_settings(env={"DESQ_ARCHIVE_URL": str(archive_dir)} | env)).test_client()


@pytest.fixture
def client(archive_dir: Path) -> FlaskClient:
    return client_for(archive_dir)


def storage_requests(client: FlaskClient) -> int:
    return len(client.application.extensions["desq.files"].archive.storage.requests)


def test_a_whole_file(client: FlaskClient) -> None:
    r = client.get("/files/20251120_1")
    assert r.status_code == 200 and r.data == b"hello, archive\n"
    assert r.headers["Content-Type"].startswith("text/plain") and r.headers["Content-Length"] == "15"
    assert r.headers["Accept-Ranges"] == "bytes" and r.headers["ETag"].startswith('"') and not r.headers["ETag"].startswith("W/")
    big = client.get("/files/20251120_big")
    assert big.data == FILES["20251120_big"][0] and big.headers["Content-Type"] == "application/pdf"
    empty = client.get("/files/20251120_42")
    assert (empty.status_code, empty.data, empty.headers["Content-Type"]) == (200, b"", "application/octet-stream")
    assert client.get("/files/20251120_zażółć").data == "gęś".encode()


@pytest.mark.parametrize(
    ("header", "start", "stop"),
    [("bytes=0-4", 0, 5), ("bytes=7-", 7, 15), ("bytes=-6", 9, 15), ("bytes=3-100", 3, 15), ("bytes=14-14", 14, 15)],
)
def test_ranges(client: FlaskClient, header: str, start: int, stop: int) -> None:
    r = client.get("/files/20251120_1", headers={"Range": header})
    assert r.status_code == 206 and r.data == b"hello, archive\n"[start:stop]
    assert r.headers["Content-Range"] == f"bytes {start}-{stop - 1}/15" and r.headers["Content-Length"] == str(stop - start)


def test_ranges_of_a_big_file(client: FlaskClient) -> None:
    blob = FILES["20251120_big"][0]
    for header, part in (("bytes=1048570-2097160", blob[1048570:2097161]), ("bytes=-100", blob[-100:]), (f"bytes={3 * MiB}-", blob[3 * MiB :])):
        assert client.get("/files/20251120_big", headers={"Range": header}).data == part


def test_unsatisfiable_and_multiple_ranges(client: FlaskClient) -> None:
    r = client.get("/files/20251120_1", headers={"Range": "bytes=15-20"})
    assert r.status_code == 416 and r.json["error"] == "bad_range" and r.headers["Content-Range"] == "bytes */15"
    multi = client.get("/files/20251120_1", headers={"Range": "bytes=0-1,4-5"})
    assert multi.status_code == 200 and multi.data == b"hello, archive\n"  # RFC 9110: a server may ignore Range
    junk = client.get("/files/20251120_1", headers={"Range": "lines=1-2"})
    assert junk.status_code == 200 and junk.data == b"hello, archive\n"


def test_conditional_and_head(client: FlaskClient) -> None:
    etag = client.get("/files/20251120_1").headers["ETag"]
    r = client.get("/files/20251120_1", headers={"If-None-Match": etag})
    assert r.status_code == 304 and r.data == b"" and r.headers["ETag"] == etag
    assert client.get("/files/20251120_1", headers={"If-None-Match": '"other"'}).status_code == 200
    head = client.head("/files/20251120_big")
    assert head.status_code == 200 and head.data == b"" and head.headers["Content-Length"] == str(3 * MiB + 11)


def test_meta(client: FlaskClient) -> None:
    meta = client.get("/meta/20251120_1").json
    assert list(meta) == ["name", "size", "content_type", "etag", "container", "shard", "offset"]
    assert (meta["name"], meta["size"], meta["container"], meta["shard"]) == ("20251120_1", 15, "20251120/FE.des", "FE")
    assert meta["etag"] == client.get("/files/20251120_1").headers["ETag"] and meta["offset"] > 16


def test_not_found(client: FlaskClient) -> None:
    for path in ("/files/20251120_2", "/files/20240101_1", "/meta/20251120_2"):
        r = client.get(path)
        assert r.status_code == 404 and r.json["error"] == "not_found"


@pytest.mark.parametrize(
    "path",
    [
        "/files/../../etc/passwd", "/files/%2e%2e/%2e%2e/etc/passwd", "/files/..%2fetc", "/files/20251120_1%00",
        "/files/20251120_%ff%fe", "/files/" + "a" * 10_000, "/files/20251340_1", "/files/20251120_", "/files/x",
        "/files/20251120_1/..", "/files/20251120_a%5cb", "/meta/..%2f..%2fx", "/files/%20", "/files/20251120_%0a",
    ],
)
def test_hostile_names_are_4xx_and_read_nothing(client: FlaskClient, path: str) -> None:
    r = client.get(path)
    assert 400 <= r.status_code < 500 and r.is_json and r.json["error"] in ("bad_request", "not_found")
    assert storage_requests(client) == 0


def test_a_corrupted_member_sends_none_of_its_bytes(archive_dir: Path) -> None:
    key = archive_dir / "20251120" / "FE.des"
    data = bytearray(key.read_bytes())
    data[data.index(b"hello, archive")] ^= 0x01
    key.write_bytes(bytes(data))
    r = client_for(archive_dir).get("/files/20251120_1")
    assert r.status_code == 500 and r.json["error"] == "integrity_error" and b"ello, archive" not in r.data


def test_a_warm_read_is_one_storage_request(client: FlaskClient) -> None:
    client.get("/files/20251120_1")
    before = storage_requests(client)
    for header in ({}, {"Range": "bytes=2-5"}):
        client.get("/files/20251120_1", headers=header)
    client.head("/files/20251120_1")
    assert storage_requests(client) - before == 3
    metrics = client.get("/metrics").data.decode()
    assert 'desq_index_cache_total{result="hit"}' in metrics and "desq_storage_requests_total" in metrics


def test_tokens(archive_dir: Path) -> None:
    token = "tok-0123456789abcdef"
    client = client_for(archive_dir, DESQ_WEB_API_TOKENS=f"other-token-xxxxxxx,{token}")
    for headers in ({}, {"Authorization": "Bearer wrong-token-0000000"}, {"Authorization": token}, {"Authorization": f"Basic {token}"}):
        r = client.get("/files/20251120_1", headers=headers)
        assert r.status_code == 401 and r.json["error"] == "unauthorized" and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/files/20251120_1", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get("/meta/20251120_1").status_code == 401
    assert client.get("/healthz").status_code == client.get("/metrics").status_code == client.get("/readyz").status_code == 200


def test_uid_mode_and_the_cutoff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    env = {"DESQ_MODE": "uid", "DESQ_ARCHIVE_URL": str(tmp_path / "a")}
    layout = load_settings(env=env).layout
    where = layout.locate_uid("123456789", "2025-11-20")
    out = io.BytesIO()
    with ContainerWriter(out) as w:
        w.add("123456789", b"uid file")
    storage = LocalStorage(tmp_path / "a")
    storage.put(where.container, out.getvalue())
    client = create_app(load_settings(env=env)).test_client()
    assert client.get("/files/123456789").status_code == 400  # created_at is required
    assert client.get("/files/123456789?created_at=someday").status_code == 400
    assert client.get("/files/abc?created_at=2025-11-20").status_code == 400  # int uids only
    r = client.get("/files/123456789?created_at=2025-11-20")
    assert r.status_code == 404 and r.json["error"] == "not_archived"  # no cutoff published yet
    publish(storage, __import__("datetime").date(2025, 11, 20))
    client = create_app(load_settings(env=env)).test_client()
    assert client.get("/files/123456789?created_at=2025-11-20T10:00:00Z").data == b"uid file"
    assert client.get("/files/999?created_at=2025-11-21").json["error"] == "not_archived"
    live = create_app(load_settings(env=env | {"DESQ_WEB_ORIGINAL_URL": "https://live.example/files/{uid}?day={date}"})).test_client()
    r = live.get("/files/999?created_at=2025-11-21")
    assert r.status_code == 307 and r.headers["Location"] == "https://live.example/files/999?day=20251121"
    s3 = create_app(load_settings(env=env | {"DESQ_WEB_ORIGINAL_URL": "s3://live-bucket/docs/{uid}", "DESQ_ARCHIVE_S3_ENDPOINT_URL": "http://127.0.0.1:1"})).test_client()
    location = s3.get("/files/999?created_at=2025-11-21").headers["Location"]
    assert location.startswith("http://127.0.0.1:1/live-bucket/docs/999?") and "Signature" in location
    (tmp_path / "live").mkdir()
    (tmp_path / "live" / "999").write_bytes(b"still live")
    local = create_app(load_settings(env=env | {"DESQ_WEB_ORIGINAL_URL": f"file://{tmp_path}/live/{{uid}}"})).test_client()
    assert local.get("/files/999?created_at=2025-11-21").data == b"still live"
    assert local.get("/files/999?created_at=2025-11-21", headers={"Range": "bytes=6-"}).data == b"live"
    assert local.get("/files/998?created_at=2025-11-21").status_code == 404


def test_storage_down_is_503(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    client = create_app(load_settings(env={"DESQ_ARCHIVE_URL": "s3://abc/x", "DESQ_ARCHIVE_S3_ENDPOINT_URL": "http://127.0.0.1:1"}), storage=None).test_client()
    r = client.get("/files/20251120_1")
    assert r.status_code == 503 and r.json["error"] == "unavailable"
    assert client.get("/readyz").status_code == 503 and client.get("/healthz").status_code == 200


def test_openapi_lists_the_surface(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").json
    assert {"/files/{name}", "/meta/{name}", "/healthz", "/readyz", "/metrics"} <= set(spec["paths"])
    assert json.dumps(spec)


def test_the_day_of_a_created_at_in_a_url_and_the_archive_metrics(tmp_path: Path) -> None:
    from datetime import date, datetime, timedelta

    from desq.published import AdvanceReport

    env = {"DESQ_MODE": "uid", "DESQ_ARCHIVE_URL": str(tmp_path / "a"), "DESQ_TIMEZONE": "Europe/Warsaw"}
    layout = load_settings(env=env).layout
    storage = LocalStorage(tmp_path / "a")
    for day in ("2025-11-20", "2025-11-21"):
        out = io.BytesIO()
        with ContainerWriter(out) as w:
            w.add("7", f"created {day}".encode())
        storage.put(layout.locate_uid("7", day).container, out.getvalue())
    target = datetime.now(layout.zone).date() - timedelta(days=8)
    report = AdvanceReport(before=None, after=date(2025, 11, 20), target=target, blocked_day=date(2025, 11, 21), missing=3)
    publish(storage, date(2025, 11, 20), report)
    storage.put("_desq/night.json", json.dumps({"today": "2025-11-28", "rewritten": 2, "files": 40, "unplaced": 1, "failed_rows": 3, "by_status": {"packed": 5, "failed": 1, "unreported": 2}}).encode())
    client = create_app(load_settings(env=env)).test_client()
    assert client.get("/files/7?created_at=2025-11-20T22:59:59.999999Z").data == b"created 2025-11-20"  # 23:59:59.999999 in Warsaw
    assert client.get("/files/7?created_at=2025-11-20T23:00:00Z").json["error"] == "not_archived"  # midnight in Warsaw: the 21st
    assert client.get("/files/7?created_at=2025-11-21 00:00:00").json["error"] == "not_archived"
    assert client.get("/files/7?created_at=2025-11-21T00:30:00%2B01:00").json["error"] == "not_archived"  # Warsaw's own offset
    assert client.get("/files/7?created_at=2025-11-21T00:30:00%2B03:00").data == b"created 2025-11-20"  # 22:30 in Warsaw
    assert client.get("/files/7?created_at=2025-11-21T00:30:00+03:00").data == b"created 2025-11-20"  # an unescaped '+' arrives as a space
    assert client.get("/files/7?created_at=2025-11-20T24:00:00").json["error"] == "not_archived"
    assert client.get("/files/7?created_at=9999-12-31T23:59:59-12:00").status_code == 400
    metrics = client.get("/metrics").data.decode()
    assert f"desq_cutoff_lag_days {float((target - date(2025, 11, 20)).days)}" in metrics
    assert "desq_cutoff_blocked 1.0" in metrics and "desq_night_rewritten_containers 2.0" in metrics
    assert "desq_night_unplaced_rows 1.0" in metrics and "desq_night_files 40.0" in metrics
    assert "desq_night_failed_rows 3.0" in metrics and "desq_night_failed_tasks 3.0" in metrics


def test_one_s3_client_per_app_presigns_every_original(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import web.files

    for name, value in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    built: list[str] = []
    real = web.files.s3_client
    monkeypatch.setattr(web.files, "s3_client", lambda endpoint_url: built.append(endpoint_url) or real(endpoint_url))
    env = {"DESQ_MODE": "uid", "DESQ_ARCHIVE_URL": str(tmp_path / "a"), "DESQ_WEB_ORIGINAL_URL": "s3://live-bucket/docs/{uid}", "DESQ_ARCHIVE_S3_ENDPOINT_URL": "http://127.0.0.1:1"}
    publish(LocalStorage(tmp_path / "a"), __import__("datetime").date(2025, 11, 20))
    app = create_app(load_settings(env=env))
    assert built == []  # built on the first presign, not with the app
    locations: list[str] = []

    def ask(uid: int) -> None:
        locations.append(app.test_client().get(f"/files/{uid}?created_at=2025-11-21").headers["Location"])

    threads = [threading.Thread(target=ask, args=(uid,)) for uid in range(990, 998)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ask(999)
    assert built == ["http://127.0.0.1:1"]
    assert sorted(location.split("?")[0] for location in locations) == [f"http://127.0.0.1:1/live-bucket/docs/{uid}" for uid in [*range(990, 998), 999]]
    assert all("Signature" in location for location in locations)


# --- {path}: the row's path column addresses the live file ------------------------------------------


def _path_site(tmp_path: Path, template: str) -> FlaskClient:
    import sqlalchemy as sa

    db = tmp_path / "source.db"
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE files (id INTEGER PRIMARY KEY, created_at DATETIME, path TEXT)"))
        conn.execute(sa.text("INSERT INTO files VALUES (:id, :created, :path)"), [
            {"id": 7, "created": "2025-11-21 10:00:00", "path": "scans/2025/a b#7.pdf"},
            {"id": 8, "created": "2025-11-21 11:00:00", "path": "/scans/../../secret"},
            {"id": 9, "created": "2025-11-21 12:00:00", "path": "link/secret"},
            {"id": 10, "created": "2025-11-21 12:00:00", "path": ""},
        ])
    engine.dispose()
    env = {"DESQ_MODE": "uid", "DESQ_ARCHIVE_URL": str(tmp_path / "a"), "DESQ_SOURCE_DB_URL": f"sqlite:///{db}", "DESQ_WEB_ORIGINAL_URL": template}
    publish(LocalStorage(tmp_path / "a"), __import__("datetime").date(2025, 11, 20))
    return create_app(load_settings(env=env)).test_client()


def test_path_in_original_url_reads_the_rows_path(tmp_path: Path) -> None:
    client = _path_site(tmp_path, "https://live.example/store/{path}?uid={uid}")
    r = client.get("/files/7?created_at=2025-11-21")
    assert r.status_code == 307 and r.headers["Location"] == "https://live.example/store/scans/2025/a%20b%237.pdf?uid=7"
    assert client.get("/files/7?created_at=2025-11-22").json["error"] == "not_found"  # not the row's day
    assert client.get("/files/70?created_at=2025-11-21").json["error"] == "not_found"
    r = client.get("/files/8?created_at=2025-11-21")
    assert r.status_code == 404 and "leaves the original location" in r.json["message"]
    assert "cannot name an original" in client.get("/files/10?created_at=2025-11-21").json["message"]


def test_path_in_a_file_original_url_never_reads_outside_its_folder(tmp_path: Path) -> None:
    live = tmp_path / "live"
    (live / "scans" / "2025").mkdir(parents=True)
    (live / "scans" / "2025" / "a b#7.pdf").write_bytes(b"live scan")
    (tmp_path / "secret").write_bytes(b"OUTSIDE-SECRET")
    (live / "link").symlink_to(tmp_path)
    client = _path_site(tmp_path, f"file://{live}/{{path}}")
    assert client.get("/files/7?created_at=2025-11-21").data == b"live scan"
    for uid in (8, 9):
        r = client.get(f"/files/{uid}?created_at=2025-11-21")
        assert r.status_code == 404 and b"OUTSIDE" not in r.data


def test_path_lookup_with_the_source_database_down_is_503(tmp_path: Path) -> None:
    env = {"DESQ_MODE": "uid", "DESQ_ARCHIVE_URL": str(tmp_path / "a"), "DESQ_WEB_ORIGINAL_URL": "s3://live/{path}",
           "DESQ_SOURCE_DB_URL": "postgresql+psycopg2://desq:pw@127.0.0.1:1/nothing"}
    publish(LocalStorage(tmp_path / "a"), __import__("datetime").date(2025, 11, 20))
    client = create_app(load_settings(env=env)).test_client()
    r = client.get("/files/7?created_at=2025-11-21")
    assert r.status_code == 503 and r.json["error"] == "unavailable" and "pw" not in r.json["message"]
    assert client.get("/healthz").status_code == 200


def test_bytes_served_counts_what_gets_sent(client: FlaskClient) -> None:
    from prometheus_client import REGISTRY

    def served() -> float:
        return REGISTRY.get_sample_value("desq_bytes_served_total") or 0.0

    before = served()
    assert client.get("/files/20251120_1").data == b"hello, archive\n"  # one block, handed over whole
    assert client.get("/files/20251120_1", headers={"Range": "bytes=7-"}).data == b"archive\n"
    assert client.get("/files/20251120_big").data == FILES["20251120_big"][0]  # streamed block by block
    assert client.head("/files/20251120_big").status_code == 200
    etag = client.get("/files/20251120_42").headers["ETag"]
    assert client.get("/files/20251120_42", headers={"If-None-Match": etag}).status_code == 304
    assert served() - before == 15 + 8 + len(FILES["20251120_big"][0])
