"""Container format figures, each beside an anchor measured in the same run.

    python bench/container.py [--quick] [--json FILE]

- writer: 100k members of 0.5-8 KiB from memory into a container on disk, against Python's
  tarfile writing the same members to the same disk (and a bare write of the bytes, the ceiling);
- index memory at 1M members: bytes a member the reader holds, against a dict name -> (offset, size);
- lookups: index.candidates per second, against that dict's lookups.
Each figure is the median of several runs, with min and max.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import random
import statistics
import sys
import tarfile
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from desq.container import BytesSource, ContainerReader, ContainerWriter  # noqa: E402


def members(count: int, seed: int = 1) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    pool = rng.randbytes(16 << 20)
    out = []
    for i in range(count):
        size = rng.randint(512, 8192)
        at = rng.randrange(len(pool) - size)
        out.append((f"20251120_{i}", pool[at : at + size]))
    return out


def timed(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def stats(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def bench_writer(items: list[tuple[str, bytes]], folder: Path, repeat: int) -> dict:
    total = sum(len(d) for _, d in items)

    def desq_write() -> None:
        with open(folder / "c.des", "wb") as fh, ContainerWriter(fh) as w:
            for name, data in items:
                w.add(name, data)

    def tar_write() -> None:
        with tarfile.open(folder / "c.tar", "w") as tar:
            for name, data in items:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

    def raw_write() -> None:
        with open(folder / "c.raw", "wb") as fh:
            for _, data in items:
                fh.write(data)

    result = {}
    for label, fn in (("desq", desq_write), ("tarfile", tar_write), ("bare write", raw_write)):
        secs = timed(fn, repeat)
        result[label] = {
            "members_per_s": stats([len(items) / s for s in secs]),
            "MB_per_s": stats([total / s / 1e6 for s in secs]),
        }
    result["ratio desq/tarfile (members/s, median)"] = result["desq"]["members_per_s"]["median"] / result["tarfile"]["members_per_s"]["median"]
    result["members"] = len(items)
    result["bytes"] = total
    return result


def bench_index(count: int, repeat: int) -> dict:
    out = io.BytesIO()
    with ContainerWriter(out) as w:
        for i in range(count):
            w.add(f"20251120_{i}", b"")
    data = out.getvalue()
    del out
    gc.collect()
    tracemalloc.start()
    reader = ContainerReader.open(BytesSource(data), suffix_bytes=len(data))
    after_open = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    index_bytes = len(reader.index.raw)

    names = [f"20251120_{i}" for i in range(count)]
    gc.collect()
    tracemalloc.start()
    anchor = {name: (i * 100, 50) for i, name in enumerate(names)}
    dict_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()

    probe = [n.encode() for n in random.Random(2).sample(names, 100_000)]
    probe_text = [p.decode() for p in probe]
    candidates = reader.index.candidates
    lookups = timed(lambda: [candidates(p) for p in probe], repeat)
    dict_lookups = timed(lambda: [anchor.get(p) for p in probe_text], repeat)
    return {
        "members": count,
        "index bytes per member (raw)": index_bytes / count,
        "reader memory per member after open (tracemalloc)": after_open / count,
        "anchor dict name->(offset,size) bytes per member (tracemalloc)": dict_bytes / count,
        "lookups_per_s": stats([len(probe) / s for s in lookups]),
        "anchor dict lookups_per_s": stats([len(probe) / s for s in dict_lookups]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k members and 100k index members, 3 runs")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    repeat = 3 if args.quick else 5
    with tempfile.TemporaryDirectory() as tmp:
        writer = bench_writer(members(10_000 if args.quick else 100_000), Path(tmp), repeat)
    index = bench_index(100_000 if args.quick else 1_000_000, repeat)
    result = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}, "writer": writer, "index": index}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
