"""Cold reads against container size: the first read of a container of 1k, 100k and 1M members.

    python bench/cold_reads.py [--quick] [--s3 ENDPOINT]

For each size and storage (a local folder; a fresh bucket on the S3 test server) one container of
tiny members is written with desq's ContainerWriter. Each repeat opens a fresh ``Archive`` (no
cached index) over a ``CountingStorage`` and times the first read of one member (the cold read:
the suffix read, the rest of the INDEX when it is bigger than the suffix, the member's frame),
then warm reads of other members. The anchor is one ranged read of the same member's frame on
the same storage (``Storage.read``): what a read costs when the index is already known. Local
files were just written, so the page cache is hot: the local figures are CPU and copies, not disk.
``--quick`` drops the 1M size and takes fewer repeats.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from desq.archive import Archive  # noqa: E402
from desq.container import ContainerWriter  # noqa: E402
from desq.container import format as fmt  # noqa: E402
from desq.storage import Storage  # noqa: E402
from desq.storage.counting import CountingStorage  # noqa: E402
from desq.storage.local import LocalStorage  # noqa: E402

KEY = "20251120/FE.des"
WARM_READS = 20


class TimedStorage(CountingStorage):
    """Counts requests and bytes, and adds up the seconds spent waiting on storage reads."""

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.seconds = 0.0

    def read(self, key: str, offset: int, length: int, *, if_match: str | None = None) -> bytes:
        started = time.perf_counter()
        try:
            return super().read(key, offset, length, if_match=if_match)
        finally:
            self.seconds += time.perf_counter() - started

    def read_suffix(self, key: str, length: int, *, if_match: str | None = None) -> tuple[bytes, Any]:
        started = time.perf_counter()
        try:
            return super().read_suffix(key, length, if_match=if_match)
        finally:
            self.seconds += time.perf_counter() - started


def name_of(i: int) -> str:
    return f"20251120_{i}"


def container(count: int) -> bytes:
    """A container of ``count`` members of 0-6 bytes."""
    out = io.BytesIO()
    with ContainerWriter(out) as writer:
        for i in range(count):
            writer.add(name_of(i), b"x" * (i % 7))
    return out.getvalue()


def _ms(seconds: float) -> float:
    return round(1000 * seconds, 3)


def _p50(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def measure(storage: Storage, count: int, repeats: int, seed: int) -> dict[str, Any]:
    """Cold first read, warm reads and the anchor on a container of ``count`` members at ``KEY``."""
    rng = random.Random(seed)
    cold, cold_fetch, warm, anchor, requests, fetched = [], [], [], [], [], []
    frames = Archive(storage).open(KEY)
    for _ in range(repeats):
        picks = [name_of(rng.randrange(count)) for _ in range(WARM_READS + 1)]
        counted = TimedStorage(storage)
        archive = Archive(counted)
        started = time.perf_counter()
        first = archive.read(KEY, picks[0])
        cold.append(_ms(time.perf_counter() - started))
        cold_fetch.append(_ms(counted.seconds))
        requests.append(len(counted.requests))
        fetched.append(counted.bytes_read)
        if len(first) != int(picks[0].rsplit("_", 1)[1]) % 7:
            raise RuntimeError(f"cold read of {picks[0]} returned {len(first)} bytes")
        for name in picks[1:]:
            started = time.perf_counter()
            archive.read(KEY, name)
            warm.append(_ms(time.perf_counter() - started))
        slot = frames._slots(picks[0])[0]  # type: ignore[attr-defined]
        started = time.perf_counter()
        storage.read(KEY, slot.start, slot.end - slot.start)
        anchor.append(_ms(time.perf_counter() - started))
    return {
        "cold_first_read_ms_p50": _p50(cold),
        "cold_waiting_on_storage_ms_p50": _p50(cold_fetch),
        "cold_outside_storage_ms_p50": _p50([c - f for c, f in zip(cold, cold_fetch)]),
        "warm_read_ms_p50": _p50(warm),
        "anchor_ranged_read_ms_p50": _p50(anchor),
        "cold_requests": max(requests),
        "cold_bytes_fetched": max(fetched),
        "cold_ms_runs": cold,
        "repeats": repeats,
        "warm_reads": len(warm),
    }


def profile_cold(storage: Storage, count: int, top: int = 12) -> list[str]:
    """Where one cold first read spends its time: the functions with the most cumulative time."""
    archive = Archive(storage)
    profile = cProfile.Profile()
    profile.runcall(archive.read, KEY, name_of(count // 2))
    stats = pstats.Stats(profile)
    total = max(stats.total_tt, 1e-9)  # type: ignore[attr-defined]
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]  # type: ignore[attr-defined]
    return [f"{100 * tt / total:4.1f}% own {1000 * tt:8.2f} ms {calls:>6} calls  {Path(f).name}:{line}({func})" for (f, line, func), (_, calls, tt, _, _) in rows]


@contextmanager
def _stores(s3: str | None, work: Path) -> Iterator[dict[str, Storage]]:
    """The local folder and, given ``s3``, a fresh bucket on the test server (dropped after)."""
    stores: dict[str, Storage] = {"local": LocalStorage(work / "archive")}
    if not s3:
        yield stores
        return
    from s3 import _admin_client, _env, drop_bucket

    from desq.storage.s3 import S3Storage

    _env()
    admin = _admin_client(s3)
    bucket = f"bench-cold-{uuid.uuid4().hex[:12]}"
    admin.create_bucket(Bucket=bucket)
    try:
        yield stores | {"s3": S3Storage(f"s3://{bucket}/desq", endpoint_url=s3)}
    finally:
        drop_bucket(admin, bucket)


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of the rows, ready for BENCHMARKS.md."""
    lines = [
        "| members | storage | index | container | cold requests | cold bytes fetched | cold first read p50 | of it waiting on storage | warm read p50 | anchor: one ranged read p50 | cold / anchor |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['members']:,} | {r['storage']} | {r['index_bytes'] / 1e6:.3f} MB | {r['container_bytes'] / 1e6:.2f} MB | {r['cold_requests']} | {r['cold_bytes_fetched'] / 1e6:.3f} MB | "
            f"{r['cold_first_read_ms_p50']:.2f} ms | {r['cold_waiting_on_storage_ms_p50']:.2f} ms | {r['warm_read_ms_p50']:.2f} ms | {r['anchor_ranged_read_ms_p50']:.2f} ms | "
            f"{r['cold_first_read_ms_p50'] / r['anchor_ranged_read_ms_p50']:.1f}x |"
        )
    return "\n".join(lines)


