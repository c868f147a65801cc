"""Security (issue 11): bearer tokens, Flower's basic auth, passwords in logs, bound SQL only,
names that cannot leave the archive, and containers from storage that are never trusted.

The log scanner itself is tests/log_secrets.py (a plugin of the whole suite); here it is proven to
find what it must and nothing else.
"""

from __future__ import annotations

import ast
import hmac
import io
import os
import re
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from crc32c import crc32c
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.serving import make_server

from desq.archive import Archive
from desq.cli import run
from desq.container import ContainerError, ContainerReader, ContainerWriter, CorruptContainer
from desq.container import format as fmt
from desq.container.source import BytesSource, FileSource
from desq.published import publish
from desq.layout import LayoutError, Layout, build_name, check_prefix, container_key, yyyymmdd
from desq.settings import SettingsError, load_settings
from desq.source.marker import mark
from desq.source.plan import mark_packed, name_rows_for, plan_names, plan_uids, uid_rows_for
from desq.source.table import SourceError, SourceTable, create_engine
from desq.storage import InvalidKey, NotFound, StorageError, check_key
from desq.storage.local import LocalStorage
from archives import pack
from log_secrets import API_TOKENS, SECRETS, masked, needles, scan_file, scan_text, scan_tree
from test_deploy import procfile

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DB_PASSWORD = SECRETS["TEST_DB_PASSWORD"]
TOKENS = API_TOKENS[2:5]  # this file's own (registered in log_secrets.API_TOKENS)
NAME = "20251120_1"
BODY = b"hello, archive\n"


def archive_with(root: Path, files: dict[str, bytes]) -> Path:
    """Containers holding ``files`` (name mode, 8 bits) where the layout puts them."""
    pack(LocalStorage(root), {name: (data, None, None) for name, data in files.items()})
    return root


def files_app(archive: Path, **env: str) -> Any:
    from web import create_app

    return create_app(load_settings(env={"DESQ_ARCHIVE_URL": str(archive)} | env))


def storage_requests(client: FlaskClient) -> int:
    return len(client.application.extensions["desq.files"].archive.storage.requests)


# --- 1. bearer tokens ----------------------------------------------------------------------------

REFUSED = {
    "missing": None,
    "empty": "",
    "scheme only": "Bearer",
    "scheme and a space": "Bearer ",
    "wrong token": "Bearer wrong-token-00000000000",
    "no scheme": TOKENS[0],
    "basic scheme": f"Basic {TOKENS[0]}",
    "token scheme": f"Token {TOKENS[0]}",
    "scheme glued to the token": f"Bearer{TOKENS[0]}",
    "token with one more character": f"Bearer {TOKENS[0]}x",
    "token less its last character": f"Bearer {TOKENS[0][:-1]}",
    "a prefix of the token": f"Bearer {TOKENS[1][:8]}",
    "two tokens": f"Bearer {TOKENS[0]},{TOKENS[1]}",
    "two tokens, space": f"Bearer {TOKENS[0]} {TOKENS[1]}",
    "token in upper case": f"Bearer {TOKENS[0].upper()}",
    "non-ASCII latin-1": "Bearer tøken-0123456789abcdef",
    "non-ASCII beyond latin-1": "Bearer żółć-token-😀-0123456789",
    "token plus non-ASCII": f"Bearer {TOKENS[0]}ś",
    "huge": "Bearer " + "A" * 100_000,
    "huge made of the token": "Bearer " + TOKENS[0] * 5000,
}
ACCEPTED = {
    "first token": f"Bearer {TOKENS[0]}",
    "second token": f"Bearer {TOKENS[1]}",
    "last token": f"Bearer {TOKENS[2]}",
    "scheme in lower case": f"bearer {TOKENS[0]}",
    "scheme in upper case": f"BEARER {TOKENS[1]}",
    "several spaces after the scheme": f"Bearer   {TOKENS[2]}",
    "spaces around": f"  Bearer {TOKENS[0]}  ",
}


@pytest.fixture
def token_client(tmp_path: Path) -> FlaskClient:
    archive = archive_with(tmp_path / "archive", {NAME: BODY})
    return files_app(archive, DESQ_WEB_API_TOKENS=",".join(TOKENS)).test_client()


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_request_without_a_configured_token_is_401_and_reads_nothing(token_client: FlaskClient, case: str) -> None:
    header = REFUSED[case]
    headers = {} if header is None else {"Authorization": header}
    for method, path in (("GET", f"/files/{NAME}"), ("HEAD", f"/files/{NAME}"), ("GET", f"/meta/{NAME}")):
        answer = token_client.open(path, method=method, headers=headers)
        assert answer.status_code == 401, (case, method, path)
        assert answer.headers["WWW-Authenticate"] == 'Bearer realm="desq"'
        if method == "GET":
            assert answer.json["error"] == "unauthorized" and BODY not in answer.data
            assert not any(token.encode() in answer.data for token in TOKENS)
    assert storage_requests(token_client) == 0


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_each_configured_token_is_accepted(token_client: FlaskClient, case: str) -> None:
    answer = token_client.get(f"/files/{NAME}", headers={"Authorization": ACCEPTED[case]})
    assert answer.status_code == 200 and answer.data == BODY
    assert token_client.get(f"/meta/{NAME}", headers={"Authorization": ACCEPTED[case]}).json["size"] == len(BODY)


