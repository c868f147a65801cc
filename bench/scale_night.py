"""Issue 18's scale run (by hand): a 10M-row PostgreSQL night through real workers on Redis.

    python bench/scale_night.py --pg postgresql+psycopg2://... --redis redis://127.0.0.1:6391/12 \\
        [--rows 10000000] [--originals 2000000] [--days 10] [--readback 100000] \\
        [--s3 http://127.0.0.1:5055] [--profile 60] [--out FILE] [--plan-only]

Builds a business table (its own schema, no index beyond the primary key) of ``--rows`` rows over
``--days`` days whose paths point at ``--originals`` distinct files on local disk (row i at original
i mod originals), then, each phase measured on its own:

1. the marker (``desq mark`` in its own process): rows/s, CPU, peak RSS;
2. the night through real workers (``desq.nightly`` sent as beat sends it; a control worker and two
   packers, prefork, ``-c 1``): plan and fan-out, packers' files/s, CPU by role, each process's peak
   RSS, the largest task message Redis saw (``broker_tap``), optionally a py-spy profile of a packer;
3. the containers: sizes and member counts;
4. a read-back of ``--readback`` random files over HTTP (gunicorn, the files API), byte-exact;
5. with ``--s3``: one day of the night again, its archive on that S3 server, and a read-back of it.

Prints one JSON document (BENCHMARKS.md, issue 18, has the figures of a run).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from broker_tap import BrokerTap  # noqa: E402
from marker import create_files_table  # noqa: E402
from night import BIN, FIRST_TODAY, PACKERS, CpuMeter, Night, _procs, _tree  # noqa: E402

LAST_DAY = date(2025, 11, 20)
_PLAN_CHILD = """
import json, sys
from datetime import date
from desq.deployment import Deployment
from desq.pipeline.night import plan_night
from desq.settings import load_settings
deployment = Deployment(load_settings())
plan = plan_night(deployment, date.fromisoformat(sys.argv[1]))
rows = deployment.spool.count(plan.night)
deployment.spool.clear(plan.night)
print(json.dumps({"rows": rows, "tasks": len(plan.work)}))
"""
PORT = 18_280


def scale_original(j: int) -> bytes:
    """Original ``j``'s bytes: 256-2048, seeded by ``j`` (nothing kept in memory)."""
    rng = random.Random(j)
    return rng.randbytes(rng.randint(256, 2048))


def rel_path(j: int) -> str:
    return f"{j % 1024:03x}/{j}.bin"


def peak_rss_mib(pids: set[int]) -> dict[int, float]:
    """VmHWM of each live process in ``pids``."""
    out = {}
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    out[pid] = round(int(line.split()[1]) / 1024, 1)
        except OSError:
            pass
    return out


