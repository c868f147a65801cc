"""Fuzzing the v2 reader: mutated containers end in the format's own error or the right bytes.

CI runs 10,000 cases; by hand: ``FUZZ_CASES=200000 pytest tests/test_container_fuzz.py``.
Every case is seeded from its number, so a failure names the case that reproduces it.
"""

from __future__ import annotations

import os
import random

import pytest

from desq.container import BytesSource, ContainerError, open_container
from sources import build

CASES = int(os.environ.get("FUZZ_CASES", "10000"))


def _originals() -> list[dict[str, bytes]]:
    rng = random.Random(1)
    sets = []
    for count in (1, 3, 12, 40):
        sets.append({f"20251120_{i}{'ż' * rng.randint(0, 3)}": rng.randbytes(rng.choice([0, 1, 17, 600, 5000])) for i in range(count)})
    sets.append({"big": rng.randbytes((1 << 20) + 4097), "small": b"s"})  # a two-block member
    return sets


ORIGINALS = _originals()
CONTAINERS = [build(m.items()) for m in ORIGINALS]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One of: bit flips, a truncation, a splice of the container into itself, zeroed or random bytes."""
    buf = bytearray(data)
    # In-place damage gets most cases: shifting bytes always breaks the footer's region check.
    kind = rng.choices(range(6), weights=[35, 10, 10, 5, 25, 15])[0]
    if kind == 0:
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(len(buf))
            buf[at] ^= 1 << rng.randrange(8)
    elif kind == 1:
        del buf[rng.randrange(len(buf)) :]
    elif kind == 2:
        a = rng.randrange(len(buf))
        b = min(len(buf), a + rng.randint(1, 256))
        at = rng.randrange(len(buf))
        buf[at:at] = buf[a:b]
    elif kind == 3:
        a = rng.randrange(len(buf))
        del buf[a : a + rng.randint(1, 64)]
    elif kind == 4:
        a = rng.randrange(len(buf))
        n = rng.randint(1, 64)
        buf[a : a + n] = rng.randbytes(n) if rng.random() < 0.5 else bytes(n)
    else:  # aim at the end, where footer, index and names live
        tail = min(len(buf), 400)
        at = len(buf) - rng.randint(1, tail)
        buf[at] = rng.randrange(256)
    return bytes(buf)


def check_case(case: int) -> None:
    rng = random.Random(case)
    which = rng.randrange(len(CONTAINERS))
    data, members = mutate(CONTAINERS[which], rng), ORIGINALS[which]
    try:
        reader = open_container(BytesSource(data))
    except ContainerError:
        return
    for name, original in members.items():
        try:
            got = reader.read(name)
        except ContainerError:
            continue
        assert got == original, f"case {case}: wrong bytes for {name!r}"
        a = rng.randint(0, len(original))
        try:
            assert reader.read_range(name, a, len(original)) == original[a:], f"case {case}: wrong range"
        except ContainerError:
            pass
    try:
        listed = [m.name for m in reader.members()]
    except ContainerError:
        return
    assert set(listed) <= set(members), f"case {case}: the listing invented a name"
    try:
        reader.verify()
    except ContainerError:
        pass


def test_fuzz_mutated_containers() -> None:
    for case in range(CASES):
        try:
            check_case(case)
        except AssertionError:
            raise
        except Exception as exc:  # noqa: BLE001 - anything but the format's own errors is a bug
            pytest.fail(f"case {case}: {type(exc).__name__}: {exc}")
