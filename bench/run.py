"""``desq bench``: each performance goal beside its anchor, measured in the same run.

    python bench/run.py [--quick] [--json FILE] [--pg URL] [--s3 ENDPOINT] [--redis URL] [--publish] [--only WORD]

Writes ``bench/results/latest.json``, ``latest.md`` and PNG plots there; ``--publish`` (a full run)
also writes ``BENCHMARKS.md`` with the plots in ``bench/plots/``, followed by the hand-written
analysis of ``bench/notes.md``. A benchmark whose service (PostgreSQL, Redis, the S3 test server)
is not given is reported as not run, with why. Figures are medians of repeats with min and max;
no benchmark asserts a speed: the table says where desq stands against each goal.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))  # bench's modules import each other by their plain names

Result = dict[str, Any]


def _median(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def _progress(value: float, goal: float, higher_is_better: bool = True) -> float:
    """How far a figure is from its goal: above 1.0 the goal is met."""
    return value / goal if higher_is_better else goal / value


def _bar(label: str, stats: dict[str, float]) -> dict[str, Any]:
    return {"label": label} | stats


def _fixed(value: float) -> dict[str, float]:
    """A figure measured once, as a bar without whiskers."""
    return {"min": value, "median": value, "max": value}


def top_frames(fn: Callable[[], Any], count: int = 10) -> list[str]:
    """The ``count`` functions with the most own time in one call of ``fn`` (cProfile)."""
    profile = cProfile.Profile()
    profile.runcall(fn)
    stats = pstats.Stats(profile)
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:count]  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.stats.values()) or 1.0  # type: ignore[attr-defined]
    return [f"{100 * tt / total:4.1f}% {calls:>7} calls  {Path(file).name}:{line}({func})" for (file, line, func), (_, calls, tt, _, _) in rows]


def pack_vs_tar(quick: bool, **_: Any) -> Result:
    """Pack N files of 0.5-8 KiB from local disk into one local container (one process) vs GNU tar."""
    from desq.container import ContainerWriter
    from desq.settings import Settings
    from desq.source.fetch import Fetcher
    from desq.source.rows import SourceRow

    count = 10_000 if quick else 100_000
    repeat = 3 if quick else 5
    threads = Settings().source.fetch_threads
    work = Path(tempfile.mkdtemp(prefix="desq-bench-pack-"))
    try:
        rng = random.Random(1)
        tree = work / "tree"
        rows = []
        for i in range(count):
            rel = f"{i % 256:02x}/{i}.bin"
            path = tree / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(rng.randbytes(rng.randint(512, 8192)))
            rows.append(SourceRow(id=i, name=f"20251120_{i}", created_at=None, path=rel, date=date(2025, 11, 20), shard=0))
        subprocess.run(["sync"], check=False)

        def tar() -> None:
            subprocess.run(["tar", "-cf", str(work / "out.tar"), "-C", str(tree), "."], check=True)

        def desq() -> None:
            with Fetcher(root=str(tree), threads=threads) as fetcher, open(work / "out.des", "wb") as fh, ContainerWriter(fh) as writer:
                for original in fetcher.fetch(rows):
                    writer.add(original.row.name, original.data or b"", content_type=original.content_type, path=original.row.path)

        def read_alone() -> None:
            with Fetcher(root=str(tree), threads=threads) as fetcher:
                for _ in fetcher.fetch(rows):
                    pass

        blobs = [(tree / r.path).read_bytes() for r in rows]

        def write_alone() -> None:
            with open(work / "out.des", "wb") as fh, ContainerWriter(fh) as writer:
                for r, data in zip(rows, blobs):
                    writer.add(r.name, data)

        runs = {"desq": desq, "tar": tar, "read": read_alone, "write": write_alone}
        times: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(repeat):
            for label, fn in runs.items():
                started = time.perf_counter()
                fn()
                times[label].append(time.perf_counter() - started)
        rate = {k: _median([count / t for t in v]) for k, v in times.items()}
        ratio = rate["desq"]["median"] / rate["tar"]["median"]
        details: dict[str, Any] = {"files": count, "fetch_threads": threads, "files_per_s": rate}
        if ratio < 1.0:
            details["profile_top_own_time"] = top_frames(desq)
        return {
            "figure": f"{rate['desq']['median']:,.0f} files/s", "anchor": f"GNU tar -cf: {rate['tar']['median']:,.0f} files/s", "ratio": ratio,
            "goal": ">= 1.0x tar", "met": ratio >= 1.0, "progress": _progress(ratio, 1.0), "details": details,
            "plot": {"unit": "files/s", "bars": [_bar("desq pack", rate["desq"]), _bar("GNU tar -cf", rate["tar"]), _bar("desq: reading alone", rate["read"]), _bar("desq: writing alone (from memory)", rate["write"])]},
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def index_memory(quick: bool, **_: Any) -> Result:
    """Reader memory per member at 1M members (100k with --quick) vs a dict name -> (offset, size)."""
    from container import bench_index

    figures = bench_index(100_000 if quick else 1_000_000, 3)
    per = figures["reader memory per member after open (tracemalloc)"]
    anchor = figures["anchor dict name->(offset,size) bytes per member (tracemalloc)"]
    bars = [_bar("desq reader", _fixed(per)), _bar("Python dict name -> (offset, size)", _fixed(anchor))]
    bars += [_bar(f"{who} (reference)", _fixed(b)) for who, b in (("SeaweedFS", 16.0), ("Haystack", 10.0))]
    return {
        "figure": f"{per:.1f} B/member", "anchor": f"dict: {anchor:.1f} B/member (SeaweedFS 16, Haystack ~10)", "ratio": per / anchor, "goal": "<= 24 B",
        "met": per <= 24.5, "progress": _progress(per, 24.5, higher_is_better=False), "details": figures,
        "plot": {"unit": "bytes of reader memory per member", "lower_is_better": True, "bars": bars},
    }


def requests_per_read(quick: bool, s3: str | None = None, **_: Any) -> Result:
    """Storage requests of a cold and a warm read on S3 (the older DES reader: 4)."""
    if not s3:
        return {"skipped": "needs the S3 test server (--s3 ENDPOINT)"}
    import boto3

    from s3 import drop_bucket

    admin = boto3.client("s3", endpoint_url=s3)
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    admin.create_bucket(Bucket=bucket)
    try:
        return _requests_per_read(s3, bucket)
    finally:
        drop_bucket(admin, bucket)


def _requests_per_read(s3: str, bucket: str) -> Result:
    from desq.archive import Archive
    from desq.container import ContainerWriter
    from desq.storage.counting import CountingStorage
    from desq.storage.s3 import S3Storage

    storage = CountingStorage(S3Storage(f"s3://{bucket}/desq", endpoint_url=s3))
    out = io.BytesIO()
    with ContainerWriter(out) as w:
        for i in range(500):
            w.add(f"20251120_{i}", os.urandom(random.randint(512, 8192)))
    storage.put("20251120/FE.des", out.getvalue())
    storage.requests.clear()
    archive = Archive(storage)
    archive.read("20251120/FE.des", "20251120_1")
    cold = len(storage.requests)
    warm = []
    for i in range(2, 52):
        storage.requests.clear()
        archive.read("20251120/FE.des", f"20251120_{i}")
        warm.append(len(storage.requests))
    return {
        "figure": f"cold {cold}, warm {max(warm)}", "anchor": "older DES reader: 4", "ratio": max(warm) / 4, "goal": "cold <= 2, warm = 1",
        "met": cold <= 2 and max(warm) == 1, "progress": min(_progress(cold, 2, False), _progress(max(warm), 1, False)), "details": {"cold": cold, "warm_max": max(warm), "warm_reads": len(warm)},
        "plot": {"unit": "storage requests per read", "lower_is_better": True, "bars": [_bar("desq cold", _fixed(cold)), _bar("desq warm", _median(warm)), _bar("older DES reader", _fixed(4))]},
    }


def big_member(quick: bool, **_: Any) -> Result:
    """A big member packed and served (2 GiB; 0.25 GiB with --quick): peak RSS from /proc."""
    work = Path(tempfile.mkdtemp(prefix="desq-bench-big-"))
    try:
        gib = "0.25" if quick else "2"
        result = subprocess.run([sys.executable, str(HERE / "bigfile.py"), "--url", str(work / "archive"), "--gib", gib], capture_output=True, text=True, check=True)
        figures = json.loads(result.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    peak = figures["peak_rss_MiB"]
    return {
        "figure": f"peak RSS {peak} MiB for {gib} GiB", "anchor": "limit 256 MiB", "ratio": peak / 256, "goal": "<= 256 MiB",
        "met": peak <= 256 and figures["same_bytes"], "progress": _progress(peak, 256, higher_is_better=False), "details": figures,
        "plot": {"unit": "MiB peak RSS (VmHWM)", "lower_is_better": True, "bars": [_bar(f"desq, {gib} GiB member", _fixed(peak)), _bar("limit", _fixed(256))]},
    }


def marker(quick: bool, pg: str | None = None, **_: Any) -> Result:
    """The marker on 1M PostgreSQL rows (50k with --quick), one process."""
    if not pg:
        return {"skipped": "needs PostgreSQL (--pg URL)"}
    from marker import build_table, check_rows, run_markers

    import sqlalchemy as sa

    rows = 50_000 if quick else 1_000_000
    table = build_table(pg, rows)
    try:
        outs, seconds = run_markers(pg, table, 1)
        wrong = check_rows(pg, table, rows)
    finally:
        engine = sa.create_engine(pg)
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
    rate = rows / seconds
    return {"figure": f"{rate:,.0f} rows/s", "anchor": "older DES marker: ~50 rows/s", "ratio": rate / 50, "goal": "rows/s reported", "met": wrong == 0, "details": {"rows": rows, "seconds": seconds, "wrong_rows": wrong, "marker": outs}}


def rows_per_file(quick: bool, pg: str | None = None, **_: Any) -> Result:
    """Source rows read per packed file over a night of 3 days x 256 shards (name and uid mode)."""
    if not pg:
        return {"skipped": "needs PostgreSQL (--pg URL)"}
    from marker import build_table

    import sqlalchemy as sa

    from desq.settings import load_settings
    from desq.source.marker import mark
    from desq.source.plan import name_rows_for, plan_names, plan_uids
    from desq.source.table import SourceTable

    table = build_table(pg, 100_000 if quick else 200_000)
    try:
        env = {"DESQ_SOURCE_DB_URL": pg, "DESQ_SOURCE_TABLE": table}
        source = SourceTable.connect(load_settings(env=env))
        mark(source, today=date(2025, 11, 11))
        source.rows_read = 0
        plan = plan_names(source)
        packed = sum(len(list(name_rows_for(source, w.date, w.shard))) for w in plan.work)
        name_ratio = source.rows_read / packed
        uid = SourceTable.connect(load_settings(env=env | {"DESQ_MODE": "uid"}))
        uid_plan = plan_uids(uid, date(2025, 11, 1), date(2025, 11, 3))
        uid_ratio = uid.rows_read / uid_plan.files
    finally:
        engine = sa.create_engine(pg)
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
    worst = max(name_ratio, uid_ratio)
    return {
        "figure": f"name {name_ratio:.4f}, uid {uid_ratio:.4f}", "anchor": "1.0: each row read once", "ratio": worst, "goal": "<= 1.05",
        "met": worst <= 1.05, "progress": _progress(worst, 1.05, higher_is_better=False), "details": {"files": packed, "tasks": len(plan.work)},
        "plot": {"unit": "source rows read per packed file", "lower_is_better": True, "bars": [_bar("desq, name mode", _fixed(name_ratio)), _bar("desq, uid mode", _fixed(uid_ratio)), _bar("goal", _fixed(1.05))]},
    }


def pack_from_s3(quick: bool, s3: str | None = None, **_: Any) -> Result:
    """The same files from the S3 test server, straight (bench/s3.py)."""
    from s3 import pack_from_s3 as run

    r = run(quick, s3=s3)
    if "figure" in r:
        d = r["details"]
        r["progress"] = _progress(r["ratio"], 8)
        r["plot"] = {"unit": "files/s", "bars": [_bar(f"desq, {d['fetch_threads_default']} threads", d["desq"]), _bar("sequential get_object", d["anchor"]), _bar("server ceiling (bare thread pool)", _fixed(d["server_ceiling"]))]}
    return r


def pack_from_s3_rtt(quick: bool, s3: str | None = None, **_: Any) -> Result:
    """The same with a modelled 20 ms network round trip per request (bench/s3.py)."""
    from s3 import pack_from_s3_rtt as run

    r = run(quick, s3=s3)
    if "figure" in r:
        d = r["details"]
        r["progress"] = _progress(r["ratio"], 8)
        r["plot"] = {"unit": "files/s", "bars": [_bar(f"desq, {d['fetch_threads']} threads", d["desq"]), _bar("sequential get_object", d["anchor"])]}
    return r


def night_workers(quick: bool, pg: str | None = None, redis: str | None = None, **_: Any) -> Result:
    """One night of 256 shards through Celery with 1 then 2 packer workers (bench/night.py)."""
    from night import night_workers as run

    r = run(quick, pg=pg, redis=redis)
    if "figure" in r:
        r["progress"] = _progress(r["ratio"], 1.7)
        if "files_per_s" in r.get("details", {}):
            rates = r["details"]["files_per_s"]
            r["plot"] = {"unit": "files/s", "bars": [_bar("2 packer workers", rates["2"]), _bar("1 packer worker", rates["1"])]}
    return r


def http_reads(quick: bool, **_: Any) -> Result:
    """Warm reads through gunicorn vs a bare Flask endpoint, wrk at 32 connections (bench/web_load.py)."""
    from bench.web_load import gunicorn_vs_bare

    r = gunicorn_vs_bare(quick)
    if "figure" in r:
        d = r["details"]
        r["progress"] = _progress(r["ratio"], 0.8)
        r["plot"] = {"unit": "requests/s", "bars": [_bar("desq files API", d["desq"]["requests_per_s"]), _bar("bare Flask, bytes from memory", d["anchor"]["requests_per_s"])]}
    return r


def read_latency_s3(quick: bool, s3: str | None = None, **_: Any) -> Result:
    """Warm read latency on the S3 test server vs a lone GetObject (bench/s3.py)."""
    from s3 import read_latency_s3 as run

    r = run(quick, s3=s3)
    if "figure" in r:
        ms = r["details"]["latency_ms"]
        r["progress"] = _progress(r["ratio"], 1.3, higher_is_better=False)
        bars = [_bar("desq Archive.read", _fixed(ms["desq"]["p50"])), _bar("lone GetObject", _fixed(ms["lone"]["p50"]))]
        if "ranged" in ms:
            bars.append(_bar("bare ranged GET of the same frame", _fixed(ms["ranged"]["p50"])))
        r["plot"] = {"unit": "p50 ms per read", "lower_is_better": True, "bars": bars}
    return r


def router(quick: bool, **_: Any) -> Result:
    """Reads through the router vs straight to the files API (bench/web_load.py)."""
    from bench.web_load import router_vs_direct

    r = router_vs_direct(quick)
    if "figure" in r:
        d = r["details"]
        r["progress"] = _progress(r["ratio"], 0.5)
        r["plot"] = {"unit": "requests/s", "bars": [_bar("through the router", d["desq"]["requests_per_s"]), _bar("files API alone", d["anchor"]["requests_per_s"])]}
    return r


def s3_get(quick: bool, **_: Any) -> Result:
    """The s3 role's GetObject vs the files API's GET on the same members (bench/s3_api.py)."""
    from bench.s3_api import s3_vs_files

    r = s3_vs_files(quick)
    if "figure" in r:
        d = r["details"]
        r["plot"] = {"unit": "requests/s", "bars": [_bar("S3 GetObject", d["desq"]["requests_per_s"]), _bar("files API GET", d["anchor"]["requests_per_s"])]}
    return r


def s3_listing(quick: bool, **_: Any) -> Result:
    """Listing a day of 100k files through the S3 API's lister, cold and warm (bench/s3_listing.py)."""
    from s3_listing import listing_day

    return listing_day(quick)