def test_every_configured_token_is_compared_whichever_matches(token_client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    real = hmac.compare_digest
    compared: list[tuple[bytes, bytes]] = []

    def spy(given: bytes, expected: bytes) -> bool:
        compared.append((given, expected))
        return real(given, expected)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    configured = [token.encode() for token in TOKENS]
    for header, status in ((f"Bearer {TOKENS[0]}", 200), (f"Bearer {TOKENS[2]}", 200), ("Bearer wrong-token-00000000000", 401), (None, 401)):
        compared.clear()
        answer = token_client.get(f"/files/{NAME}", headers={"Authorization": header} if header else {})
        assert answer.status_code == status
        assert [expected for _, expected in compared] == configured  # all of them, in order, every time
        assert all(isinstance(given, bytes) for given, _ in compared)


def test_without_configured_tokens_no_header_is_needed(tmp_path: Path) -> None:
    client = files_app(archive_with(tmp_path / "archive", {NAME: BODY})).test_client()
    assert client.get(f"/files/{NAME}").data == BODY
    assert client.get(f"/files/{NAME}", headers={"Authorization": "Bearer anything-at-all-0000"}).data == BODY


class Served:
    """A WSGI app on a real HTTP port (werkzeug's threaded server), noting what reached it."""

    def __init__(self, app: Any) -> None:
        self.seen: list[tuple[str, str | None]] = []

        def noting(environ: dict[str, Any], start_response: Any) -> Any:
            header = environ.get("HTTP_AUTHORIZATION")
            self.seen.append((environ["PATH_INFO"], None if header is None else masked(header)))
            return app(environ, start_response)

        self.server = make_server("127.0.0.1", 0, noting, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="backend", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)


@pytest.fixture
def router_with(tmp_path: Path) -> Iterator[Callable[[dict[str, str], dict[str, str]], tuple[FlaskClient, Served]]]:
    """router_with(backend env, router env): a files API served over HTTP and a router in front."""
    archive = archive_with(tmp_path / "archive", {NAME: BODY})
    made: list[tuple[Any, Served]] = []

    def make(backend_env: dict[str, str], router_env: dict[str, str]) -> tuple[FlaskClient, Served]:
        from web import create_app

        backend = Served(files_app(archive, **backend_env))
        router = create_app(load_settings(env={"DESQ_WEB_BACKENDS": backend.url} | router_env), role="router")
        made.append((router, backend))
        return router.test_client(), backend

    yield make
    for router, backend in made:
        router.extensions["desq.backends"].close()
        backend.close()


def test_the_router_forwards_authorization_to_a_backend_that_checks_it(router_with: Any) -> None:
    client, backend = router_with({"DESQ_WEB_API_TOKENS": ",".join(TOKENS)}, {})
    refused = client.get(f"/files/{NAME}")
    assert refused.status_code == 401 and refused.json["error"] == "unauthorized" and refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get(f"/files/{NAME}", headers={"Authorization": f"Bearer {TOKENS[1]}"}).data == BODY
    assert client.get(f"/meta/{NAME}", headers={"Authorization": f"Bearer {TOKENS[2]}"}).json["size"] == len(BODY)
    assert client.get(f"/files/{NAME}", headers={"Authorization": "Bearer " + "B" * 60_000}).status_code == 401
    assert backend.seen[:3] == [(f"/files/{NAME}", None), (f"/files/{NAME}", "Bearer <API_TOKEN_4>"), (f"/meta/{NAME}", "Bearer <API_TOKEN_5>")]


def test_a_router_with_tokens_refuses_before_asking_any_backend(router_with: Any) -> None:
    client, backend = router_with({}, {"DESQ_WEB_API_TOKENS": ",".join(TOKENS)})
    for case in ("missing", "wrong token", "no scheme", "basic scheme", "huge", "non-ASCII beyond latin-1"):
        header = REFUSED[case]
        for path in (f"/files/{NAME}", f"/meta/{NAME}", "/files/../../etc/passwd"):
            answer = client.get(path, headers={} if header is None else {"Authorization": header})
            assert answer.status_code == 401 and answer.json["error"] == "unauthorized", (case, path)
        assert client.head(f"/files/{NAME}", headers={} if header is None else {"Authorization": header}).status_code == 401
    assert backend.seen == []
    answer = client.get(f"/files/{NAME}", headers={"Authorization": f"bearer  {TOKENS[0]}"})
    assert answer.status_code == 200 and answer.data == BODY
    assert backend.seen == [(f"/files/{NAME}", "bearer  <API_TOKEN_3>")]  # forwarded as it came


def test_health_readiness_metrics_and_routing_need_no_token(router_with: Any, tmp_path: Path) -> None:
    client, _ = router_with({"DESQ_WEB_API_TOKENS": ",".join(TOKENS)}, {"DESQ_WEB_API_TOKENS": ",".join(TOKENS)})
    for path in ("/healthz", "/readyz", "/metrics", "/routing"):
        assert client.get(path).status_code == 200, path
    files = files_app(archive_with(tmp_path / "other", {NAME: BODY}), DESQ_WEB_API_TOKENS=",".join(TOKENS)).test_client()
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert files.get(path).status_code == 200, path


# --- 2. Flower only behind basic auth --------------------------------------------------------------


def fake_celery(folder: Path) -> Path:
    """A ``celery`` that only notes its arguments, then Flower's credentials from its environment:
    whether the Procfile line would start Flower, and how."""
    folder.mkdir()
    script = folder / "celery"
    script.write_text('#!/bin/sh\nprintf "%s\\n" "$@" "env:$FLOWER_BASIC_AUTH" > "$(dirname "$0")/started"\n')
    script.chmod(0o755)
    return folder / "started"


@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_the_flower_line_refuses_to_start_without_basic_auth(tmp_path: Path, value: str | None) -> None:
    started = fake_celery(tmp_path / "bin")
    env = {k: v for k, v in os.environ.items() if k != "FLOWER_BASIC_AUTH"} | {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    if value is not None:
        env["FLOWER_BASIC_AUTH"] = value
    result = subprocess.run(["sh", "-c", procfile()["flower"]], env=env, cwd=ROOT, capture_output=True, text=True, timeout=10)
    assert result.returncode != 0 and "FLOWER_BASIC_AUTH" in result.stderr and "user:password" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not started.exists()  # celery (so Flower) was never run


def test_the_flower_line_passes_the_credentials_to_flower_out_of_sight(tmp_path: Path) -> None:
    """Through the environment (Flower reads FLOWER_* options there), not argv, which ``ps`` shows everyone."""
    started = fake_celery(tmp_path / "bin")
    env = os.environ | {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "FLOWER_BASIC_AUTH": "ops:not-a-real-pw-1"}
    result = subprocess.run(["sh", "-c", procfile()["flower"]], env=env, cwd=ROOT, capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    assert started.read_text().splitlines() == ["-A", "tasks", "flower", "--port=5555", "env:ops:not-a-real-pw-1"]


# --- 3. passwords never logged --------------------------------------------------------------------

PLANTED = "planted-secret-5e1f9c"  # known only to the inner runs below, never to this session's scanner


def test_the_scanner_finds_each_form_and_place(tmp_path: Path) -> None:
    wanted = needles({"PLANTED": PLANTED})
    text = f"one\ntwo postgresql://u:{PLANTED}@h/db\nthree\nfour {PLANTED.replace('-', '%2D')}\n"
    found = scan_text(text, "the place", wanted)
    assert [(f.place, f.line, f.label) for f in found] == [("the place", 2, "PLANTED")]
    assert found[0].text == "two postgresql://u:<PLANTED>@h/db" and PLANTED not in str(found[0])
    encoded = scan_text("x\nredis://:" + "planted%2Dsecret%2D5e1f9c@h\n", "enc", needles({"E": "planted-secret/5e1f9c"}) | wanted)
    assert encoded == []  # a different secret's encoding is not this one
    assert [f.line for f in scan_text("a\nb ://:planted-secret%2F5e1f9c@\n", "enc", needles({"E": "planted-secret/5e1f9c"}))] == [2]

    logs = tmp_path / "logs"
    (logs / "deep").mkdir(parents=True)
    (logs / "deep" / "worker.log").write_text(f"start\n\nfailed: {PLANTED}\n")
    (logs / "gunicorn.out").write_bytes(b"\xff\xfe not utf-8\n" + PLANTED.encode() + b"\n")
    (logs / "desq.toml").write_text(f'db_url = "postgresql://u:{PLANTED}@h/db"\n')  # an input, not a log
    (logs / "container.des").write_bytes(b"DESQHDR2\0\0" + PLANTED.encode())  # binary
    (logs / "link.log").symlink_to(logs / "deep" / "worker.log")  # not followed
    (logs / "empty.log").write_bytes(b"")
    found = scan_tree(logs, wanted)
    assert sorted((Path(f.place).name, f.line) for f in found) == [("gunicorn.out", 2), ("worker.log", 3)]
    assert all(PLANTED not in str(f) for f in found)
    assert scan_file(logs / "deep" / "worker.log", needles({"OTHER": "another-secret"})) == []
    assert masked(f"postgresql://desq:{DB_PASSWORD}@h/db {TOKENS[0]}") == "postgresql://desq:<TEST_DB_PASSWORD>@h/db <API_TOKEN_3>"


INNER = f'''
import pytest

def test_prints_a_secret():
    print("connecting to postgresql://u:{PLANTED}@db/erp")

def test_logs_a_secret_in_a_file(tmp_path):
    (tmp_path / "worker.log").write_text("ready\\nconnect postgresql://u:{PLANTED}@db/erp failed\\n")

def test_fails_with_the_secret_in_its_report():
    url = "postgresql://u:{PLANTED}@db/erp"
    assert url is None

@pytest.mark.xfail(reason="an expected failure is still a report")
def test_expected_failure():
    raise RuntimeError("{PLANTED}")

def test_writes_a_config(tmp_path):
    (tmp_path / "desq.toml").write_text('db_url = "postgresql://u:{PLANTED}@db/erp"\\n')

def test_prints_it_masked():
    print("connecting to postgresql://u:***@db/erp")
'''


def inner_pytest(folder: Path, source: str, services: Path) -> subprocess.CompletedProcess[str]:
    folder.mkdir()
    (folder / "test_inner.py").write_text(source)
    (folder / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DESQ_", "PYTEST_"))} | {"PYTHONPATH": str(ROOT / "tests")}
    args = [sys.executable, "-m", "pytest", "-p", "log_secrets", "-p", "no:cacheprovider", f"--log-secret={PLANTED}", f"--log-secrets-services={services}", f"--basetemp={folder / 'basetemp'}", "-q", "test_inner.py"]
    return subprocess.run(args, cwd=folder, env=env, capture_output=True, text=True, timeout=120)


def test_a_run_that_logs_a_secret_fails_naming_each_place(tmp_path: Path) -> None:
    services = tmp_path / "services"
    services.mkdir()
    (services / "redis.log").write_text("up\n")
    (services / "moto.log").write_text(f"one\ntwo\nGET /?auth={PLANTED} 200\n")
    result = inner_pytest(tmp_path / "inner", INNER, services)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "1 failed, 4 passed, 1 xfailed" in out and "test secrets in logs" in out
    report = out.split("test secrets in logs", 1)[1].split("short test summary", 1)[0]
    assert PLANTED not in report and "<--log-secret 1>" in report  # pytest's own failure report above shows it: that is a finding
    for place in (
        "test_inner.py::test_prints_a_secret (call) [Captured stdout call]:1",
        "test_inner.py::test_fails_with_the_secret_in_its_report (call) failure report:",
        "test_inner.py::test_expected_failure (call) failure report:",
        "worker.log:2",
        f"{services / 'moto.log'}:3",
    ):
        assert place in out, place
    assert "desq.toml" not in out and "test_prints_it_masked" not in out and "redis.log" not in out


CLEAN = f'''
def test_writes_a_config(tmp_path):
    (tmp_path / "desq.toml").write_text('db_url = "postgresql://u:{PLANTED}@db/erp"\\n')

def test_prints_it_masked():
    print("connecting to postgresql://u:***@db/erp")
'''


def test_a_clean_run_passes(tmp_path: Path) -> None:
    services = tmp_path / "services"
    services.mkdir()
    (services / "moto.log").write_text("GET / 200\n")
    result = inner_pytest(tmp_path / "inner", CLEAN, services)
    assert result.returncode == 0 and "2 passed" in result.stdout and "test secrets in logs" not in result.stdout, result.stdout + result.stderr


ODD_PASSWORD = "p/ss#w?rd:9"  # SQLAlchemy reads all of it as the password; urllib stops at "/"


def test_desq_config_hides_every_password_and_token(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "DESQ_SOURCE_DB_URL": f"postgresql+psycopg2://desq:{DB_PASSWORD}@127.0.0.1:5432/desq_test",
        "DESQ_STATE_DB_URL": f"mysql+pymysql://desq:{ODD_PASSWORD}@127.0.0.1:3306/desq_test",
        "DESQ_BROKER_URL": f"redis://:{DB_PASSWORD}@127.0.0.1:6391/0",
        "DESQ_BROKER_RESULT_BACKEND": f"redis://desq:{DB_PASSWORD}@127.0.0.1:6391/1",
        "DESQ_WEB_REGISTRY_URL": f"redis://:{DB_PASSWORD}@127.0.0.1:6391/2",
        "DESQ_WEB_INDEX_CACHE_URL": f"rediss://user:{ODD_PASSWORD}@cache.internal:6380/3",
        "DESQ_WEB_BACKENDS": f"http://ops:{DB_PASSWORD}@files-1:8080,http://files-2:8080",
        "DESQ_ARCHIVE_S3_ENDPOINT_URL": f"http://key:{DB_PASSWORD}@rgw.internal:7480",
        "DESQ_WEB_API_TOKENS": ",".join(TOKENS),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert run(["config"]) == 0
    out, err = capsys.readouterr()
    for secret in (DB_PASSWORD, ODD_PASSWORD, "ss#w", *TOKENS):
        assert secret not in out + err
    assert 'db_url = "postgresql+psycopg2://desq:***@127.0.0.1:5432/desq_test"' in out
    assert 'db_url = "mysql+pymysql://desq:***@127.0.0.1:3306/desq_test"' in out
    assert 'index_cache_url = "rediss://user:***@cache.internal:6380/3"' in out
    assert 'registry_url = "redis://:***@127.0.0.1:6391/2"' in out
    assert 'backends = ["http://ops:***@files-1:8080", "http://files-2:8080"]' in out
    assert 'api_tokens = ["***", "***", "***"]' in out
    assert 'url = "redis://:***@127.0.0.1:6391/0"' in out and 'shard_bits = 8' in out


def test_settings_errors_never_show_a_secret(tmp_path: Path) -> None:
    def error(config: str | None = None, **env: str) -> str:
        path = None
        if config is not None:
            path = tmp_path / "desq.toml"
            path.write_text(config)
        with pytest.raises(SettingsError) as caught:
            load_settings(path, env=env)
        return str(caught.value)

    message = error(DESQ_WEB_API_TOKENS=f'["{TOKENS[0]}", "{TOKENS[1]}"')
    assert "DESQ_WEB_API_TOKENS" in message and "JSON array" in message and TOKENS[0] not in message
    message = error(f'[web]\napi_tokens = "{TOKENS[0]}"\n')
    assert "web.api_tokens" in message and "got a string" in message and TOKENS[0] not in message
    message = error(f'[web]\napi_tokens = ["{TOKENS[0]}", "short"]\n')
    assert "web.api_tokens" in message and TOKENS[0] not in message
    message = error(DESQ_WEB_BACKENDS=f"http://ops:{DB_PASSWORD}@files-1:80x")
    assert "invalid port" in message and DB_PASSWORD not in message and "ops:***@" in message
    message = error(DESQ_SOURCE_DB_URL=f"postgresql://desq:{DB_PASSWORD}@127.0.0.1:notaport/db")
    assert "source.db_url" in message and "not an SQLAlchemy database URL" in message and DB_PASSWORD not in message
    message = error(DESQ_STATE_DB_URL="postgresql://desq:secret@part:2@127.0.0.1/db")  # "@" unescaped: "2@127.0.0.1" is no port
    assert "state.db_url" in message and "2@127" not in message
    message = error(f'[source]\ndb_url = ["postgresql://desq:{DB_PASSWORD}@h/db"]\n')
    assert "source.db_url" in message and DB_PASSWORD not in message


def desq_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DESQ_")}
    return subprocess.run([str(BIN / "desq"), *args], env=clean | env, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.integration
def test_database_errors_of_the_cli_hide_the_password(tmp_path: Path, pg_url: str, mysql_url: str) -> None:
    wrong = "wrong-password-4c1d"
    cases = [
        (("source", "check"), {"DESQ_SOURCE_DB_URL": pg_url, "DESQ_SOURCE_TABLE": "no_such_table_9d2e"}, "does not exist"),
        (("--debug", "source", "check"), {"DESQ_SOURCE_DB_URL": mysql_url, "DESQ_SOURCE_TABLE": "no_such_table_9d2e"}, "does not exist"),
        (("nightly", "--sync", "--today", "2025-11-28"), {"DESQ_SOURCE_DB_URL": pg_url, "DESQ_SOURCE_TABLE": "no_such_table_9d2e"}, "does not exist"),
        (("source", "check"), {"DESQ_SOURCE_DB_URL": pg_url.replace(DB_PASSWORD, wrong)}, "password authentication failed"),
        (("--debug", "source", "check"), {"DESQ_SOURCE_DB_URL": mysql_url.replace(DB_PASSWORD, wrong)}, "Access denied"),
        (("cutoff",), {"DESQ_MODE": "uid", "DESQ_SOURCE_DB_URL": pg_url.replace(DB_PASSWORD, wrong)}, "password authentication failed"),
    ]
    for args, env, words in cases:
        result = desq_cli(*args, env=env | {"DESQ_ARCHIVE_URL": str(tmp_path / "archive"), "DESQ_DATA_DIR": str(tmp_path / "data")}, cwd=tmp_path)
        said = result.stdout + result.stderr
        assert result.returncode == 1 and words in said, (args, masked(said))
        assert DB_PASSWORD not in said and wrong not in said, args
        assert "--debug" in args or len(result.stderr.strip().splitlines()) == 1


@pytest.mark.integration
def test_the_celery_worker_shows_no_password(tmp_path: Path, redis_url: str, pg_url: str) -> None:
    broker = redis_url.replace("redis://", f"redis://desq:{DB_PASSWORD}@").rsplit("/", 1)[0] + "/14"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESQ_")} | {
        "DESQ_SOURCE_DB_URL": pg_url, "DESQ_BROKER_URL": broker, "DESQ_DATA_DIR": str(tmp_path / "data"), "DESQ_ARCHIVE_URL": str(tmp_path / "archive"),
    }
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen([str(BIN / "celery"), "-A", "tasks", "worker", "-Q", "desq", "--pool=solo", "-l", "INFO"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 90
            while "Cannot connect to" not in log.read_text(errors="replace") and time.monotonic() < deadline and worker.poll() is None:
                time.sleep(0.5)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    text = log.read_text(errors="replace")
    assert "transport:" in text and "Cannot connect to redis://desq:**@127.0.0.1" in text, masked(text)[-3000:]
    assert DB_PASSWORD not in text


# --- 4. only bound SQL parameters -----------------------------------------------------------------

SQL_TEXT = {"text", "exec_driver_sql", "literal_column", "TextClause", "executescript"}
"""Calls whose argument is SQL as written: only a constant string may go there."""
SQL_RUN = {"execute", "executemany"}
"""Calls that run a statement: never one built from strings."""
ALLOWED: dict[str, str] = {}
"""``path:line`` -> why that string-built SQL is safe (none so far)."""


def _name(call: ast.Call) -> str | None:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None


def _constant(node: ast.expr, assigned: dict[str, list[ast.expr]]) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.Name) and node.id in assigned:
        return all(_constant(value, {}) for value in assigned[node.id])
    return False


def _built(node: ast.expr, assigned: dict[str, list[ast.expr]]) -> bool:
    """Whether ``node`` builds a string out of parts that are not all constant."""
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(part, ast.FormattedValue) for part in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
        return not (_constant(node.left, assigned) and _constant(node.right, assigned))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("format", "format_map", "join", "replace"):
        return True
    if isinstance(node, ast.Name) and node.id in assigned:
        return any(_built(value, {}) for value in assigned[node.id])
    return False


def string_built_sql(source: str, path: str) -> list[str]:
    """Every SQL call in ``source`` fed by a string built from non-constant parts, as ``path:line: ...``."""
    tree = ast.parse(source)
    assigned: dict[str, list[ast.expr]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    assigned.setdefault(target.id, []).append(node.value)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        name, first = _name(node), node.args[0]
        if name in SQL_TEXT and not _constant(first, assigned) or name in SQL_RUN and _built(first, assigned):
            found.append((node.lineno, f"{path}:{node.lineno}: {name}({ast.unparse(first)[:80]})"))
    return [text for _, text in sorted(found)]


def test_the_sql_checker_catches_string_built_sql() -> None:
    planted = '''
import sqlalchemy as sa
def bad(conn, cur, table, col, value):
    conn.execute(sa.text(f"SELECT * FROM {table}"))
    conn.execute(sa.text("SELECT * FROM %s" % table))
    conn.execute(sa.text("SELECT " + col))
    conn.execute(sa.text("SELECT {}".format(col)))
    query = f"DELETE FROM {table}"
    conn.exec_driver_sql(query)
    cur.execute("UPDATE x SET a = '%s'" % value)
    cur.execute(" ".join(["SELECT", col]))
    conn.execute(sa.select(sa.literal_column(col)))
    conn.execute(sa.text(col))
def good(conn, value):
    conn.execute(sa.text("SELECT * FROM files WHERE id = :id"), {"id": value})
    statement = "SELECT 1"
    conn.exec_driver_sql(statement)
    conn.execute(sa.select(sa.column("x")).where(sa.column("x") == value))
    conn.execute(sa.text("SELECT a " "FROM b"))
'''
    found = string_built_sql(planted, "planted.py")
    assert [int(f.split(":")[1]) for f in found] == [4, 5, 6, 7, 9, 10, 11, 12, 13]


def test_desq_builds_no_sql_from_strings() -> None:
    paths = sorted([*ROOT.joinpath("desq").rglob("*.py"), *ROOT.joinpath("web").rglob("*.py"), *ROOT.joinpath("tasks").rglob("*.py"), ROOT / "celeryconfig.py"])
    assert len(paths) > 20
    found = [f for path in paths for f in string_built_sql(path.read_text(), str(path.relative_to(ROOT)))]
    assert [f for f in found if f.split(": ", 1)[0] not in ALLOWED] == []


def _engine(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> sa.Engine:
    if kind == "sqlite":
        return create_engine(f"sqlite:///{tmp_path / 'source.db'}")
    return create_engine(request.getfixturevalue(f"{kind}_url"))


def _url(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", pytest.param("pg", marks=pytest.mark.integration), pytest.param("mysql", marks=pytest.mark.integration)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[sa.Engine, str]]:
    """An engine and a victim table (one row) that no configured value may drop."""
    engine = _engine(request.param, request, tmp_path)
    victim = sa.Table(f"victim_{uuid.uuid4().hex[:8]}", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
    victim.create(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(victim).values(id=1))
    yield engine, victim.name
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(victim)).scalar_one() == 1
    victim.drop(engine)
    engine.dispose()


def test_hostile_table_and_column_names_are_refused(database: tuple[sa.Engine, str], tmp_path: Path) -> None:
    engine, victim = database
    real = sa.Table(f"files_{uuid.uuid4().hex[:8]}", sa.MetaData(), *(sa.Column(c, sa.String(50)) for c in ("id", "created_at", "path", "des_name", "des_hash_bits", "des_status")))
    real.create(engine)
    try:
        base = {"DESQ_SOURCE_DB_URL": _url(engine), "DESQ_SOURCE_TABLE": real.name}
        drop = f"DROP TABLE {victim}"
        for table in (f"{real.name}; {drop}; --", f'{real.name}"; {drop}; --', f"{real.name}`; {drop}; --", f"{real.name}'; {drop}; --", f"{real.name}') OR 1=1; --", "fílès_ünïcødé_☃", f'x"; {drop}; --.{real.name}'):
            with pytest.raises(SourceError, match="does not exist|cannot read the source table"):
                SourceTable.connect(load_settings(env=base | {"DESQ_SOURCE_TABLE": table}))
        for column in (f"id; {drop}; --", f'id"; {drop}; --', f"id`; {drop}; --", "id' OR '1'='1", "íd"):
            with pytest.raises(SourceError, match="has no column"):
                SourceTable.connect(load_settings(env=base | {"DESQ_SOURCE_COLUMNS_ID": column}))
        for key in ("table", "columns.id", "columns.path"):
            with pytest.raises(SettingsError, match=re.escape(f"source.{key}")):
                _load_toml(tmp_path, key, "files\\u0000; DROP TABLE x")
            with pytest.raises(SettingsError, match=re.escape(f"source.{key}")):
                _load_toml(tmp_path, key, "  ")
        assert sa.inspect(engine).has_table(victim)
    finally:
        real.drop(engine)


def _load_toml(tmp_path: Path, key: str, value: str) -> None:
    section, _, name = f"source.{key}".rpartition(".")
    path = tmp_path / "hostile.toml"
    path.write_text(f'[{section}]\n{name} = "{value}"\n')
    load_settings(path, env={})


def test_a_table_with_hostile_names_is_marked_and_planned_safely(database: tuple[sa.Engine, str]) -> None:
    engine, victim = database
    tag = uuid.uuid4().hex[:6]
    drop = f"DROP TABLE {victim}; --"
    names = {"id": f'id"; {drop}', "created_at": "créé'le", "path": "pa'th;", "des_name": "des name", "des_shard": "des;shard", "des_status": "des\"sta'tus"}
    table = sa.Table(
        f"t{tag}\"'`; {drop}", sa.MetaData(),
        sa.Column(names["id"], sa.Integer, primary_key=True, autoincrement=False), sa.Column(names["created_at"], sa.DateTime),
        sa.Column(names["path"], sa.String(200)), sa.Column(names["des_name"], sa.String(300)),
        sa.Column(names["des_shard"], sa.Integer), sa.Column(names["des_status"], sa.String(16)),
    )
    table.create(engine)
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(table), [{names["id"]: i, names["created_at"]: datetime(2025, 11, 10, 12) + timedelta(days=i % 2), names["path"]: f"{i}.bin"} for i in range(1, 41)])
        env = {"DESQ_SOURCE_DB_URL": _url(engine), "DESQ_SOURCE_TABLE": table.name} | {f"DESQ_SOURCE_COLUMNS_{k.upper()}": v for k, v in names.items()}
        source = SourceTable.connect(load_settings(env=env))
        assert mark(source, today=date(2025, 11, 28)).marked == 40
        plan = plan_names(source)
        assert plan.files == 40 and plan.unplanned == 0
        rows = [row for work in plan.work for row in name_rows_for(source, work.date, work.shard)]
        assert sorted(row.id for row in rows) == list(range(1, 41))
        assert mark_packed(source, [row.id for row in rows]) == 40
        uid = SourceTable.connect(load_settings(env={k: v for k, v in env.items() if "DES_" not in k} | {"DESQ_MODE": "uid"}))
        assert plan_uids(uid, date(2025, 11, 10), date(2025, 11, 11)).files == 40
        assert len(list(uid_rows_for(uid, date(2025, 11, 10), 2))) == 1
        assert sa.inspect(engine).has_table(victim)
    finally:
        table.drop(engine)


# --- 5. a name can never reach outside the archive --------------------------------------------------

DANGEROUS = ["..", ".", "/", "\\", "%2e%2e", "%2f", "\x00", "../../etc/passwd", "~", "C:", "\u2215", "\uff0e\uff0e", "FE.des", "20251120"]
names_st = st.one_of(
    st.text(),
    st.lists(st.sampled_from(DANGEROUS) | st.text(max_size=4), max_size=6).map("".join),
    st.tuples(st.dates(), st.lists(st.sampled_from(DANGEROUS) | st.text(max_size=3), min_size=1, max_size=5).map("".join)).map(lambda p: f"{yyyymmdd(p[0])}_{p[1]}"),
)


def _check_container(container: str, bits: int) -> None:
    assert re.fullmatch(rf"[0-9]{{8}}/[0-9A-F]{{{(bits + 3) // 4}}}\.des", container), container
    assert check_key(container) == container


@settings(max_examples=400, deadline=None)
@given(name=names_st, bits=st.integers(1, 16), prefix=st.sampled_from(["", "INV", "a-9"]))
def test_any_name_gives_a_container_key_of_the_fixed_shape(name: str, bits: int, prefix: str) -> None:
    layout = Layout(mode="name", shard_bits=bits, queue_count=1, zone=timezone.utc, name_prefix=check_prefix(prefix) if prefix else "")
    full = prefix + "_" + name if prefix else name
    try:
        where = layout.locate_name(full)
    except LayoutError:
        return
    _check_container(where.container, bits)
    assert where.container.startswith(yyyymmdd(where.date) + "/") and full.removeprefix(prefix + "_" if prefix else "").startswith(yyyymmdd(where.date) + "_")


@settings(max_examples=400, deadline=None)
@given(
    uid=st.one_of(names_st, st.integers(0, 2**70).map(str)),
    created=st.one_of(st.dates(), st.datetimes(timezones=st.none() | st.timezones()), st.text(max_size=40), st.dates().map(str)),
    bits=st.integers(1, 16),
    kind=st.sampled_from(["int", "text"]),
)
def test_any_uid_and_created_at_give_a_container_key_of_the_fixed_shape(uid: str, created: Any, bits: int, kind: str) -> None:
    layout = Layout(mode="uid", shard_bits=bits, queue_count=1, zone=timezone.utc, uid_kind=kind)  # type: ignore[arg-type]
    try:
        where = layout.locate_uid(uid, created)
    except LayoutError:
        return
    _check_container(where.container, bits)


def test_a_day_before_the_year_1000_keeps_the_8_digit_shape(tmp_path: Path) -> None:
    day = date(999, 1, 2)
    assert yyyymmdd(day) == "09990102" and build_name(day, 5) == "09990102_5" and container_key(day, 0xFE, 8) == "09990102/FE.des"
    layout = load_settings(env={}).layout
    assert layout.locate_name("09990102_5").container == f"09990102/{layout.locate_name('09990102_5').shard_hex}.des"
    assert layout.locate_name("00010101_1").container.startswith("00010101/")
    engine = create_engine(f"sqlite:///{tmp_path / 'source.db'}")
    files = sa.Table("files", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), sa.Column("created_at", sa.DateTime), sa.Column("path", sa.String),
                     sa.Column("des_name", sa.String), sa.Column("des_hash_bits", sa.Integer), sa.Column("des_status", sa.String))
    files.create(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(files), [{"id": 1, "created_at": datetime(999, 1, 2, 10), "path": "a"}, {"id": 2, "created_at": datetime(2025, 11, 2), "path": "b"}])
    source = SourceTable.connect(load_settings(env={"DESQ_SOURCE_DB_URL": str(engine.url)}))
    assert mark(source, today=date(2025, 11, 28)).marked == 2
    plan = plan_names(source)
    assert plan.unplanned == 0 and [w.date for w in plan.work] == [day, date(2025, 11, 2)]
    assert [row.name for row in name_rows_for(source, day, plan.work[0].shard)] == ["09990102_1"]


@pytest.fixture(scope="module")
def jail(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalStorage, Path]:
    """A LocalStorage whose root holds links to the outside and one link that stays inside."""
    base = tmp_path_factory.mktemp("jail")
    root, outside = base / "archive", base / "outside"
    (outside / "day").mkdir(parents=True)
    (outside / "secret.des").write_bytes(b"OUTSIDE-SECRET-BYTES")
    (outside / "day" / "FE.des").write_bytes(b"OUTSIDE-SECRET-BYTES")
    (root / "20251121").mkdir(parents=True)
    (root / "20251120").symlink_to(outside / "day")  # a date folder that leads outside
    (root / "20251121" / "00.des").symlink_to(outside / "secret.des")  # a container file that does
    (root / "20251121" / "01.des").symlink_to("../../outside/secret.des")  # relative, the same
    (root / "20251122").symlink_to("/")  # the whole machine
    (root / "20251123").mkdir()
    (root / "20251123" / "FF.des").write_bytes(b"inside")
    (root / "20251124").symlink_to(root / "20251123")  # stays inside: allowed
    return LocalStorage(root), outside


ESCAPING = ["20251120/FE.des", "20251121/00.des", "20251121/01.des", "20251122/etc/passwd", "20251122" + str(Path(__file__).resolve())]


@pytest.mark.parametrize("key", ESCAPING)
def test_local_storage_refuses_links_that_lead_outside(jail: tuple[LocalStorage, Path], key: str) -> None:
    storage, outside = jail
    for attempt in (
        lambda: storage.read(key, 0, 6), lambda: storage.read_suffix(key, 64), lambda: storage.head(key),
        lambda: storage.put(key, b"overwrite"), lambda: storage.delete(key), lambda: storage.publish("20251123/FF.des", key),
    ):
        with pytest.raises(InvalidKey, match="outside"):
            attempt()
    assert (outside / "secret.des").read_bytes() == (outside / "day" / "FE.des").read_bytes() == b"OUTSIDE-SECRET-BYTES"
    assert storage.read("20251123/FF.des", 0, 6) == b"inside"
    keys = [info.key for info in storage.list()]
    assert "20251123/FF.des" in keys and not any(k.startswith(("20251120/", "20251121/", "20251122/")) for k in keys)


def test_a_link_inside_the_root_still_works(jail: tuple[LocalStorage, Path]) -> None:
    storage, _ = jail
    assert storage.read("20251124/FF.des", 0, 6) == b"inside" and storage.head("20251124/FF.des").size == 6


@settings(max_examples=500, deadline=None)
@given(key=st.one_of(names_st, st.lists(st.sampled_from([*DANGEROUS, "", "20251120", "20251122", "20251124", "FF.des", "etc", "passwd"]), min_size=1, max_size=5).map("/".join)))
def test_any_key_is_refused_or_stays_inside_the_root(jail: tuple[LocalStorage, Path], key: str) -> None:
    storage, _ = jail
    real_root = os.path.realpath(storage.root)
    try:
        path = storage.path(key)
    except InvalidKey:
        return
    real = os.path.realpath(path)
    assert real == real_root or real.startswith(real_root + os.sep), key
    try:
        data = storage.read(key, 0, 20)
    except (NotFound, StorageError):
        return
    assert data != b"OUTSIDE-SECRET-BYTES"


def test_the_files_api_serves_nothing_through_a_link_out_of_the_archive(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    outside = archive_with(tmp_path / "outside", {NAME: b"OUTSIDE-SECRET-BYTES"})
    archive.mkdir()
    (archive / "20251120").symlink_to(outside / "20251120")
    client = files_app(archive).test_client()
    for path in (f"/files/{NAME}", f"/meta/{NAME}", f"/files/{NAME}?x=1"):
        answer = client.get(path, headers={"Range": "bytes=0-"})
        assert answer.status_code != 200 and answer.status_code != 206 and b"OUTSIDE" not in answer.data, path


def _container_with_external(name: str, external_key: str, data: bytes) -> bytes:
    from desq.container.writer import external_checksums

    blocks, crc = external_checksums([data], len(data))
    out = io.BytesIO()
    with ContainerWriter(out) as w:
        w.add_external(name, size=len(data), checksum=crc, block_checksums=blocks, external_key=external_key)
    return out.getvalue()


@pytest.mark.parametrize("external_key", ["../../outside.bin", "../20251121/../../outside.bin", "/abs/outside.bin", "x/../../../outside.bin", "..\\..\\outside.bin"])
def test_an_external_key_in_a_container_cannot_leave_the_archive(tmp_path: Path, external_key: str) -> None:
    secret = b"OUTSIDE-SECRET-BYTES" * 10
    (tmp_path / "outside.bin").write_bytes(secret)
    (tmp_path / "abs").mkdir()
    (tmp_path / "abs" / "outside.bin").write_bytes(secret)
    storage = LocalStorage(tmp_path / "archive")
    storage.put("20251120/FE.des", _container_with_external(NAME, external_key, secret))
    with pytest.raises((InvalidKey, ContainerError)):
        Archive(storage).read("20251120/FE.des", NAME)
    answer = files_app(tmp_path / "archive").test_client().get(f"/files/{NAME}")
    assert answer.status_code >= 400 and b"OUTSIDE" not in answer.data


@pytest.mark.parametrize("uid", ["..", ".", "%2e%2e", ".%2e"])
def test_a_uid_cannot_walk_out_of_the_file_original(tmp_path: Path, uid: str) -> None:
    live, outside = tmp_path / "live", tmp_path / "data"
    (live / "doc-1").mkdir(parents=True)
    (live / "doc-1" / "data").write_bytes(b"live file")
    outside.write_bytes(b"OUTSIDE-SECRET-BYTES")
    env = {"DESQ_MODE": "uid", "DESQ_SOURCE_UID_KIND": "text", "DESQ_WEB_ORIGINAL_URL": f"file://{live}/{{uid}}/data"}
    publish(LocalStorage(tmp_path / "archive"), date(2025, 11, 20))
    client = files_app(tmp_path / "archive", **env).test_client()
    assert client.get("/files/doc-1?created_at=2025-11-21").data == b"live file"
    answer = client.get(f"/files/{uid}?created_at=2025-11-21")
    assert answer.status_code == 400 and answer.json["error"] == "bad_request" and b"OUTSIDE" not in answer.data


# --- 6. a container from storage is never trusted -----------------------------------------------------


def small_container() -> bytes:
    out = io.BytesIO()
    with ContainerWriter(out, layout_version=1) as w:
        w.add("a", b"hello", content_type="text/plain")
        w.add("b", b"world!", content_type="text/plain")
    return out.getvalue()


def rebuilt(data: bytes, *, index: bytes | None = None, names: bytes | None = None, frames: bytes | None = None, count: int | None = None) -> bytes:
    """``data`` with regions replaced and a footer whose checksums match them (a lie, well signed)."""
    footer = fmt.parse_footer(data, len(data))
    frames = data[fmt.HEADER_SIZE : footer.names_offset] if frames is None else frames
    names = data[footer.names_offset : footer.index_offset] if names is None else names
    index = data[footer.index_offset : len(data) - fmt.FOOTER_SIZE] if index is None else index
    names_offset = fmt.HEADER_SIZE + len(frames)
    new = fmt.Footer(names_offset, len(names), names_offset + len(names), footer.count if count is None else count, crc32c(names), crc32c(index), footer.layout_version)
    return data[: fmt.HEADER_SIZE] + frames + names + index + fmt.pack_footer(new)


def with_entry(data: bytes, position: int, **changes: int) -> bytes:
    footer = fmt.parse_footer(data, len(data))
    index = bytearray(data[footer.index_offset : len(data) - fmt.FOOTER_SIZE])
    at = footer.count * fmt.HASH_SIZE + position * fmt.ENTRY.size
    entry = dict(zip(("offset", "size", "head_len", "flags"), fmt.unpack_entry(index, at))) | changes
    index[at : at + fmt.ENTRY.size] = fmt.pack_entry(entry["offset"], entry["size"], entry["head_len"], entry["flags"])
    return rebuilt(data, index=bytes(index))


def with_head(data: bytes, position: int, patch: Callable[[bytearray], None]) -> bytes:
    """``data`` with the frame head of entry ``position`` patched and its CRC made to match."""
    footer = fmt.parse_footer(data, len(data))
    offset, _, head_len, _ = fmt.unpack_entry(data, footer.index_offset + footer.count * fmt.HASH_SIZE + position * fmt.ENTRY.size)
    out = bytearray(data)
    head = bytearray(out[offset - head_len : offset - fmt.HEAD_CRC.size])
    patch(head)
    out[offset - head_len : offset] = bytes(head) + fmt.HEAD_CRC.pack(crc32c(bytes(head)))
    return bytes(out)


def _fixed(field: int, value: int) -> Callable[[bytearray], None]:
    def patch(head: bytearray) -> None:
        values = list(fmt.HEAD_FIXED.unpack_from(head))
        values[field] = value
        fmt.HEAD_FIXED.pack_into(head, 0, *values)

    return patch


def _meta_length(head: bytearray) -> None:
    name_len = fmt.HEAD_FIXED.unpack_from(head)[2]
    at = fmt.HEAD_FIXED.size + name_len
    head[at : at + 3] = fmt.META_RECORD.pack(fmt.TAG_CONTENT_TYPE, 0xFFFF)


def _hostile() -> dict[str, tuple[bytes, str]]:
    """name -> (container bytes, what to do with it)."""
    good = small_container()
    count = fmt.parse_footer(good, len(good)).count
    two = fmt.NAME_LEN.pack(0xFFFF) + b"a"
    return {
        "member size 2**48-1": (with_entry(good, 0, size=fmt.MAX_MEMBER_SIZE), "read"),
        "member size past the frames": (with_entry(good, 1, size=1 << 40), "read"),
        "member offset 2**47": (with_entry(good, 0, offset=1 << 47), "read"),
        "external member of 2**48-1 bytes": (with_entry(good, 0, size=fmt.MAX_MEMBER_SIZE, flags=fmt.FLAG_EXTERNAL), "read"),
        "head length 65535": (with_entry(good, 0, head_len=0xFFFF), "read"),
        "unknown flags": (with_entry(good, 1, flags=0xFE), "read"),
        "count 2**40": (rebuilt(good, count=1 << 40), "open"),
        "count 2**63": (rebuilt(good, count=(1 << 63) - 1), "open"),
        "count one more than the index holds": (rebuilt(good, count=count + 1), "open"),
        "a name of 65535 bytes in NAMES": (rebuilt(good, names=two + good[fmt.parse_footer(good, len(good)).names_offset + 3 :]), "list"),
        "frame head name length 65535": (with_head(good, 0, _fixed(2, 0xFFFF)), "read"),
        "frame head size 2**48-1": (with_head(good, 0, _fixed(6, fmt.MAX_MEMBER_SIZE)), "read"),
        "frame head meta length 65535": (with_head(good, 0, _fixed(3, 0xFFFF)), "read"),
        "metadata record of 65535 bytes": (with_head(good, 0, _meta_length), "read"),
    }


HOSTILE = _hostile()


def _peak_of(action: Callable[[], Any]) -> tuple[BaseException | None, int]:
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        action()
        error = None
    except Exception as exc:  # noqa: BLE001 - returned for the caller to judge
        error = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return error, peak


def _use(reader_of: Callable[[], Any], what: str) -> None:
    reader = reader_of()
    if what == "read":
        for name in ("a", "b"):
            reader.read(name)
            b"".join(reader.iter_range(name, 1))
    elif what == "list":
        list(reader.members())


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_container_whose_index_lies_is_refused_before_anything_big_is_allocated(tmp_path: Path, case: str) -> None:
    data, what = HOSTILE[case]
    storage = LocalStorage(tmp_path)
    storage.put("20251120/00.des", data)
    storage.put("20251120/00.des.big/x", b"tiny")
    for reader_of in (lambda: ContainerReader.open(BytesSource(data)), lambda: Archive(storage).open("20251120/00.des")):
        error, peak = _peak_of(lambda: _use(reader_of, what))  # noqa: B023
        assert isinstance(error, (ContainerError, InvalidKey)), (case, error)
        assert peak < 2 << 20, (case, peak)
    if what == "read":
        assert Archive(storage).open("20251120/00.des").verify() != []


def test_an_external_member_that_claims_2_to_the_48_bytes_reads_nothing_big(tmp_path: Path) -> None:
    size = fmt.MAX_MEMBER_SIZE
    out = io.BytesIO()
    with ContainerWriter(out) as w:
        w.add_external(NAME, size=size, checksum=0, block_checksums=[0] * fmt.block_count(size, fmt.block_shift_for(size)), external_key="FE.des.big/x")
    storage = LocalStorage(tmp_path)
    storage.put("20251120/FE.des", out.getvalue())
    storage.put("20251120/FE.des.big/x", b"only a few bytes")
    archive = Archive(storage)
    for action in (lambda: archive.read("20251120/FE.des", NAME), lambda: b"".join(archive.iter_range("20251120/FE.des", NAME, size - 10))):
        error, peak = _peak_of(action)
        assert isinstance(error, CorruptContainer) and peak < 2 << 20, (error, peak)
    answer = files_app(tmp_path).test_client().get(f"/files/{NAME}")
    assert answer.status_code == 500 and answer.json["error"] == "integrity_error"


def test_a_sparse_object_claiming_a_huge_index_is_refused_without_reading_it(tmp_path: Path) -> None:
    count = fmt.MAX_REGION_BYTES // fmt.ENTRY_SIZE + 1
    names_length = 3 * count
    index_offset = fmt.HEADER_SIZE + names_length
    size = index_offset + count * fmt.ENTRY_SIZE + fmt.FOOTER_SIZE
    footer = fmt.pack_footer(fmt.Footer(fmt.HEADER_SIZE, names_length, index_offset, count, 0, 0, 1))
    path = tmp_path / "20251120" / "00.des"
    path.parent.mkdir()
    with open(path, "wb") as fh:
        fh.write(fmt.pack_header(1))
        fh.truncate(size - fmt.FOOTER_SIZE)  # sparse: nothing is written to disk
        fh.seek(size - fmt.FOOTER_SIZE)
        fh.write(footer)
    assert path.stat().st_size == size > 1 << 30 and path.stat().st_blocks * 512 < 1 << 20
    for open_it in (lambda: ContainerReader.open(FileSource(path)), lambda: Archive(LocalStorage(tmp_path)).open("20251120/00.des")):
        error, peak = _peak_of(open_it)
        assert isinstance(error, CorruptContainer) and "at most" in str(error) and peak < 2 << 20, (error, peak)
    blob = b"\0" * 48 + fmt.pack_footer(fmt.Footer(fmt.HEADER_SIZE, names_length, index_offset, count, 0, crc32c(b"\0" * 48), 1))
    with pytest.raises(CorruptContainer, match="at most"):  # a cached index (shared tier) is not trusted either
        ContainerReader.from_index(BytesSource(b""), blob)


def test_a_writer_refuses_an_index_no_reader_would_accept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fmt, "MAX_REGION_BYTES", 3 * fmt.ENTRY_SIZE)
    out = io.BytesIO()
    w = ContainerWriter(out)
    for name in ("a", "b", "c", "d"):
        w.add(name, b"x")
    with pytest.raises(ContainerError, match="more than one container holds"):
        w.close()
    out = io.BytesIO()
    with ContainerWriter(out) as w:
        for name in ("a", "b", "c"):
            w.add(name, b"x")
    assert ContainerReader.open(BytesSource(out.getvalue())).read("c") == b"x"
