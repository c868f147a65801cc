"""Fuzzing the v2 reader: mutated containers end in the format's own error or the right bytes.

CI runs 10,000 cases; by hand: ``FUZZ_CASES=100000 pytest tests/test_container_fuzz.py``
(``FUZZ_TRACE_EVERY=1`` puts every case, not every fifth, under tracemalloc). Every case is
seeded from its number, so a failure names the case that reproduces it (``FUZZ_FIRST=<case>
FUZZ_CASES=1`` runs just that one).

Besides blind damage (bit flips, truncation, splices, zeroed runs), two cases in five write a
hostile value (0, 2**32-1, 2**60, the container's size +- a few, ...) into one integer field of
the format (a footer region, an index entry's offset or size, a frame head's lengths, a name's
length, a metadata record's length) and then recompute the CRCs that guard it, so the damage
reaches the bounds checks behind the checksums. Every case runs under ``fuzzing.Guard``: no
allocation beyond a small multiple of the container's size, no case running unbounded.
"""

from __future__ import annotations

import os
import random
import struct

import pytest
from crc32c import crc32c

from desq.container import BytesSource, ContainerError, ContainerReader, open_container
from desq.container import format as fmt
from fuzzing import Guard, Hang, OverBudget, blind_damage, budget, interesting_value, write_int
from sources import build

CASES = int(os.environ.get("FUZZ_CASES", "10000"))
FIRST = int(os.environ.get("FUZZ_FIRST", "0"))
READS_PER_CASE = 24


def _originals() -> list[dict[str, bytes]]:
    rng = random.Random(1)
    sets = []
    for count in (1, 3, 12, 40):
        sets.append({f"20251120_{i}{'ż' * rng.randint(0, 3)}": rng.randbytes(rng.choice([0, 1, 17, 600, 5000])) for i in range(count)})
    sets.append({"big": rng.randbytes((1 << 20) + 4097), "small": b"s"})  # a two-block member
    # An INDEX beyond the first 64 KiB suffix read, and a NAMES region too big to keep in memory.
    sets.append({f"20251120_{i:06d}_{'n' * 14}": rng.randbytes(rng.randint(0, 8)) for i in range(2800)})
    return sets


ORIGINALS = _originals()
CONTAINERS = [build(m.items()) for m in ORIGINALS]
WEIGHTS = [3, 3, 3, 3, 2, 1]


def _fields(data: bytes) -> list[tuple[int, int]]:
    """``(offset, width)`` of every integer field of a well-formed container."""
    reader = ContainerReader.open(BytesSource(data))
    f, count = reader.footer, reader.count
    fields = [(8, 2), (10, 2)]
    for i in range(count):
        offset, _size, head_len, _flags = reader.index.entry(i)
        start = offset - head_len
        fields += [(start + 4, 2), (start + 6, 2), (start + 8, 2), (start + 10, 1), (start + 11, 1), (start + 12, 8)]
        name_len, meta_len = struct.unpack_from("<HH", data, start + 6)
        at, end = start + fmt.HEAD_FIXED.size + name_len, start + fmt.HEAD_FIXED.size + name_len + meta_len
        while at < end:  # metadata records: (u8 tag, u16 length, value)
            fields += [(at, 1), (at + 1, 2)]
            at += fmt.META_RECORD.size + struct.unpack_from("<H", data, at + 1)[0]
    at = f.names_offset
    for _ in range(count):
        fields.append((at, 2))
        at += 2 + struct.unpack_from("<H", data, at)[0]
    entries = f.index_offset + count * fmt.HASH_SIZE
    for i in range(count):
        e = entries + i * fmt.ENTRY.size
        fields += [(f.index_offset + i * 8, 8), (e, 4), (e + 4, 2), (e + 6, 4), (e + 10, 2), (e + 12, 2), (e + 14, 1), (e + 15, 1)]
    footer = len(data) - fmt.FOOTER_SIZE
    fields += [(footer + at, width) for at, width in ((0, 8), (8, 8), (16, 8), (24, 8), (40, 2), (42, 2), (44, 4), (48, 4))]
    return fields


FIELDS = [_fields(c) for c in CONTAINERS]


def reseal(buf: bytearray) -> None:
    """Recompute the header, frame-head, NAMES, INDEX and footer CRCs (never a member's data CRC)."""
    if len(buf) >= fmt.HEADER_SIZE:
        buf[12:16] = struct.pack("<I", crc32c(bytes(buf[:12])))
    at = buf.find(fmt.FRAME_MAGIC, fmt.HEADER_SIZE)
    while at != -1:
        (head_len,) = struct.unpack_from("<H", buf, at + 4) if at + 6 <= len(buf) else (0,)
        if fmt.MIN_HEAD <= head_len and at + head_len <= len(buf):
            buf[at + head_len - 4 : at + head_len] = struct.pack("<I", crc32c(bytes(buf[at : at + head_len - 4])))
        at = buf.find(fmt.FRAME_MAGIC, at + 1)
    if len(buf) < fmt.HEADER_SIZE + fmt.FOOTER_SIZE:
        return
    footer = len(buf) - fmt.FOOTER_SIZE
    names_offset, names_length, index_offset = struct.unpack_from("<QQQ", buf, footer)
    if names_offset + names_length <= footer:
        struct.pack_into("<I", buf, footer + 32, crc32c(bytes(buf[names_offset : names_offset + names_length])))
    if index_offset <= footer:
        struct.pack_into("<I", buf, footer + 36, crc32c(bytes(buf[index_offset:footer])))
    struct.pack_into("<I", buf, footer + 52, crc32c(bytes(buf[footer : footer + 52])))


