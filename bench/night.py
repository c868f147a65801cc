"""One night of 256 shards packed through real Celery workers: 1 packer worker, then 2.

    python bench/night.py [--quick] --pg postgresql+psycopg2://... --redis redis://127.0.0.1:6379/13 [--per-shard 782 --repeat 2 --sample 20000]

Builds a business table in a schema of its own (PostgreSQL), its originals on local disk, and an
archive on local disk; starts a control worker (queue ``desq``) and two packer workers (prefork,
``--concurrency 1``, each consuming every shard queue); marks the table once; then runs the night
again and again, alternating 1 and 2 packer workers (the second one's consumers are cancelled and
added back through Celery's remote control, so both stay warm). Each night is sent as beat sends
it (``desq.nightly`` on the control queue) and is timed until ``finish_night`` records it. Prints
one JSON document.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from datetime import time as dtime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from marker import create_files_table  # noqa: E402

BIN = Path(sys.executable).parent
DAY = date(2025, 11, 20)
WARM_DAY = date(2025, 11, 19)
FIRST_TODAY = date(2025, 11, 28)
SHARD_BITS = 8
QUEUE_COUNT = 4
DEFAULT_REDIS_DB = 13
WARM_FILES = 16
CLK = os.sysconf("SC_CLK_TCK")
PACKERS = ("packer-1", "packer-2")
OURS = "ours: workers + their postgres backends + redis-server + bench"


def _median(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def original(i: int) -> bytes:
    """The bytes of original ``i`` (0.5-8 KiB, seeded by its id, so nothing is kept in memory)."""
    rng = random.Random(i)
    return rng.randbytes(rng.randint(512, 8192))


def pg_url(pg: str, schema: str, app: str) -> str:
    """``pg`` with desq's own tables (search_path) in ``schema`` and an application_name to find its backends."""
    parts = urlsplit(pg)
    extra = f"application_name={quote(app)}&options={quote(f'-csearch_path={schema}', safe='')}"
    return urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))


def redis_db(url: str) -> str:
    """The bench's own Redis database: the URL's if it names one other than 0, else DEFAULT_REDIS_DB."""
    parts = urlsplit(url)
    path = parts.path.strip("/")
    db = int(path) if path.isdigit() and int(path) != 0 else DEFAULT_REDIS_DB
    return urlunsplit(parts._replace(path=f"/{db}"))


def pick_ids(per_shard: int, start: int = 1) -> list[int]:
    """Row ids whose names fall exactly ``per_shard`` to each of the 256 shards of DAY."""
    from desq.layout import build_name, shard_of_name

    counts = [0] * (1 << SHARD_BITS)
    ids: list[int] = []
    i = start
    while len(ids) < per_shard << SHARD_BITS:
        shard = shard_of_name(build_name(DAY, i), SHARD_BITS)
        if counts[shard] < per_shard:
            counts[shard] += 1
            ids.append(i)
        i += 1
    return ids


# --- CPU accounting -------------------------------------------------------------------------------


