"""S3 figures, each beside an anchor measured in the same run against the S3 test server (moto).

    python bench/s3.py [--quick] --s3 ENDPOINT [--only pack|read]

- pack_from_s3: N files of 0.5-8 KiB packed from an S3 source (the Fetcher at its default thread
  count, into a local container) against the same objects fetched one by one with one boto3 client;
  details hold the server's own ceiling (parallel GETs/s with a bare thread pool) and the Fetcher's
  files/s by thread count.
- read_latency_s3: warm ``Archive.read`` of a member of a container on S3 against a GetObject of the
  same bytes stored as a lone object, interleaved in one loop; details add a bare ranged GET of the
  same frame of the container (what the server costs for a ranged read), the storage requests of a
  warm read, and, when the goal is missed, a cProfile of the reads.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import cProfile
import hashlib
import io
import json
import os
import pstats
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

Result = dict[str, Any]
SKIPPED = {"skipped": "needs the S3 test server (--s3 ENDPOINT)"}


def _env() -> None:
    """Credentials for the test server, unless some are set already."""
    if not os.environ.get("AWS_ACCESS_KEY_ID"):
        os.environ["AWS_ACCESS_KEY_ID"] = "test"
        os.environ["AWS_SECRET_ACCESS_KEY"] = "test"
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


def _spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def _pct(values: list[float], q: int) -> float:
    """The q-th percentile (inclusive method; q=50 is the median)."""
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def _admin_client(s3: str, pool: int = 64) -> Any:
    from desq.storage.s3 import s3_client

    return s3_client(s3, max_pool_connections=pool)


def _new_bucket(client: Any) -> str:
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return bucket


def drop_bucket(client: Any, bucket: str) -> None:
    """Delete every object (and unfinished upload) of ``bucket``, then the bucket."""
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for upload in page.get("Uploads", []):
            client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    client.delete_bucket(Bucket=bucket)


def _upload(client: Any, bucket: str, objects: dict[str, bytes], threads: int = 32) -> tuple[float, dict[str, str]]:
    """PUT every object on a thread pool: seconds taken, and each key's ETag."""
    started = time.perf_counter()
    etags = {}
    with cf.ThreadPoolExecutor(threads) as pool:
        for key, done in zip(objects, pool.map(lambda kv: client.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), objects.items())):
            if done["ResponseMetadata"]["HTTPStatusCode"] != 200:
                raise RuntimeError(f"PUT {key} answered {done['ResponseMetadata']['HTTPStatusCode']}")
            etags[key] = done["ETag"]
    return time.perf_counter() - started, etags


def _server_ceiling(s3: str, bucket: str, keys: list[str], threads: int) -> float:
    """GETs/s the server answers to a bare thread pool of boto3 get_object calls (bodies read)."""
    client = _admin_client(s3, pool=max(10, 2 * threads))
    client.get_object(Bucket=bucket, Key=keys[0])["Body"].read()
    started = time.perf_counter()
    with cf.ThreadPoolExecutor(threads) as pool:
        got = sum(len(b) for b in pool.map(lambda k: client.get_object(Bucket=bucket, Key=k)["Body"].read(), keys))
    elapsed = time.perf_counter() - started
    client.close()
    assert got > 0
    return len(keys) / elapsed


def _server_pid(endpoint: str) -> int | None:
    """The pid of the moto_server listening on the endpoint's port, if this machine runs it (read from /proc)."""
    port = endpoint.rstrip("/").rsplit(":", 1)[-1]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(b"moto_server" in a for a in argv) and port.encode() in argv:
                return int(entry.name)
    return None


def _cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) used so far by ``pid``; 0 when unknown."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def source_objects(admin: Any, bucket: str, count: int, seed: int) -> tuple[dict[str, bytes], list[str], list[Any], float]:
    """``count`` originals of 0.5-8 KiB uploaded to ``bucket``: the objects, their keys, their source rows, upload seconds."""
    from desq.source.rows import SourceRow

    rng = random.Random(seed)
    objects = {f"src/{i % 64:02x}/{i}.bin": rng.randbytes(rng.randint(512, 8192)) for i in range(count)}
    upload_s, _ = _upload(admin, bucket, objects)
    keys = list(objects)
    rows = [SourceRow(id=i, name=f"20251120_{i}", created_at=None, path=f"s3://{bucket}/{key}", date=date(2025, 11, 20), shard=0) for i, key in enumerate(keys)]
    return objects, keys, rows, upload_s


