"""The load soak: sustained reads at 64 connections against the files API under gunicorn, then the
same through the router in front of it; errors, latency, and every gunicorn worker's memory.

    desq soak [--seconds 60] [--connections 64] [--warmup 10] [--members 2000] [--json FILE]
    python bench/soak.py ...          (the same, from a checkout)

A local archive of 1-64 KiB members (random sizes) is served by ``deploy/gunicorn.conf.py``
(2 workers x 8 threads per server) with worker recycling off (``--max-requests 0``), so a leak
cannot hide behind a restart. Every member is first read back byte for byte, directly and through
the router. Then, for each target: ``--warmup`` seconds of wrk load, a sample of each worker's
RSS (``/proc/<pid>/status``), ``--seconds`` of wrk load at ``--connections`` connections (a random
member per request; RSS sampled every half second), and a last RSS sample. It passes with 0 errors
(wrk's socket errors and non-2xx answers, warm-up included), no worker restarted, and no worker's
RSS grown by 10% or more from after the warm-up to the end. Exit 0 on a pass, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.web_load import BenchError, Server, _build_archive, _check, _lua, _members, _proc_stats, start_all, wrk  # noqa: E402

WORKERS = 2
THREADS = 8
MAX_GROWTH = 0.10
SAMPLE_EVERY = 0.5


def workers(server: Server) -> list[int]:
    """The live worker processes of a gunicorn master."""
    assert server.process is not None
    return sorted(pid for pid, fields in _proc_stats() if int(fields[1]) == server.process.pid and fields[0] != "Z")


def rss_kib(pid: int) -> int | None:
    """Resident set size of a process in KiB, or None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class Sampler:
    """RSS of the given processes every ``SAMPLE_EVERY`` seconds, in a thread: the peak of each."""

    def __init__(self, pids: list[int]) -> None:
        self.peak = {pid: 0 for pid in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            for pid in self.peak:
                self.peak[pid] = max(self.peak[pid], rss_kib(pid) or 0)
            if self._stop.wait(SAMPLE_EVERY):
                return

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _errors(run: dict[str, Any]) -> int:
    return run["non_2xx"] + sum(run["socket_errors"].values())


def phase(label: str, target: Server, watched: list[Server], script: Path, seconds: float, warmup: float, connections: int) -> dict[str, Any]:
    """Warm up, sample RSS, soak, sample RSS again: one row of the table and its workers' rows."""
    warm = wrk(target.url, script, warmup, connections) if warmup > 0 else {"non_2xx": 0, "socket_errors": {}, "requests": 0}
    pids = {server.label: workers(server) for server in watched}
    before = {pid: rss_kib(pid) for group in pids.values() for pid in group}
    with Sampler(list(before)) as sampler:
        run = wrk(target.url, script, seconds, connections)
    after = {pid: rss_kib(pid) for pid in before}
    rows = []
    for server in watched:
        for pid in pids[server.label]:
            start, end = before[pid] or 0, after[pid]
            rows.append({
                "server": server.label, "pid": pid, "rss_after_warmup_kib": start, "rss_end_kib": end, "rss_peak_kib": max(sampler.peak[pid], end or 0),
                "growth": None if end is None or not start else (end - start) / start, "alive": end is not None,
            })
    restarted = sum(len(set(workers(server)) ^ set(pids[server.label])) for server in watched)
    return {
        "target": label, "seconds": seconds, "warmup_s": warmup, "connections": connections,
        "requests": run["requests"], "requests_per_s": run["requests_per_s"], "p50_ms": run["p50_ms"], "p99_ms": run["p99_ms"],
        "non_2xx": run["non_2xx"], "socket_errors": run["socket_errors"], "warmup_requests": warm["requests"], "warmup_errors": _errors(warm),
        "errors": _errors(run) + _errors(warm), "worker_changes": restarted, "workers": rows,
    }


def passed(row: dict[str, Any]) -> bool:
    """0 errors, no worker changed, every worker alive and under the growth bound."""
    return row["errors"] == 0 and row["worker_changes"] == 0 and all(w["alive"] and w["growth"] is not None and w["growth"] < MAX_GROWTH for w in row["workers"])


def soak(seconds: float, warmup: float, connections: int, members_count: int) -> dict[str, Any]:
    """Build the archive, start the files API and the router, check every member, run both phases."""
    work = Path(tempfile.mkdtemp(prefix="desq-soak-"))
    try:
        members = _members(members_count)
        containers = _build_archive(members, work / "archive")
        script = _lua(list(members), work / "random_member.lua")
        no_recycling = {"GUNICORN_CMD_ARGS": "--max-requests 0", "WEB_THREADS": str(THREADS)}
        with ExitStack() as stack:
            files = Server("files", "web:create_app()", {"DESQ_ARCHIVE_URL": str(work / "archive")} | no_recycling, work / "files.log", workers=WORKERS)
            router = Server("router", "web:create_app(role='router')", {"DESQ_WEB_BACKENDS": files.url} | no_recycling, work / "router.log", workers=WORKERS)
            start_all(stack, files, router)
            checked = {"direct": _check(files, members, members), "router": _check(router, members, members)}
            phases = [
                phase("direct", files, [files], script, seconds, warmup, connections),
                phase("router", router, [router, files], script, seconds, warmup, connections),
            ]
            after = {"direct": _check(files, members, list(members)[:200]), "router": _check(router, members, list(members)[:200])}
            tracebacks = {s.label: s.log_path.read_text(errors="replace").count("Traceback") for s in (files, router)}
            problems = {s.label: s.log_tail(lines=20, problems_only=True).splitlines() for s in (files, router)}
        return {
            "members": len(members), "member_bytes": sum(map(len, members.values())), "member_sizes": "1-64 KiB", "containers": containers,
            "gunicorn": {"config": "deploy/gunicorn.conf.py", "workers": WORKERS, "threads": THREADS, "max_requests": 0},
            "checked_byte_for_byte": checked, "checked_after": after, "tracebacks_in_logs": tracebacks, "phases": phases,
            "log_lines_not_2xx": problems,
            "cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg(),
            "passed": all(passed(p) for p in phases) and not any(tracebacks.values()),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def table(report: dict[str, Any]) -> str:
    """The report as a small text table."""
    mib = 1024.0
    first = report["phases"][0]
    lines = [
        f"soak: {first['seconds']:g} s per target at {first['connections']} connections (after {first['warmup_s']:g} s of warm-up), "
        f"{report['members']} members of {report['member_sizes']} in {report['containers']} containers, "
        f"{report['gunicorn']['workers']} gunicorn workers x {report['gunicorn']['threads']} threads per server, {report['cpus']} CPUs",
        "",
        f"{'target':<8} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'sock err':>9} {'warm-up err':>12}",
    ]
    for p in report["phases"]:
        lines.append(
            f"{p['target']:<8} {p['requests']:>9} {p['requests_per_s']:>8.0f} {p['p50_ms']:>8.1f} {p['p99_ms']:>8.1f} "
            f"{p['non_2xx']:>8} {sum(p['socket_errors'].values()):>9} {p['warmup_errors']:>12}"
        )
    lines += ["", f"{'phase':<8} {'worker':<8} {'pid':>8} {'RSS warm MiB':>13} {'end MiB':>8} {'peak MiB':>9} {'growth':>8}"]
    for p in report["phases"]:
        for w in p["workers"]:
            growth = "gone" if w["growth"] is None else f"{100 * w['growth']:+.1f}%"
            end = "-" if w["rss_end_kib"] is None else f"{w['rss_end_kib'] / mib:.1f}"
            lines.append(f"{p['target']:<8} {w['server']:<8} {w['pid']:>8} {w['rss_after_warmup_kib'] / mib:>13.1f} {end:>8} {w['rss_peak_kib'] / mib:>9.1f} {growth:>8}")
    errors = sum(p["errors"] for p in report["phases"])
    if errors or any(report["tracebacks_in_logs"].values()):
        for server, tail in report["log_lines_not_2xx"].items():
            lines += ["", f"{server} log, lines other than 2xx answers (last 20):", *tail]
    growths = [w["growth"] for p in report["phases"] for w in p["workers"] if w["growth"] is not None]
    lines += [
        "",
        f"checked byte for byte before the load: {report['checked_byte_for_byte']}, after: {report['checked_after']}; "
        f"worker changes: {sum(p['worker_changes'] for p in report['phases'])}; tracebacks in logs: {sum(report['tracebacks_in_logs'].values())}",
        f"result: {'PASS' if report['passed'] else 'FAIL'} ({errors} errors, largest RSS growth {100 * max(growths, default=0):+.1f}%, bound {100 * MAX_GROWTH:.0f}%)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each soak, direct and through the router (default 60)")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of load before the first RSS sample (default 10)")
    parser.add_argument("--connections", type=int, default=64, help="concurrent connections (default 64)")
    parser.add_argument("--members", type=int, default=2000, help="members in the archive (default 2000)")
    parser.add_argument("--json", metavar="FILE", help="also write the full report here")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.warmup < 0 or args.connections < 1 or args.members < 1:
        parser.error("--seconds must be positive, --warmup not negative, --connections and --members at least 1")
    try:
        report = soak(args.seconds, args.warmup, args.connections, args.members)
    except BenchError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 1
    print(table(report), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
