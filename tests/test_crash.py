"""Crash tests: packers SIGKILLed at random failpoints of pack_shard, and the marker killed mid-batch.

Over real Redis (broker in database 9), PostgreSQL (a schema of the test's own) and the S3 test
server (a bucket of the test's own; the archive at ``s3://<bucket>/archive``), with
``archive.delete_originals`` on, so that "no original is deleted before its container is verified"
is tested for real. Failpoints are those of ``desq/failpoints.py``.

**pack_shard.** One night through real Celery workers: a control worker (no failpoints) and one
packer worker with a prefork pool of one child, whose plan holds ``CRASH_KILLS`` entries
``point=hit:stop`` drawn from ``CRASH_SEED`` (every point in turn, shuffled, each at a random hit).
An entry fires at most once across processes (``DESQ_FAILPOINTS_DIR``), so after each kill the new
pool child goes on with the next one. When the child reaches an entry's point it stops itself
(SIGSTOP): nothing runs any more (the child is the only process that packs, its parent waits for
it, the control worker waits for the chord). The test checks the state right there, then SIGKILLs
the child. Checks at each kill:

- no row is PACKED unless its file is in the published container at its key, byte-exact;
- no original is deleted unless its row is PACKED and its member verified in the container;
- every object at a container key opens and verifies (``Reader.verify``), and holds only files of
  its (date, shard), byte-exact; any other object is a staging object (``<key>.staging-<token>``)
  or a big member beside its container; nothing else is there.

The pool's parent notices the child's death (within ~5 s: Celery's pool maintenance), requeues
the task (``task_acks_late`` + ``task_reject_on_worker_lost``; kombu's Redis transport puts it at
the back of the queue) and forks a new child. A redelivered task that still finds the dead child's
lease held answers "busy" and is retried when that lease expires (leases of 5 s here). Every 4th
kill ``desq recover`` runs beside the working packer; every 7th kill the whole packer worker is
restarted (a warm shutdown, which puts back the messages it held, then a new worker). Killing a
whole solo worker instead would leave its unacknowledged message invisible for the Redis
visibility timeout (5 h, kept above the task time limit so that no running task is ever delivered
twice), so that is not what this test does; the pool child is the process that runs pack_shard
and the one an OOM killer picks. At the end: ``desq recover``, then every file reads
back byte-exact, every row is PACKED, no staging object is left, every big member object belongs
to a container, finish_night ran exactly once and no shard was reported failed or busy.

**The marker.** ``desq mark`` runs in a subprocess with one entry per run (``marker.in_batch``:
after a batch's UPDATE, before its commit, or ``marker.between_batches``: after its commit, at a
random batch), killed ``max(6, CRASH_KILLS // 4)`` times, then once to the end. A trigger counts
the updates of every row. After each kill exactly the batches committed before it are marked
(no half batch), and in the end every eligible row is marked exactly once with the right des_name
and des_hash_bits, the others never.

CI runs 24 packer kills and 6 marker kills. Long run, by hand (the night grows with the kills)::

    CRASH_KILLS=200 CRASH_SEED=7 .venv/bin/pytest -s tests/test_crash.py

``-s`` shows the figures (kills by point, restarts, recover runs, originals left over). The
interleaving of tasks depends on timing, so the same seed gives the same plan, not necessarily
the same victims.
"""

from __future__ import annotations