def pack_rows(endpoint: str, threads: int, rows: list[Any], out: Path) -> None:
    """desq's side: the Fetcher's originals into a container file, in row order."""
    from desq.container import ContainerWriter
    from desq.source.fetch import Fetcher

    with Fetcher(s3_endpoint_url=endpoint, threads=threads) as fetcher, open(out, "wb") as fh, ContainerWriter(fh) as writer:
        for original in fetcher.fetch(rows):
            if original.error is not None or original.data is None:
                raise RuntimeError(f"fetch failed: {original.error}")
            writer.add(original.row.name, original.data)


def get_in_sequence(endpoint: str, bucket: str, keys: list[str], out: Path) -> None:
    """The anchor: one boto3 client, one get_object after the other, the bodies into a file."""
    from desq.storage.s3 import s3_client

    client = s3_client(endpoint)
    with open(out, "wb") as fh:
        for key in keys:
            fh.write(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    client.close()


def pack_from_s3(quick: bool, s3: str | None = None, **_: Any) -> Result:
    """Pack N files of 0.5-8 KiB from an S3 source (Fetcher, default threads) vs the same objects GET one by one in sequence."""
    if not s3:
        return dict(SKIPPED)
    _env()
    from desq.container import ContainerReader, FileSource
    from desq.settings import Settings

    wall = time.perf_counter()
    count = 1_000 if quick else 2_000
    repeat = 2 if quick else 3
    curve_keys = 300 if quick else 600
    curve_passes = 1 if quick else 2
    default_threads = Settings().source.fetch_threads
    curve_threads = sorted({8, 16, 32, default_threads} if quick else {4, 8, 16, 32, default_threads})
    server_pid = _server_pid(s3)
    admin = _admin_client(s3)
    bucket = _new_bucket(admin)
    work = Path(tempfile.mkdtemp(prefix="desq-bench-s3pack-"))
    try:
        objects, keys, rows, upload_s = source_objects(admin, bucket, count, seed=1)
        total_bytes = sum(len(v) for v in objects.values())
        expected_digest = hashlib.sha256(b"".join(objects.values())).hexdigest()

        def desq(threads: int, some: list[Any] | None = None) -> None:
            pack_rows(s3, threads, rows if some is None else some, work / "out.des")

        def anchor() -> None:
            get_in_sequence(s3, bucket, keys, work / "out.bin")

        times: dict[str, list[float]] = {"desq": [], "anchor": []}
        cpu: dict[str, dict[str, list[float]]] = {k: {"client": [], "server": []} for k in times}
        runs: list[tuple[str, Callable[[], None]]] = [("desq", lambda: desq(default_threads)), ("anchor", anchor)]
        verified = 0
        for r in range(repeat):
            for label, fn in runs if r % 2 == 0 else runs[::-1]:
                client_cpu, server_cpu, started = time.process_time(), _cpu_s(server_pid), time.perf_counter()
                fn()
                times[label].append(time.perf_counter() - started)
                cpu[label]["client"].append((time.process_time() - client_cpu) / count * 1000)
                cpu[label]["server"].append((_cpu_s(server_pid) - server_cpu) / count * 1000)
                if label == "desq" and not verified:
                    verified = _verify_container(ContainerReader, FileSource, work / "out.des", rows, objects, keys, sample=200 if quick else 500)
                if label == "anchor" and r == 0 and hashlib.sha256((work / "out.bin").read_bytes()).hexdigest() != expected_digest:
                    raise RuntimeError("the sequential fetch wrote other bytes than were uploaded")
        rate = {k: [count / t for t in v] for k, v in times.items()}
        desq_rate = statistics.median(rate["desq"])
        anchor_rate = statistics.median(rate["anchor"])
        ratio = desq_rate / anchor_rate

        curve_runs: dict[str, list[float]] = {str(t): [] for t in curve_threads}
        ceiling_runs: dict[str, list[float]] = {str(t): [] for t in curve_threads}
        for _ in range(curve_passes):
            for t in curve_threads:
                ceiling_runs[str(t)].append(_server_ceiling(s3, bucket, keys[:curve_keys], t))
                started = time.perf_counter()
                desq(t, rows[:curve_keys])
                curve_runs[str(t)].append(curve_keys / (time.perf_counter() - started))
        curve = {t: round(statistics.median(v), 1) for t, v in curve_runs.items()}
        ceiling = {t: round(statistics.median(v), 1) for t, v in ceiling_runs.items()}
        best_ceiling = round(max(max(v) for v in ceiling_runs.values()), 1)
        cpu_ms = {k: {side: round(statistics.median(v), 3) for side, v in sides.items()} for k, sides in cpu.items()}
        details = {
            "files": count,
            "bytes": total_bytes,
            "file_size_bytes": [512, 8192],
            "repeats": repeat,
            "fetch_threads_default": default_threads,
            "desq_files_per_s": [round(x, 1) for x in rate["desq"]],
            "anchor_files_per_s": [round(x, 1) for x in rate["anchor"]],
            "desq": _spread(rate["desq"]),
            "anchor": _spread(rate["anchor"]),
            "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
            "cpu_ms_per_file": cpu_ms,
            "files_per_s_by_threads": curve,
            "server_ceiling_gets_per_s_by_threads": ceiling,
            "server_ceiling": best_ceiling,
            "curve_and_ceiling_files": curve_keys,
            "curve_and_ceiling_passes": curve_passes,
            "ceiling_ratio_vs_anchor": best_ceiling / anchor_rate,
            "desq_share_of_ceiling": desq_rate / best_ceiling,
            "verified_members": verified,
            "upload_s": round(upload_s, 2),
            "server": "moto_server: werkzeug threaded=True in one Python process (GIL: ~1 core), Connection: close on every response, sharing 2 cores with this client",
            "server_pid_found": server_pid is not None,
            "wall_s": round(time.perf_counter() - wall, 1),
            "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
        }
        if ratio < 8:
            server_ms = cpu_ms["anchor"]["server"]
            bound = f"; the server spends {server_ms:.2f} ms CPU per GET, so one GIL-bound process serves about {1000 / server_ms:,.0f}/s at best" if server_ms else ""
            details["why_below_goal"] = (
                f"the server itself answers about {best_ceiling:,.0f} GETs/s to a bare thread pool "
                f"({best_ceiling / anchor_rate:.1f}x the sequential anchor){bound}: no client can reach 8x against it; "
                f"desq at {default_threads} threads reaches {desq_rate / best_ceiling:.0%} of that ceiling (measured minutes apart on a shared machine), "
                f"and its best thread count ({max(curve, key=curve.__getitem__)}) gives {max(curve.values()) / curve[str(default_threads)]:.2f}x its default"
            )
        return {
            "figure": f"{desq_rate:,.0f} files/s",
            "anchor": f"sequential get_object: {anchor_rate:,.0f} files/s",
            "ratio": ratio,
            "goal": ">= 8x",
            "met": ratio >= 8,
            "details": details,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
        drop_bucket(admin, bucket)


@contextlib.contextmanager
def modelled_rtt(s3: str, seconds: float) -> Iterator[str]:
    """The URL of a forwarding proxy (tests/faultproxy.py, its own process) that holds every request ``seconds`` first."""
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[1]); from faultproxy import Fault, FaultProxy; "
        "p = FaultProxy(sys.argv[2]).start(); p.always = Fault.delay(float(sys.argv[3])); print(p.url, flush=True); sys.stdin.read()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(ROOT / "tests"), s3, str(seconds)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        url = (proc.stdout.readline() if proc.stdout else "").strip()
        if not url.startswith("http://"):
            raise RuntimeError(f"the latency proxy did not start (exit {proc.poll()})")
        yield url
    finally:
        proc.kill()
        proc.wait(timeout=10)


def pack_from_s3_rtt(quick: bool, s3: str | None = None, rtt_ms: float = 20.0, **_: Any) -> Result:
    """pack_from_s3 with a modelled network round trip: every request to the test server waits ``rtt_ms`` in a proxy.

    Against a server on the same host the anchor's GETs take ~3 ms of CPU each and the server serves
    one at a time; real S3 answers a small GET in 10-30 ms of waiting, concurrently. The proxy adds that
    waiting, so this figure shows what the Fetcher's concurrency buys where S3 is a network away.
    """
    if not s3:
        return dict(SKIPPED)
    _env()
    from desq.container import ContainerReader, FileSource
    from desq.settings import Settings

    count = 200 if quick else 600
    repeat = 2 if quick else 3
    threads = Settings().source.fetch_threads
    admin = _admin_client(s3)
    bucket = _new_bucket(admin)
    work = Path(tempfile.mkdtemp(prefix="desq-bench-s3rtt-"))
    try:
        objects, keys, rows, _ = source_objects(admin, bucket, count, seed=2)
        with modelled_rtt(s3, rtt_ms / 1000) as endpoint:

            def desq() -> None:
                pack_rows(endpoint, threads, rows, work / "out.des")

            def anchor() -> None:
                get_in_sequence(endpoint, bucket, keys, work / "out.bin")

            times: dict[str, list[float]] = {"desq": [], "anchor": []}
            for r in range(repeat):
                for label, fn in (("desq", desq), ("anchor", anchor)) if r % 2 == 0 else (("anchor", anchor), ("desq", desq)):
                    started = time.perf_counter()
                    fn()
                    times[label].append(time.perf_counter() - started)
        verified = _verify_container(ContainerReader, FileSource, work / "out.des", rows, objects, keys, sample=count)
        rate = {k: _spread([count / t for t in v]) for k, v in times.items()}
        ratio = rate["desq"]["median"] / rate["anchor"]["median"]
        return {
            "figure": f"{rate['desq']['median']:,.0f} files/s",
            "anchor": f"sequential get_object: {rate['anchor']['median']:,.0f} files/s",
            "ratio": ratio,
            "goal": ">= 8x",
            "met": ratio >= 8,
            "details": {"files": count, "repeats": repeat, "rtt_ms": rtt_ms, "fetch_threads": threads, "desq": rate["desq"], "anchor": rate["anchor"], "verified_members": verified,
                        "proxy": "tests/faultproxy.py in its own process, Fault.delay on every request"},
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
        drop_bucket(admin, bucket)


def _verify_container(reader_cls: Any, source_cls: Any, path: Path, rows: list[Any], objects: dict[str, bytes], keys: list[str], sample: int) -> int:
    """Read a sample of members back from the container file and compare them with the originals."""
    with source_cls(path) as source:
        reader = reader_cls.open(source)
        if reader.count != len(rows):
            raise RuntimeError(f"container has {reader.count} members, {len(rows)} were packed")
        picks = random.Random(2).sample(range(len(rows)), min(sample, len(rows)))
        for i in picks:
            if reader.read(rows[i].name) != objects[keys[i]]:
                raise RuntimeError(f"member {rows[i].name} differs from s3 object {keys[i]}")
    return len(picks)


def _profile(fn: Callable[[], None], top: int = 15) -> dict[str, Any]:
    """cProfile of ``fn``: total seconds and the top frames by own time and by cumulative time (desq's only)."""
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    fn()
    profiler.disable()
    elapsed = time.perf_counter() - started
    stats = pstats.Stats(profiler)
    entries = stats.stats  # type: ignore[attr-defined]

    def where(key: tuple[str, int, str]) -> str:
        file, line, func = key
        for marker in ("site-packages/", "/desq/", "lib/python3"):
            if marker in file:
                file = file.split(marker, 1)[1] if marker != "/desq/" else "desq/" + file.split(marker, 1)[1]
                break
        return f"{file}:{line}({func})"

    by_own = sorted(entries.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    by_cum = sorted(((k, v) for k, v in entries.items() if "/desq/" in k[0]), key=lambda kv: kv[1][3], reverse=True)[:top]
    return {
        "seconds": round(elapsed, 3),
        "top_own_time": [f"{v[2] * 1000:8.1f} ms own {v[1]:6d} calls  {where(k)}" for k, v in by_own],
        "top_desq_cumulative": [f"{v[3] * 1000:8.1f} ms cum {v[1]:6d} calls  {where(k)}" for k, v in by_cum],
    }


def read_latency_s3(quick: bool, s3: str | None = None, **_: Any) -> Result:
    """Warm read latency of a member of a container on S3 vs a GetObject of the same bytes stored as a lone object."""
    if not s3:
        return dict(SKIPPED)
    _env()
    from desq.archive import Archive
    from desq.container import ContainerWriter
    from desq.storage.counting import CountingStorage
    from desq.storage.s3 import S3Storage, s3_client

    wall = time.perf_counter()
    members = 500
    reads = 100 if quick else 300
    container_key = "20251120/FE.des"
    admin = _admin_client(s3)
    bucket = _new_bucket(admin)
    try:
        rng = random.Random(3)
        data = {f"20251120_{i}": rng.randbytes(rng.randint(1024, 64 * 1024)) for i in range(members)}
        out = io.BytesIO()
        with ContainerWriter(out) as writer:
            for name, body in data.items():
                writer.add(name, body)
        container = out.getvalue()
        storage = S3Storage(f"s3://{bucket}/desq", endpoint_url=s3)
        storage.put(container_key, container)
        _, lone_etags = _upload(admin, bucket, {f"lone/{name}": body for name, body in data.items()})

        archive = Archive(storage)
        names = list(data)
        archive.read(container_key, names[0])
        reader: Any = archive.open(container_key)
        etag = storage.head(container_key).etag
        frames = {name: (slot.start, slot.end) for name in names for slot in reader._slots(name)[:1]}
        anchor_client = s3_client(s3)
        full_key = f"desq/{container_key}"

        def desq_read(name: str) -> bytes:
            return archive.read(container_key, name)

        def lone_get(name: str) -> bytes:
            return anchor_client.get_object(Bucket=bucket, Key=f"lone/{name}")["Body"].read()

        def ranged_get(name: str) -> bytes:
            start, end = frames[name]
            return anchor_client.get_object(Bucket=bucket, Key=full_key, Range=f"bytes={start}-{end - 1}", IfMatch=etag)["Body"].read()

        def ranged_lone_get(name: str) -> bytes:
            return anchor_client.get_object(Bucket=bucket, Key=f"lone/{name}", Range=f"bytes=0-{len(data[name]) - 1}", IfMatch=lone_etags[f"lone/{name}"])["Body"].read()

        arms: list[tuple[str, Callable[[str], bytes]]] = [("desq", desq_read), ("lone", lone_get), ("ranged", ranged_get), ("ranged_lone", ranged_lone_get)]
        for name in names[1:6]:
            for _, fn in arms:
                fn(name)

        lat: dict[str, list[float]] = {label: [] for label, _ in arms}
        picks = random.Random(4).choices(names, k=reads)
        for i, name in enumerate(picks):
            for label, fn in arms if i % 2 == 0 else arms[::-1]:
                started = time.perf_counter()
                got = fn(name)
                lat[label].append((time.perf_counter() - started) * 1000)
                if label in ("desq", "lone", "ranged_lone") and got != data[name]:
                    raise RuntimeError(f"{label} read of {name} returned other bytes")
                if label == "ranged" and len(got) != frames[name][1] - frames[name][0]:
                    raise RuntimeError(f"ranged read of {name} returned {len(got)} bytes")

        class TimedStorage(CountingStorage):
            """Counts requests, and sums the seconds spent in ranged reads."""

            seconds = 0.0

            def read(self, key: str, offset: int, length: int, *, if_match: str | None = None) -> bytes:
                started = time.perf_counter()
                try:
                    return super().read(key, offset, length, if_match=if_match)
                finally:
                    self.seconds += time.perf_counter() - started

        counting = TimedStorage(storage)
        counted = Archive(counting)
        counted.read(container_key, names[0])
        per_read: list[int] = []
        outside: list[float] = []
        for name in picks[:50]:
            counting.requests.clear()
            counting.seconds = 0.0
            started = time.perf_counter()
            if counted.read(container_key, name) != data[name]:
                raise RuntimeError(f"counted read of {name} returned other bytes")
            outside.append((time.perf_counter() - started - counting.seconds) * 1000)
            per_read.append(len(counting.requests))

        p = {label: {"p50": _pct(v, 50), "p99": _pct(v, 99), "min": min(v), "max": max(v)} for label, v in lat.items()}
        ratio = p["desq"]["p50"] / p["lone"]["p50"]
        details: dict[str, Any] = {
            "reads": reads,
            "members": members,
            "member_size_bytes": [1024, 64 * 1024],
            "container_bytes": len(container),
            "latency_ms": {k: {s: round(x, 3) for s, x in v.items()} for k, v in p.items()},
            "p99_ratio": p["desq"]["p99"] / p["lone"]["p99"],
            "ranged_p50_ratio": p["ranged"]["p50"] / p["lone"]["p50"],
            "desq_over_ranged_p50_ms": p["desq"]["p50"] - p["ranged"]["p50"],
            "ranged_lone_p50_ratio": p["ranged_lone"]["p50"] / p["lone"]["p50"],
            "desq_ms_outside_storage_read": {"median": statistics.median(outside), "max": max(outside), "reads": len(outside)},
            "requests_per_warm_read": {"max": max(per_read), "mean": statistics.mean(per_read), "reads": len(per_read), "ops": sorted(set(r.split()[0] for r in counting.requests))},
            "per_read_ms": {k: [round(x, 3) for x in v] for k, v in lat.items()},
            "arms": {
                "desq": "Archive(S3Storage).read(key, name), warm index",
                "lone": "boto3 get_object of lone/<name> with desq's s3_client config, one client reused (moto answers Connection: close, so every request of every arm connects anew)",
                "ranged": "the same client: get_object of the member's frame in the container (Range + If-Match), i.e. desq's one request without desq",
                "ranged_lone": "the same client: get_object of lone/<name> with Range (whole object) + If-Match: the headers' cost without the big object",
            },
        }
        if ratio > 1.3:
            sample = picks[: min(100, len(picks))]
            details["profile_desq_read"] = _profile(lambda: [desq_read(n) for n in sample])
            details["profile_lone_get"] = _profile(lambda: [lone_get(n) for n in sample])
            details["profile_ranged_get"] = _profile(lambda: [ranged_get(n) for n in sample])
            details["why_above_goal"] = (
                f"desq's one request is a ranged GET (If-Match) into a {len(container) / 1e6:.1f} MB object; the same GET without desq takes "
                f"p50 {p['ranged']['p50']:.2f} ms ({p['ranged']['p50'] / p['lone']['p50']:.2f}x the lone GET), the same Range + If-Match on the small lone object "
                f"{p['ranged_lone']['p50']:.2f} ms: the server's cost grows with the object's size (moto reads and copies the whole object, then slices it), "
                f"while desq itself adds {p['desq']['p50'] - p['ranged']['p50']:.2f} ms ({p['desq']['p50'] / p['ranged']['p50']:.2f}x the bare ranged GET; "
                f"{statistics.median(outside):.3f} ms per read spent outside S3Storage.read)"
            )
        details["wall_s"] = round(time.perf_counter() - wall, 1)
        details["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
        anchor_client.close()
        return {
            "figure": f"p50 {p['desq']['p50']:.2f} ms, p99 {p['desq']['p99']:.2f} ms",
            "anchor": f"lone GetObject: p50 {p['lone']['p50']:.2f} ms, p99 {p['lone']['p99']:.2f} ms",
            "ratio": ratio,
            "goal": "<= 1.3x",
            "met": ratio <= 1.3,
            "details": details,
        }
    finally:
        drop_bucket(admin, bucket)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--s3", default=None, help="S3 test server endpoint, e.g. http://127.0.0.1:5055")
    parser.add_argument("--only", choices=("pack", "read"), default=None)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    for label, fn in (("pack", pack_from_s3), ("read", read_latency_s3)):
        if args.only in (None, label):
            started = time.perf_counter()
            results[fn.__name__] = fn(args.quick, s3=args.s3)
            results[fn.__name__]["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
