"""HTTP load benchmarks with wrk: the files API under gunicorn vs a bare Flask app, and the router vs direct.

    python bench/web_load.py [--quick]

``gunicorn_vs_bare``: warm reads of 1-64 KiB members from a local archive, 32 connections, against
``bench/bare_app.py`` serving the same bytes from memory under the same gunicorn config and load.
``router_vs_direct``: the same load through a router in front of one files API vs that files API.
Every server runs ``deploy/gunicorn.conf.py``; wrk picks a random member per request.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WRK = shutil.which("wrk") or "/usr/bin/wrk"
KiB = 1024
WORKERS = 2
CONNECTIONS = 32
WRK_THREADS = 2
WRK_TIMEOUT = "10s"
CONTENT_TYPE = "application/octet-stream"
STRIPPED_ENV = ("BIND", "PORT", "WEB_CONCURRENCY", "WEB_THREADS", "GUNICORN_CMD_ARGS", "PROMETHEUS_MULTIPROC_DIR")

LUA = """
local names = {%s}
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
end
function init(args)
  math.randomseed(seed * 7919)
end
function request()
  return wrk.format("GET", "/files/" .. names[math.random(#names)])
end
"""


class BenchError(RuntimeError):
    """A benchmark could not measure what it should: a server failed, or answered wrongly."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_stats() -> Iterable[tuple[int, list[str]]]:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            yield int(stat.parent.name), stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, ValueError):
            continue


def get(port: int, path: str, conn: http.client.HTTPConnection | None = None) -> tuple[int, str, bytes]:
    """``GET path`` on 127.0.0.1:port: status, content type, body (over ``conn`` if given)."""
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        if own:
            conn.close()


class Server:
    """A gunicorn serving ``app`` with deploy/gunicorn.conf.py on a free port; stopped on exit."""

    def __init__(self, label: str, app: str, env: dict[str, str], log: Path, workers: int = WORKERS) -> None:
        self.label, self.app, self.log_path = label, app, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        base = {k: v for k, v in os.environ.items() if not k.startswith("DESQ_") and k not in STRIPPED_ENV}
        self.env = base | env | {"BIND": f"127.0.0.1:{self.port}", "WEB_CONCURRENCY": str(workers)}
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        self.launch()
        try:
            self.wait_ready()
        except BaseException:
            self.terminate()
            self.wait()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.terminate()
        self.wait()

    def launch(self) -> None:
        """Start gunicorn (not waiting for it)."""
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([str(BIN / "gunicorn"), "-c", "deploy/gunicorn.conf.py", self.app], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 30) -> None:
        """Wait until ``/healthz`` answers 200; raise with the log's tail if gunicorn exits or ``timeout`` passes."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                if get(self.port, "/healthz")[0] == 200:
                    return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"{self.label} ({self.app}) did not start (exit {self.process.poll()}):\n{self.log_tail()}")
            time.sleep(0.1)

    def terminate(self) -> None:
        """SIGTERM, if it runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 30) -> None:
        """Wait for the exit; SIGKILL after ``timeout``."""
        if self.process is None:
            return
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def restarts(self) -> int:
        """Workers recycled so far (``max_requests`` in the config)."""
        try:
            return self.log_path.read_text(errors="replace").count("Autorestarting worker")
        except OSError:
            return 0

    def log_tail(self, lines: int = 30, problems_only: bool = False) -> str:
        """The end of the log; with ``problems_only``, without the access-log lines of 2xx answers."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        if problems_only:
            text = [line for line in text if not re.search(r'" 2\d\d \d+ ', line)]
        return "\n".join(text[-lines:])

    def cpu_seconds(self) -> float:
        """CPU time so far of the master, its live workers and the workers it has reaped."""
        assert self.process is not None
        pid, ticks = self.process.pid, 0
        for p, fields in _proc_stats():
            if p == pid:
                ticks += sum(int(x) for x in fields[11:15])
            elif int(fields[1]) == pid:
                ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def wrk(url: str, script: Path, duration: float, connections: int = CONNECTIONS, threads: int = WRK_THREADS) -> dict[str, Any]:
    """Run ``wrk --latency`` and parse it: requests/s, p50/p99 (ms), requests, non-2xx, socket errors, wrk's CPU seconds."""
    command = [WRK, f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", f"--timeout={WRK_TIMEOUT}", "--latency", "-s", str(script), url]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = result.stdout
    if result.returncode != 0 or "Requests/sec" not in out:
        raise BenchError(f"wrk failed ({result.returncode}): {' '.join(command)}\n{out}\n{result.stderr}")
    socket_errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        socket_errors = dict(zip(socket_errors, map(int, m.groups())))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    latency = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", out, flags=re.M))  # wrk pads "1.01s " on the right
    return {
        "requests_per_s": float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(latency["50"]),
        "p99_ms": _ms(latency["99"]),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": socket_errors,
        "wrk_cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        "stdout": out,
    }


def start_all(stack: ExitStack, *servers: Server) -> None:
    """Launch ``servers`` together and wait for each; ``stack`` stops them all (SIGTERM together, then wait)."""

    def stop() -> None:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait()

    stack.callback(stop)
    for server in servers:
        server.launch()
    for server in servers:
        server.wait_ready()


def _lua(names: list[str], path: Path) -> Path:
    path.write_text(LUA % ", ".join(json.dumps(n) for n in names))
    return path


def _members(count: int, seed: int = 1) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {f"20251120_{i}": rng.randbytes(rng.randint(1 * KiB, 64 * KiB)) for i in range(count)}


def _build_archive(members: dict[str, bytes], root: Path) -> int:
    """Pack ``members`` into containers under ``root`` by the default layout; the number of containers."""
    from desq.container import ContainerWriter
    from desq.settings import load_settings
    from desq.storage.local import LocalStorage

    layout = load_settings(env={}).layout
    by_key: dict[str, list[str]] = {}
    for name in members:
        by_key.setdefault(layout.locate_name(name).container, []).append(name)
    storage = LocalStorage(root)
    for key, names in by_key.items():
        out = io.BytesIO()
        with ContainerWriter(out) as w:
            for name in names:
                w.add(name, members[name], content_type=CONTENT_TYPE)
        storage.put(key, out.getvalue())
    return len(by_key)


def _check(server: Server, members: dict[str, bytes], names: Iterable[str]) -> int:
    """Read ``names`` over one keep-alive connection and compare status, content type and bytes."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    checked = 0
    try:
        for name in names:
            status, content_type, body = get(server.port, f"/files/{name}", conn)
            if status != 200 or body != members[name] or not content_type.startswith(CONTENT_TYPE):
                raise BenchError(
                    f"{server.label}: GET /files/{name} gave {status} {content_type!r} with {len(body)} bytes, expected 200 with {len(members[name])} bytes\n{server.log_tail(problems_only=True)}"
                )
            checked += 1
    finally:
        conn.close()
    return checked


def _load(server: Server, script: Path, duration: float, cpu_of: list[Server]) -> dict[str, Any]:
    """One wrk run against ``server``; raises on any non-2xx answer or socket error."""
    cpu_before = {s.label: s.cpu_seconds() for s in cpu_of}
    run = wrk(server.url, script, duration)
    run["server_cpu_s"] = {s.label: s.cpu_seconds() - cpu_before[s.label] for s in cpu_of}
    errors = sum(run["socket_errors"].values())
    if run["non_2xx"] or errors:
        logs = "\n".join(f"--- {s.label} log (non-2xx lines) ---\n{s.log_tail(problems_only=True)}" for s in cpu_of)
        raise BenchError(f"{server.label}: wrk saw {run['non_2xx']} non-2xx responses and socket errors {run['socket_errors']}\n{run['stdout']}\n{logs}")
    del run["stdout"]
    return run


def _stats(values: list[float]) -> dict[str, Any]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "runs": values}


def _summary(runs: list[dict[str, Any]], duration: float) -> dict[str, Any]:
    server_cpu = [sum(r["server_cpu_s"].values()) for r in runs]
    wrk_cpu = [r["wrk_cpu_s"] for r in runs]
    requests = [r["requests"] for r in runs]
    return {
        "requests_per_s": _stats([r["requests_per_s"] for r in runs]),
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "p50_ms_runs": [r["p50_ms"] for r in runs],
        "p99_ms_runs": [r["p99_ms"] for r in runs],
        "requests": sum(requests),
        "non_2xx": sum(r["non_2xx"] for r in runs),
        "socket_errors": sum(sum(r["socket_errors"].values()) for r in runs),
        "server_cpu_cores": statistics.median(c / duration for c in server_cpu),
        "cpu_ms_per_request": {label: statistics.median(1000 * r["server_cpu_s"][label] / r["requests"] for r in runs) for label in runs[0]["server_cpu_s"]}
        | {"wrk": statistics.median(1000 * r["wrk_cpu_s"] / r["requests"] for r in runs)},
        "wrk_cpu_cores": statistics.median(c / duration for c in wrk_cpu),
        "wrk_cpu_share": statistics.median(w / (w + s) for w, s in zip(wrk_cpu, server_cpu)),
    }


def _figure(summary: dict[str, Any]) -> str:
    return f"{summary['requests_per_s']['median']:,.0f} req/s, p50 {summary['p50_ms']:.1f} ms, p99 {summary['p99_ms']:.1f} ms"


def _settings(quick: bool) -> dict[str, Any]:
    return {"members": 1000 if quick else 2000, "duration_s": 3.0 if quick else 7.0, "repeats": 2 if quick else 5, "warmup_s": 1.0 if quick else 2.0}


def _compare(sides: list[tuple[Server, list[Server]]], script: Path, params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Warm each side with wrk, then ``repeats`` timed runs per side, alternating which goes first."""
    for server, cpu_of in sides:
        _load(server, script, params["warmup_s"], cpu_of)
    runs: dict[str, list[dict[str, Any]]] = {server.label: [] for server, _ in sides}
    for i in range(params["repeats"]):
        for server, cpu_of in sides if i % 2 == 0 else sides[::-1]:
            runs[server.label].append(_load(server, script, params["duration_s"], cpu_of))
    return {label: _summary(r, params["duration_s"]) for label, r in runs.items()}


def _wrk_params(params: dict[str, Any]) -> dict[str, Any]:
    return {
        "tool": "wrk 4.1 --latency",
        "threads": WRK_THREADS,
        "connections": CONNECTIONS,
        "duration_s": params["duration_s"],
        "warmup_s": params["warmup_s"],
        "repeats": params["repeats"],
        "timeout": WRK_TIMEOUT,
        "script": "GET /files/<random member> per request, same script for both sides",
        "order": "alternating, first side swapped every repeat",
    }


def _gunicorn_params() -> dict[str, Any]:
    return {"config": "deploy/gunicorn.conf.py (gthread, accesslog to a file for both sides)", "WEB_CONCURRENCY": WORKERS, "WEB_THREADS": "8 (config default)", "cpus": os.cpu_count()}


class Phases:
    """Wall time of each step of a benchmark, in seconds."""

    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self.last, 2)
        self.last = now

    def report(self) -> dict[str, float]:
        return self.seconds | {"total": round(time.perf_counter() - self.started, 2)}


def _common(members: dict[str, bytes], containers: int, params: dict[str, Any], servers: list[Server]) -> dict[str, Any]:
    return {
        "members": len(members),
        "member_bytes": sum(map(len, members.values())),
        "member_sizes": "1-64 KiB, uniform random",
        "containers": containers,
        "gunicorn": _gunicorn_params(),
        "wrk": _wrk_params(params),
        "worker_restarts": {s.label: s.restarts() for s in servers},
        "loadavg_at_start": os.getloadavg(),
    }


def gunicorn_vs_bare(quick: bool, **_: Any) -> dict[str, Any]:
    """Warm reads of 1-64 KiB members over HTTP, local archive, 32 connections: the files API vs bare Flask from memory."""
    params = _settings(quick)
    phases = Phases()
    work = Path(tempfile.mkdtemp(prefix="desq-bench-http-"))
    try:
        members = _members(params["members"])
        containers = _build_archive(members, work / "archive")
        (work / "members").mkdir()
        for name, data in members.items():
            (work / "members" / name).write_bytes(data)
        script = _lua(list(members), work / "random_member.lua")
        phases.mark("build")
        with ExitStack() as stack:
            desq = Server("desq", "web:create_app()", {"DESQ_ARCHIVE_URL": str(work / "archive")}, work / "desq.log")
            bare = Server("bare", "bench.bare_app:create()", {"BARE_MEMBERS": str(work / "members")}, work / "bare.log")
            start_all(stack, desq, bare)
            phases.mark("start")
            checked = _check(desq, members, members)
            _check(bare, members, list(members)[:50])
            phases.mark("check")
            result = _compare([(desq, [desq]), (bare, [bare])], script, params)
            phases.mark("load")
        phases.mark("stop")
        ratio = result["desq"]["requests_per_s"]["median"] / result["bare"]["requests_per_s"]["median"]
        cost, anchor_cost = result["desq"]["cpu_ms_per_request"], result["bare"]["cpu_ms_per_request"]
        details = _common(members, containers, params, [desq, bare]) | {
            "desq": result["desq"],
            "anchor": result["bare"],
            "sides": {"desq": "files API (web:create_app()) on the local archive", "anchor": "bench/bare_app.py, the same bytes from a dict"},
            "checked_members_byte_for_byte": checked,
            "ratio_predicted_from_cpu_per_request": sum(anchor_cost.values()) / sum(cost.values()),
            "phases_s": phases.report(),
            "wrk_not_the_bottleneck": f"wrk used {result['desq']['wrk_cpu_cores']:.2f} / {result['bare']['wrk_cpu_cores']:.2f} cores (desq / bare) of its {WRK_THREADS} threads, "
            f"{100 * result['desq']['wrk_cpu_share']:.0f}% / {100 * result['bare']['wrk_cpu_share']:.0f}% of the CPU used by wrk and the server together",
        }
        return {"figure": _figure(result["desq"]), "anchor": f"bare Flask from memory: {_figure(result['bare'])}", "ratio": ratio, "goal": ">= 0.8x", "met": ratio >= 0.8, "details": details}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def router_vs_direct(quick: bool, **_: Any) -> dict[str, Any]:
    """The same warm reads through the router in front of one files API vs straight to that files API."""
    params = _settings(quick)
    phases = Phases()
    work = Path(tempfile.mkdtemp(prefix="desq-bench-router-"))
    try:
        members = _members(params["members"])
        containers = _build_archive(members, work / "archive")
        script = _lua(list(members), work / "random_member.lua")
        phases.mark("build")
        with ExitStack() as stack:
            files = Server("files", "web:create_app()", {"DESQ_ARCHIVE_URL": str(work / "archive")}, work / "files.log")
            router = Server("router", "web:create_app(role='router')", {"DESQ_WEB_BACKENDS": files.url}, work / "router.log")
            start_all(stack, files, router)
            phases.mark("start")
            checked = _check(files, members, members)
            checked_router = _check(router, members, list(members)[: 100 if quick else 500])
            phases.mark("check")
            result = _compare([(router, [router, files]), (files, [router, files])], script, params)
            phases.mark("load")
        phases.mark("stop")
        ratio = result["router"]["requests_per_s"]["median"] / result["files"]["requests_per_s"]["median"]
        cost, direct_cost = result["router"]["cpu_ms_per_request"], result["files"]["cpu_ms_per_request"]
        predicted = (direct_cost["files"] + direct_cost["wrk"]) / sum(cost.values())
        details = _common(members, containers, params, [files, router]) | {
            "desq": result["router"],
            "anchor": result["files"],
            "sides": {"desq": "wrk -> router -> files API", "anchor": "wrk -> files API"},
            "router_WEB_CONCURRENCY": WORKERS,
            "checked_members_direct": checked,
            "checked_members_through_router": checked_router,
            "phases_s": phases.report(),
            "limits": (
                f"router ({WORKERS} workers), files API ({WORKERS} workers) and wrk share {os.cpu_count()} cores, so the run is CPU-bound: through the router each request costs "
                f"{cost['router']:.2f} ms of router CPU on top of {cost['files']:.2f} ms in the files API and {cost['wrk']:.2f} ms in wrk (direct: {direct_cost['files']:.2f} + {direct_cost['wrk']:.2f} ms); "
                f"CPU-bound, router/direct is about the ratio of CPU per request, {predicted:.2f}"
            ),
            "ratio_predicted_from_cpu_per_request": predicted,
        }
        return {
            "figure": f"through the router: {_figure(result['router'])}",
            "anchor": f"files API alone: {_figure(result['files'])}",
            "ratio": ratio,
            "goal": ">= 0.5x",
            "met": ratio >= 0.5,
            "details": details,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer members, shorter and fewer runs")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    results = {}
    for name, bench in (("gunicorn_vs_bare", gunicorn_vs_bare), ("router_vs_direct", router_vs_direct)):
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        results[name] = bench(args.quick)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