import math
import os
import random
import re
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from desq.archive import Archive, external_key_for
from desq.deployment import Deployment
from desq.layout import container_key, shard_of_name
from desq.pipeline.lease import Leases
from desq.pipeline.night import recover
from desq.settings import Settings, load_settings
from desq.storage import Storage, storage_for
from desq.storage.local import LocalStorage
from nights import BIN, TODAY, Night, env_for, fresh_redis

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("CRASH_SEED", "20251128"))
KILLS = int(os.environ.get("CRASH_KILLS", "24"))
MARKER_KILLS = max(6, KILLS // 4)
BITS = 4
RECOVER_EVERY = 4
RESTART_EVERY = 7
PACK_POINTS = {  # failpoint: the highest hit a plan entry asks for
    "pack.after_lease": 2,
    "pack.fetched": 3,
    "pack.member_written": 3,
    "pack.after_upload": 2,
    "pack.after_verify": 2,
    "pack.after_publish": 2,
    "pack.marked_batch": 2,
    "pack.after_mark": 2,
    "pack.deleted": 3,
    "pack.done": 2,
}
CONTAINER = re.compile(r"\d{8}/[0-9A-F]+\.des")
STAGING = re.compile(r"\d{8}/[0-9A-F]+\.des\.staging-[0-9a-f]+")
BIG = re.compile(r"\d{8}/[0-9A-F]+\.des\.big/[0-9a-f]{32}")
DOCUMENTS = {"_desq/cutoff.json", "_desq/night.json"}
"""What the night publishes beside the containers (for the files API)."""


@contextmanager
def private_schema(pg_url: str) -> Iterator[str]:
    """A schema of this test's own on the shared PostgreSQL (desq_state and desq_lease included);
    yields a URL whose sessions work in it and carry its name as application_name."""
    name = f"crash_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {name}"))
    try:
        yield f"{pg_url}?options=-csearch_path%3D{name}&application_name={name}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {name} CASCADE"))
        admin.dispose()


