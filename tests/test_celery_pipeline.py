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
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from desq.archive import Archive
from desq.layout import container_key, shard_of_name
from desq.storage.local import LocalStorage
from nights import BIN, TODAY, Night, env_for, fresh_redis
from procs import children

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from broker_tap import BrokerTap  # noqa: E402

pytestmark = pytest.mark.integration


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


@pytest.mark.parametrize("mode", ["name", "uid"])
def test_midnights_through_workers(tmp_path: Path, mode: str) -> None:
    """Text created_at at exact midnights (SQLite, as a business writes them) through real workers:
    each file in its own day's container, the uid cutoff at its target, and the same night run
    again rewrites nothing (the containers' versions are unchanged)."""
    night = Night(tmp_path, f"sqlite:///{tmp_path / 'source.db'}", {"DESQ_MODE": mode, "DESQ_TIMEZONE": "Europe/Warsaw"})
    rows = []
    for i in range(1, 301):
        day = date(2025, 11, 20) - timedelta(days=i % 3)
        clock = ("00:00:00", "00:00", "23:59:59.999999", "00:00:00.000001")[i % 4]
        (tmp_path / "originals" / f"{i}.bin").write_bytes(f"uid {i}".encode())
        rows.append({"id": i, "c": f"{day.isoformat()}{'T' if i % 2 else ' '}{clock}", "p": f"{i}.bin"})
    with night.engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO {night.table} (id, created_at, path) VALUES (:id, :c, :p)"), rows)
    try:
        night.start("control", "desq")
        night.start("packer-00-7f", "shards-00-7f")
        night.start("packer-80-ff", "shards-80-ff")
        night.trigger()
        summary = night.wait_finished(300)
        assert summary["files"] == 300 and summary["rewritten"] == 0, summary
        if mode == "uid":
            assert summary["cutoff_lag_days"] == 0 and night.state("archive_cutoff_date") == "2025-11-20"
        storage = LocalStorage(tmp_path / "archive")
        archive = Archive(storage)
        for row in rows:
            day = date.fromisoformat(row["c"][:10])
            name = f"{day:%Y%m%d}_{row['id']}" if mode == "name" else str(row["id"])
            shard = shard_of_name(name, 8) if mode == "name" else row["id"] % 256
            assert archive.read(container_key(day, shard, 8), name) == f"uid {row['id']}".encode()
        before = {i.key: i.etag for i in storage.list() if i.key.endswith(".des")}
        night.trigger()
        again = night.wait_finished(120, runs=2)
        assert (again["tasks"], again["files"], again["rewritten"]) == (0, 0, 0), again
        assert {i.key: i.etag for i in storage.list() if i.key.endswith(".des")} == before
    finally:
        night.close()


def test_a_night_of_200k_files_on_redis_and_postgresql(tmp_path: Path, redis_url: str, pg_url: str) -> None:
    """Issue 18's night in CI: 200k files over 4 days (1024 containers). Every task message, as Redis
    saw it, is under 4 KiB: a pack_shard carries (date, shard, night), finish_night the night."""
    broker = fresh_redis(redis_url, 5)
    night = Night(tmp_path, pg_url, {"DESQ_BROKER_URL": broker})
    try:
        with BrokerTap(broker) as tap:
            run_night(night, files=200_000, days=4, timeout=1200)
        seen = tap.stop()
    finally:
        night.close()
    assert seen["counts"].get("desq.pack_shard", 0) >= 1024 and seen["counts"].get("desq.finish_night") == 1, seen
    assert max(seen["largest"].values()) < 4096, seen


KILL_LEASE = 40
"""The kill test's lease: its night must finish within it plus 30 s of the kill."""
STOPPED = 10
"""...for which its child is stopped before the kill, so that its lease has ~3/4 left when it dies: long
enough for the redelivered task (after the ~180 tasks queued behind it) to find it held."""


def _lease_row(night: Night, key: str) -> tuple[int, datetime] | None:
    with night.engine.connect() as conn:
        row = conn.execute(sa.text("SELECT token, expires_at FROM desq_lease WHERE key = :k"), {"k": f"pack:{key}"}).first()
    return None if row is None else (int(row.token), row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=timezone.utc))


def test_a_packer_killed_mid_pack_leaves_nothing_half_done(tmp_path: Path, redis_url: str, pg_url: str) -> None:
    """And costs the night no more than its lease: the redelivered task finds the dead child's lease
    held ("busy") and tries again when that lease expires, not a fixed lease period later."""
    import signal

    broker = fresh_redis(redis_url, 6)
    night = Night(tmp_path, pg_url, {"DESQ_BROKER_URL": broker, "DESQ_QUEUE_COUNT": "1", "DESQ_PIPELINE_LEASE_SECONDS": str(KILL_LEASE)})
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
        # Stopped first (no renewal meanwhile): a retry when the lease expires comes ~30 s after the
        # kill, one a whole lease after the redelivered task met it more than 40 s after.
        os.kill(child, signal.SIGSTOP)
        time.sleep(STOPPED)
        os.kill(child, signal.SIGKILL)
        killed = datetime.now(timezone.utc)
        day = night.contents[1][0]
        key = container_key(day, shard_of_name(f"{day:%Y%m%d}_1", 8), 8)
        dead = _lease_row(night, key)
        assert dead is not None and timedelta(0) < dead[1] - killed <= timedelta(seconds=KILL_LEASE - STOPPED)  # not renewed since
        assert not (tmp_path / "archive" / key).exists()  # no partial container is visible
        with night.engine.connect() as conn:
            packed = conn.execute(sa.text(f"SELECT count(*) FROM {night.table} WHERE des_status = 'PACKED' AND id = 1")).scalar_one()
        assert packed == 0
        while (now := _lease_row(night, key)) is not None and now[0] == dead[0]:
            assert datetime.now(timezone.utc) < killed + timedelta(seconds=KILL_LEASE + 30), night.logs()
            time.sleep(0.1)
        taken = datetime.now(timezone.utc)
        assert taken - dead[1] < timedelta(seconds=5), f"taken over {taken - dead[1]} after the dead lease expired"
        assert taken - killed < timedelta(seconds=KILL_LEASE), f"taken over {taken - killed} after the kill"
        assert "] retry: Retry in " in (tmp_path / "packer-00-ff.log").read_text(), "the redelivered task never found the lease held"
        summary = night.wait_finished(300)  # the redelivered task finishes the job
        assert summary["failed_rows"] == 0 and night.state(f"night:{TODAY}:finished") == "1"
        finished = night.store.night_finished_at(TODAY)
        assert finished is not None and finished - killed < timedelta(seconds=KILL_LEASE + 30), f"the night finished {finished - killed} after the kill"
        print(f"kill: lease expired {dead[1] - killed} after it, taken over {taken - killed}, night finished {finished - killed}")
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
    # As the Procfile starts it: the credentials in Flower's environment, never on its command line.
    flower_env = env | {"FLOWER_BASIC_AUTH": "ops:flower-test-pw"}
    flower = subprocess.Popen([str(BIN / "celery"), "-A", "tasks", "flower", f"--port={port}", "--address=127.0.0.1"], cwd=tmp_path, env=flower_env, stdout=log, stderr=subprocess.STDOUT)
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
