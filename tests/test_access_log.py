"""gunicorn's access log through a real gunicorn: answered health probes leave no lines at INFO."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from desq.storage.local import LocalStorage
from test_files_gunicorn import BIN, ROOT, fill, free_port, get
from web.access_log import is_quiet


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
