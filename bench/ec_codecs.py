"""zfec against pyeclib for the erasure-coded archive: 4+2, 1 MiB cells, encode and decode MB/s.

    python bench/ec_codecs.py [--repeats 20]      # in a venv with zfec and pyeclib (not desq's)

Not run by ``desq bench``: pyeclib is no dependency of desq. Encode is one stripe (4 data cells of
1 MiB) to its 2 parity cells; decode is the 4 data cells back from the 2 parity and 2 other data
cells (2 data fragments lost, the costly case). MB/s of object bytes: the best of ``--repeats``
calls on one stripe (hot in the caches), and the median of as many going round 64 MiB of stripes.
Every decode is compared with the data. Then the property desq chose zfec for: it works byte by
byte across its cells, so any byte range of the surviving cells decodes to the same range of the
lost ones, and a degraded 4 KB read fetches 4 ranges of 4 KB; pyeclib's fragments each carry a
header and decode only whole (its ``ranges`` argument cuts the output, not what must be fetched).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import zfec

K, M = 4, 2
CELL = 1 << 20
STRIPES = 16
"""Stripes of 4 MiB the rotating figures go round: 64 MiB, more than the CPU's caches, as when a
write codes bytes it has just received."""
PYECLIB_TYPES = ("isa_l_rs_vand", "liberasurecode_rs_vand", "isa_l_rs_cauchy")


def rates(fn: Callable[[int], Any], count: int, repeats: int) -> dict[str, float]:
    """MB/s of ``fn(i)``, each call coding stripe ``i``: the best of ``repeats`` calls on stripe 0
    (in the CPU's caches) and the median of ``repeats`` calls going round all ``count`` stripes."""
    mb = K * CELL / 1e6

    def seconds(pick: Callable[[int], int]) -> list[float]:
        out = []
        for n in range(repeats):
            started = time.perf_counter()
            fn(pick(n))
            out.append(time.perf_counter() - started)
        return out

    return {"best_hot": mb / min(seconds(lambda n: 0)), "median_rotating": mb / statistics.median(seconds(lambda n: n % count))}


def zfec_rates(stripes: list[bytes], repeats: int) -> dict[str, Any]:
    """zfec's encode and 2-data-lost decode of a stripe, MB/s."""
    encoder, decoder = zfec.Encoder(K, K + M), zfec.Decoder(K, K + M)
    cells = [[data[i * CELL : (i + 1) * CELL] for i in range(K)] for data in stripes]
    parity = [[bytes(p) for p in encoder.encode(c, tuple(range(K, K + M)))] for c in cells]
    have, which = [(c[2], c[3], p[0], p[1]) for c, p in zip(cells, parity)], (2, 3, 4, 5)
    if any([bytes(c) for c in decoder.decode(h, which)] != c for h, c in zip(have, cells)):
        raise AssertionError("zfec decoded other bytes")
    return {"encode": rates(lambda i: encoder.encode(cells[i], tuple(range(K, K + M))), len(stripes), repeats),
            "decode": rates(lambda i: decoder.decode(have[i], which), len(stripes), repeats)}


def pyeclib_rates(ec_type: str, stripes: list[bytes], repeats: int) -> dict[str, Any]:
    """pyeclib's encode and 2-data-lost decode of the same stripes, MB/s, and its fragment header."""
    from pyeclib.ec_iface import ECDriver

    driver = ECDriver(k=K, m=M, ec_type=ec_type)
    fragments = [driver.encode(data) for data in stripes]
    have = [f[2:] for f in fragments]
    if any(driver.decode(h) != data for h, data in zip(have, stripes)):
        raise AssertionError(f"{ec_type} decoded other bytes")
    return {"encode": rates(lambda i: driver.encode(stripes[i]), len(stripes), repeats), "decode": rates(lambda i: driver.decode(have[i]), len(stripes), repeats),
            "fragment_bytes": len(fragments[0][0]), "header_bytes": len(fragments[0][0]) - CELL}


def zfec_subranges(cells: list[bytes], count: int, seed: int = 5) -> dict[str, Any]:
    """Decode ``count`` random byte ranges of the lost cells 0 and 1 from the same ranges of 2, 3 and
    the parity, each on its own; how many came out exact."""
    parity = [bytes(p) for p in zfec.Encoder(K, K + M).encode(cells, tuple(range(K, K + M)))]
    decoder = zfec.Decoder(K, K + M)
    every = cells + parity
    rng = random.Random(seed)
    exact = 0
    for _ in range(count):
        size = rng.choice((1, 7, 4096, rng.randint(1, 64 << 10)))
        at = rng.randrange(0, CELL - size + 1)
        got = decoder.decode(tuple(every[i][at : at + size] for i in (2, 3, 4, 5)), (2, 3, 4, 5))
        exact += bytes(got[0]) == cells[0][at : at + size] and bytes(got[1]) == cells[1][at : at + size]
    return {"ranges": count, "exact": exact}


def cut_decode(ec_type: str) -> str:
    """What pyeclib makes of fragments cut to their header and one 4 KiB range (``--cut``)."""
    from pyeclib.ec_iface import ECDriver

    driver = ECDriver(k=K, m=M, ec_type=ec_type)
    data = os.urandom(K * CELL)
    fragments = driver.encode(data)
    header = len(fragments[0]) - len(data) // K
    try:
        got = driver.decode([f[: header + 4096] for f in fragments[2:]])
    except Exception as exc:  # noqa: BLE001 - which error it raises is the finding
        return f"refused: {type(exc).__name__}: {' '.join(str(exc).split())[:120]}"
    return "decoded the 4 KiB exactly" if got == data[:4096] else f"returned {len(got)} bytes that are not the data"


def pyeclib_subrange(ec_type: str) -> str:
    """``cut_decode`` in a process of its own: the library may not survive it."""
    done = subprocess.run([sys.executable, __file__, "--cut", ec_type], capture_output=True, text=True, timeout=120)
    if done.returncode < 0:
        return f"the process died ({signal.Signals(-done.returncode).name})"
    if done.returncode != 0:
        return f"the process died (exit {done.returncode}: {' '.join(done.stderr.split()[-8:])})"
    return done.stdout.strip()


def shown(rate: dict[str, float]) -> str:
    return f"{rate['best_hot']:,.0f} / {rate['median_rotating']:,.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=32)
    parser.add_argument("--cut", metavar="EC_TYPE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cut:
        print(cut_decode(args.cut))
        return 0
    stripes = [os.urandom(K * CELL) for _ in range(STRIPES)]
    cells = [stripes[0][i * CELL : (i + 1) * CELL] for i in range(K)]
    found: dict[str, Any] = {"python": sys.version.split()[0], "k": K, "m": M, "cell": CELL, "repeats": args.repeats,
                             "zfec": zfec_rates(stripes, args.repeats) | {"version": getattr(zfec, "__version__", "?")}}
    for ec_type in PYECLIB_TYPES:
        try:
            found[ec_type] = pyeclib_rates(ec_type, stripes, args.repeats) | {"sub_range": pyeclib_subrange(ec_type)}
        except Exception as exc:  # noqa: BLE001 - a backend this machine lacks is reported, the rest still run
            found[ec_type] = {"error": f"{type(exc).__name__}: {exc}"}
    found["zfec_sub_ranges"] = zfec_subranges(cells, 500)
    print("| codec | encode MB/s: hot best / rotating median | decode MB/s (2 data lost): hot best / rotating median | fragment header | decoding a 4 KiB range of the fragments |")
    print("|---|---|---|---|---|")
    print(f"| zfec {found['zfec']['version']} | {shown(found['zfec']['encode'])} | {shown(found['zfec']['decode'])} | none | "
          f"decodes on its own ({found['zfec_sub_ranges']['exact']}/{found['zfec_sub_ranges']['ranges']} random ranges exact) |")
    for ec_type in PYECLIB_TYPES:
        r = found[ec_type]
        if "error" in r:
            print(f"| pyeclib {ec_type} | not available: {r['error']} | | | |")
        else:
            print(f"| pyeclib {ec_type} | {shown(r['encode'])} | {shown(r['decode'])} | {r['header_bytes']} B | {r['sub_range']} |")
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
