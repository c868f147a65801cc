"""An archive for the s3 role's tests, and the role as a real server: ``desq serve --role s3`` or
gunicorn with ``deploy/gunicorn.conf.py``, on a free port, stopped by the test."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import requests

from log_secrets import S3_SECRET_KEYS

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MiB = 1 << 20
ACCESS_KEY = "DESQTESTKEY01"
SECRET_KEY, OTHER_SECRET = S3_SECRET_KEYS[:2]  # registered there: no log of the suite may hold them
OTHER_KEY = "DESQTESTKEY02"
CREDENTIALS = f"{ACCESS_KEY}:{SECRET_KEY},{OTHER_KEY}:{OTHER_SECRET}"
DAY = datetime(2025, 11, 20, 6, 0, tzinfo=timezone.utc)


def sample_files() -> dict[str, tuple[bytes, str | None, datetime]]:
    """name -> (bytes, content type, created_at): a day of 250 small files and one of a few odd ones."""
    files: dict[str, tuple[bytes, str | None, datetime]] = {
        f"20251120_{i}": (f"file {i}\n".encode() * (1 + i % 7), "text/plain", DAY + timedelta(seconds=i)) for i in range(1, 251)
    }
    files["20251121_big"] = (bytes(i * 7 % 251 for i in range(2 * MiB + 3)), "application/pdf", DAY + timedelta(days=1))
    files["20251121_zażółć"] = ("gęś".encode(), "text/plain; charset=utf-8", DAY + timedelta(days=1, hours=1))
    files["20251121_a b+c&d"] = (b"odd name", None, DAY + timedelta(days=1, hours=2))
    files["20251121_empty"] = (b"", "application/octet-stream", DAY + timedelta(days=1, hours=3))
    return files


def key_of(name: str) -> str:
    """The S3 key of a name-mode name."""
    return f"{name.split('_')[0]}/{name}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def snapshot(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under ``folder``: size, mtime and bytes (to show nothing changed)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()}


class Server:
    """The s3 role in its own process: ``kind`` "serve" (``desq serve --role s3``) or "gunicorn"."""

    def __init__(self, kind: str, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full = {k: v for k, v in os.environ.items() if not k.startswith("DESQ_")} | env
        if kind == "serve":
            argv = [str(BIN / "python"), "-m", "desq", "serve", "--role", "s3", "--port", str(self.port)]
        else:
            full |= {"BIND": f"127.0.0.1:{self.port}", "WEB_CONCURRENCY": "2", "WEB_THREADS": "4"}
            argv = [str(BIN / "gunicorn"), "-c", "deploy/gunicorn.conf.py", "web:create_app(role='s3')"]
        full["PYTHONPATH"] = str(ROOT) + os.pathsep + full.get("PYTHONPATH", "")
        self.log_path = log
        self.log = open(log, "wb")  # noqa: SIM115
        self.process = subprocess.Popen(argv, cwd=ROOT, env=full, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            assert self.process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self.log.close()


S3FS_REQUIREMENTS = Path(__file__).with_name("s3fs-requirements.txt")


def s3fs_python() -> Path:
    """The python of a venv holding s3fs (tests/s3fs-requirements.txt), built once per pin set.

    s3fs needs aiobotocore, which pins a botocore older than desq's, so it cannot share desq's venv.
    """
    import hashlib
    import shutil
    import tempfile

    digest = hashlib.sha256(S3FS_REQUIREMENTS.read_bytes()).hexdigest()[:12]
    home = Path(os.environ.get("DESQ_TEST_CACHE") or Path.home() / ".cache" / "desq-tests")
    venv = home / f"s3fs-{digest}"
    python = venv / "bin" / "python"
    if python.exists():
        return python
    home.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix="s3fs-", dir=home))
    try:
        subprocess.run([sys.executable, "-m", "venv", str(building)], check=True)
        subprocess.run([str(building / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(S3FS_REQUIREMENTS)], check=True)
        try:
            building.rename(venv)  # only its python is run, which finds its venv wherever it lies
        except OSError:
            pass  # another run built it first
    finally:
        if building.exists():
            shutil.rmtree(building, ignore_errors=True)
    return python