def mutate(data: bytes, fields: list[tuple[int, int]], rng: random.Random) -> tuple[bytes, bool]:
    """Damaged bytes, and whether the CRCs were recomputed over the damage."""
    buf = bytearray(data)
    kind = rng.choices(range(7), weights=[20, 6, 6, 3, 15, 10, 40])[0]
    if kind < 6:
        blind_damage(buf, kind, rng)
    else:  # a hostile value in one or two integer fields
        for _ in range(rng.choice([1, 1, 1, 2])):
            at, width = rng.choice(fields)
            old = int.from_bytes(buf[at : at + width], "little")
            write_int(buf, at, width, interesting_value(rng, old, len(buf)))
    resealed = rng.random() < (0.9 if kind == 6 else 0.25)
    if resealed:
        reseal(buf)
    return bytes(buf), resealed


def check_case(case: int, guard: Guard, tally: dict[str, int]) -> None:
    rng = random.Random(case)
    which = rng.choices(range(len(CONTAINERS)), weights=WEIGHTS)[0]
    data, resealed = mutate(CONTAINERS[which], FIELDS[which], rng)
    members = ORIGINALS[which]
    with guard.case(case, len(data)):
        try:
            reader = open_container(BytesSource(data))
        except ContainerError:
            return
        tally["opened"] += 1
        names = list(members) if len(members) <= READS_PER_CASE else rng.sample(list(members), READS_PER_CASE)
        for name in names:
            original = members[name]
            try:
                got = reader.read(name)
            except ContainerError:
                continue
            tally["reads"] += 1
            assert got == original, f"case {case}: wrong bytes for {name!r}"
            a = rng.randint(0, len(original))
            try:
                assert reader.read_range(name, a, len(original)) == original[a:], f"case {case}: wrong range"
            except ContainerError:
                pass
        try:
            for name, got in reader.read_many(names):
                assert got == members[name], f"case {case}: read_many gave wrong bytes for {name!r}"
        except ContainerError:
            pass
        if len(members) > READS_PER_CASE and rng.random() < 0.8:
            return  # listing and verifying 2,800 members every time would dominate the run
        try:
            listed = [(m.name, m.size) for m in reader.members()]
        except ContainerError:
            return
        if not resealed:  # NAMES is only trusted through its CRC, which a resealed case recomputed
            assert {n for n, _ in listed} <= set(members), f"case {case}: the listing invented a name"
        try:
            problems = reader.verify()
        except ContainerError:
            return
        if not problems:  # declared intact: then it must be, member for member
            tally["intact"] += 1
            assert sorted(listed) == sorted((n, len(d)) for n, d in members.items()), f"case {case}: verify passed a changed listing"
            for name in names:
                assert reader.read(name) == members[name], f"case {case}: verify passed but {name!r} reads differently"


def test_fuzz_mutated_containers() -> None:
    tally = {"opened": 0, "reads": 0, "intact": 0}
    with Guard() as guard:
        for case in range(FIRST, FIRST + CASES):
            try:
                guard.run(lambda: check_case(case, guard, tally))  # noqa: B023 - called at once
            except AssertionError:
                raise
            except BaseException as exc:  # noqa: BLE001 - anything but the format's own errors is a bug (Hang too)
                pytest.fail(f"case {case}: {type(exc).__name__}: {exc}")
    print(f"\nv2 fuzz: {CASES} cases, {tally['opened']} opened, {tally['reads']} members read back, {tally['intact']} verified intact; {guard.summary()}")
    if CASES >= 1000:  # the oracle must be exercised, not just the refusals
        assert tally["opened"] > CASES // 10 and tally["reads"] > CASES // 10


def test_fuzz_cached_index_blobs() -> None:
    """A cached INDEX + FOOTER (Redis, shared by workers) is as untrusted as the container."""
    sources = [BytesSource(c) for c in CONTAINERS]
    blobs = [ContainerReader.open(s).index_blob for s in sources]
    with Guard() as guard:
        for case in range(FIRST, FIRST + max(1, CASES // 10)):
            try:
                guard.run(lambda: check_cached_case(case, sources, blobs, guard))  # noqa: B023 - called at once
            except AssertionError:
                raise
            except BaseException as exc:  # noqa: BLE001
                pytest.fail(f"cached-index case {case}: {type(exc).__name__}: {exc}")


def check_cached_case(case: int, sources: list[BytesSource], blobs: list[bytes], guard: Guard) -> None:
    rng = random.Random(-1 - case)
    which = rng.randrange(len(blobs))
    buf = bytearray(blobs[which])
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(buf))
        buf[at] = rng.randrange(256)
    if rng.random() < 0.5:
        del buf[rng.randrange(len(buf)) :]
    with guard.case(case, len(CONTAINERS[which])):
        try:
            reader = ContainerReader.from_index(sources[which], bytes(buf))
            for name in rng.sample(list(ORIGINALS[which]), min(8, len(ORIGINALS[which]))):
                assert reader.read(name) == ORIGINALS[which][name], f"cached-index case {case}: wrong bytes for {name!r}"
        except ContainerError:
            pass


def test_the_guard_fails_a_big_allocation_and_a_hang() -> None:
    """The guard is not vacuous: an allocation over budget (twice) fails, and so does an endless loop."""

    def allocate() -> None:
        with guard.case(0, 1000):
            bytearray(budget(1000) + 1)

    with Guard(seconds=0.3, trace_every=1) as guard:
        with pytest.raises(OverBudget):
            guard.run(allocate)
        assert guard.rechecked == 1
        with pytest.raises(Hang), guard.case(1, 1000):
            while True:
                pass