def cold_reads(quick: bool, s3: str | None = None, **_: Any) -> Result:
    """The first read of a container of 1k, 100k and 1M members, local and on S3 (bench/cold_reads.py)."""
    from cold_reads import cold_reads as run

    return run(quick, s3=s3)


def _whole_night(files: int, days: int, goal: float, quick: bool) -> Result:
    """``desq nightly --sync`` on the embedded default vs ``tar cf`` of the same tree (bench/whole_night.py)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from whole_night import measure

    if quick:
        files //= 10
    found = measure(files, days, runs=1 if quick else 3)
    ratio = found["ratio_vs_tar"]
    desq_s = statistics.median(found["desq_seconds"])
    tar_s = statistics.median(found["tar_seconds"])
    read_s = statistics.median(found["python_read_seconds"])
    found["per_file_vs_python_read"] = round((desq_s / files) / (read_s / files), 2)
    return {
        "figure": f"{desq_s:.2f} s for {files:,} files, {found['containers']} containers", "anchor": f"GNU tar cf: {tar_s:.2f} s", "ratio": ratio,
        "goal": f">= {goal}x tar", "met": ratio >= goal, "progress": _progress(ratio, goal), "details": found,
        "plot": {"unit": "seconds (lower is better)", "lower_is_better": True, "bars": [_bar("desq nightly --sync", _median(found["desq_seconds"])), _bar("GNU tar cf", _median(found["tar_seconds"])), _bar("Python open/read/close", _median(found["python_read_seconds"]))]},
    }


def whole_night_small(quick: bool, **_: Any) -> Result:
    """The whole night, 20k files over 3 days (768 containers of ~26 files)."""
    return _whole_night(20_000, 3, 0.10, quick)


def whole_night_large(quick: bool, **_: Any) -> Result:
    """The whole night, 100k files over 2 days (512 containers of ~195 files)."""
    return _whole_night(100_000, 2, 0.25, quick)


_EC: dict[bool, dict[str, Any] | Exception] = {}


def _ec(quick: bool) -> dict[str, Any]:
    """bench/ec.py's one run (build, nights, reads, repair), shared by the EC rows: the first pays,
    and when it fails the others report the same error at once."""
    if quick not in _EC:
        from ec import measure

        try:
            _EC[quick] = measure(quick, profile=top_frames)
        except Exception as exc:  # noqa: BLE001 - re-raised below, for every EC row
            _EC[quick] = exc
    found = _EC[quick]
    if isinstance(found, Exception):
        raise found
    return found


def ec_bytes(quick: bool, **_: Any) -> Result:
    """Bytes stored over the six nodes of ec://4+2 vs the plain archive, the same night (bench/ec.py)."""
    b = _ec(quick)["bytes"]
    parts, goal = b["parts"], 1.5 * 1.1
    ec_mb, plain_mb = b["ec_nodes"]["bytes"] / 1e6, b["plain"]["bytes"] / 1e6
    beyond = f"{b['beyond_ideal']:,.0f} B beyond 1.5x: checksums {parts['block_checksums']:,} B, footers {parts['footers']:,} B, padding {parts['padding']:,.0f} B; {parts['marker_files']} empty markers"
    return {
        "figure": f"{ec_mb:,.1f} MB on 6 nodes ({b['ratio']:.4f}x); {beyond}", "anchor": f"plain archive: {plain_mb:,.1f} MB", "ratio": b["ratio"],
        "goal": f"<= {goal:.2f}x", "met": b["ratio"] <= goal and b["unaccounted"] == 0, "progress": _progress(b["ratio"], goal, higher_is_better=False), "details": b,
        "plot": {"unit": "MB stored", "lower_is_better": True, "bars": [_bar("EC 4+2, all six nodes", _fixed(ec_mb)), _bar("plain archive x (K+M)/K", _fixed(plain_mb * 1.5)), _bar("plain archive", _fixed(plain_mb))]},
    }


