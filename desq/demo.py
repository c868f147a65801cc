"""``desq demo``: the whole system on the embedded default, in about a minute.

It makes a sample business table (SQLite) and original files under ``data_dir``, starts real Celery
workers for the control queue and every shard queue on the embedded broker, sends the nightly task
as beat would, serves the files API with gunicorn on a free port, reads a sample back over HTTP
(whole and ranged) against the originals, and prints what it did. Everything it starts is stopped
on the way out, Ctrl-C included.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from desq.errors import DesqError
from desq.settings import Settings, load_settings
from desq.state import StateStore, wait_for_night

MARKER = ".desq-demo"
KINDS = [("pdf", "application/pdf", 30_000), ("jpg", "image/jpeg", 60_000), ("txt", "text/plain", 3_000), ("xml", "application/xml", 9_000), ("json", "application/json", 2_000)]
UNICODE_WORDS = ["faktura", "zażółć", "gęślą-jaźń", "Größe", "résumé", "東京", "報告書"]


@dataclass
class DemoReport:
    files: int
    containers: int
    bytes_in: int
    bytes_out: int
    seconds: float
    url: str
    sample: str
    data_dir: Path
    checked: int

    def lines(self) -> list[str]:
        saved = self.files - self.containers
        return [
            f"packed {self.files:,} files ({self.bytes_in / 1e6:.1f} MB) into {self.containers:,} containers ({self.bytes_out / 1e6:.1f} MB) in {self.seconds:.1f} s",
            f"objects: {self.files:,} -> {self.containers:,} ({saved:,} fewer objects to pay for, {self.files / max(1, self.containers):.0f} files a container)",
            f"read back over HTTP and compared byte for byte: {self.checked} files, one of them by Range",
            f"try:  curl -s {self.url}/files/{self.sample} | head -c 200",
            f"      curl -s -H 'Range: bytes=0-99' {self.url}/files/{self.sample}",
            f"data: {self.data_dir.resolve()} (source.db, originals/, archive/)",
        ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _content(rng: random.Random, kind: str, size: int, i: int) -> bytes:
    if kind in ("txt", "xml", "json"):
        line = {"txt": f"log line {i}: all is well\n", "xml": f"<invoice id='{i}'><total>{i % 997}.00</total></invoice>\n", "json": json.dumps({"id": i, "ok": True}) + "\n"}[kind]
        return (line.encode() * (size // len(line) + 1))[:size]
    return rng.randbytes(size)


def make_source(settings: Settings, count: int, today: date) -> tuple[int, dict[int, tuple[str, str, bytes]]]:
    """The sample business table and originals; returns (total bytes, a sample of id -> (name, type, bytes))."""
    root = Path(settings.data_dir)
    originals = root / "originals"
    originals.mkdir(parents=True)
    rng = random.Random(2026)
    days = [today - timedelta(days=d) for d in range(10, 7, -1)]  # three days, all old enough to archive
    rows, sample, total = [], {}, 0
    for i in range(1, count + 1):
        ext, mime, typical = KINDS[i % len(KINDS)]
        size = max(1, min(int(rng.lognormvariate(0, 0.8) * typical), 2_000_000))
        word = UNICODE_WORDS[i % len(UNICODE_WORDS)] if i % 10 == 0 else "doc"
        rel = f"{i % 100:02d}/{word}-{i}.{ext}"
        data = _content(rng, ext, size, i)
        path = originals / rel
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        total += size
        created = datetime.combine(days[i % len(days)], datetime.min.time()) + timedelta(seconds=rng.randrange(86400))
        rows.append({"id": i, "created_at": created, "path": rel})
        if i % max(1, count // 20) == 0 or i == 7:
            sample[i] = (f"{created:%Y%m%d}_{i}", mime, data)
    engine = sa.create_engine(settings.source.db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE files (id INTEGER PRIMARY KEY, created_at DATETIME NOT NULL, path TEXT NOT NULL, des_name TEXT, des_hash_bits INTEGER, des_status TEXT)"))
        conn.execute(sa.text("CREATE INDEX files_des ON files (des_status, des_hash_bits)"))
        conn.execute(sa.text("INSERT INTO files (id, created_at, path) VALUES (:id, :created_at, :path)"), rows)
    engine.dispose()
    return total, sample


def prepare(settings: Settings) -> None:
    """Clear an earlier demo's data (only a demo's: refuses a data_dir the demo did not make)."""
    root = Path(settings.data_dir)
    if root.exists() and any(root.iterdir()):
        if not (root / MARKER).exists():
            raise DesqError(f"{root} holds data the demo did not make; move it away or set DESQ_DATA_DIR to another folder")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("made by desq demo; `desq demo` replaces this folder\n")


def run(count: int, serve: bool, echo: Callable[[str], None], progress: Callable[[int, int], None], config: str | None = None) -> DemoReport:
    """The demo; ``echo`` prints a line, ``progress(done, total)`` shows packing progress.
    ``config`` is the ``--config`` file, refused like any other setting of the embedded default."""
    started = time.monotonic()
    base = load_settings(config)
    if base.source.db_url != "sqlite:///desq-data/source.db" or base.broker.url or base.archive.url != "desq-data/archive":
        raise DesqError("desq demo runs on the embedded default; unset DESQ_* and --config")
    prepare(base)
    root = Path(base.data_dir).resolve()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESQ_")} | {
        "DESQ_DATA_DIR": str(root), "DESQ_SOURCE_DB_URL": f"sqlite:///{root / 'source.db'}",
        "DESQ_SOURCE_ROOT": str(root / "originals"), "DESQ_ARCHIVE_URL": str(root / "archive"),
    }
    settings = load_settings(env=env)
    today = datetime.now(settings.zone).date()
    echo(f"making {count:,} sample files over 3 days under {root} ...")
    bytes_in, sample = make_source(settings, count, today)
    procs: list[subprocess.Popen[bytes]] = []
    logs = root / "logs"
    logs.mkdir()
    bin_dir = Path(sys.executable).parent

    def start(name: str, args: list[str], extra: dict[str, str] | None = None) -> None:
        log = open(logs / f"{name}.log", "wb")  # noqa: SIM115 - owned by the process
        procs.append(subprocess.Popen(args, env=env | (extra or {}), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))

    try:
        queues = settings.layout.queue_names()
        echo(f"starting {len(queues) + 1} Celery workers (queues desq, {', '.join(queues)}) on the embedded broker ...")
        start("control", [str(bin_dir / "celery"), "-A", "tasks", "worker", "-Q", "desq", "-n", "control@%h", "--pool=solo", "-l", "INFO", "--without-mingle", "--without-gossip"])
        for queue in queues:
            start(queue, [str(bin_dir / "celery"), "-A", "tasks", "worker", "-Q", queue, "-n", f"packer-{queue.removeprefix('shards-')}@%h", "--pool=solo", "-l", "INFO", "--without-mingle", "--without-gossip"])
        subprocess.run([str(bin_dir / "desq"), "nightly", "--today", today.isoformat()], env=env, check=True, capture_output=True)
        echo("sent desq.nightly, as beat does at midnight; packing ...")
        _wait_night(settings, today, count, procs, progress, logs)
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        start("web", [str(bin_dir / "gunicorn"), "-c", str(Path(__file__).resolve().parents[1] / "deploy" / "gunicorn.conf.py"), "web:create_app()"], {"BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "2"})
        _wait_http(port, procs[-1], logs)
        checked = _check_sample(port, sample)
        archive = root / "archive"
        containers = [p for p in archive.rglob("*.des")]
        report = DemoReport(
            files=count, containers=len(containers), bytes_in=bytes_in,
            bytes_out=sum(p.stat().st_size for p in archive.rglob("*") if p.is_file()),
            seconds=time.monotonic() - started, url=url, sample=sample[7][0], data_dir=root, checked=checked,
        )
        for line in report.lines():
            echo(line)
        if serve:
            echo(f"serving on {url}; Ctrl-C stops everything")
            for p in procs[:-1]:
                p.send_signal(signal.SIGTERM)
            signal.pause() if hasattr(signal, "pause") else time.sleep(1e9)
        return report
    finally:
        _stop(procs)


def _wait_night(settings: Settings, today: date, count: int, procs: list[subprocess.Popen[bytes]], progress: Callable[[int, int], None], logs: Path) -> None:
    engine = sa.create_engine(settings.source.db_url)
    packed = 0

    def check() -> None:
        nonlocal packed
        for p in procs:
            if p.poll() is not None:
                raise DesqError(f"a worker stopped; see {logs}")
        with engine.connect() as conn:
            packed = conn.execute(sa.text("SELECT count(*) FROM files WHERE des_status = 'PACKED'")).scalar_one()
        progress(packed, count)

    try:
        wait_for_night(StateStore(engine), today.isoformat(), max(300, count / 20), check=check)
        check()
    except TimeoutError:
        raise DesqError(f"the night did not finish in time; see {logs}") from None
    finally:
        engine.dispose()
    if packed != count:
        raise DesqError(f"the night finished with {packed:,} of {count:,} files packed; see {logs}")


def _wait_http(port: int, process: subprocess.Popen[bytes], logs: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DesqError(f"the web app stopped; see {logs / 'web.log'}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise DesqError("the web app did not come up")


def _check_sample(port: int, sample: dict[int, tuple[str, str, bytes]]) -> int:
    for name, mime, data in sample.values():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", f"/files/{name}")
        answer = conn.getresponse()
        body = answer.read()
        if answer.status != 200 or body != data or answer.getheader("Content-Type", "").split(";")[0] != mime:
            raise DesqError(f"/files/{name} did not read back as it was packed")
    name, _, data = sample[7]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", f"/files/{name}", headers={"Range": "bytes=10-99"})
    answer = conn.getresponse()
    if answer.status != 206 or answer.read() != data[10:100]:
        raise DesqError(f"a Range read of /files/{name} did not match")
    return len(sample)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