def process_state(pid: int) -> str | None:
    """The state letter of ``pid`` (T: stopped, Z: zombie), None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def wait_until(what: str, condition: Callable[[], bool], timeout: float, logs: Callable[[], str] = lambda: "") -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}\n{logs()}")
        time.sleep(0.02)


# --- the checks ---------------------------------------------------------------------------------


class Checker:
    """Checks the archive, the rows and the originals of a night against what the test wrote."""

    def __init__(self, night: Night, settings: Settings) -> None:
        self.night = night
        self.settings = settings
        self.storage: Storage = storage_for(settings)
        self.verified: dict[tuple[str, str], dict[str, bytes]] = {}
        """(container key, etag) -> its members, once verified (a stored object never changes)."""
        self.checks = 0

    def name_of(self, row_id: int) -> str:
        return f"{self.night.contents[row_id][0]:%Y%m%d}_{row_id}"

    def key_of(self, row_id: int) -> str:
        day = self.night.contents[row_id][0]
        return container_key(day, shard_of_name(self.name_of(row_id), BITS), BITS)

    def container(self, key: str, etag: str, where: str) -> dict[str, bytes]:
        """The members of a published container, after checking it whole."""
        if (key, etag) in self.verified:
            return self.verified[(key, etag)]
        reader = Archive(self.storage, cache_bytes=0).open(key)
        problems = reader.verify()
        assert not problems, f"{where}: {key} does not verify: {problems}"
        members = list(reader.members())
        names = [m.name for m in members]
        assert len(names) == len(set(names)), f"{where}: {key} holds a name twice"
        got = dict(reader.read_many([m.name for m in members if not m.external]))
        for m in members:
            if m.external:
                got[m.name] = b"".join(reader.iter_range(m.name))
        for name, data in got.items():
            row_id = int(name.rsplit("_", 1)[1])
            assert name == self.name_of(row_id) and self.key_of(row_id) == key, f"{where}: {key} holds {name!r}, which belongs elsewhere"
            assert data == self.night.contents[row_id][1], f"{where}: {key} holds {name!r} with other bytes"
        self.verified[(key, etag)] = got
        return got

    def objects(self, where: str) -> tuple[dict[str, dict[str, bytes]], list[str], set[str]]:
        """(container key -> members, staging keys, big member keys) of the whole archive."""
        containers, staging, big = {}, [], set()
        for info in self.storage.list():
            if CONTAINER.fullmatch(info.key):
                containers[info.key] = self.container(info.key, info.etag, where)
            elif STAGING.fullmatch(info.key):
                staging.append(info.key)
            elif BIG.fullmatch(info.key):
                big.add(info.key)
            elif info.key in DOCUMENTS:
                continue
            else:
                pytest.fail(f"{where}: unexpected object {info.key!r} in the archive")
        return containers, staging, big

    def rows(self) -> list[tuple[int, str | None, int | None, str | None]]:
        with self.night.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(f"SELECT id, des_name, des_hash_bits, des_status FROM {self.night.table} ORDER BY id"))]

    def frozen(self, where: str) -> Counter[str]:
        """Every invariant that must hold at any instant; returns the rows by status."""
        self.checks += 1
        containers, _, _ = self.objects(where)
        states: Counter[str] = Counter()
        originals = self.night.root / "originals"
        for row_id, name, shard, status in self.rows():
            states[status or "NULL"] += 1
            expected = self.name_of(row_id)
            if status is not None:
                assert (name, shard) == (expected, shard_of_name(expected, BITS)), f"{where}: row {row_id} is marked {name!r}/{shard}"
            archived = containers.get(self.key_of(row_id), {}).get(expected) == self.night.contents[row_id][1]
            if status == "PACKED":
                assert archived, f"{where}: row {row_id} is PACKED but {expected} is not in {self.key_of(row_id)}"
            if not (originals / f"{row_id}.txt").exists():
                assert status == "PACKED" and archived, f"{where}: the original of row {row_id} ({status}) is gone before its member was verified"
        return states

    def final(self) -> int:
        """The end of the night, after ``desq recover``; returns how many originals are left over."""
        states = self.frozen("at the end")
        assert states == Counter({"PACKED": len(self.night.contents)}), states
        containers, staging, big = self.objects("at the end")
        assert staging == [], f"staging objects left after desq recover: {staging}"
        for row_id in self.night.contents:
            assert self.name_of(row_id) in containers[self.key_of(row_id)]
        referenced = set()
        for key in containers:
            for m in Archive(self.storage, cache_bytes=0).open(key).members():
                if m.external:
                    referenced.add(f"{key.rpartition('/')[0]}/{external_key_for(key, m.name)}")
        assert big == referenced, f"big member objects that no container holds: {sorted(big - referenced)}"
        return sum(1 for row_id in self.night.contents if (self.night.root / "originals" / f"{row_id}.txt").exists())


# --- pack_shard -----------------------------------------------------------------------------------


def pack_plan(rng: random.Random, kills: int, highest: dict[str, int] = PACK_POINTS) -> list[tuple[str, int]]:
    """``kills`` (point, hit) entries: every point of ``highest`` in turn, in a shuffled order, at
    a random hit up to its own highest."""
    points: list[str] = []
    while len(points) < kills:
        batch = list(highest)
        rng.shuffle(batch)
        points += batch
    return [(point, rng.randint(1, highest[point])) for point in points[:kills]]


def test_packers_killed_at_random_points_lose_nothing(tmp_path: Path, redis_url: str, pg_url: str, s3_endpoint: str, s3_bucket: str) -> None:
    rng = random.Random(SEED)
    plan = pack_plan(rng, KILLS)
    days = max(3, math.ceil((2 * KILLS + 16) / (1 << BITS)))
    claims = tmp_path / "claims"
    claims.mkdir()
    failpoints = {"DESQ_FAILPOINTS": ",".join(f"{p}={h}:stop" for p, h in plan), "DESQ_FAILPOINTS_DIR": str(claims)}
    with private_schema(pg_url) as db_url:
        night = Night(tmp_path, db_url, {
            "DESQ_BROKER_URL": fresh_redis(redis_url, 9),
            "DESQ_ARCHIVE_URL": f"s3://{s3_bucket}/archive", "DESQ_ARCHIVE_S3_ENDPOINT_URL": s3_endpoint,
            "DESQ_ARCHIVE_DELETE_ORIGINALS": "true", "DESQ_ARCHIVE_BIG_FILE_BYTES": "360",
            "DESQ_SHARD_BITS": str(BITS), "DESQ_QUEUE_COUNT": "1",
            "DESQ_SOURCE_BATCH_SIZE": "4", "DESQ_SOURCE_FETCH_THREADS": "4",
        })
        kills = 0
        try:
            settings = load_settings(env={k: v for k, v in night.env.items() if k.startswith("DESQ_")})
            (queue,) = settings.layout.queue_names()
            night.add(6 * days * (1 << BITS), days)
            checker = Checker(night, settings)
            night.start("control", "desq")
            packer = night.start("packer", queue, pool="prefork", env=failpoints)
            night.trigger()
            by_point: Counter[str] = Counter()
            restarts = recovers = 0
            restarting: subprocess.Popen[bytes] | None = None
            deadline = time.monotonic() + 180 + 10 * KILLS
            next_poll = 0.0
            while kills < len(plan) or restarting is not None:
                claim = claims / str(kills)
                if claim.exists():
                    pid_text, point, hit = claim.read_text().split()
                    pid = int(pid_text)
                    where = f"kill {kills + 1} ({point}={hit}, pid {pid})"
                    wait_until(f"{where}: the child to stop", lambda pid=pid: process_state(pid) == "T", 30, night.logs)
                    checker.frozen(where)
                    os.kill(pid, signal.SIGKILL)
                    kills += 1
                    by_point[point] += 1
                    if kills % RECOVER_EVERY == 0:
                        result = night.desq("recover")
                        assert result.returncode == 0, result.stderr
                        recovers += 1
                    if kills % RESTART_EVERY == 0 and restarting is None:
                        packer.terminate()
                        restarting = packer
                    continue
                if restarting is not None and restarting.poll() is not None:
                    night.workers.remove(restarting)
                    packer = night.start("packer", queue, pool="prefork", env=failpoints)
                    restarting = None
                    restarts += 1
                for worker in night.workers:
                    assert worker is restarting or worker.poll() is None, night.logs()
                if time.monotonic() > next_poll:
                    assert not night.state(f"night:{TODAY}:finished"), f"the night finished after {kills} of {len(plan)} kills"
                    assert time.monotonic() < deadline, f"{kills} of {len(plan)} kills in time\n{night.logs()}"
                    next_poll = time.monotonic() + 0.5
                time.sleep(0.02)

            summary = night.wait_finished(240)
            assert night.state(f"night:{TODAY}:finished") == "1"
            assert summary["failed_rows"] == 0 and set(summary["by_status"]) <= {"packed", "present", "nothing"}, summary
            result = night.desq("recover")
            assert result.returncode == 0, result.stderr
            staging_removed = re.search(r"removed (\d+) stale staging", result.stdout)
            assert staging_removed, result.stdout
            left_over = checker.final()
            print(
                f"\ncrash: seed {SEED}, {kills} kills of pack_shard ({dict(sorted(by_point.items()))}), "
                f"{restarts} packer restarts, {recovers + 1} desq recover runs, {checker.checks} frozen checks, "
                f"{len(night.contents)} files over {days} days, 0 lost; the last recover removed {staging_removed[1]} staging object(s); "
                f"{left_over} originals left over by kills between marking and deleting"
            )
        finally:
            for claim in claims.glob("[0-9]*"):  # a child left stopped by a failed check
                pid = int(claim.read_text().split()[0])
                if process_state(pid) == "T":
                    os.kill(pid, signal.SIGKILL)
            night.close()


# --- the marker -----------------------------------------------------------------------------------


MARKS_TRIGGER = """
CREATE FUNCTION count_marks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.marks := OLD.marks + 1;
    RETURN NEW;