def ec_pack(quick: bool, **_: Any) -> Result:
    """``desq nightly --sync`` into ec://4+2 vs into the plain archive, alternating (bench/ec.py)."""
    found = _ec(quick)
    pack = found["pack"]
    rate = {side: pack[side]["files_per_s"] for side in pack}
    ratio = rate["ec"]["median"] / rate["plain"]["median"]
    return {
        "figure": f"{rate['ec']['median']:,.0f} files/s, {pack['ec']['MB_per_s']['median']:.1f} MB/s", "ratio": ratio,
        "anchor": f"plain archive: {rate['plain']['median']:,.0f} files/s, {pack['plain']['MB_per_s']['median']:.1f} MB/s",
        "goal": "files/s reported", "met": True, "details": {"data": found["data"], "big_file_bytes": found["big_file_bytes"], "pack": pack},
        "plot": {"unit": "files/s (whole night, new process)", "bars": [_bar("EC 4+2 over six folders", rate["ec"]), _bar("plain local archive", rate["plain"])]},
    }


def ec_reads(quick: bool, **_: Any) -> Result:
    """Warm random member reads, cached indexes, ec://4+2 vs plain: Archive and HTTP (bench/ec.py)."""
    r = _ec(quick)["reads"]
    rate, asked = r["reads_per_s"], r["requests_per_warm_read"]
    one_cell = asked["by_cells_spanned"].get(1, {"max_requests": 0})["max_requests"]
    return {
        "figure": f"{rate['ec']['median']:,.0f} reads/s ({rate['ec_http']['median']:,.0f} over HTTP), {asked['mean']:.3f} requests a read",
        "anchor": f"plain archive: {rate['plain']['median']:,.0f} reads/s ({rate['plain_http']['median']:,.0f} over HTTP)", "ratio": rate["ec"]["median"] / rate["plain"]["median"],
        "goal": "1 request a read inside one cell", "met": one_cell == 1, "progress": _progress(max(one_cell, 1), 1, higher_is_better=False),
        "details": {k: v for k, v in r.items() if k != "degraded"},
        "plot": {"unit": "warm reads/s", "bars": [_bar("EC 4+2, Archive.read", rate["ec"]), _bar("plain, Archive.read", rate["plain"]),
                                                   _bar("EC 4+2, GET /files (test client)", rate["ec_http"]), _bar("plain, GET /files (test client)", rate["plain_http"])]},
    }