def _procs() -> dict[int, tuple[int, str, float]]:
    """Every process: pid -> (ppid, comm, CPU seconds so far: utime + stime, plus its exited children's)."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                raw = fh.read().decode(errors="replace")
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        out[int(entry.name)] = (int(fields[1]), comm, sum(int(v) for v in fields[11:15]) / CLK)
    return out


def _machine_busy() -> float:
    """CPU seconds spent on anything (all cores) since boot, from /proc/stat."""
    with open("/proc/stat") as fh:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fh.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / CLK


def _tree(procs: dict[int, tuple[int, str, float]], root: int) -> set[int]:
    found, todo = {root}, [root]
    while todo:
        parent = todo.pop()
        for pid, (ppid, _, _) in procs.items():
            if ppid == parent and pid not in found:
                found.add(pid)
                todo.append(pid)
    return found & set(procs)


def _runqueue_wait(pid: int) -> float:
    """Seconds all threads of ``pid`` spent runnable but waiting for a CPU (/proc/<pid>/task/*/schedstat)."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                total += int(fh.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


class CpuMeter:
    """CPU seconds per role between two snapshots: worker process trees, their PostgreSQL backends
    (by application_name), all postgres and redis-server processes, this process, and the machine;
    and, for the workers and their backends, seconds spent waiting for a CPU (run queue)."""

    def __init__(self, workers: dict[str, int], engine: Any, prefix: str) -> None:
        self.workers, self.engine, self.prefix = workers, engine, prefix

    def snapshot(self) -> dict[str, dict[str, dict[int, float]]]:
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            backends = conn.execute(sa.text("SELECT pid, application_name FROM pg_stat_activity WHERE application_name LIKE :p"), {"p": f"{self.prefix}%"}).all()
        procs = _procs()
        roles: dict[str, dict[int, float]] = {}
        for role, pid in self.workers.items():
            roles[role] = {p: procs[p][2] for p in _tree(procs, pid)}
            roles[f"{role}, of which consumer (main) process"] = {pid: procs[pid][2]} if pid in procs else {}
        for pid, app in backends:
            if pid in procs:
                roles.setdefault(f"postgres backends of {app.removeprefix(self.prefix)}", {})[pid] = procs[pid][2]
        waits = {role: {p: _runqueue_wait(p) for p in pids} for role, pids in roles.items()}
        roles["postgres, all processes"] = {p: c for p, (_, comm, c) in procs.items() if comm == "postgres"}
        roles["redis-server"] = {p: c for p, (_, comm, c) in procs.items() if comm == "redis-server"}
        roles["bench process"] = {os.getpid(): procs[os.getpid()][2]} if os.getpid() in procs else {}
        roles["machine (all processes)"] = {0: _machine_busy()}
        return {"cpu": roles, "wait": waits}

    @staticmethod
    def delta(before: dict[str, dict[str, dict[int, float]]], after: dict[str, dict[str, dict[int, float]]]) -> dict[str, dict[str, float]]:
        """Seconds per role (CPU, and run-queue wait); a process new in ``after`` counts from zero."""
        out = {}
        for kind in ("cpu", "wait"):
            b, a = before[kind], after[kind]
            out[kind] = {role: round(sum(c - b.get(role, {}).get(p, 0.0) for p, c in pids.items()), 3) for role, pids in a.items()}
        cpu = out["cpu"]
        cpu[OURS] = round(sum(v for k, v in cpu.items() if k in ("control", *PACKERS, "redis-server", "bench process") or k.startswith("postgres backends")), 3)
        cpu["other processes (machine - ours)"] = round(cpu["machine (all processes)"] - cpu[OURS], 3)
        return out


# --- the night ------------------------------------------------------------------------------------


class Night:
    """A business table in its own schema, originals, an archive, and the worker processes."""

    def __init__(self, pg: str, redis: str, per_shard: int) -> None:
        import sqlalchemy as sa

        self.work = Path(tempfile.mkdtemp(prefix="desq-bench-night-"))
        self.tag = uuid.uuid4().hex[:8]
        self.schema = f"desq_night_{self.tag}"
        self.table = f"{self.schema}.files"
        self.prefix = f"desqnight-{self.tag}-"
        self.pg = pg
        self.broker = redis_db(redis)
        self.per_shard = per_shard
        self.engine = sa.create_engine(pg_url(pg, self.schema, self.prefix + "bench"))
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: list[Any] = []
        self.ids: list[int] = []
        self.app: Any = None
        self.redis: Any = None
        self.nights = 0

    def env(self, app: str) -> dict[str, str]:
        """What a worker (or the bench's own settings) sees: only these DESQ_* variables."""
        return {
            "DESQ_MODE": "name", "DESQ_SHARD_BITS": str(SHARD_BITS), "DESQ_QUEUE_COUNT": str(QUEUE_COUNT), "DESQ_TIMEZONE": "UTC",
            "DESQ_SOURCE_DB_URL": pg_url(self.pg, self.schema, self.prefix + app), "DESQ_SOURCE_TABLE": self.table,
            "DESQ_SOURCE_ROOT": str(self.work / "originals"), "DESQ_ARCHIVE_URL": str(self.work / "archive"),
            "DESQ_DATA_DIR": str(self.work / "desq-data"), "DESQ_BROKER_URL": self.broker, "DESQ_ARCHIVE_DELETE_ORIGINALS": "false",
            "DESQ_ARCHIVE_AFTER_DAYS": "7",
        }

    @property
    def settings(self) -> Any:
        from desq.settings import load_settings

        return load_settings(env=self.env("bench"))

    # --- setup

    def build(self) -> None:
        """The schema, table (with the index the README asks for), originals of DAY and WARM_DAY, marked once."""
        import sqlalchemy as sa

        from desq.source.marker import mark
        from desq.source.table import SourceTable

        self.ids = pick_ids(self.per_shard)
        warm = list(range(10_000_000, 10_000_000 + WARM_FILES))
        root = self.work / "originals"
        rows = []
        for i in self.ids + warm:
            rel = f"{i % 256:02x}/{i}.bin"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(original(i))
            rows.append((i, datetime.combine(WARM_DAY if i >= 10_000_000 else DAY, dtime()) + timedelta(seconds=i % 86_000), rel))
        (self.work / "archive").mkdir()
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {self.schema}"))
        create_files_table(self.engine, self.table, rows)
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"CREATE INDEX files_des ON {self.table} (des_status, des_hash_bits)"))
        source = SourceTable.connect(self.settings)
        marked = mark(source, today=FIRST_TODAY).marked
        source.engine.dispose()
        if marked != len(self.ids) + WARM_FILES:
            raise RuntimeError(f"the marker marked {marked} rows, not {len(self.ids) + WARM_FILES}")
        self.hold()

    def hold(self) -> None:
        """DAY's rows out of the way (PACKED) while the warm-up night runs."""
        import sqlalchemy as sa

        with self.engine.begin() as conn:
            conn.execute(sa.text(f"UPDATE {self.table} SET des_status = 'PACKED' WHERE des_name LIKE :d"), {"d": f"{DAY:%Y%m%d}_%"})

    def start(self) -> None:
        """Flush the bench's Redis database, start the control worker and both packers, wait until they answer."""
        import redis as redis_lib
        from celery import Celery

        from tasks.celeryconf import CONTROL_QUEUE, celery_config

        self.redis = redis_lib.Redis.from_url(self.broker)
        self.redis.flushdb()
        self.app = Celery("desq-night-bench", set_as_current=False)
        self.app.conf.update(celery_config(self.settings) | {"result_backend": "disabled"})
        queues = ",".join(self.settings.layout.queue_names())
        for name, q in (("control", CONTROL_QUEUE), *((p, queues) for p in PACKERS)):
            log = open(self.work / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
            self.logs.append(log)
            env = {k: v for k, v in os.environ.items() if not k.startswith("DESQ_")} | self.env(name)
            self.workers[name] = subprocess.Popen(
                [str(BIN / "celery"), "-A", "tasks", "worker", "-Q", q, "-n", f"{name}@{self.tag}", "-P", "prefork", "-c", "1",
                 "--without-mingle", "--without-gossip", "-l", "INFO"],
                cwd=self.work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        wanted = {self.node(n) for n in self.workers}
        deadline = time.monotonic() + 60
        while True:
            self.alive()
            answered = {k for r in self.app.control.ping(destination=sorted(wanted), timeout=0.5) for k in r}
            if answered >= wanted:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers did not answer within 60 s: {sorted(wanted - answered)}\n{self.tail()}")

    def node(self, name: str) -> str:
        return f"{name}@{self.tag}"

    def alive(self) -> None:
        for name, w in self.workers.items():
            if w.poll() is not None:
                raise RuntimeError(f"worker {name} exited with {w.returncode}\n{self.tail()}")

    def tail(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in sorted(self.work.glob("*.log")))

    def consume(self, worker: str, on: bool) -> None:
        """Make ``worker`` consume every shard queue, or none, and check it does."""
        node = self.node(worker)
        for queue in self.settings.layout.queue_names():
            call = self.app.control.add_consumer if on else self.app.control.cancel_consumer
            replies = call(queue, destination=[node], reply=True, timeout=5)
            if not replies:
                raise RuntimeError(f"{node} did not answer {'add' if on else 'cancel'}_consumer {queue}")
        active = (self.app.control.inspect(destination=[node], timeout=5).active_queues() or {}).get(node)
        if active is None:
            raise RuntimeError(f"{node} did not say which queues it consumes")
        names = {q["name"] for q in active}
        if names != (set(self.settings.layout.queue_names()) if on else set()):
            raise RuntimeError(f"{node} consumes {sorted(names)} after {'add' if on else 'cancel'}_consumer")

    # --- one night

    def reset(self) -> None:
        """DAY's rows READY again, its containers gone, results of the last night gone, the table vacuumed."""
        import sqlalchemy as sa

        with self.engine.begin() as conn:
            conn.execute(sa.text(f"UPDATE {self.table} SET des_status = 'READY' WHERE des_name LIKE :d"), {"d": f"{DAY:%Y%m%d}_%"})
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text(f"VACUUM ANALYZE {self.table}"))
        shutil.rmtree(self.work / "archive" / f"{DAY:%Y%m%d}", ignore_errors=True)
        root = self.work / "originals"
        missing = [i for i in self.ids if not (root / f"{i % 256:02x}/{i}.bin").exists()]
        for i in missing:
            (root / f"{i % 256:02x}/{i}.bin").write_bytes(original(i))
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"DELETE FROM {self.schema}.desq_lease"))
        keys = list(self.redis.scan_iter("celery-task-meta-*", count=1000))
        for at in range(0, len(keys), 500):
            self.redis.delete(*keys[at : at + 500])

    @functools.cached_property
    def state(self) -> Any:
        """desq's state table in the night's schema (a ``desq.state.StateStore``)."""
        from desq.state import StateStore

        return StateStore(self.engine)

    def run(self, timeout: float, meter: CpuMeter | None = None) -> dict[str, Any]:
        """Send desq.nightly as beat does and wait until finish_night has recorded the night."""
        self.nights += 1
        today = (FIRST_TODAY + timedelta(days=self.nights)).isoformat()
        cpu_before = meter.snapshot() if meter else None
        started = time.time()
        nightly = self.app.send_task("desq.nightly", kwargs={"today": today})
        from desq.state import wait_for_night

        try:
            done = wait_for_night(self.state, today, timeout, poll=0.05, check=self.alive)
        except TimeoutError as exc:
            raise RuntimeError(f"{exc}\n{self.tail()}") from None
        cpu = CpuMeter.delta(cpu_before, meter.snapshot()) if meter and cpu_before else {}
        seconds = done.timestamp() - started
        meta = json.loads(self.redis.get(f"celery-task-meta-{nightly.id}") or "{}")
        if meta.get("status") != "SUCCESS":
            raise RuntimeError(f"desq.nightly for {today} ended {meta.get('status')!r}: {meta.get('result')!r}")
        fanout = datetime.fromisoformat(meta["date_done"])
        fanout = fanout if fanout.tzinfo else fanout.replace(tzinfo=timezone.utc)
        return {"today": today, "started_at": started, "seconds": round(seconds, 3), "nightly": meta["result"], "fanout_done_after": round(fanout.timestamp() - started, 3), "cpu_seconds": cpu}

    def summary(self, today: str) -> dict[str, Any]:
        runs = self.state.night_runs(today)
        if runs != 1:
            raise RuntimeError(f"night {today} finished {runs} times, not once")
        summary = self.state.night_summary(today)
        assert summary is not None
        return summary

    def packs(self) -> list[dict[str, Any]]:
        """The results of the last night's pack_shard tasks (from the result backend)."""
        out = []
        for key in self.redis.scan_iter("celery-task-meta-*", count=1000):
            meta = json.loads(self.redis.get(key) or "{}")
            if meta.get("name") == "desq.pack_shard" and meta.get("status") == "SUCCESS" and isinstance(meta.get("result"), dict):
                done = datetime.fromisoformat(meta["date_done"])
                out.append(meta["result"] | {"done": (done if done.tzinfo else done.replace(tzinfo=timezone.utc)).timestamp()})
        return out

    def check(self, today: str, sample: int, seed: int, started: float) -> dict[str, Any]:
        """Everything packed once, every row PACKED, 256 containers, and ``sample`` files read back byte-exact."""
        import sqlalchemy as sa

        from desq.archive import Archive
        from desq.layout import build_name, container_key, shard_of_name
        from desq.storage.local import LocalStorage

        files = len(self.ids)
        summary = self.summary(today)
        if summary["files"] != files or summary["failed_rows"] or summary["by_status"] != {"packed": 1 << SHARD_BITS}:
            raise RuntimeError(f"night {today}: {summary['files']} files packed of {files}, {summary['failed_rows']} failed rows, {summary['by_status']}: {summary['failures'][:3]}")
        with self.engine.connect() as conn:
            packed = conn.execute(sa.text(f"SELECT count(*) FROM {self.table} WHERE des_status = 'PACKED' AND des_name LIKE :d"), {"d": f"{DAY:%Y%m%d}_%"}).scalar_one()
        if packed != files:
            raise RuntimeError(f"night {today}: {packed} rows PACKED, not {files}")
        folder = self.work / "archive" / f"{DAY:%Y%m%d}"
        found = sorted(p.name for p in folder.iterdir())
        want = sorted(f"{s:02X}.des" for s in range(1 << SHARD_BITS))
        if found != want:
            raise RuntimeError(f"night {today}: the archive holds {len(found)} entries, not the 256 containers (e.g. {sorted(set(found) ^ set(want))[:3]})")
        archive = Archive(LocalStorage(self.work / "archive"))
        chosen = self.ids if sample >= files else random.Random(seed).sample(self.ids, sample)
        for i in chosen:
            name = build_name(DAY, i)
            if archive.read(container_key(DAY, shard_of_name(name, SHARD_BITS), SHARD_BITS), name) != original(i):
                raise RuntimeError(f"night {today}: {name} does not read back byte-exact")
        by_worker: dict[str, dict[str, float]] = {}
        packs = self.packs()
        if len(packs) != 1 << SHARD_BITS:
            raise RuntimeError(f"night {today}: {len(packs)} pack_shard results, not {1 << SHARD_BITS}")
        for p in packs:
            w = by_worker.setdefault(p["worker"].split("@")[0], {"tasks": 0, "files": 0, "busy_seconds": 0.0})
            w["tasks"] += 1
            w["files"] += p["files"]
            w["busy_seconds"] = round(w["busy_seconds"] + p["seconds"], 3)
        done = sorted(p["done"] - started for p in packs)
        return {"verified_files": len(chosen), "packed_by": by_worker, "first_pack_done_after": round(done[0], 3), "last_pack_done_after": round(done[-1], 3)}

    def stop(self) -> None:
        """SIGTERM every worker's process group, SIGKILL what is left after 20 s."""
        for w in self.workers.values():
            if w.poll() is None:
                try:
                    os.killpg(w.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 20
        for w in self.workers.values():
            try:
                w.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(w.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            w.wait()
        for log in self.logs:
            log.close()

    def close(self) -> None:
        """Stop the workers, drop the schema, empty the Redis database, remove the files."""
        import sqlalchemy as sa

        try:
            self.stop()
            if self.app is not None:
                self.app.close()
        finally:
            try:
                with self.engine.begin() as conn:
                    conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE"))
                self.engine.dispose()
                if self.redis is not None:
                    self.redis.flushdb()
            finally:
                shutil.rmtree(self.work, ignore_errors=True)


def night_workers(quick: bool, pg: str | None = None, redis: str | None = None, *, per_shard: int = 0, repeat: int = 0, sample: int = 0, **_: Any) -> dict[str, Any]:
    """Pack one night of 256 shards (~40 files each; --quick ~10) with 1 then 2 packer workers, alternating."""
    if pg is None:
        return {"skipped": "needs PostgreSQL (--pg URL)"}
    if redis is None:
        return {"skipped": "needs Redis (--redis URL)"}
    per_shard = per_shard or (10 if quick else 40)
    repeat = repeat or (2 if quick else 3)
    timeout = (60.0 if quick else 180.0) * max(1.0, per_shard / 40)
    sample = sample or (200 if quick else 1 << 20)
    wall = time.monotonic()
    load_before = [round(x, 2) for x in os.getloadavg()]
    night = Night(pg, redis, per_shard)
    try:
        night.build()
        night.start()
        startup = round(time.monotonic() - wall, 2)
        warm = night.run(timeout)
        warmed = night.summary(warm["today"])
        if warmed["files"] != WARM_FILES or warmed["failed_rows"]:
            raise RuntimeError(f"the warm-up night packed {warmed['files']} of {WARM_FILES} files: {warmed['failures'][:3]}")
        meter = CpuMeter({n: w.pid for n, w in night.workers.items()}, night.engine, night.prefix)
        runs: list[dict[str, Any]] = []
        consuming = 2
        for k in range(repeat):
            for count in (1, 2):
                night.reset()
                if count != consuming:
                    night.consume(PACKERS[1], count == 2)
                    consuming = count
                result = night.run(timeout, meter)
                result |= night.check(result["today"], sample, k * 2 + count, result.pop("started_at"))
                if count == 1 and set(result["packed_by"]) != {PACKERS[0]}:
                    raise RuntimeError(f"a 1-worker night was packed by {sorted(result['packed_by'])}")
                runs.append({"workers": count, "files_per_s": round(len(night.ids) / result["seconds"], 1)} | result)
        settings = night.settings
        files = len(night.ids)
    finally:
        night.close()
    seconds = {str(c): [r["seconds"] for r in runs if r["workers"] == c] for c in (1, 2)}
    rates = {c: _median([r["files_per_s"] for r in runs if r["workers"] == int(c)]) for c in seconds}
    ratio = rates["2"]["median"] / rates["1"]["median"]
    cpu: dict[str, dict[str, dict[str, float]]] = {}
    for kind in ("cpu", "wait"):
        for c in (1, 2):
            mine = [r for r in runs if r["workers"] == c]
            roles = sorted({role for r in mine for role in r["cpu_seconds"][kind]})
            cpu.setdefault(kind, {})[str(c)] = {role: round(statistics.median(r["cpu_seconds"][kind].get(role, 0.0) / r["seconds"] for r in mine), 3) for role in roles}
    per_file = {
        str(c): {role: round(statistics.median(1000 * r["cpu_seconds"]["cpu"][role] / files for r in runs if r["workers"] == c), 3) for role in (OURS, *PACKERS, "control")}
        for c in (1, 2)
    }
    phases = {}
    for c in (1, 2):
        mine = [r for r in runs if r["workers"] == c]
        phases[str(c)] = {
            "fanout_done_after": round(statistics.median(r["fanout_done_after"] for r in mine), 3),
            "first_pack_done_after": round(statistics.median(r["first_pack_done_after"] for r in mine), 3),
            "last_pack_done_after": round(statistics.median(r["last_pack_done_after"] for r in mine), 3),
            "finish_after_last_pack": round(statistics.median(r["seconds"] - r["last_pack_done_after"] for r in mine), 3),
            "ms_per_task_in_pack": round(statistics.median(1000 * sum(w["busy_seconds"] for w in r["packed_by"].values()) / (1 << SHARD_BITS) for r in mine), 2),
            "ms_per_task_per_worker_wall": round(statistics.median(1000 * c * r["seconds"] / (1 << SHARD_BITS) for r in mine), 2),
        }
    other = [r["cpu_seconds"]["cpu"]["other processes (machine - ours)"] / r["seconds"] for r in runs]
    noise = {
        "other_processes_cores": _median(other), "loadavg_before": load_before, "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "warning": f"other processes used {statistics.median(other):.2f} of {os.cpu_count()} cores during the nights: the ratio says more about them than about desq"
        if statistics.median(other) > 0.25 else "",
    }
    r1, r2 = rates["1"]["median"], rates["2"]["median"]
    return {
        "figure": f"2 workers: {ratio:.2f}x of 1 worker ({r2:,.0f} vs {r1:,.0f} files/s)",
        "anchor": f"1 worker: {r1:,.0f} files/s",
        "ratio": round(ratio, 3),
        "goal": ">= 1.7x",
        "met": ratio >= 1.7,
        "details": {
            "timed": "from sending desq.nightly to the control queue (as beat does; the marker finds nothing new, the table was marked once before) "
                     "until finish_night records the night in desq_state (its updated_at): marker pass, plan, fan-out of 256 pack_shard tasks, every pack, the chord, finish_night",
            "files": files, "containers": 1 << SHARD_BITS, "files_per_container": per_shard, "file_bytes": "512-8192, random",
            "repeats": repeat, "order": [r["workers"] for r in runs],
            "seconds": {c: _median(v) | {"each": v} for c, v in seconds.items()},
            "files_per_s": rates,
            "phases": phases,
            "phases_note": "seconds after desq.nightly was sent (medians): fan-out done (nightly returned), first and last pack_shard done, finish_night's record after the last pack; "
                           "ms_per_task_in_pack: Packer.pack's own seconds per (date, shard); ms_per_task_per_worker_wall: workers x night / 256 (the rest is Celery's per-task work and hand-offs)",
            "noise": noise,
            "cpu_cores_busy": cpu["cpu"],
            "runqueue_wait_cores": cpu["wait"],
            "cpu_ms_per_file": per_file,
            "cpu_note": "cpu_cores_busy: CPU seconds (utime+stime) of each role over the night / the night's seconds, medians of the repeats; "
                        "runqueue_wait_cores: the same for seconds its threads were runnable but waiting for a CPU (schedstat); 'machine' counts every process (the machine is shared)",
            "runs": runs,
            "warm_up_night": {"files": WARM_FILES, "seconds": warm["seconds"]},
            "setup_seconds": startup,
            "wall_seconds": round(time.monotonic() - wall, 1),
            "workers": {
                "control": "celery -A tasks worker -Q desq -P prefork -c 1 (the same in every night)",
                "packers": f"celery -A tasks worker -Q <all {QUEUE_COUNT} shard queues> -P prefork -c 1 --without-mingle --without-gossip; "
                           "'1 worker': packer-2's consumers cancelled (remote control); '2 workers': both consume every queue, so neither idles while the other has a backlog",
                "queue_count": QUEUE_COUNT, "prefetch_multiplier": 1, "acks_late": True,
                "fetch_threads": settings.source.fetch_threads, "delete_originals": settings.archive.delete_originals,
                "source": "PostgreSQL table in a schema of its own, index on (des_status, des_hash_bits), VACUUM ANALYZE before each night",
                "originals": "local disk (page cache warm)", "archive": "local disk (fsync on publish), the night's folder removed before each night",
                "broker": "Redis", "cpus": os.cpu_count(),
            },
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--pg", help="PostgreSQL URL (postgresql+psycopg2://...)")
    parser.add_argument("--redis", help="Redis URL; its database number if not 0, else 13, is flushed and used")
    parser.add_argument("--per-shard", type=int, default=0, help="files per shard (default 40, --quick 10; 782 makes issue 18's 200k-file night)")
    parser.add_argument("--repeat", type=int, default=0, help="nights per worker count (default 3, --quick 2)")
    parser.add_argument("--sample", type=int, default=0, help="files read back after each night (default all, --quick 200)")
    args = parser.parse_args()
    print(json.dumps(night_workers(args.quick, pg=args.pg, redis=args.redis, per_shard=args.per_shard, repeat=args.repeat, sample=args.sample), indent=2, default=str))


if __name__ == "__main__":
    main()
