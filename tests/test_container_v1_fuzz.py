"""Fuzzing the DES v1 reader: damaged containers end in a container or storage error, or in bytes
that are exactly what the container holds where the reader says they are.

CI runs 10,000 cases; by hand: ``FUZZ_CASES=100000 pytest tests/test_container_v1_fuzz.py``
(``FUZZ_TRACE_EVERY=1`` puts every case, not every fifth, under tracemalloc).
Each case is seeded from its number (``FUZZ_FIRST=<case> FUZZ_CASES=1`` replays one).

v1 has no checksums, so damage may legitimately change what a member holds; the oracle is what
the reader claims: a member read back has the size the index gives, lies inside the DATA region
the footer states and equals those bytes of the container (an external member: the object its
key names, under the archive), ranges and chunked streams equal slices of the whole read, and a
member that cannot be read is one ``verify`` reports. Damage is blind (bit flips, truncation,
splices, runs), aimed (a hostile value in one footer or index integer), or structured (one
member rebuilt with hostile metadata, flags, name or offsets). Every case runs under
``fuzzing.Guard``: bounded allocation, bounded time.

External members are read the way the files API reads them: ``join_key`` against the container's
key on a real LocalStorage, with a secret file just outside the archive root that no case may read.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Callable

import pytest
from des_v1_writer import DELETED, EXTERNAL, V1Member, build_v1

from desq.archive import StorageSource
from desq.container import BytesSource, ContainerError, open_container
from desq.container.v1 import DesV1Reader
from desq.storage import StorageError
from desq.storage.base import join_key
from desq.storage.local import LocalStorage
from fuzzing import Guard, blind_damage, interesting_value, write_int

CASES = int(os.environ.get("FUZZ_CASES", "10000"))
FIRST = int(os.environ.get("FUZZ_FIRST", "0"))
ALLOWED = (ContainerError, StorageError)
CONTAINER_KEY = "20251120/FE.des"
SECRET = b"SECRET-OUTSIDE-THE-ARCHIVE"
READS_PER_CASE = 24


def _bases() -> list[list[V1Member]]:
    rng = random.Random(11)
    return [
        [V1Member("one", b"0123456789", mime="text/plain")],
        [
            V1Member("zażółć.pdf", b"%PDF" * 5, mime="application/pdf"), V1Member("空", b""), V1Member("dup", b"first"),
            V1Member("ext", b"external bytes", external_key="ext/1", mime="text/plain"), V1Member("dup", b"second!"),
            V1Member("gone", b"gone", flags=DELETED), V1Member("🎉", bytes(range(40))),
        ],
        [V1Member(f"20251120_{i}", rng.randbytes(rng.choice([0, 1, 17, 600, 5000])), mime=rng.choice([None, "image/png"])) for i in range(40)],
        [
            V1Member("in-1", rng.randbytes(300)), V1Member("big-ext", rng.randbytes(70_000), external_key="ext/big"),
            V1Member("ext-2", b"x" * 33, external_key="sub/dir/ext-2", mime="text/plain"), V1Member("in-2", rng.randbytes(5)),
            V1Member("ext-3", b"", external_key="ext/empty"),
        ],
        [V1Member("large", rng.randbytes(300_000)), V1Member("after", b"after the large one")],
        [V1Member(f"20251120_{i:05d}", rng.randbytes(rng.randint(0, 12))) for i in range(600)],
    ]


BASES = _bases()
BUILT = [build_v1(members) for members in BASES]
WEIGHTS = [2, 3, 3, 3, 1, 1]
EXTERNAL_OBJECTS = {key: data for c in BUILT for key, data in c.externals.items()}
HOSTILE_META = [
    b'{"size": 18446744073709551616}', b'{"size": -1}', b'{"size": 1e308}', b'{"size": "12"}', b'{"size": true}', b'{"size": NaN}',
    b'{"mime": ["a"]}', b'{"mime": "' + b"x" * 10_000 + b'"}', b"[" * 100_000, b'{"a":' * 50_000, b"\xff\xfe", b"", b"null", b"[]",
    b'{"size": 9' + b"9" * 5000 + b"}", b'{"is_external": true, "external_key": "../../secret"}', b'{"external_key": "/etc/passwd"}',
    b'{"is_external": false}', b'{"size": 0, "size": 1}', b'{"mime": "text/plain\\u0000\\r\\nX-Injected: 1"}',
]
HOSTILE_EXTERNAL_KEYS = ["../../secret", "../secret", "/etc/passwd", "", ".", "a/../../secret", "a\\..\\secret", "x\x00y", "ext/1/", "ext//1", "ext/missing"]


def _fields(built: object) -> list[tuple[int, int]]:
    """``(offset, width)`` of every integer field: header version, footer, each index entry."""
    blob: bytes = built.blob  # type: ignore[attr-defined]
    fields = [(8, 1)]
    footer = len(blob) - 72
    fields += [(footer + 8, 1)] + [(footer + 16 + 8 * i, 8) for i in range(7)]
    for at in built.entry_offsets:  # type: ignore[attr-defined]
        name_len = int.from_bytes(blob[at : at + 2], "little")
        f = at + 2 + name_len
        fields += [(at, 2), (f, 8), (f + 8, 8), (f + 16, 8), (f + 24, 8), (f + 32, 4)]
    return fields


FIELDS = [_fields(c) for c in BUILT]


def _structured(members: list[V1Member], rng: random.Random) -> bytes:
    """The container rebuilt with one member made hostile."""
    members = list(members)
    i = rng.randrange(len(members))
    m = members[i]
    pick = rng.randrange(6)
    if pick == 0:
        m = dataclasses.replace(m, meta=rng.choice(HOSTILE_META))
    elif pick == 1:
        m = dataclasses.replace(m, flags=rng.choice([EXTERNAL, 0x2, 0x4, DELETED, 0x10, 0xFFFFFFFF, EXTERNAL | DELETED, 0]))
    elif pick == 2:
        m = dataclasses.replace(m, name=rng.choice([b"\xff\xfe", b"", b"a\x00b", "..", "../x", "x" * 5000, members[rng.randrange(len(members))].name]))
    elif pick == 3:
        m = dataclasses.replace(m, external_key=rng.choice(HOSTILE_EXTERNAL_KEYS))
    else:
        field = rng.choice(["data_offset", "data_length", "meta_offset", "meta_length", "name_len"])
        width = 2 if field == "name_len" else 8
        m = dataclasses.replace(m, **{field: interesting_value(rng, 16, 4096) % (1 << (8 * width))})
    members[i] = m
    try:
        return build_v1(members).blob
    except (OverflowError, ValueError, KeyError):  # struct.error is a ValueError: the writer could not pack it
        return build_v1(members[:i] + members[i + 1 :]).blob


def mutate(which: int, rng: random.Random) -> bytes:
    blob = BUILT[which].blob
    buf = bytearray(blob)
    kind = rng.choices(range(8), weights=[15, 6, 6, 4, 12, 10, 30, 17])[0]
    if kind < 6:
        blind_damage(buf, kind, rng)
    elif kind == 6:
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            at, width = rng.choice(FIELDS[which])
            write_int(buf, at, width, interesting_value(rng, int.from_bytes(buf[at : at + width], "little"), len(buf)))
    else:
        return _structured(BASES[which], rng)
    return bytes(buf)


@pytest.fixture(scope="module")
def external(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], StorageSource]:
    """How the files API opens an external member: its key joined to the container's, on storage."""
    top = tmp_path_factory.mktemp("v1fuzz")
    (top / "secret").write_bytes(SECRET)
    (top / "archive" / "20251120").mkdir(parents=True)
    (top / "archive" / "secret").write_bytes(SECRET)
    storage = LocalStorage(top / "archive")
    for key, data in EXTERNAL_OBJECTS.items():
        storage.put(join_key(CONTAINER_KEY, key), data)
    return lambda relative: StorageSource(storage, join_key(CONTAINER_KEY, relative))


