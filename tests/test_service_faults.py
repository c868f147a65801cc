"""Service faults during real nights: Redis and PostgreSQL restarted, the S3 server failing, the
archive disk full. Each ends with correct data (every file byte-exact in its container, every row
PACKED, finish_night once) or a clear failure that is reported and completed by the next run.

Only private instances are restarted or filled (tests/private_services.py): a redis-server and a
PostgreSQL 15 cluster of the test's own, a tmpfs; the shared PostgreSQL gives each test a database
of its own, the shared S3 test server a bucket of its own (behind tests/faultproxy.py).

Long runs, by hand (more files, more restarts, more S3 faults):

    DESQ_FAULTS_LONG=1 .venv/bin/pytest -s tests/test_service_faults.py

``DESQ_FAULTS_SEED=<int>`` changes the seed of the random choices (default 11); ``-s`` shows
the figures each test prints (restarts, tasks queued at each, retries, faults injected by kind).
"""

from __future__ import annotations

import errno
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from desq.archive import Archive
from desq.deployment import Deployment
from desq.layout import container_key, shard_hex, shard_of_name
from desq.pipeline.pack import STAGING
from desq.settings import Settings, load_settings
from desq.source.marker import mark
from desq.source.plan import plan_names
from desq.source.table import SourceTable
from desq.storage import StorageError
from desq.storage.local import TEMP_PREFIX, LocalStorage
from desq.storage.s3 import S3Storage
from faultproxy import Chaos, Fault, FaultProxy
from nights import TODAY, Night
from private_services import PrivatePostgres, PrivateRedis, fresh_pg_database, tmpfs
from web import create_app

pytestmark = pytest.mark.integration

LONG = os.environ.get("DESQ_FAULTS_LONG") == "1"
SEED = int(os.environ.get("DESQ_FAULTS_SEED", "11"))


# --- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture
def night_db(pg_url: str) -> Iterator[str]:
    """A database of this test's own on the shared PostgreSQL (desq_state is per database)."""
    url, drop = fresh_pg_database(pg_url)
    try:
        yield url
    finally:
        drop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A private Redis (no persistence) as broker and result backend."""
    with PrivateRedis(tmp_path / "redis", appendonly=False) as redis:
        yield redis


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PrivatePostgres]:
    with PrivatePostgres() as pg:
        yield pg


def until(what: str, condition: Callable[[], bool], timeout: float, night: Night) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}\n{night.logs()}")
        for worker in night.workers:
            assert worker.poll() is None, night.logs()
        time.sleep(0.1)


def start_workers(night: Night, queues: list[str]) -> None:
    night.start("control", "desq")
    for queue in queues:
        night.start(f"packer-{queue.removeprefix('shards-')}", queue)


def settings_of(night: Night, **extra: str) -> Settings:
    return load_settings(env={k: v for k, v in night.env.items() if k.startswith("DESQ_")} | extra)


def groups(night: Night, bits: int) -> set[tuple[date, int]]:
    """The (date, shard)s this night's files fall into."""
    return {(day, shard_of_name(f"{day:%Y%m%d}_{i}", bits)) for i, (day, _) in night.contents.items()}


def packer_logs(night: Night) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(night.root.glob("packer-*.log")))


def retries_logged(night: Night) -> int:
    return packer_logs(night).count("Retry in")


def staging_left(storage: LocalStorage | S3Storage) -> list[str]:
    return [info.key for info in storage.list() if STAGING in info.key]


# --- 1. Redis restarted during a fan-out --------------------------------------------------------


