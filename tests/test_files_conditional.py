"""The files API's caching headers, conditional requests and ranges (CONTRACT section 6), through
Flask's test client: RFC 9110's order, what each answer carries, and what it reads from storage."""

from __future__ import annotations

import io
import os
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from archives import pack
from des_v1_writer import V1Member, write_v1
from desq.container import ContainerWriter
from desq.published import publish
from desq.settings import SettingsError, load_settings
from desq.storage.local import LocalStorage
from web import create_app

MiB = 1 << 20
CREATED = datetime(2025, 11, 20, 8, 30, 0, 500_000, tzinfo=timezone.utc)
LAST_MODIFIED = "Thu, 20 Nov 2025 08:30:00 GMT"
BIG = os.urandom(3 * MiB + 11)
FILES = {
    "20251120_1": (b"hello, archive\n", "text/plain", CREATED),
    "20251120_big": (BIG, "application/pdf", CREATED),
    "20251120_7": (b"seven", None, CREATED),
}
V1_NAME, V1_DATA = "20251121_5", b"from a DES v1 container" * 40
ONE = "/files/20251120_1"


class RecordingStorage(LocalStorage):
    """A local archive that remembers the length of every ranged read."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.lengths: list[int] = []

    def read(self, key: str, offset: int, length: int, *, if_match: str | None = None) -> bytes:
        self.lengths.append(length)
        return super().read(key, offset, length, if_match=if_match)


@pytest.fixture
def archive_dir(tmp_path: Path) -> Path:
    storage = LocalStorage(tmp_path / "archive")
    pack(storage, FILES)
    storage.put(load_settings(env={}).layout.locate_name(V1_NAME).container, write_v1([V1Member(V1_NAME, V1_DATA, mime="text/plain")]))
    return tmp_path / "archive"


def client_for(archive_dir: Path, **env: str) -> FlaskClient:
    settings = load_settings(env={"DESQ_ARCHIVE_URL": str(archive_dir)} | env)
    return create_app(settings, storage=RecordingStorage(archive_dir)).test_client()


@pytest.fixture
def client(archive_dir: Path) -> FlaskClient:
    return client_for(archive_dir)


def requests_of(client: FlaskClient) -> int:
    return len(client.application.extensions["desq.files"].archive.storage.requests)


def recorded(client: FlaskClient) -> list[int]:
    return client.application.extensions["desq.files"].archive.storage.inner.lengths


def etag(client: FlaskClient, path: str = ONE) -> str:
    return client.head(path).headers["ETag"]


# --- the bugs of issue 20 -------------------------------------------------------------------------


def test_if_none_match_is_evaluated_before_an_unsatisfiable_range(client: FlaskClient) -> None:
    for rng in ("bytes=100-", "bytes=-0"):
        r = client.get(ONE, headers={"If-None-Match": etag(client), "Range": rng})
        assert r.status_code == 304 and r.data == b"" and "Content-Range" not in r.headers


def test_if_match_that_does_not_match_is_412_not_206(client: FlaskClient) -> None:
    for headers in ({"If-Match": '"other"', "Range": "bytes=0-4"}, {"If-Match": '"other"', "Range": "bytes=100-"}, {"If-Match": '"other"'}, {"If-Match": "W/" + etag(client)}):
        r = client.get(ONE, headers=headers)
        assert r.status_code == 412 and r.is_json and r.json["error"] == "precondition_failed", headers
    r = client.get(ONE, headers={"If-Match": etag(client), "Range": "bytes=0-4"})
    assert (r.status_code, r.data) == (206, b"hello")
    assert client.get(ONE, headers={"If-Match": "*"}).status_code == 200


def test_a_zero_suffix_range_is_416(client: FlaskClient) -> None:
    r = client.get(ONE, headers={"Range": "bytes=-0"})
    assert r.status_code == 416 and r.json["error"] == "bad_range" and r.headers["Content-Range"] == "bytes */15"


def test_the_stored_content_type_is_served_exactly(client: FlaskClient) -> None:
    assert client.get(ONE).headers["Content-Type"] == "text/plain"  # no "; charset=utf-8" added
    assert client.head(ONE).headers["Content-Type"] == "text/plain"
    assert client.get(ONE, headers={"Range": "bytes=0-1"}).headers["Content-Type"] == "text/plain"
    assert client.get("/files/20251120_7").headers["Content-Type"] == "application/octet-stream"
    assert client.get(f"/files/{V1_NAME}").headers["Content-Type"] == "text/plain"


# --- caching headers --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("headers", [{}, {"Range": "bytes=2-5"}, {"If-None-Match": "*"}, {"If-Modified-Since": LAST_MODIFIED}, {"If-Range": LAST_MODIFIED, "Range": "bytes=0-1"}])
def test_every_200_206_and_304_carries_cache_control_and_last_modified(client: FlaskClient, method: str, headers: dict[str, str]) -> None:
    full = client.get(ONE)
    r = client.open(ONE, method=method, headers=headers)
    assert r.status_code in (200, 206, 304)
    assert r.headers["Cache-Control"] == "max-age=86400"
    assert r.headers["Last-Modified"] == LAST_MODIFIED
    assert r.headers["ETag"] == full.headers["ETag"]


def test_a_304_carries_what_the_200_would(client: FlaskClient) -> None:
    full = client.get(ONE)
    for method in ("GET", "HEAD"):
        r = client.open(ONE, method=method, headers={"If-None-Match": full.headers["ETag"]})
        assert r.status_code == 304 and r.data == b""
        assert {h: r.headers[h] for h in ("ETag", "Cache-Control", "Last-Modified")} == {h: full.headers[h] for h in ("ETag", "Cache-Control", "Last-Modified")}


def test_last_modified_answers_if_modified_since_and_if_unmodified_since(client: FlaskClient) -> None:
    assert client.get(ONE, headers={"If-Modified-Since": LAST_MODIFIED}).status_code == 304
    assert client.get(ONE, headers={"If-Modified-Since": "Thu, 20 Nov 2025 08:29:59 GMT"}).status_code == 200
    assert client.get(ONE, headers={"If-Modified-Since": "Thursday, 20-Nov-25 08:30:00 GMT"}).status_code == 304
    assert client.get(ONE, headers={"If-Modified-Since": "Thu Nov 20 08:30:00 2025"}).status_code == 304
    assert client.get(ONE, headers={"If-Modified-Since": "garbage"}).status_code == 200
    assert client.get(ONE, headers={"If-None-Match": '"other"', "If-Modified-Since": LAST_MODIFIED}).status_code == 200
    assert client.get(ONE, headers={"If-Unmodified-Since": "Thu, 20 Nov 2025 08:29:59 GMT"}).status_code == 412
    assert client.get(ONE, headers={"If-Unmodified-Since": LAST_MODIFIED}).data == b"hello, archive\n"


def test_if_range_by_etag_and_by_date(client: FlaskClient) -> None:
    rng = {"Range": "bytes=0-4"}
    assert client.get(ONE, headers=rng | {"If-Range": etag(client)}).data == b"hello"
    assert client.get(ONE, headers=rng | {"If-Range": LAST_MODIFIED}).data == b"hello"
    for other in ('"other"', "W/" + etag(client), "Thu, 20 Nov 2025 08:30:01 GMT", "garbage", ""):
        r = client.get(ONE, headers=rng | {"If-Range": other})
        assert (r.status_code, r.data) == (200, b"hello, archive\n"), other
    assert client.get(ONE, headers={"Range": "bytes=99-", "If-Range": '"other"'}).status_code == 200
    assert client.get(ONE, headers={"Range": "bytes=99-", "If-Range": etag(client)}).status_code == 416


def test_des_v1_members_have_no_last_modified(client: FlaskClient) -> None:
    path = f"/files/{V1_NAME}"
    r = client.get(path)
    assert r.data == V1_DATA and r.headers["Cache-Control"] == "max-age=86400" and "Last-Modified" not in r.headers
    assert client.get(path, headers={"If-Modified-Since": "Fri, 31 Dec 9999 23:59:59 GMT"}).status_code == 200  # no time: ignored
    r = client.get(path, headers={"If-None-Match": r.headers["ETag"]})
    assert r.status_code == 304 and "Last-Modified" not in r.headers and r.headers["Cache-Control"]


def test_tokens_make_it_private(archive_dir: Path) -> None:
    client = client_for(archive_dir, DESQ_WEB_API_TOKENS="tok-0123456789abcdef", DESQ_WEB_CACHE_MAX_AGE="600")
    auth = {"Authorization": "Bearer tok-0123456789abcdef"}
    assert client.get(ONE, headers=auth).headers["Cache-Control"] == "private, max-age=600"
    tag = client.head(ONE, headers=auth).headers["ETag"]
    assert client.get(ONE, headers=auth | {"If-None-Match": tag}).headers["Cache-Control"] == "private, max-age=600"
    assert client.get(ONE, headers={"If-None-Match": tag}).status_code == 401  # the token before any condition


def test_the_max_age_setting(archive_dir: Path) -> None:
    assert client_for(archive_dir, DESQ_WEB_CACHE_MAX_AGE="0").get(ONE).headers["Cache-Control"] == "max-age=0"
    for bad in ("-1", "2147483649", "a day", ""):
        with pytest.raises(SettingsError, match="web.cache_max_age"):
            load_settings(env={"DESQ_WEB_CACHE_MAX_AGE": bad})


# --- nothing of the member is read before the answer is decided -------------------------------


def test_304_412_and_416_read_no_member_bytes(client: FlaskClient) -> None:
    big = "/files/20251120_big"
    tag = etag(client, big)
    client.get(ONE)  # both containers' indexes are cached now
    for headers, status in (
        ({"If-None-Match": tag}, 304), ({"If-Match": '"x"'}, 412), ({"If-Modified-Since": LAST_MODIFIED}, 304),
        ({"If-None-Match": tag, "Range": "bytes=0-"}, 304), ({"If-Match": tag, "Range": f"bytes={len(BIG)}-"}, 416),
    ):
        recorded(client).clear()
        assert client.get(big, headers=headers).status_code == status, headers
        assert sum(recorded(client)) < 64 << 10, (headers, recorded(client))  # the frame's head and tail only
    before = requests_of(client)
    for rng in ("bytes=-0", "bytes=99-"):  # no condition: the cached index's size decides alone
        assert client.get(ONE, headers={"Range": rng}).status_code == 416
    assert requests_of(client) == before


def test_a_conditional_small_read_is_one_request(client: FlaskClient) -> None:
    tag = etag(client)
    before = requests_of(client)
    for headers in ({"If-None-Match": tag}, {"If-Match": '"x"'}, {"If-None-Match": tag, "Range": "bytes=99-"}):
        client.get(ONE, headers=headers)
    assert requests_of(client) - before == 3
    before = requests_of(client)
    client.head(ONE, headers={"If-None-Match": '"x"'})  # HEAD: the metadata read is all it needs
    assert requests_of(client) - before == 1


# --- uid mode -------------------------------------------------------------------------------------


def test_uid_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    env = {"DESQ_MODE": "uid", "DESQ_ARCHIVE_URL": str(tmp_path / "a")}
    where = load_settings(env=env).layout.locate_uid("123456789", "2025-11-20")
    out = io.BytesIO()
    with ContainerWriter(out) as w:
        w.add("123456789", b"uid file", content_type="text/plain", created_at=CREATED)
    storage = LocalStorage(tmp_path / "a")
    storage.put(where.container, out.getvalue())
    publish(storage, date(2025, 11, 20))
    (tmp_path / "live").mkdir()
    (tmp_path / "live" / "999").write_bytes(b"still live")
    local = create_app(load_settings(env=env | {"DESQ_WEB_ORIGINAL_URL": f"file://{tmp_path}/live/{{uid}}"})).test_client()
    path = "/files/123456789?created_at=2025-11-20"
    r = local.get(path)
    assert (r.data, r.headers["Content-Type"], r.headers["Last-Modified"], r.headers["Cache-Control"]) == (b"uid file", "text/plain", LAST_MODIFIED, "max-age=86400")
    assert local.get(path, headers={"If-None-Match": r.headers["ETag"], "Range": "bytes=99-"}).status_code == 304
    assert local.get(path, headers={"If-Match": '"x"', "Range": "bytes=0-1"}).status_code == 412
    live = local.get("/files/999?created_at=2025-11-21")
    assert live.data == b"still live" and live.headers["Cache-Control"] == "no-cache"  # not archived yet: it may change
    assert live.headers["Content-Type"] == "application/octet-stream" and live.headers["Last-Modified"]
    s3 = create_app(load_settings(env=env | {"DESQ_WEB_ORIGINAL_URL": "s3://live-bucket/docs/{uid}", "DESQ_ARCHIVE_S3_ENDPOINT_URL": "http://127.0.0.1:1"})).test_client()
    redirect = s3.get("/files/999?created_at=2025-11-21")
    assert redirect.status_code == 307 and redirect.headers["Cache-Control"] == "no-store"


# --- the s3 role decides with the same core -------------------------------------------------------


def test_the_s3_role_decides_with_the_same_core_and_sends_no_cache_control(archive_dir: Path) -> None:
    client = create_app(load_settings(env={"DESQ_ARCHIVE_URL": str(archive_dir)}), role="s3").test_client()
    path = "/desq/20251120/20251120_1"
    full = client.get(path)
    assert (full.data, full.headers["Content-Type"], full.headers["Last-Modified"]) == (b"hello, archive\n", "text/plain", LAST_MODIFIED)
    assert "Cache-Control" not in full.headers  # as S3 answers for objects stored without one
    not_modified = client.get(path, headers={"If-None-Match": full.headers["ETag"], "Range": "bytes=-0"})
    assert not_modified.status_code == 304 and not_modified.headers["Last-Modified"] == LAST_MODIFIED
    assert client.get(path, headers={"If-Match": "W/" + full.headers["ETag"]}).status_code == 412  # strong comparison
    assert client.get(path, headers={"If-Modified-Since": "Thu Nov 20 08:30:00 2025"}).status_code == 304  # asctime


def _live_site(tmp_path: Path) -> FlaskClient:
    env = {"DESQ_MODE": "uid", "DESQ_ARCHIVE_URL": str(tmp_path / "a"), "DESQ_WEB_ORIGINAL_URL": f"file://{tmp_path}/live/{{uid}}"}
    publish(LocalStorage(tmp_path / "a"), date(2025, 11, 20))
    (tmp_path / "live").mkdir()
    (tmp_path / "live" / "999").write_bytes(b"still live")
    os.utime(tmp_path / "live" / "999", (CREATED.timestamp(), CREATED.timestamp()))
    return create_app(load_settings(env=env)).test_client()


def test_a_live_original_is_decided_in_the_same_order(tmp_path: Path) -> None:
    client = _live_site(tmp_path)
    path = "/files/999?created_at=2025-11-21"
    full = client.get(path)
    assert (full.data, full.headers["Last-Modified"], full.headers["Cache-Control"]) == (b"still live", LAST_MODIFIED, "no-cache")
    tag = full.headers["ETag"]
    for headers, status, body in (
        ({"If-None-Match": tag, "Range": "bytes=99-"}, 304, b""),  # werkzeug's send_file answered 416
        ({"If-Match": '"x"', "Range": "bytes=0-1"}, 412, None),  # ... and 206
        ({"Range": "bytes=-0"}, 416, None),
        ({"Range": "bytes=6-"}, 206, b"live"),
        ({"Range": "bytes=-4", "If-Range": tag}, 206, b"live"),
        ({"Range": "bytes=-4", "If-Range": '"x"'}, 200, b"still live"),
        ({"If-Modified-Since": LAST_MODIFIED}, 304, b""),
    ):
        r = client.get(path, headers=headers)
        assert r.status_code == status, headers
        if body is not None:
            assert r.data == body
        if status == 304:
            assert (r.headers["ETag"], r.headers["Cache-Control"], r.headers["Last-Modified"]) == (tag, "no-cache", LAST_MODIFIED)
    head = client.head(path)
    assert (head.status_code, head.data, head.headers["Content-Length"]) == (200, b"", "10")
    (tmp_path / "live" / "999").write_bytes(b"changed, and longer")
    changed = client.get(path, headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.data == b"changed, and longer" and changed.headers["ETag"] != tag


def test_the_s3_roles_304_and_412_read_no_member_bytes(archive_dir: Path) -> None:
    client = create_app(load_settings(env={"DESQ_ARCHIVE_URL": str(archive_dir)}), storage=RecordingStorage(archive_dir), role="s3").test_client()
    path = "/desq/20251120/20251120_big"
    tag = client.head(path).headers["ETag"]
    for headers, status in (({"If-None-Match": tag}, 304), ({"If-Match": '"x"'}, 412), ({"If-Modified-Since": LAST_MODIFIED}, 304)):
        recorded(client).clear()
        assert client.get(path, headers=headers).status_code == status
        assert sum(recorded(client)) < 64 << 10, (headers, recorded(client))