def exercise(case: int, blob: bytes, rng: random.Random, external: Callable[[str], StorageSource], tally: dict[str, int]) -> dict[str, bytes]:
    """Open and read a sample of members, holding every answer to the oracle; what read back."""
    source = BytesSource(blob)
    try:
        reader = open_container(source, external=external) if case % 2 else DesV1Reader.open(source, external=external)
    except ALLOWED:
        return {}
    if not isinstance(reader, DesV1Reader):
        return {}
    tally["opened"] += 1
    footer = reader.footer
    listed = list(reader.members())
    assert len(listed) == reader.count, f"case {case}: count {reader.count} but {len(listed)} listed"
    assert len({m.name for m in listed}) == len(listed), f"case {case}: a name listed twice"
    sample = listed if len(listed) <= READS_PER_CASE else rng.sample(listed, READS_PER_CASE)
    readable: dict[str, bytes] = {}
    failed_inside = False
    for m in sample:
        assert reader.find(m.name) == m, f"case {case}: find({m.name!r}) disagrees with the listing"
        try:
            data = reader.read(m.name)
        except ALLOWED:
            failed_inside |= not m.external
            continue
        tally["reads"] += 1
        assert len(data) == m.size, f"case {case}: {m.name!r} read {len(data)} bytes, the index says {m.size}"
        if m.external:
            key = reader.meta(m.name).external_key
            assert key in EXTERNAL_OBJECTS and data == EXTERNAL_OBJECTS[key], f"case {case}: external {m.name!r} ({key!r}) is not its object"
        else:
            assert footer.data_start <= m.offset and m.offset + m.size <= footer.data_end, f"case {case}: {m.name!r} lies outside DATA"
            assert data == blob[m.offset : m.offset + m.size], f"case {case}: {m.name!r} is not the bytes at its offset"
        assert SECRET not in data, f"case {case}: read the secret outside the archive"
        a, b = sorted(rng.randint(0, m.size) for _ in range(2))
        assert reader.read_range(m.name, a, b) == data[a:b], f"case {case}: read_range({m.name!r}, {a}, {b})"
        chunk = rng.choice([7, 4096, 1 << 20]) if b - a < 10_000 else rng.choice([65_536, 1 << 20])
        assert b"".join(reader.iter_range(m.name, a, b, chunk_size=chunk)) == data[a:b], f"case {case}: iter_range({m.name!r}, {a}, {b}, {chunk})"
        readable[m.name] = data
    if readable:
        got = dict(reader.read_many(list(readable), max_merge=rng.choice([0, 4096, 8 << 20]), max_gap=rng.choice([0, 64 << 10])))
        assert got == readable, f"case {case}: read_many disagrees with single reads"
    try:
        problems = reader.verify()
    except ALLOWED:
        return readable
    assert not failed_inside or problems, f"case {case}: a member inside failed to read but verify found nothing"
    return readable