@pytest.mark.parametrize("how", ["kill-9", "shutdown"])
def test_redis_restarted_during_a_fan_out(tmp_path: Path, night_db: str, how: str) -> None:
    """The broker and result backend (append-only, fsync always) is killed or stopped while
    pack_shard tasks are queued and running, and started again: every shard finishes, every file
    reads back, finish_night runs once. Regressions: a result, or its count in the chord, stored
    while Redis was down was lost and the night never finished (tasks.celeryconf)."""
    files, restarts = (6000, 4) if LONG else (1200, 2)
    with PrivateRedis(tmp_path / "redis") as redis:
        night = Night(tmp_path, night_db, {"DESQ_BROKER_URL": redis.url(0)})
        try:
            night.add(files, days=2)
            queues = settings_of(night).layout.queue_names()
            start_workers(night, queues)
            night.start_beat()
            night.trigger()
            queued_at = []
            for n in range(1, restarts + 1):
                until(f"packing progress before restart {n}", lambda n=n: night.packed() >= files * n // (restarts + 2), 300, night)
                queued = sum(int(redis.cli("llen", q) or 0) for q in queues)
                assert queued > 0, "the fan-out finished before Redis could be restarted during it"
                queued_at.append(queued)
                if how == "kill-9":
                    redis.kill()
                else:
                    redis.shutdown()
                time.sleep(2)  # workers see a refused connection, not just a dropped one
                redis.start()
            summary = night.wait_finished(600)
            night.check(summary)
            tasks = len(groups(night, 8))
            assert summary["tasks"] == tasks and summary["by_status"] == {"packed": tasks}, summary["by_status"]
            time.sleep(2)
            assert night.state(f"night:{TODAY}:finished") == "1"
            print(f"\nredis {how}: {restarts} restarts with {queued_at} pack_shard tasks queued, {tasks} tasks, {files} files, 0 lost")
        finally:
            night.close()


def test_a_pack_shard_message_the_broker_lost_is_sent_again(tmp_path: Path, night_db: str, broker: PrivateRedis) -> None:
    """A Redis restart can lose a message a worker was popping (see tasks.watch.watch_nights):
    here one is taken off its queue before any packer runs; beat's watch_nights sends it again
    once the queues are empty, and the night finishes once with every file. Regression: the
    night's chord waited for the lost task forever."""
    night = Night(tmp_path, night_db, {"DESQ_BROKER_URL": broker.url(0)})
    try:
        night.add(300, days=2)
        queues = settings_of(night).layout.queue_names()
        night.start("control", "desq")
        night.start_beat()
        night.trigger()
        until("the fan-out", lambda: sum(int(broker.cli("llen", q) or 0) for q in queues) == len(groups(night, 8)), 120, night)
        assert broker.cli("rpop", queues[0])  # the next message a packer would have popped
        for queue in queues:
            night.start(f"packer-{queue.removeprefix('shards-')}", queue)
        summary = night.wait_finished(300)
        night.check(summary)
        assert "sent 1 lost pack_shard task(s) again" in (tmp_path / "control.log").read_text()
    finally:
        night.close()


# --- 2. PostgreSQL restarted during packing -----------------------------------------------------


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgresql_restarted_during_packing(tmp_path: Path, private_pg: PrivatePostgres, broker: PrivateRedis, mode: str) -> None:
    """The source database (with desq's own tables) goes down and comes back while packers work:
    the tasks that hit it are retried, and in the end every file is packed and PACKED, with no
    staging object left. Regressions: a pack that failed after staging left its staging object; a
    lease release failing after a good pack made it a retry that reported 0 files."""
    files, restarts = (6000, 3) if LONG else (1200, 1)
    night = Night(tmp_path, private_pg.create_database(), {"DESQ_BROKER_URL": broker.url(0)})
    try:
        night.add(files, days=2)
        start_workers(night, settings_of(night).layout.queue_names())
        night.trigger()
        for n in range(1, restarts + 1):
            until(f"packing progress before restart {n}", lambda n=n: night.packed() >= files * n // (restarts + 2), 300, night)
            met = retries_logged(night)  # down until a packer has met it: a quiet moment would test nothing
            private_pg.restart(mode, down_seconds=2, until=lambda met=met: retries_logged(night) > met)  # type: ignore[arg-type]
            night.engine.dispose()
            assert 0 <= night.packed() < files, "packing finished before PostgreSQL could be restarted during it"
        summary = night.wait_finished(600)
        night.check(summary, database_restarted=True)
        assert staging_left(LocalStorage(tmp_path / "archive")) == []
        retries = retries_logged(night)
        assert retries > 0, "no pack_shard task met the restart: the test tested nothing"
        print(f"\npostgresql {mode}: {restarts} restarts, {retries} pack_shard retries logged, {summary['tasks']} tasks, {files} files, 0 lost")
    finally:
        night.close()


# --- 3. S3 server faults during a night ---------------------------------------------------------

CHAOS = [Fault.error(500), Fault.unavailable(), Fault.slow_down(), Fault.reset(), Fault.lost()]
"""500 InternalError, 503 ServiceUnavailable, 503 SlowDown, a reset before and one after the server did the request."""


def fault_counts(proxy: FaultProxy) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for seen in proxy.seen:
        if seen.applied is not None:
            counts[f"{seen.applied.status} {seen.applied.code}" if seen.applied.kind == "status" else seen.applied.kind] += 1
    return dict(sorted(counts.items()))


def staging_put_of(key: str) -> Callable[[str], bool]:
    return lambda target: f"/{key}{STAGING}" in target


def test_s3_faults_during_a_night(tmp_path: Path, night_db: str, broker: PrivateRedis, s3_endpoint: str, s3_bucket: str) -> None:
    """A Celery night and a ``--sync`` night against an S3 server that answers 500, 503, SlowDown
    and resets connections at a seeded random rate. A shard whose store keeps failing is retried
    (Celery) or reported failed (sync, exit 1, naming its container) and completed by the next
    run; in the end every file is byte-exact in its container and every row PACKED."""
    files, rate = (3000, 0.2) if LONG else (600, 0.1)
    url = f"s3://{s3_bucket}/night"
    direct = S3Storage(url, endpoint_url=s3_endpoint)
    archive = Archive(direct, cache_bytes=0)
    with FaultProxy(s3_endpoint) as proxy:
        night = Night(tmp_path, night_db, {
            "DESQ_BROKER_URL": broker.url(0), "DESQ_ARCHIVE_URL": url, "DESQ_ARCHIVE_S3_ENDPOINT_URL": proxy.url, "DESQ_SHARD_BITS": "4",
        })
        try:
            night.add(files, days=2)
            # A: a Celery night; one container's store fails all 5 attempts once (a task retry).
            first = min(groups(night, 4))
            retried = container_key(*first, 4)
            proxy.plan(Fault.slow_down(method="PUT", where=staging_put_of(retried)), times=5)
            proxy.chaos = Chaos(rate, CHAOS, seed=SEED)
            start_workers(night, settings_of(night).layout.queue_names())
            night.trigger()
            summary = night.wait_finished(600)
            proxy.clear()
            night_faults = fault_counts(proxy)
            failed = summary["by_status"].get("failed", 0)
            if failed:  # gave up after every retry: reported, and the next run completes it
                assert all(f and "\n" not in f for f in summary["failures"]), summary["failures"]
                rerun = night.desq("nightly", "--sync", "--today", TODAY)
                assert rerun.returncode == 0, rerun.stdout + rerun.stderr
                night.check_files(archive)
            else:
                night.check(summary, archive)
            assert any(retried in line for line in packer_logs(night).splitlines() if "Retry in" in line), "the failed store was not retried"

            # B: a --sync night; one container's store always fails: reported, the rest packed.
            before = len(night.contents)
            night.add(files // 3, days=2, first=before + 1)
            new = {(d, shard_of_name(f"{d:%Y%m%d}_{i}", 4)) for i, (d, _) in night.contents.items() if i > before}
            target = sorted(new)[len(new) // 2]
            broken = container_key(*target, 4)
            proxy.chaos = Chaos(rate, CHAOS, seed=SEED + 1)
            proxy.always = Fault.slow_down(method="PUT", where=staging_put_of(broken))
            failing = night.desq("nightly", "--sync", "--today", TODAY)
            proxy.clear()
            sync_faults = fault_counts(proxy)
            for kind, count in night_faults.items():
                sync_faults[kind] -= count
            assert failing.returncode == 1, failing.stdout + failing.stderr
            assert failing.stderr.strip() == f"desq: error: 1 of {len(new)} pack task(s) failed; see above"
            reported = [line for line in failing.stdout.splitlines() if broken in line]
            assert reported and "SlowDown" in reported[0], failing.stdout
            left = {i for i, (d, _) in night.contents.items() if (d, shard_of_name(f"{d:%Y%m%d}_{i}", 4)) == target and i > before}
            with night.engine.connect() as conn:
                ready = set(conn.execute(sa.text(f"SELECT id FROM {night.table} WHERE des_status = 'READY'")).scalars())
            assert ready == left  # exactly the failed shard's new rows wait; nothing of it is PACKED
            for i, (day, data) in night.contents.items():  # what was packed before is intact
                if i <= before and (day, shard_of_name(f"{day:%Y%m%d}_{i}", 4)) == target:
                    assert archive.read(broken, f"{day:%Y%m%d}_{i}") == data
            rerun = night.desq("nightly", "--sync", "--today", TODAY)
            assert rerun.returncode == 0, rerun.stdout + rerun.stderr
            night.check_files(archive)
            assert staging_left(direct) == []
            total = sum(night_faults.values()) + sum(sync_faults.values())
            print(f"\ns3 faults: {len(proxy.seen)} requests, {total} faults injected (celery night {night_faults}; sync night {sync_faults});"
                  f" {failed} shard(s) given up in the celery night, 1 reported failed in the sync night and completed by the rerun;"
                  f" {len(night.contents)} files, 0 lost")
            assert total > 0
        finally:
            night.close()
            direct.client.close()


# --- 4. The local archive disk full -------------------------------------------------------------


def test_local_archive_disk_full(tmp_path: Path) -> None:
    """The archive folder is a small tmpfs; packing fills it. The pack that does not fit fails
    naming ENOSPC, leaves the published containers intact and nothing partial, marks nothing,
    deletes no original; the files API keeps serving; after freeing space the rerun completes.
    Regressions: the error did not name ENOSPC; a failed pack left the big members it had stored
    beside a container that was never published."""
    archive_dir = tmp_path / "archive"
    rng = random.Random(SEED)
    with tmpfs(archive_dir, "4m"):
        night = Night(tmp_path, f"sqlite:///{tmp_path / 'source.db'}", {"DESQ_SHARD_BITS": "2", "DESQ_ARCHIVE_DELETE_ORIGINALS": "true", "DESQ_ARCHIVE_BIG_FILE_BYTES": str(24 << 10)})
        try:
            night.add(40, days=1)
            for i, (day, _) in night.contents.items():  # incompressible, 16-32 KiB each
                data = rng.randbytes(rng.randint(16 << 10, 32 << 10))
                (tmp_path / "originals" / f"{i}.txt").write_bytes(data)
                night.contents[i] = (day, data)
            settings = settings_of(night)
            source = SourceTable.connect(settings)
            mark(source, today=date.fromisoformat(TODAY))
            work = plan_names(source).work
            assert len(work) == 4

            def shard_bytes(day: date, shard: int) -> int:
                return sum(len(d) for i, (dd, d) in night.contents.items() if dd == day and shard_of_name(f"{dd:%Y%m%d}_{i}", 2) == shard)

            # Leave room for the first container and half the second: "pack until full" stops there.
            ballast = archive_dir / "ballast"
            free = os.statvfs(archive_dir).f_bavail * os.statvfs(archive_dir).f_frsize
            room = shard_bytes(work[0].date, work[0].shard) + (64 << 10) + shard_bytes(work[1].date, work[1].shard) // 2
            with open(ballast, "wb") as fh:
                os.posix_fallocate(fh.fileno(), 0, free - room)
            storage = LocalStorage(archive_dir)
            packer = Deployment(settings, source=source, storage=storage).packer()
            published: list[str] = []
            failure: StorageError | None = None
            for w in work:
                try:
                    assert packer.pack(w.date, w.shard).status == "packed"
                except StorageError as exc:
                    failure = exc
                    full = w
                    break
                published.append(container_key(w.date, w.shard, 2))
            assert published and failure is not None, "the disk never filled"
            cause = failure.__cause__
            assert isinstance(cause, OSError) and cause.errno == errno.ENOSPC, repr(cause)
            assert "ENOSPC" in str(failure) and "No space left on device" in str(failure) and "\n" not in str(failure), str(failure)

            def nothing_partial() -> None:
                keys = [i.key for i in storage.list() if i.key != "ballast"]
                assert sorted(k for k in keys if k.endswith(".des")) == published
                assert [k for k in keys if not k.endswith(".des") and k.split(".big/")[0] not in published] == []
                assert [p.name for p in archive_dir.rglob("*") if p.name.startswith(TEMP_PREFIX) or STAGING in p.name] == []

            def statuses(ids: set[int]) -> set[str | None]:
                with night.engine.connect() as conn:
                    rows = conn.execute(sa.text(f"SELECT id, des_status FROM {night.table}")).all()
                return {status for i, status in rows if i in ids}

            nothing_partial()
            not_packed = {i for i, (d, _) in night.contents.items() if container_key(d, shard_of_name(f"{d:%Y%m%d}_{i}", 2), 2) not in published}
            assert statuses(not_packed) == {"READY"}
            assert all((tmp_path / "originals" / f"{i}.txt").exists() for i in not_packed)
            assert full.shard in {shard_of_name(f"{night.contents[i][0]:%Y%m%d}_{i}", 2) for i in not_packed}

            # A late file for the first container: its replacement does not fit either (the CLI's one line).
            day = work[0].date
            late = next(i for i in range(1000, 2000) if shard_of_name(f"{day:%Y%m%d}_{i}", 2) == work[0].shard)
            data = rng.randbytes(shard_bytes(work[1].date, work[1].shard))
            (tmp_path / "originals" / f"{late}.txt").write_bytes(data)
            with night.engine.begin() as conn:
                conn.execute(sa.text(f"INSERT INTO {night.table} (id, created_at, path) VALUES (:i, :c, :p)"),
                             {"i": late, "c": datetime.combine(day, datetime.min.time()) + timedelta(hours=12), "p": f"{late}.txt"})
            night.contents[late] = (day, data)
            mark(source, today=date.fromisoformat(TODAY))
            old = storage.head(published[0])
            old_bytes = (archive_dir / published[0]).read_bytes()
            cli = night.desq("pack", "--date", day.isoformat(), "--shard", shard_hex(work[0].shard, 2))
            assert cli.returncode == 1 and cli.stderr.count("\n") == 1, cli.stderr
            assert cli.stderr.startswith("desq: error: ") and "No space left on device (ENOSPC)" in cli.stderr, cli.stderr
            assert storage.head(published[0]) == old and (archive_dir / published[0]).read_bytes() == old_bytes
            nothing_partial()
            assert statuses({late}) == {"READY"} and (tmp_path / "originals" / f"{late}.txt").exists()

            # The files API still serves every packed file from the full disk.
            client = create_app(settings).test_client()
            assert client.get("/readyz").status_code == 200
            packed = [i for i in night.contents if i not in not_packed and i != late]
            for i in packed:
                answer = client.get(f"/files/{night.contents[i][0]:%Y%m%d}_{i}")
                assert answer.status_code == 200 and answer.data == night.contents[i][1]
            ranged = client.get(f"/files/{night.contents[packed[0]][0]:%Y%m%d}_{packed[0]}", headers={"Range": "bytes=10-99"})
            assert ranged.status_code == 206 and ranged.data == night.contents[packed[0]][1][10:100]

            # Free the space: the rerun packs what is left, then deletes the originals.
            ballast.unlink()
            for w in plan_names(source).work:
                assert packer.pack(w.date, w.shard).status == "packed"
            night.check_files(Archive(storage))
            assert not any((tmp_path / "originals" / f"{i}.txt").exists() for i in night.contents)
            print(f"\ndisk full: {len(published)} container(s) published before ENOSPC, 2 packs refused, 0 lost")
        finally:
            night.close()
