"""Salvaging members from damaged v2 containers by scanning for intact frames."""

from __future__ import annotations

import io
import os

from desq.container import BytesSource, ContainerReader, open_container
from desq.container import format as fmt
from desq.container.fsck import layout_version_of, salvage, scan
from sources import build

MEMBERS = {f"20251120_{i}": os.urandom(100 + 37 * i) for i in range(30)}
MEMBERS["big"] = os.urandom((1 << 20) * 2 + 5)
GOOD = build(MEMBERS.items())


def salvaged(data: bytes) -> tuple[dict[str, bytes], object]:
    out = io.BytesIO()
    summary, report = salvage(BytesSource(data), out)
    reader = open_container(BytesSource(out.getvalue()))
    assert reader.verify() == [] and summary.count == reader.count
    return {m.name: reader.read(m.name) for m in reader.members()}, report


def test_a_healthy_container_scans_whole() -> None:
    got, report = salvaged(GOOD)
    assert got == MEMBERS and report.intact == len(MEMBERS) and report.damaged == []


def test_lost_footer_and_index() -> None:
    names_offset = ContainerReader.open(BytesSource(GOOD)).footer.names_offset
    got, report = salvaged(GOOD[:names_offset] + os.urandom(100))
    assert got == MEMBERS
    assert report.damaged == [(names_offset, names_offset + 100)]


def test_a_damaged_member_is_left_out_and_the_rest_kept() -> None:
    reader = ContainerReader.open(BytesSource(GOOD))
    victim = reader.find("20251120_5")
    data = bytearray(GOOD)
    data[victim.offset + 3] ^= 0xFF
    got, report = salvaged(bytes(data))
    assert got == {k: v for k, v in MEMBERS.items() if k != "20251120_5"}
    assert len(report.damaged) == 1 and report.damaged[0][0] < victim.offset < report.damaged[0][1]


def test_truncated_container_keeps_whole_frames() -> None:
    reader = ContainerReader.open(BytesSource(GOOD))
    cut = reader.find("20251120_20").offset + 10
    got, _ = salvaged(GOOD[:cut])
    assert set(got) == {f"20251120_{i}" for i in range(20)}


def test_damaged_header_takes_the_footers_layout_version() -> None:
    data = bytearray(build([("a", b"1")], layout_version=3))
    data[1] ^= 0xFF
    assert layout_version_of(BytesSource(bytes(data))) == 3
    out = io.BytesIO()
    salvage(BytesSource(bytes(data)), out)
    assert ContainerReader.open(BytesSource(out.getvalue())).layout_version == 3


def test_garbage_holds_nothing() -> None:
    junk = os.urandom(50_000).replace(fmt.FRAME_MAGIC, b"xxxx") + fmt.FRAME_MAGIC + os.urandom(100)
    assert list(scan(BytesSource(junk))) == []