def check_case(case: int, guard: Guard, external: Callable[[str], StorageSource], tally: dict[str, int]) -> None:
    rng = random.Random(case)
    which = rng.choices(range(len(BUILT)), weights=WEIGHTS)[0]
    blob = mutate(which, rng)
    with guard.case(case, len(blob) + sum(map(len, BUILT[which].externals.values()))):
        exercise(case, blob, rng, external, tally)


def test_unmutated_bases_read_back_whole(external: Callable[[str], StorageSource]) -> None:
    """The oracle's baseline: every live member of every base reads back exactly."""
    for members, built in zip(BASES, BUILT):
        live: dict[str, V1Member] = {}
        for m in members:
            live[m.name] = m  # type: ignore[index]
        expected = {n: m.data for n, m in live.items() if not (m.flags or 0) & DELETED}
        reader = open_container(BytesSource(built.blob), external=external)
        assert reader.verify() == []
        assert {m.name: reader.read(m.name) for m in reader.members()} == expected


def test_fuzz_damaged_v1_containers(external: Callable[[str], StorageSource]) -> None:
    tally = {"opened": 0, "reads": 0}
    with Guard() as guard:
        for case in range(FIRST, FIRST + CASES):
            try:
                guard.run(lambda: check_case(case, guard, external, tally))  # noqa: B023 - called at once
            except AssertionError:
                raise
            except BaseException as exc:  # noqa: BLE001 - anything but container and storage errors is a bug (Hang too)
                pytest.fail(f"case {case}: {type(exc).__name__}: {exc}")
    print(f"\nv1 fuzz: {CASES} cases, {tally['opened']} opened, {tally['reads']} members read back; {guard.summary()}")
    if CASES >= 1000:  # the oracle must be exercised, not just the refusals
        assert tally["opened"] > CASES // 4 and tally["reads"] > CASES // 4
