"""Recovering members from a damaged v2 container by scanning for frames.

Every frame starts with FRAME_MAGIC and carries its own head CRC and data CRCs, so a scan can
find the frames that are still intact without the index or the footer, and ``salvage`` writes
them into a new, whole container.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from desq.container import format as fmt
from desq.container.errors import ChecksumMismatch, CorruptContainer
from desq.container.source import ByteSource
from desq.container.writer import ContainerWriter, Summary
from desq.layout import LAYOUT_VERSION

WINDOW = 8 << 20


@dataclass
class ScanReport:
    """What a scan found: intact frames, and the byte ranges it could not account for."""

    intact: int = 0
    damaged: list[tuple[int, int]] = field(default_factory=list)


def _frame_at(source: ByteSource, at: int, size: int) -> tuple[fmt.Head, bytes] | None:
    """The intact frame starting at ``at``, or None if there is none."""
    try:
        head = fmt.parse_head(source.read(at, min(fmt.MAX_HEAD, size - at)), f"offset {at}")
    except CorruptContainer:
        return None
    end = at + head.frame_len
    if end > size or head.frame_len > fmt.MAX_HEAD + (1 << 30):
        return None  # salvage keeps members of up to 1 GiB in memory; larger ones are reported
    frame = source.read(at, head.frame_len)
    if not head.external:
        try:
            fmt.checked_data(head.name, memoryview(frame), head.head_len, head.size, head.block_shift)
        except ChecksumMismatch:
            return None
    return head, frame


def scan(source: ByteSource, report: ScanReport | None = None) -> Iterator[tuple[fmt.Head, bytes]]:
    """Yield every intact frame in order of position, resyncing past damage."""
    report = report if report is not None else ScanReport()
    tail, size = source.read_suffix(fmt.FOOTER_SIZE)
    try:
        size = fmt.parse_footer(tail, size).names_offset  # an intact footer says where frames end
    except CorruptContainer:
        pass
    pos = fmt.HEADER_SIZE
    damaged_from: int | None = None
    while pos < size:
        window = source.read(pos, min(WINDOW, size - pos))
        hit = window.find(fmt.FRAME_MAGIC)
        if hit < 0:
            damaged_from = pos if damaged_from is None else damaged_from
            pos += max(1, len(window) - len(fmt.FRAME_MAGIC) + 1)
            continue
        at = pos + hit
        found = _frame_at(source, at, size)
        if found is None:
            damaged_from = at if damaged_from is None else damaged_from
            pos = at + 1
            continue
        if damaged_from is not None:
            report.damaged.append((damaged_from, at))
            damaged_from = None
        elif at != pos:
            report.damaged.append((pos, at))
        report.intact += 1
        yield found
        pos = at + found[0].frame_len
    if damaged_from is not None:
        report.damaged.append((damaged_from, size))


class _Scanned:
    """Scanned frames in the shape ``ContainerWriter.merge`` copies from."""

    def __init__(self, source: ByteSource, layout_version: int, report: ScanReport) -> None:
        self.source = source
        self.layout_version = layout_version
        self.report = report

    def raw_frames(self, skip: set[str]) -> Iterator[tuple[fmt.Head, bytes]]:
        for head, frame in scan(self.source, self.report):
            if head.name not in skip:
                yield head, frame


def layout_version_of(source: ByteSource) -> int | None:
    """The layout version from the header, else the footer; None if both are damaged."""
    try:
        return fmt.parse_header(source.read(0, fmt.HEADER_SIZE))
    except CorruptContainer:
        pass
    try:
        tail, size = source.read_suffix(fmt.FOOTER_SIZE)
        return fmt.parse_footer(tail, size).layout_version
    except CorruptContainer:
        return None


def salvage(source: ByteSource, out: BinaryIO, *, layout_version: int | None = None) -> tuple[Summary, ScanReport]:
    """Write every intact member of ``source`` into a new container on ``out``.

    Where a name occurs in more than one intact frame, the first is kept.
    """
    version = layout_version or layout_version_of(source) or LAYOUT_VERSION
    report = ScanReport()
    writer = ContainerWriter(out, layout_version=version)
    writer.merge(_Scanned(source, version, report))
    return writer.close(), report