class ScaleNight(Night):
    def __init__(self, pg: str, redis: str, rows: int, originals: int, days: int) -> None:
        super().__init__(pg, redis, per_shard=0)
        self.rows, self.originals, self.days = rows, originals, days
        self.day_list = [LAST_DAY - timedelta(days=d) for d in range(days)]
        self.archive_url = str(self.work / "archive")
        self.extra_env: dict[str, str] = {}

    def env(self, app: str) -> dict[str, str]:
        return super().env(app) | {"DESQ_ARCHIVE_URL": self.archive_url} | self.extra_env

    def day_of(self, i: int) -> date:
        return self.day_list[i % self.days]

    def name_of(self, i: int) -> str:
        from desq.layout import build_name

        return build_name(self.day_of(i), i)

    def build(self) -> dict[str, float]:
        import sqlalchemy as sa

        started = time.monotonic()
        root = self.work / "originals"
        for folder in range(1024):
            (root / f"{folder:03x}").mkdir(parents=True)
        for j in range(self.originals):
            (root / rel_path(j)).write_bytes(scale_original(j))
        originals_s = time.monotonic() - started
        (self.work / "archive").mkdir()
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {self.schema}"))
        create_files_table(self.engine, self.table, (
            (i, datetime.combine(self.day_of(i), dtime()) + timedelta(seconds=i % 86_400), rel_path(i % self.originals)) for i in range(1, self.rows + 1)
        ))
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text(f"VACUUM ANALYZE {self.table}"))
        return {"originals_seconds": round(originals_s, 1), "build_seconds": round(time.monotonic() - started, 1)}

    def mark(self) -> dict[str, Any]:
        """``desq mark`` in its own process: rows/s, its CPU and peak RSS."""
        said, seconds, cpu, peak = self.measured([str(BIN / "desq"), "mark", "--today", FIRST_TODAY.isoformat()], "marker")
        return {"rows": self.rows, "seconds": round(seconds, 1), "rows_per_s": round(self.rows / seconds), "cpu_seconds": round(cpu, 1),
                "peak_rss_MiB": peak, "said": said.strip().splitlines()[:1]}

    def plan_only(self) -> dict[str, Any]:
        """The planner alone, in its own process: what ``desq.nightly`` does before its fan-out."""
        said, seconds, cpu, peak = self.measured([sys.executable, "-c", _PLAN_CHILD, FIRST_TODAY.isoformat()], "planner")
        planned = json.loads(said.strip().splitlines()[-1])
        return planned | {"seconds": round(seconds, 1), "rows_per_s": round(planned["rows"] / seconds), "cpu_seconds": round(cpu, 1), "peak_rss_MiB": peak}

    def measured(self, command: list[str], app: str) -> tuple[str, float, float, float]:
        """Run ``command`` with this night's settings: (its output, seconds, CPU seconds, peak RSS in MiB).

        The peak is the child's own VmHWM, read while it runs: wait4's ru_maxrss would also count
        this (big) process's RSS at the fork, which Linux carries across execve."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DESQ_")} | self.env(app)
        output = self.work / f"{app}.out"
        started = time.monotonic()
        with open(output, "wb") as out:
            proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
            peak = 0.0
            while True:
                peak = max(peak, peak_rss_mib({proc.pid}).get(proc.pid, 0.0))
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                time.sleep(0.1)
        seconds = time.monotonic() - started
        said = output.read_text(errors="replace")
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            raise RuntimeError(f"{command[:2]} exited {proc.returncode}: {said[-2000:]}")
        return said, seconds, usage.ru_utime + usage.ru_stime, peak

    def night(self, today: date, timeout: float, profile: float) -> dict[str, Any]:
        """One night as beat sends it, timed until finish_night records it."""
        meter = CpuMeter({n: w.pid for n, w in self.workers.items()}, self.engine, self.prefix)
        before = meter.snapshot()
        spied: dict[str, Any] = {}
        with BrokerTap(self.broker) as tap:
            started = time.time()
            nightly = self.app.send_task("desq.nightly", kwargs={"today": today.isoformat()})
            if profile:
                spied = self.spy(profile)
            from desq.state import wait_for_night

            done = wait_for_night(self.state, today.isoformat(), timeout, poll=0.5, check=self.alive)
            seen = tap.stop()
        cpu = CpuMeter.delta(before, meter.snapshot())
        procs = _procs()
        rss = {name: max(peak_rss_mib(_tree(procs, w.pid)).values(), default=0.0) for name, w in self.workers.items()}
        meta = json.loads(self.redis.get(f"celery-task-meta-{nightly.id}") or "{}")
        fanout = datetime.fromisoformat(meta["date_done"]).timestamp() if meta.get("date_done") else float("nan")
        packs = self.packs()
        last = max((p["done"] for p in packs), default=done.timestamp())
        seconds = done.timestamp() - started
        summary = self.summary(today.isoformat())
        return {
            "seconds": round(seconds, 1), "files": summary["files"], "failed_rows": summary["failed_rows"], "by_status": summary["by_status"],
            "plan_and_fanout_seconds": round(fanout - started, 1), "last_pack_after": round(last - started, 1),
            "packing_files_per_s": round(summary["files"] / max(1e-9, last - fanout)), "night_files_per_s": round(summary["files"] / seconds),
            "cpu_seconds": {k: round(v, 1) for k, v in cpu["cpu"].items()},
            "core_seconds_per_million_files": {k: round(v * 1e6 / max(1, summary["files"]), 1) for k, v in cpu["cpu"].items()},
            "peak_rss_MiB": rss, "messages": seen, "nightly_result": meta.get("result"), "profile": spied,
        }

    def spy(self, seconds: float) -> dict[str, Any]:
        """py-spy a packer's working child for ``seconds`` once packing has begun: the top functions by own
        time, sampled while they hold the GIL (so: what its Python spends the CPU on)."""
        spy = BIN / "py-spy"
        if not spy.exists():
            return {"skipped": "py-spy is not installed (pip install py-spy)"}
        while not self.packs():
            time.sleep(1)
        procs = _procs()
        children = sorted(_tree(procs, self.workers[PACKERS[0]].pid) - {self.workers[PACKERS[0]].pid})
        if not children:
            return {"skipped": "no packer child found"}
        out = self.work / "profile.txt"
        subprocess.run([str(spy), "record", "-p", str(children[0]), "-d", str(int(seconds)), "-f", "raw", "-o", str(out), "-r", "50", "--gil"],
                       capture_output=True, timeout=seconds + 60)
        own: dict[str, int] = {}
        total = 0
        for line in out.read_text().splitlines() if out.exists() else []:
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            total += int(count)
            own[frames[-1]] = own.get(frames[-1], 0) + int(count)
        top = sorted(own.items(), key=lambda kv: -kv[1])[:15]
        return {"samples": total, "top_own": [[f, round(100 * c / max(1, total), 1)] for f, c in top]}

    def containers(self, day_folders: list[Path]) -> dict[str, Any]:
        from desq.container import FileSource, open_container

        sizes, counts = [], []
        for folder in day_folders:
            for path in folder.glob("*.des"):
                sizes.append(path.stat().st_size)
                with FileSource(path) as source:
                    counts.append(open_container(source).count)
        if not sizes:
            return {}

        def spread(values: list[int]) -> dict[str, float]:
            return {"min": min(values), "median": statistics.median(values), "max": max(values), "total": sum(values)}

        return {"containers": len(sizes), "bytes": spread(sizes), "members": spread(counts)}

    def serve(self) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DESQ_")} | self.env("web") | {"PORT": str(PORT), "WEB_CONCURRENCY": "2"}
        log = open(self.work / "web.log", "wb")  # noqa: SIM115 - closed in stop()
        self.logs.append(log)
        web = subprocess.Popen([str(BIN / "gunicorn"), "-c", str(Path(__file__).resolve().parents[1] / "deploy" / "gunicorn.conf.py"), "web:create_app()"],
                               cwd=Path(__file__).resolve().parents[1], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.workers["web"] = web
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=2)
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    return web
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"the files API did not get ready\n{self.tail()}")

    def read_back(self, ids: list[int], threads: int = 8) -> dict[str, Any]:
        """GET /files/<name> for each id over keep-alive connections; every body byte-exact."""
        local = threading.local()
        latencies: list[float] = []
        bad: list[str] = []

        def get(i: int) -> None:
            conn = getattr(local, "conn", None) or http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
            local.conn = conn
            t0 = time.perf_counter()
            conn.request("GET", "/files/" + quote(self.name_of(i)))
            response = conn.getresponse()
            body = response.read()
            latencies.append(time.perf_counter() - t0)
            if response.status != 200 or body != scale_original(i % self.originals):
                bad.append(f"{self.name_of(i)}: {response.status}")

        started = time.monotonic()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(get, ids))
        seconds = time.monotonic() - started
        latencies.sort()
        return {"files": len(ids), "byte_exact": len(ids) - len(bad), "bad_examples": bad[:5], "seconds": round(seconds, 1),
                "files_per_s": round(len(ids) / seconds), "p50_ms": round(1000 * latencies[len(latencies) // 2], 2),
                "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 2), "client_threads": threads}

    def restart(self) -> None:
        """Stop every process, then start the control worker and packers again (with the current env)."""
        self.stop()
        self.workers, self.logs = {}, []
        self.start()


def s3_day(night: ScaleNight, endpoint: str, readback: int, timeout: float) -> dict[str, Any]:
    """One day of the night again, its archive on the S3 server at ``endpoint``, then read back over HTTP."""
    import boto3
    import sqlalchemy as sa

    for name, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_DEFAULT_REGION", "us-east-1")):
        os.environ.setdefault(name, value)
    bucket = f"desq-scale-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    day = night.day_list[0]
    with night.engine.begin() as conn:
        again = conn.execute(sa.text(f"UPDATE {night.table} SET des_status = 'READY' WHERE des_name LIKE :d"), {"d": f"{day:%Y%m%d}_%"}).rowcount
    night.archive_url = f"s3://{bucket}/archive"
    night.extra_env = {"DESQ_ARCHIVE_S3_ENDPOINT_URL": endpoint}
    night.restart()
    result = night.night(FIRST_TODAY + timedelta(days=1), timeout, 0)
    night.serve()
    day_ids = [i for i in random.Random(7).sample(range(1, night.rows + 1), min(night.rows, readback * night.days)) if night.day_of(i) == day][:readback]
    result["read_back"] = night.read_back(day_ids)
    result["rows_again"] = again
    result["bucket"] = bucket
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pg", required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--originals", type=int, default=2_000_000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--readback", type=int, default=100_000)
    parser.add_argument("--s3", default="", help="S3 endpoint for the one-day run (none: skipped)")
    parser.add_argument("--s3-readback", type=int, default=10_000)
    parser.add_argument("--profile", type=float, default=0, help="seconds of py-spy on a packer during the night")
    parser.add_argument("--timeout", type=float, default=4 * 3600)
    parser.add_argument("--out", default="", help="also write the JSON here, after each phase")
    parser.add_argument("--plan-only", action="store_true", help="build, mark, then time the planner alone (no workers)")
    args = parser.parse_args()
    night = ScaleNight(args.pg, args.redis, args.rows, args.originals, args.days)
    figures: dict[str, Any] = {"rows": args.rows, "originals": args.originals, "days": args.days, "shards": 256, "cpus": os.cpu_count(),
                               "rows_per_original": round(args.rows / args.originals, 2), "file_bytes": "256-2048, random"}

    def save(phase: str, value: Any) -> None:
        figures[phase] = value
        print(f"{phase}: {json.dumps(value, default=str)[:400]}", file=sys.stderr, flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(figures, indent=2, default=str))

    try:
        save("build", night.build())
        save("marker", night.mark())
        if args.plan_only:
            save("plan", night.plan_only())
        else:
            night.start()
            save("night", night.night(FIRST_TODAY, args.timeout, args.profile))
            save("containers", night.containers([night.work / "archive" / f"{d:%Y%m%d}" for d in night.day_list]))
            night.serve()
            ids = random.Random(2026).sample(range(1, args.rows + 1), min(args.rows, args.readback))
            save("read_back", night.read_back(ids))
            if args.s3:
                save("s3_day", s3_day(night, args.s3, args.s3_readback, args.timeout))
    finally:
        night.close()
    print(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