def cold_reads(quick: bool, s3: str | None = None, **_: Any) -> dict[str, Any]:
    """The cold-read table; the ratio is the largest container's cold first read on S3 (local
    without S3) over one ranged read of the same member's frame."""
    sizes = [1_000, 100_000] if quick else [1_000, 100_000, 1_000_000]
    repeats = 3 if quick else 5
    work = Path(tempfile.mkdtemp(prefix="desq-bench-cold-"))
    rows: list[dict[str, Any]] = []
    profiles: dict[str, list[str]] = {}
    try:
        with _stores(s3, work) as stores:
            for count in sizes:
                started = time.perf_counter()
                blob = container(count)
                built = time.perf_counter() - started
                for label, storage in stores.items():
                    storage.put(KEY, blob)
                    figures = measure(storage, count, repeats, seed=count)
                    rows.append({"members": count, "storage": label, "index_bytes": count * fmt.ENTRY_SIZE, "container_bytes": len(blob), "build_s": round(built, 1)} | figures)
                    if count == sizes[-1]:
                        profiles[label] = profile_cold(storage, count)
                    storage.delete(KEY)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    big = next(r for r in reversed(rows) if r["storage"] == ("s3" if s3 else "local"))
    ratio = big["cold_first_read_ms_p50"] / big["anchor_ranged_read_ms_p50"]
    where = f"{big['members']:,} members, {big['storage']}"
    return {
        "figure": f"cold first read of {where}: p50 {big['cold_first_read_ms_p50']:.1f} ms, {big['cold_requests']} requests, {big['cold_bytes_fetched'] / 1e6:.1f} MB fetched",
        "anchor": f"one ranged read of the same frame: p50 {big['anchor_ranged_read_ms_p50']:.2f} ms",
        "ratio": ratio,
        "goal": "reported (a cold read fetches the whole index)",
        "details": {
            "rows": rows,
            "table_markdown": table(rows),
            "profile_cold_read_top_own_time": profiles,
            "ratio_is": f"cold first-read p50 / anchor p50, {where}",
            "member_bytes": "0-6 (tiny: the index dominates)",
            "page_cache": "hot for local (the container was just written); S3 is the moto test server on this machine",
            "quick": "1M members dropped, 3 repeats" if quick else None,
            "s3": "not given: local only" if not s3 else "a fresh bucket on the S3 test server",
        },
        "plot": {
            "unit": "p50 ms, cold first read",
            "lower_is_better": True,
            "bars": [{"label": f"{r['members']:,} members, {r['storage']}", "min": min(r["cold_ms_runs"]), "median": r["cold_first_read_ms_p50"], "max": max(r["cold_ms_runs"])} for r in rows]
            + [{"label": f"anchor: ranged read, {where}", **_fixed(big["anchor_ranged_read_ms_p50"])}],
        },
    }


def _fixed(value: float) -> dict[str, float]:
    return {"min": value, "median": value, "max": value}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--s3", default=None, help="S3 test server endpoint, e.g. http://127.0.0.1:5055")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    result = cold_reads(args.quick, s3=args.s3)
    print(result["details"]["table_markdown"], file=sys.stderr)
    print(json.dumps(result, indent=2))
