"""The pipeline through real Celery workers: embedded broker + SQLite, and Redis + PostgreSQL.

A beat-equivalent trigger (``desq nightly``, which sends desq.nightly as beat would) runs a night;
workers consume the control queue and two shard ranges. Checks: every file in the container of its
(date, shard), byte-exact; each container packed by a worker consuming its shard's queue;
finish_night ran once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from desq.archive import Archive
from desq.layout import container_key, shard_of_name
from desq.settings import load_settings
from desq.storage.local import LocalStorage
from procs import children

BIN = Path(sys.executable).parent
TODAY = "2025-11-28"
pytestmark = pytest.mark.integration


def env_for(extra: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DESQ_")} | extra


class Night:
    """A business table, its originals, and worker processes for one test."""

    def __init__(self, root: Path, db_url: str, env: dict[str, str]) -> None:
        self.root = root
        self.table = f"files_{uuid.uuid4().hex[:8]}"
        self.db_url = db_url
        self.env = env_for({
            "DESQ_SOURCE_DB_URL": db_url, "DESQ_SOURCE_TABLE": self.table, "DESQ_SOURCE_ROOT": str(root / "originals"),
            "DESQ_ARCHIVE_URL": str(root / "archive"), "DESQ_DATA_DIR": str(root / "desq-data"),
            "DESQ_QUEUE_COUNT": "2", "DESQ_PIPELINE_LEASE_SECONDS": "5",
        } | env)
        self.engine = sa.create_engine(db_url)
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"CREATE TABLE {self.table} (id INTEGER PRIMARY KEY, created_at TIMESTAMP, path VARCHAR(200), des_name VARCHAR(300), des_hash_bits INTEGER, des_status VARCHAR(16))"))
        (root / "originals").mkdir()
        self.contents: dict[int, tuple[date, bytes]] = {}
        self.workers: list[subprocess.Popen[bytes]] = []

    def add(self, count: int, days: int) -> None:
        rows = []
        for i in range(1, count + 1):
            day = date(2025, 11, 20) - timedelta(days=i % days)
            data = (f"file {i} ".encode() * (1 + i % 40))[: 200 + i % 700]
            (self.root / "originals" / f"{i}.txt").write_bytes(data)
            self.contents[i] = (day, data)
            rows.append({"id": i, "c": datetime.combine(day, datetime.min.time()) + timedelta(seconds=i), "p": f"{i}.txt"})
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"INSERT INTO {self.table} (id, created_at, path) VALUES (:id, :c, :p)"), rows)

    def start(self, name: str, queues: str, *, pool: str = "solo") -> subprocess.Popen[bytes]:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        worker = subprocess.Popen(
            [str(BIN / "celery"), "-A", "tasks", "worker", "-Q", queues, "-n", f"{name}@%h", f"--pool={pool}", "-c", "1", "--without-mingle", "--without-gossip", "-l", "INFO"],
            cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        self.workers.append(worker)
        return worker

    def trigger(self) -> None:
        result = subprocess.run([str(BIN / "desq"), "nightly", "--today", TODAY], cwd=self.root, env=self.env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr

    def state(self, key: str) -> str | None:
        with self.engine.connect() as conn:
            try:
                return conn.execute(sa.text("SELECT value FROM desq_state WHERE key = :k"), {"k": key}).scalar_one_or_none()
            except sa.exc.DatabaseError:
                return None

    def wait_finished(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for w in self.workers:
                assert w.poll() is None, self.logs()
            if self.state(f"night:{TODAY}:finished"):
                time.sleep(3)  # would a second finish_night come?
                return json.loads(self.state(f"night:{TODAY}:summary") or "{}")
            time.sleep(0.5)
        pytest.fail("the night did not finish: " + self.logs())

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self.root.glob("*.log"))

    def check(self, summary: dict) -> None:
        settings = load_settings(env={k: v for k, v in self.env.items() if k.startswith("DESQ_")})
        layout = settings.layout
        archive = Archive(LocalStorage(self.root / "archive"))
        for i, (day, data) in self.contents.items():
            name = f"{day:%Y%m%d}_{i}"
            shard = shard_of_name(name, layout.shard_bits)
            assert archive.read(container_key(day, shard, layout.shard_bits), name) == data
        assert summary["files"] == len(self.contents) and summary["failed_rows"] == 0
        for key, who in summary["packed_by"].items():
            queue = layout.queue_of(int(key.split("/")[1].removesuffix(".des"), 16))
            assert who["queue"] == queue and who["worker"].startswith(f"packer-{queue.removeprefix('shards-')}@"), (key, who)
        assert self.state(f"night:{TODAY}:finished") == "1"
        with self.engine.connect() as conn:
            assert conn.execute(sa.text(f"SELECT count(*) FROM {self.table} WHERE des_status = 'PACKED'")).scalar_one() == len(self.contents)

    def close(self) -> None:
        for w in self.workers:
            w.terminate()
        for w in self.workers:
            try:
                w.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.kill()
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {self.table}"))
            conn.execute(sa.text("DROP TABLE IF EXISTS desq_state"))
            conn.execute(sa.text("DROP TABLE IF EXISTS desq_lease"))
        self.engine.dispose()


def fresh_redis(redis_url: str, db: int) -> str:
    """An emptied Redis database of its own for one test's broker."""
    url = redis_url.rsplit("/", 1)[0] + f"/{db}"
    subprocess.run(["redis-cli", "-u", url, "FLUSHDB"], check=True, capture_output=True)
    return url


