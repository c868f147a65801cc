"""The marker (name mode): gives each row old enough to archive its name, shard and READY.

A row is old enough once it was created before the start of ``today - archive.after_days`` in the
configured zone, so a day's files are marked together. Each batch is one transaction: the rows are
selected ``FOR UPDATE SKIP LOCKED`` where the database has it (so two markers take different rows)
and updated with one statement guarded by ``des_status IS NULL`` (so no row is ever counted or
named twice, even where nothing is locked). Names are deterministic: the same row always gets the
same name.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, timedelta

import sqlalchemy as sa

from desq.failpoints import failpoint
from desq.layout import LayoutError, shard_of_name
from desq.source.table import READY, SourceTable, as_datetime


@dataclass
class MarkReport:
    """What one marker run did and what it left alone, with why."""

    marked: int = 0
    batches: int = 0
    empty_path: int = 0
    bad_id: int = 0
    unreadable_created_at: int = 0
    null_created_at: int = 0
    future_created_at: int = 0
    seconds: float = 0.0
    examples: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return self.empty_path + self.bad_id + self.unreadable_created_at + self.null_created_at + self.future_created_at

    def summary(self) -> str:
        rate = self.marked / self.seconds if self.seconds else 0.0
        parts = [f"marked {self.marked} rows in {self.batches} batches ({self.seconds:.1f} s, {rate:,.0f} rows/s)"]
        for label, count in (
            ("empty path", self.empty_path),
            ("id that cannot make a name", self.bad_id),
            ("unreadable created_at", self.unreadable_created_at),
            ("NULL created_at", self.null_created_at),
            ("created_at in the future", self.future_created_at),
        ):
            if count:
                parts.append(f"{count} not marked: {label}")
        return "; ".join(parts)

    def _note(self, text: str) -> None:
        if len(self.examples) < 10:
            self.examples.append(text)


def mark(source: SourceTable, *, today: date, batch_size: int | None = None) -> MarkReport:
    """Mark every eligible row once; return what was done and what was left and why."""
    if source.layout.mode != "name":
        raise ValueError("the marker runs in name mode; uid mode keeps no per-row state")
    report = MarkReport()
    started = time.monotonic()
    c = source.columns
    assert c.des_name is not None and c.des_shard is not None and c.des_status is not None
    batch_size = batch_size or source.settings.source.batch_size
    cutoff = source.instant(today - timedelta(days=source.settings.archive.after_days))
    bits = source.layout.shard_bits
    last = None
    while True:
        with source.engine.begin() as conn:
            query = sa.select(c.id, source.created_read, c.path).where(c.des_status.is_(None), c.created_at < cutoff)
            if last is not None:
                query = query.where(c.id > last)
            query = query.order_by(c.id).limit(batch_size).with_for_update(skip_locked=True)
            rows = conn.execute(query).all()
            if not rows:
                break
            source.rows_read += len(rows)
            last = rows[-1][0]
            names: dict[object, str] = {}
            shards: dict[object, int] = {}
            for row_id, created, path in rows:
                if path is None or not str(path).strip():
                    report.empty_path += 1
                    report._note(f"id {row_id}: empty path")
                    continue
                moment = as_datetime(created)
                if moment is None:
                    report.unreadable_created_at += 1
                    report._note(f"id {row_id}: created_at {created!r} is not a time")
                    continue
                try:
                    name = source.layout.name_for(moment, row_id)
                except LayoutError as exc:
                    report.bad_id += 1
                    report._note(f"id {row_id}: {exc}")
                    continue
                names[row_id] = name
                shards[row_id] = shard_of_name(name, bits)
            if names:
                result = conn.execute(
                    sa.update(source.table)
                    .where(c.id.in_(list(names)), c.des_status.is_(None))
                    .values({c.des_name: sa.case(names, value=c.id), c.des_shard: sa.case(shards, value=c.id), c.des_status: READY})
                )
                report.marked += result.rowcount
                failpoint("marker.in_batch")
        report.batches += 1
        failpoint("marker.between_batches")
    report.null_created_at = source.count(c.des_status.is_(None), c.created_at.is_(None))
    report.future_created_at = source.count(c.des_status.is_(None), c.created_at > source.now())
    report.seconds = time.monotonic() - started
    return report
