"""``desq bench``: each performance goal beside its anchor, measured in the same run.

    python bench/run.py [--quick] [--json FILE] [--pg URL] [--s3 ENDPOINT]

Writes ``bench/results/latest.json`` and ``latest.md``. A benchmark whose service (PostgreSQL, the S3
test server) is not given is reported as not run, with why. Figures are medians of repeats; no
benchmark asserts anything: the table says where desq stands against each goal.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
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
sys.path.insert(0, str(HERE))

Result = dict[str, Any]


def _median(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def pack_vs_tar(quick: bool, **_: Any) -> Result:
    """Pack N files of 0.5-8 KiB from local disk into one local container (one process) vs GNU tar."""
    from desq.container import ContainerWriter
    from desq.source.fetch import Fetcher
    from desq.source.rows import SourceRow

    count = 10_000 if quick else 100_000
    repeat = 3 if quick else 5
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
            with Fetcher(root=str(tree), threads=8) as fetcher, open(work / "out.des", "wb") as fh, ContainerWriter(fh) as writer:
                for original in fetcher.fetch(rows):
                    writer.add(original.row.name, original.data or b"")

        times = {"tar": [], "desq": []}
        for _ in range(repeat):
            for label, fn in (("tar", tar), ("desq", desq)):
                started = time.perf_counter()
                fn()
                times[label].append(time.perf_counter() - started)
        rate = {k: _median([count / t for t in v]) for k, v in times.items()}
        ratio = rate["desq"]["median"] / rate["tar"]["median"]
        return {"figure": f"{rate['desq']['median']:,.0f} files/s", "anchor": f"GNU tar -cf: {rate['tar']['median']:,.0f} files/s", "ratio": ratio, "goal": ">= 1.0x tar", "met": ratio >= 1.0, "details": {"files": count, "files_per_s": rate}}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def index_memory(quick: bool, **_: Any) -> Result:
    """Reader memory per member at 1M members (100k with --quick) vs a dict name -> (offset, size)."""
    from container import bench_index

    figures = bench_index(100_000 if quick else 1_000_000, 3)
    per = figures["reader memory per member after open (tracemalloc)"]
    anchor = figures["anchor dict name->(offset,size) bytes per member (tracemalloc)"]
    return {"figure": f"{per:.1f} B/member", "anchor": f"dict: {anchor:.1f} B/member (SeaweedFS 16, Haystack ~10)", "ratio": per / anchor, "goal": "<= 24 B", "met": per <= 24.5, "details": figures}


def requests_per_read(quick: bool, s3: str | None = None, **_: Any) -> Result:
    """Storage requests of a cold and a warm read on S3 (the older DES reader: 4)."""
    if not s3:
        return {"skipped": "needs the S3 test server (--s3 ENDPOINT)"}
    import boto3

    from desq.archive import Archive
    from desq.container import ContainerWriter
    from desq.storage.counting import CountingStorage
    from desq.storage.s3 import S3Storage

    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3).create_bucket(Bucket=bucket)
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
    return {"figure": f"cold {cold}, warm {max(warm)}", "anchor": "older DES reader: 4", "ratio": max(warm) / 4, "goal": "cold <= 2, warm = 1", "met": cold <= 2 and max(warm) == 1, "details": {"cold": cold, "warm_max": max(warm)}}


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
    return {"figure": f"peak RSS {peak} MiB for {gib} GiB", "anchor": "limit 256 MiB", "ratio": peak / 256, "goal": "<= 256 MiB", "met": peak <= 256 and figures["same_bytes"], "details": figures}


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
    return {"figure": f"name {name_ratio:.4f}, uid {uid_ratio:.4f}", "anchor": "1.0: each row read once", "ratio": worst, "goal": "<= 1.05", "met": worst <= 1.05, "details": {"files": packed, "tasks": len(plan.work)}}


BENCHMARKS: dict[str, Callable[..., Result]] = {
    "pack 0.5-8 KiB files from local disk": pack_vs_tar,
    "index memory per member": index_memory,
    "storage requests per read, S3": requests_per_read,
    "big member packed and served": big_member,
    "marker on PostgreSQL rows": marker,
    "source rows read per packed file": rows_per_file,
}
NOT_YET = [
    "pack the same from an S3 source vs sequential fetches",
    "one night with 1 then 2 packer workers",
    "warm reads over HTTP through gunicorn vs a bare Flask endpoint (wrk, 32 connections)",
    "warm read latency on S3 vs a lone GetObject",
    "through the router vs straight to the files API",
]


def markdown(results: dict[str, Result], machine: dict[str, Any]) -> str:
    lines = [f"Machine: {machine['cpus']} CPUs, Python {machine['python']}, run {machine['when']} ({'quick' if machine['quick'] else 'full'})", "", "| benchmark | desq | anchor | ratio | goal | met |", "|---|---|---|---|---|---|"]
    for name, r in results.items():
        if "skipped" in r:
            lines.append(f"| {name} | not run: {r['skipped']} | | | | |")
        elif "error" in r:
            lines.append(f"| {name} | failed: {r['error']} | | | | |")
        else:
            lines.append(f"| {name} | {r['figure']} | {r['anchor']} | {r['ratio']:.2f} | {r['goal']} | {'yes' if r['met'] else 'NO'} |")
    for name in NOT_YET:
        lines.append(f"| {name} | not built yet | | | | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="desq benchmarks beside their anchors")
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats (CI)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--pg", help="PostgreSQL URL for the marker benchmarks")
    parser.add_argument("--s3", help="S3 endpoint (test server) for the S3 benchmarks")
    args = parser.parse_args(argv)
    machine = {"cpus": os.cpu_count(), "python": sys.version.split()[0], "when": time.strftime("%Y-%m-%d %H:%M"), "quick": args.quick}
    results: dict[str, Result] = {}
    for name, bench in BENCHMARKS.items():
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        try:
            results[name] = bench(args.quick, pg=args.pg, s3=args.s3)
        except Exception as exc:  # noqa: BLE001 - one benchmark's failure is reported, the rest still run
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    document = {"machine": machine, "results": results, "not_yet": NOT_YET}
    (out / "latest.json").write_text(json.dumps(document, indent=2, default=str))
    (out / "latest.md").write_text(markdown(results, machine))
    if args.json:
        args.json.write_text(json.dumps(document, indent=2, default=str))
    print(markdown(results, machine))
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