def run_night(night: Night, files: int, days: int, timeout: float) -> None:
    night.add(files, days)
    night.start("control", "desq")
    night.start("packer-00-7f", "shards-00-7f")
    night.start("packer-80-ff", "shards-80-ff")
    night.trigger()
    night.check(night.wait_finished(timeout))


def test_a_night_on_the_embedded_broker(tmp_path: Path) -> None:
    night = Night(tmp_path, f"sqlite:///{tmp_path / 'source.db'}", {})
    try:
        run_night(night, files=1500, days=3, timeout=300)
    finally:
        night.close()


def test_a_night_on_redis_and_postgresql(tmp_path: Path, redis_url: str, pg_url: str) -> None:
    broker = fresh_redis(redis_url, 5)
    night = Night(tmp_path, pg_url, {"DESQ_BROKER_URL": broker})
    try:
        run_night(night, files=20_000, days=4, timeout=900)
    finally:
        night.close()


def test_a_packer_killed_mid_pack_leaves_nothing_half_done(tmp_path: Path, redis_url: str, pg_url: str) -> None:
    import signal

    broker = fresh_redis(redis_url, 6)
    night = Night(tmp_path, pg_url, {"DESQ_BROKER_URL": broker, "DESQ_QUEUE_COUNT": "1"})
    try:
        night.add(300, 2)
        big = tmp_path / "originals" / "1.txt"  # one 1 GiB original: streamed beside its container
        with open(big, "wb") as fh:
            fh.truncate(1 << 30)
        night.contents[1] = (night.contents[1][0], b"")
        night.start("control", "desq")
        packer = night.start("packer-00-ff", "shards-00-ff", pool="prefork")
        night.trigger()
        deadline = time.monotonic() + 120
        # The big member's own upload (beside its container), not any shard's: packs of small shards
        # take ~5 ms, and a kill between one's stored result and the next job is Celery's to attribute.
        while not list((tmp_path / "archive").rglob("*.big/.desq-upload-*")):
            assert time.monotonic() < deadline, night.logs()
            time.sleep(0.01)
        time.sleep(0.5)
        (child,) = children(packer.pid)
        os.kill(child, signal.SIGKILL)
        day = night.contents[1][0]
        key = container_key(day, shard_of_name(f"{day:%Y%m%d}_1", 8), 8)
        assert not (tmp_path / "archive" / key).exists()  # no partial container is visible
        with night.engine.connect() as conn:
            packed = conn.execute(sa.text(f"SELECT count(*) FROM {night.table} WHERE des_status = 'PACKED' AND id = 1")).scalar_one()
        assert packed == 0
        summary = night.wait_finished(300)  # the redelivered task finishes the job
        assert summary["failed_rows"] == 0 and night.state(f"night:{TODAY}:finished") == "1"
        from crc32c import crc32c

        archive = Archive(LocalStorage(tmp_path / "archive"))
        got = want = 0
        zeros = bytes(8 << 20)
        for chunk in archive.iter_range(key, f"{day:%Y%m%d}_1", chunk_size=8 << 20):
            got = crc32c(chunk, got)
        for _ in range((1 << 30) // len(zeros)):
            want = crc32c(zeros, want)
        assert got == want  # the 1 GiB member, whole
        for i, (d, data) in list(night.contents.items())[1:]:
            name = f"{d:%Y%m%d}_{i}"
            assert archive.read(container_key(d, shard_of_name(name, 8), 8), name) == data
        with night.engine.connect() as conn:
            assert conn.execute(sa.text(f"SELECT count(*) FROM {night.table} WHERE des_status = 'PACKED'")).scalar_one() == 300
    finally:
        night.close()


def test_flower_shows_the_workers_behind_basic_auth(tmp_path: Path, redis_url: str) -> None:
    import base64
    import socket
    import urllib.error
    import urllib.request

    broker = fresh_redis(redis_url, 7)
    env = env_for({"DESQ_BROKER_URL": broker, "DESQ_DATA_DIR": str(tmp_path)})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path / "flower.log", "wb")
    worker = subprocess.Popen([str(BIN / "celery"), "-A", "tasks", "worker", "-Q", "desq", "-n", "control@%h", "--pool=solo"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    flower = subprocess.Popen([str(BIN / "celery"), "-A", "tasks", "flower", f"--port={port}", "--address=127.0.0.1", "--basic-auth=ops:flower-test-pw"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/api/workers?refresh=1"
        auth = {"Authorization": "Basic " + base64.b64encode(b"ops:flower-test-pw").decode()}
        deadline = time.monotonic() + 60
        workers: dict = {}
        while time.monotonic() < deadline and not any(name.startswith("control@") for name in workers):
            try:
                with urllib.request.urlopen(urllib.request.Request(url, headers=auth), timeout=10) as answer:
                    workers = json.loads(answer.read())
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(1)
        assert any(name.startswith("control@") for name in workers), (tmp_path / "flower.log").read_text()[-2000:]
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(url, timeout=10)
        assert denied.value.code == 401
    finally:
        for process in (flower, worker):
            process.terminate()
            process.wait(timeout=30)
        log.close()