END $$;
CREATE TRIGGER files_marks BEFORE UPDATE ON files FOR EACH ROW EXECUTE FUNCTION count_marks();
"""


def test_a_marker_killed_mid_batch_marks_every_row_exactly_once(tmp_path: Path, pg_url: str) -> None:
    rng = random.Random(SEED + 1)
    batch = 40
    plan = [(rng.choice(("marker.in_batch", "marker.between_batches")), rng.randint(1, 3)) for _ in range(MARKER_KILLS)]
    eligible = batch * (3 * MARKER_KILLS + 4) + 7
    with private_schema(pg_url) as db_url:
        engine = sa.create_engine(db_url)
        try:
            with engine.begin() as conn:
                conn.execute(sa.text("CREATE TABLE files (id INTEGER PRIMARY KEY, created_at TIMESTAMP, path VARCHAR(200), des_name VARCHAR(300), des_hash_bits INTEGER, des_status VARCHAR(16), marks INTEGER NOT NULL DEFAULT 0)"))
                conn.execute(sa.text(MARKS_TRIGGER))
                rows: list[dict[str, object]] = []
                ids: list[int] = []
                while len(ids) < eligible:
                    i = len(rows) + 1
                    recent = i % 6 == 0  # created after the cutoff: never marked
                    day = date(2025, 11, 25) if recent else date(2025, 11, 1 + i % 19)
                    rows.append({"id": i, "c": f"{day} 12:00:00", "p": f"{i}.txt"})
                    if not recent:
                        ids.append(i)
                for i in range(len(rows) + 1, len(rows) + 4):  # an empty path, in the last batch: left alone
                    rows.append({"id": i, "c": "2025-11-02 12:00:00", "p": ""})
                conn.execute(sa.text("INSERT INTO files (id, created_at, path) VALUES (:id, CAST(:c AS TIMESTAMP), :p)"), rows)
            created = {r["id"]: date.fromisoformat(str(r["c"])[:10]) for r in rows}
            env = env_for({"DESQ_SOURCE_DB_URL": db_url, "DESQ_SOURCE_BATCH_SIZE": str(batch), "DESQ_DATA_DIR": str(tmp_path / "desq-data")})

            def check(marked: int, where: str) -> None:
                with engine.connect() as conn:
                    got = {r.id: r for r in conn.execute(sa.text("SELECT id, des_name, des_hash_bits, des_status, marks FROM files"))}
                done = set(ids[:marked])
                for row_id, r in got.items():
                    if row_id in done:
                        name = f"{created[row_id]:%Y%m%d}_{row_id}"
                        assert (r.des_name, r.des_hash_bits, r.des_status, r.marks) == (name, shard_of_name(name, 8), "READY", 1), f"{where}: row {row_id}: {r}"
                    else:
                        assert (r.des_name, r.des_hash_bits, r.des_status, r.marks) == (None, None, None, 0), f"{where}: row {row_id} should not be marked: {r}"

            def sessions_left() -> int:
                with engine.connect() as conn:
                    return conn.execute(
                        sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name = current_setting('application_name') AND pid <> pg_backend_pid()")
                    ).scalar_one()

            marked = 0
            for k, (point, hit) in enumerate(plan, 1):
                run = subprocess.run(
                    [str(BIN / "desq"), "mark", "--today", TODAY], env=env | {"DESQ_FAILPOINTS": f"{point}={hit}"},
                    cwd=tmp_path, capture_output=True, text=True, timeout=120,
                )
                assert run.returncode == -signal.SIGKILL, f"kill {k} ({point}={hit}): exit {run.returncode}\n{run.stderr}"
                marked += batch * (hit - 1 if point == "marker.in_batch" else hit)
                engine.dispose()
                wait_until(f"the killed marker's session to end (kill {k})", lambda: sessions_left() == 0, 30)
                check(marked, f"after kill {k} ({point}={hit})")
            run = subprocess.run([str(BIN / "desq"), "mark", "--today", TODAY], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
            assert run.returncode == 0, run.stderr
            assert run.stdout.startswith(f"marked {eligible - marked} rows"), run.stdout
            check(eligible, "at the end")
            print(f"\ncrash: seed {SEED}, {len(plan)} kills of the marker ({Counter(p for p, _ in plan)}), {eligible} rows marked once each, 0 lost")
        finally:
            engine.dispose()


# --- the failpoints themselves --------------------------------------------------------------------


def test_failpoint_entries_fire_in_order_once_across_processes(tmp_path: Path) -> None:
    plan = {"DESQ_FAILPOINTS": "pack.after_lease=1,pack.done=2", "DESQ_FAILPOINTS_DIR": str(tmp_path)}
    script = "import sys; from desq.failpoints import failpoint\nfor name in sys.argv[1:]:\n    failpoint(name)\n    print(name, flush=True)"

    def run(*points: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "python"), "-c", script, *points], env=env_for(plan), capture_output=True, text=True, timeout=60)

    first = run("pack.done", "pack.after_lease", "pack.done")  # pack.done is not armed before pack.after_lease fired
    assert (first.returncode, first.stdout.split()) == (-signal.SIGKILL, ["pack.done"]), first.stderr
    assert (tmp_path / "0").read_text().split()[1:] == ["pack.after_lease", "1"]
    second = run("pack.after_lease", "pack.done", "pack.done", "pack.done")  # entry 0 fired elsewhere: entry 1 is armed
    assert (second.returncode, second.stdout.split()) == (-signal.SIGKILL, ["pack.after_lease", "pack.done"]), second.stderr
    third = run("pack.after_lease", "pack.done", "pack.done")  # every entry has fired: nothing more happens
    assert (third.returncode, third.stdout.split()) == (0, ["pack.after_lease", "pack.done", "pack.done"]), third.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0", "1"]
    load_settings(env={**plan, "DESQ_SHARD_BITS": "4"})  # not mistaken for a misspelt setting
    bad = subprocess.run([str(BIN / "python"), "-c", "import desq.failpoints"], env=env_for({"DESQ_FAILPOINTS": "pack.after_lease"}), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "'pack.after_lease' needs a hit count" in bad.stderr


# --- desq recover -------------------------------------------------------------------------------


def test_recover_removes_the_staging_objects_of_dead_packers_at_once(tmp_path: Path) -> None:
    """Regression: recover kept every staging object younger than 6 hours, so the staging objects
    of packers killed tonight stayed behind (found by the crash test above)."""
    db_url = f"sqlite:///{tmp_path / 'source.db'}"
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE files (id INTEGER PRIMARY KEY, created_at DATETIME, path TEXT, des_name TEXT, des_hash_bits INTEGER, des_status TEXT)"))
    settings = load_settings(env={"DESQ_SOURCE_DB_URL": db_url, "DESQ_ARCHIVE_URL": str(tmp_path / "archive")})
    storage = LocalStorage(tmp_path / "archive")
    leases = Leases(engine)
    working = leases.acquire("pack:20251120/01.des", "live", 300)
    released = leases.acquire("pack:20251120/02.des", "done", 300)
    replaced = leases.acquire("pack:20251120/03.des", "successor", 300)
    assert working and released and replaced
    released.release()
    keep = [f"20251120/01.des.staging-{working.token:x}", "20251120/01.des", "20251120/04.des.staging-not-a-token"]
    gone = [f"20251120/02.des.staging-{released.token:x}", f"20251120/03.des.staging-{replaced.token + 1:x}", "20251120/05.des.staging-abc"]
    for key in keep + gone:
        storage.put(key, b"bytes")
    report = recover(Deployment(settings))
    assert report.staging == len(gone)
    assert sorted(o.key for o in storage.list()) == sorted(keep)
    engine.dispose()
