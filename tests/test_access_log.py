"""gunicorn's access log through a real gunicorn: answered health probes leave no lines at INFO."""

from __future__ import annotations

import ast
import os
import subprocess
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger

from desq.storage.local import LocalStorage
from test_files_gunicorn import BIN, ROOT, fill, free_port, get
from web.access_log import AccessLog, atoms_of, is_quiet

# Read, not run: the config file raises rlimits and sets the metrics folder of whoever loads it.
CONFIGURED_FORMAT = next(
    ast.literal_eval(node.value)
    for node in ast.parse((ROOT / "deploy" / "gunicorn.conf.py").read_text()).body
    if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["access_log_format"]
)


def run_gunicorn(tmp_path: Path, *extra: str) -> tuple[int, subprocess.Popen[bytes], Path]:
    fill(LocalStorage(tmp_path / "archive"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DESQ_", "GUNICORN_"))}
    env |= {"DESQ_ARCHIVE_URL": str(tmp_path / "archive"), "PORT": str(port), "BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "2", "WEB_THREADS": "2"}
    log = tmp_path / f"gunicorn-{port}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([str(BIN / "gunicorn"), "-c", "deploy/gunicorn.conf.py", *extra, "web:create_app()"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            if get(port, "/readyz")[0] in (200, 503):
                return port, process, log
        except OSError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=30)


def access_lines(log: Path, path: str) -> list[str]:
    return [line for line in log.read_text().splitlines() if f'"GET {path} ' in line]


def test_health_probes_write_no_access_lines_but_file_reads_do(tmp_path: Path) -> None:
    port, process, log = run_gunicorn(tmp_path)
    try:
        assert all(get(port, "/healthz")[0] == 200 for _ in range(40))
        ready = [get(port, "/readyz")[0] for _ in range(10)]
        assert all(get(port, "/files/20251120_1")[0] == 200 for _ in range(5))
        assert get(port, "/files/20251120_999")[0] == 404
    finally:
        stop(process)
    assert access_lines(log, "/healthz") == []
    assert len(access_lines(log, "/readyz")) == sum(status != 200 for status in ready)
    assert len(access_lines(log, "/files/20251120_1")) == 5 and len(access_lines(log, "/files/20251120_999")) == 1


def test_at_debug_level_health_probes_are_logged(tmp_path: Path) -> None:
    port, process, log = run_gunicorn(tmp_path, "--log-level", "debug")
    try:
        assert all(get(port, "/healthz")[0] == 200 for _ in range(3))
    finally:
        stop(process)
    assert len(access_lines(log, "/healthz")) == 3


@pytest.mark.parametrize(
    ("path", "status", "debug", "quiet"),
    [
        ("/healthz", 200, False, True),
        ("/readyz", 200, False, True),
        ("/readyz", 503, False, False),  # a failing probe is worth its line
        ("/healthz", 500, False, False),
        ("/healthz", 200, True, False),
        ("/healthz/", 200, False, False),
        ("/files/20251120_1", 200, False, False),
        ("/healthz", None, False, False),
    ],
)
def test_which_lines_are_left_out(path: str, status: int | None, debug: bool, quiet: bool) -> None:
    assert is_quiet(path, status, debug) is quiet


class _Resp:
    status = "200 OK"
    status_code = 200
    sent = 4096
    headers = [("Content-Type", "application/octet-stream"), ("ETag", '"0badf00d-1000"')]


class _Req:
    headers = [("HOST", "127.0.0.1"), ("AUTHORIZATION", "Bearer s3cret"), ("USER-AGENT", 'curl "8"')]


def _environ(path: str, query: str = "") -> dict[str, str]:
    raw = path + ("?" + query if query else "")
    return {
        "REQUEST_METHOD": "GET", "PATH_INFO": path, "RAW_URI": raw, "QUERY_STRING": query, "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "10.0.0.7", "HTTP_AUTHORIZATION": "Bearer s3cret", "HTTP_USER_AGENT": 'curl "8"',
    }


def _lines(logger_class: type, log_format: str, tmp_path: Path, *requests: tuple[Any, dict[str, str]]) -> list[str]:
    cfg = Config()
    out = tmp_path / f"{logger_class.__name__}-{uuid.uuid4().hex}.log"
    cfg.set("accesslog", str(out))
    cfg.set("access_log_format", log_format)
    log = logger_class(cfg)
    log.now = lambda: "[02/Dec/2026:08:00:00 +0000]"
    for resp, environ in requests:
        log.access(resp, _Req, environ, timedelta(seconds=1, microseconds=234567))
    for handler in log.access_log.handlers:
        handler.close()
    return out.read_text().splitlines()


FORMATS = [
    CONFIGURED_FORMAT,
    '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"',  # gunicorn's default
    "%(q)s %(T)s %(D)s %(L)s %(p)s %(U)s %(b)s %(z)s",
    '%(h)s "%(r)s" %({user-agent}i)s %({etag}o)s',  # header atoms: gunicorn's own atoms
]


@pytest.mark.parametrize("log_format", FORMATS)
def test_lines_are_byte_identical_to_gunicorns(log_format: str, tmp_path: Path) -> None:
    class Unsent(_Resp):
        status, status_code, sent = "404 Not Found", 404, None

    requests = [(_Resp, _environ("/files/20251120_1", "created_at=2025-11-20")), (Unsent, _environ('/files/a"b')), (_Resp, _environ("/healthz"))]
    ours = _lines(AccessLog, log_format, tmp_path, *requests)
    assert ours == _lines(Logger, log_format, tmp_path, *requests[:2])
    assert len(ours) == 2


def test_the_configured_format_leaves_out_queries_and_tokens(tmp_path: Path) -> None:
    [line] = _lines(AccessLog, CONFIGURED_FORMAT, tmp_path, (_Resp, _environ("/files/20251120_1", "created_at=2025-11-20")))
    assert line == '10.0.0.7 "GET /files/20251120_1 HTTP/1.1" 200 4096 1234ms'


def test_which_atoms_are_computed() -> None:
    assert [name for name, _ in atoms_of(CONFIGURED_FORMAT) or ()] == ["B", "H", "M", "U", "h", "m", "s"]
    assert atoms_of('%({authorization}i)s %(h)s') is None
    assert atoms_of("no atoms at all") is None