def ec_degraded(quick: bool, **_: Any) -> Result:
    """The same reads with two data nodes' folders gone, decoded from four (bench/ec.py)."""
    d = _ec(quick)["reads"]["degraded"]
    plain = _ec(quick)["reads"]["latency"]["plain"]
    decoded, healthy = d["decoded"], d["healthy_ec"]
    return {
        "figure": f"p50 {decoded['p50_ms']:.2f} ms, p99 {decoded['p99_ms']:.2f} ms, {d['requests_per_decoded_read']['mean']:.1f} requests a decoded read",
        "anchor": f"healthy EC p50 {healthy['p50_ms']:.3f} ms, p99 {healthy['p99_ms']:.3f}; plain p50 {plain['p50_ms']:.3f} ms", "ratio": decoded["p50_ms"] / healthy["p50_ms"],
        "goal": "latency reported", "met": True, "details": d,
        "plot": {"unit": "p50 ms per read", "lower_is_better": True, "bars": [_bar("EC, decoded (2 of 6 folders gone)", _fixed(decoded["p50_ms"])),
                                                                              _bar("EC, healthy", _fixed(healthy["p50_ms"])), _bar("plain archive", _fixed(plain["p50_ms"]))]},
    }


def ec_repair(quick: bool, **_: Any) -> Result:
    """Rebuilding one lost node with ec_repair, and checking every fragment, in MB/s (bench/ec.py)."""
    c = _ec(quick)["checks"]
    rate = c["MB_per_s"]
    return {
        "figure": f"rebuild a node {rate['rebuild']['median']:.1f} MB/s; check {rate['check']['median']:,.0f} MB/s of stored bytes",
        "anchor": f"copy of a node's folder: {rate['copy']['median']:,.0f} MB/s", "ratio": rate["rebuild"]["median"] / rate["copy"]["median"],
        "goal": "MB/s reported", "met": c["rebuilt_identical"], "details": c,
        "plot": {"unit": "MB/s", "bars": [_bar("rebuild one node (objects, check, repair)", rate["rebuild"]), _bar("check every fragment", rate["check"]), _bar("copy a node's folder", rate["copy"])]},
    }


