"""Real Celery nights for tests: a business table, its originals, worker processes, and checks.

Shared by the pipeline, crash and service-fault tests. ``Night`` starts workers with ``start``,
triggers a night as beat would (``desq nightly``), waits for finish_night and checks every file.
"""

from __future__ import annotations

import functools
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
from desq.errors import DesqError
from desq.layout import container_key, shard_of_name
from desq.settings import load_settings
from desq.state import StateStore, wait_for_night
from desq.storage.local import LocalStorage

BIN = Path(sys.executable).parent
TODAY = "2025-11-28"


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

    def add(self, count: int, days: int, *, first: int = 1) -> None:
        """``count`` rows and originals with ids from ``first``, spread over ``days`` days up to 2025-11-20."""
        rows = []
        for i in range(first, first + count):
            day = date(2025, 11, 20) - timedelta(days=i % days)
            data = (f"file {i} ".encode() * (1 + i % 40))[: 200 + i % 700]
            (self.root / "originals" / f"{i}.txt").write_bytes(data)
            self.contents[i] = (day, data)
            rows.append({"id": i, "c": datetime.combine(day, datetime.min.time()) + timedelta(seconds=i % 86_400), "p": f"{i}.txt"})
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"INSERT INTO {self.table} (id, created_at, path) VALUES (:id, :c, :p)"), rows)

    def start(self, name: str, queues: str, *, pool: str = "solo", env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """A worker consuming ``queues``; ``env`` adds variables for this worker only. A worker
        started again under the same name appends to the same log."""
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        worker = subprocess.Popen(
            [str(BIN / "celery"), "-A", "tasks", "worker", "-Q", queues, "-n", f"{name}@%h", f"--pool={pool}", "-c", "1", "--without-mingle", "--without-gossip", "-l", "INFO"],
            cwd=self.root, env=self.env | (env or {}), stdout=log, stderr=subprocess.STDOUT,
        )
        self.workers.append(worker)
        return worker

    def start_beat(self) -> subprocess.Popen[bytes]:
        """Celery beat, as production runs it beside the workers (its schedule file under root)."""
        log = open(self.root / "beat.log", "wb")  # noqa: SIM115 - closed with the process
        beat = subprocess.Popen(
            [str(BIN / "celery"), "-A", "tasks", "beat", "-s", str(self.root / "beat-schedule"), "-l", "INFO"],
            cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        self.workers.append(beat)
        return beat

    def desq(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run ``desq ARGS`` with this night's settings (not checked: the caller looks at the result)."""
        return subprocess.run([str(BIN / "desq"), *args], cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout)

    def packed(self) -> int:
        """Rows marked PACKED so far (-1 while the database does not answer)."""
        try:
            with self.engine.connect() as conn:
                return conn.execute(sa.text(f"SELECT count(*) FROM {self.table} WHERE des_status = 'PACKED'")).scalar_one()
        except sa.exc.DBAPIError:
            self.engine.dispose()
            return -1

    def trigger(self) -> None:
        result = subprocess.run([str(BIN / "desq"), "nightly", "--today", TODAY], cwd=self.root, env=self.env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr

    def state(self, key: str) -> str | None:
        try:
            return self.store.get(key)
        except (sa.exc.DatabaseError, DesqError):  # a database restarting: not known yet
            return None

    @functools.cached_property
    def store(self) -> StateStore:
        return StateStore(self.engine)

    def wait_finished(self, timeout: float, runs: int = 1) -> dict:
        """The summary once the night has finished ``runs`` times (a database restarting meanwhile
        is waited out)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                wait_for_night(self.store, TODAY, deadline - time.monotonic(), runs=runs, check=self._alive)
                break
            except TimeoutError:
                pytest.fail("the night did not finish: " + self.logs())
            except (sa.exc.DBAPIError, DesqError):
                time.sleep(0.5)
        time.sleep(3)  # would a second finish_night come?
        summary = self.state(f"night:{TODAY}:summary")
        return json.loads(summary) if summary else {}

    def _alive(self) -> None:
        for w in self.workers:
            assert w.poll() is None, self.logs()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self.root.glob("*.log"))

    def check_files(self, archive: Archive | None = None) -> None:
        """Every file byte-exact in the container of its (date, shard), and every row PACKED."""
        layout = load_settings(env={k: v for k, v in self.env.items() if k.startswith("DESQ_")}).layout
        archive = archive or Archive(LocalStorage(self.root / "archive"))
        for i, (day, data) in self.contents.items():
            name = f"{day:%Y%m%d}_{i}"
            shard = shard_of_name(name, layout.shard_bits)
            assert archive.read(container_key(day, shard, layout.shard_bits), name) == data
        assert self.packed() == len(self.contents)

    def check(self, summary: dict, archive: Archive | None = None, *, database_restarted: bool = False) -> None:
        """Every file is in its container (read back byte for byte) and PACKED, and the summary says so.

        A file is packed once: by tonight's pack, or found in its container by the retry of a pack
        whose marking failed after it had published. When the database restarts during the night
        (``database_restarted``), a marking can also commit and lose its acknowledgement: the retry
        finds those rows PACKED and has nothing to count, so the summary may count fewer files (never
        more); the archive and the row states are still checked in full."""
        settings = load_settings(env={k: v for k, v in self.env.items() if k.startswith("DESQ_")})
        layout = settings.layout
        self.check_files(archive)
        counted = summary["files"] + summary["present"]
        assert (counted <= len(self.contents) if database_restarted else counted == len(self.contents)), summary
        assert summary["failed_rows"] == 0, summary
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
            conn.execute(sa.text("DROP TABLE IF EXISTS desq_spool"))
        self.engine.dispose()


def fresh_redis(redis_url: str, db: int) -> str:
    """An emptied Redis database of its own for one test's broker."""
    url = redis_url.rsplit("/", 1)[0] + f"/{db}"
    subprocess.run(["redis-cli", "-u", url, "FLUSHDB"], check=True, capture_output=True)
    return url