BENCHMARKS: dict[str, Callable[..., Result]] = {
    "whole night: 20k files, 768 containers, vs tar": whole_night_small,
    "whole night: 100k files, 512 containers, vs tar": whole_night_large,
    "pack 0.5-8 KiB files from local disk": pack_vs_tar,
    "pack the same from an S3 source": pack_from_s3,
    "pack from S3 with a 20 ms round trip": pack_from_s3_rtt,
    "one night with 1 then 2 packer workers": night_workers,
    "index memory per member": index_memory,
    "warm HTTP reads through gunicorn": http_reads,
    "warm read latency on S3": read_latency_s3,
    "storage requests per read, S3": requests_per_read,
    "marker on PostgreSQL rows": marker,
    "source rows read per packed file": rows_per_file,
    "big member packed and served": big_member,
    "through the router vs direct": router,
    "S3 GetObject vs files API GET on the same files": s3_get,
    "S3 listing: a day of 100k files": s3_listing,
    "cold reads against container size": cold_reads,
    "EC archive 4+2: bytes over all nodes vs plain": ec_bytes,
    "EC archive 4+2: pack vs plain": ec_pack,
    "EC archive 4+2: warm reads vs plain": ec_reads,
    "EC archive 4+2: degraded reads, 2 of 6 nodes gone": ec_degraded,
    "EC archive 4+2: rebuild a node, check every fragment": ec_repair,
}


def machine(quick: bool) -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release(), "when": time.strftime("%Y-%m-%d %H:%M %Z"), "quick": quick}
    try:
        cpu = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
        info["cpu"] = cpu[0] if cpu else platform.machine()
        mem = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
        info["memory_GiB"] = round(int(mem.split()[1]) / (1 << 20), 1)
    except (OSError, StopIteration):
        pass
    for tool, args in (("tar", ["tar", "--version"]), ("wrk", ["wrk", "--version"])):
        try:
            out = subprocess.run(args, capture_output=True, text=True, timeout=10)
            info[tool] = (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            info[tool] = "not installed"
    return info


def markdown(results: dict[str, Result], info: dict[str, Any], plots: dict[str, str] | None = None) -> str:
    """The results table (and, given ``plots``, the images under it)."""
    lines = [
        f"Machine: {info.get('cpu', '?')}, {info['cpus']} CPUs, {info.get('memory_GiB', '?')} GiB, Linux {info['kernel']}, Python {info['python']}; "
        f"{info['tar']}; {info['wrk']}. Run {info['when']} ({'quick' if info['quick'] else 'full'}).",
        "",
        "| benchmark | desq | anchor | ratio | goal | met |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if "skipped" in r:
            lines.append(f"| {name} | not run: {r['skipped']} | | | | |")
        elif "error" in r:
            lines.append(f"| {name} | failed: {r['error']} | | | | |")
        else:
            met = "reported" if "progress" not in r else ("yes" if r["met"] else "NO")
            lines.append(f"| {name} | {r['figure']} | {r['anchor']} | {r['ratio']:.2f} | {r['goal']} | {met} |")
    if plots:
        lines += ["", "Medians of the repeats, with min-max whiskers; the summary shows each figure over its goal.", ""]
        lines += [f"![{name}]({path})" for name, path in plots.items()]
    return "\n".join(lines) + "\n"


def publish(results: dict[str, Result], info: dict[str, Any], root: Path) -> Path:
    """BENCHMARKS.md and bench/plots/ from a full run, with the analysis of bench/notes.md."""
    from plots import slug, write_plots

    folder = HERE / "plots"
    written = {p.stem: p for p in write_plots(results, folder)}
    images = {"summary": f"bench/plots/{written['summary'].name}"} if "summary" in written else {}
    images |= {name: f"bench/plots/{written[slug(name)].name}" for name in results if slug(name) in written}
    notes = (HERE / "notes.md").read_text() if (HERE / "notes.md").exists() else ""
    text = "# desq benchmarks\n\nWritten by `desq bench --publish` (the commands are in bench/notes.md); every ratio is against an anchor measured in the same run.\n\n"
    text += markdown(results, info, images) + ("\n" + notes if notes else "")
    target = root / "BENCHMARKS.md"
    target.write_text(text)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="desq benchmarks beside their anchors")
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats (CI)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--pg", help="PostgreSQL URL for the marker and night benchmarks")
    parser.add_argument("--s3", help="S3 endpoint (test server) for the S3 benchmarks")
    parser.add_argument("--redis", help="Redis URL (a spare database: it is flushed) for the night benchmark")
    parser.add_argument("--publish", action="store_true", help="write BENCHMARKS.md and bench/plots/ (a full run)")
    parser.add_argument("--only", action="append", default=[], metavar="WORD", help="run only benchmarks with a word of their name starting with WORD (repeatable; ec is not direct)")
    args = parser.parse_args(argv)
    if args.publish and (args.quick or args.only):
        parser.error("--publish needs a full run of every benchmark (no --quick, no --only)")
    if args.s3:
        for key, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_DEFAULT_REGION", "us-east-1")):
            os.environ.setdefault(key, value)  # the S3 test server takes any credentials
    info = machine(args.quick)
    chosen = {n: b for n, b in BENCHMARKS.items() if not args.only or any(re.search(rf"\b{re.escape(w)}", n, re.IGNORECASE) for w in args.only)}
    results: dict[str, Result] = {}
    for name, bench in chosen.items():
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            results[name] = bench(args.quick, pg=args.pg, s3=args.s3, redis=args.redis)
        except Exception as exc:  # noqa: BLE001 - one benchmark's failure is reported, the rest still run
            results[name] = {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
        results[name]["seconds"] = round(time.monotonic() - started, 1)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    from plots import write_plots

    write_plots(results, out)
    document = {"machine": info, "results": results}
    (out / "latest.json").write_text(json.dumps(document, indent=2, default=str))
    (out / "latest.md").write_text(markdown(results, info))
    if args.json:
        args.json.write_text(json.dumps(document, indent=2, default=str))
    if args.publish:
        print(f"bench: wrote {publish(results, info, HERE.parent)}", file=sys.stderr)
    print(markdown(results, info))
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
