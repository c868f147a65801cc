"""The marker (name mode): gives each row old enough to archive its name, shard and READY.

A row is old enough once its day (``desq.days``) is on or before ``today - archive.after_days - 1``,
so a day's files are marked together. Each batch is one transaction: the rows are
selected ``FOR UPDATE SKIP LOCKED`` where the database has it (so two markers take different rows)
and updated in one round trip (``desq.source.mark_sql``) guarded by ``des_status IS NULL`` (so no row
is ever counted or named twice, even where nothing is locked). Names are deterministic: the same row always gets the
same name.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date

import sqlalchemy as sa

from desq.days import EARLIEST_PLAUSIBLE, DayError, next_day, target_day
from desq.failpoints import failpoint
from desq.layout import LayoutError, build_name, shard_of_name
from desq.mode import mode_for
from desq.source.mark_sql import Mark, MarkWriter
from desq.source.table import SourceTable


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
    early_created_at: int = 0
    """Marked, but created before 1900: usually a placeholder value worth a look."""
    seconds: float = 0.0
    examples: list[str] = field(default_factory=list)
    """Rows not marked, with why (at most 10)."""
    early_examples: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return self.empty_path + self.bad_id + self.unreadable_created_at + self.null_created_at + self.future_created_at

    @property
    def unplaced(self) -> int:
        """Rows whose created_at has no day (NULL or not a time)."""
        return self.unreadable_created_at + self.null_created_at

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
        if self.early_created_at:
            parts.append(f"{self.early_created_at} marked with a created_at before {EARLIEST_PLAUSIBLE.year} (a placeholder?)")
        return "; ".join(parts)

    def _note(self, text: str) -> None:
        if len(self.examples) < 10:
            self.examples.append(text)


def mark(source: SourceTable, *, today: date, batch_size: int | None = None) -> MarkReport:
    """Mark every eligible row once; return what was done and what was left and why."""
    if not mode_for(source.layout).state_columns:
        raise ValueError("the marker runs in name mode; uid mode keeps no per-row state")
    report = MarkReport()
    started = time.monotonic()
    c = source.columns
    assert c.des_name is not None and c.des_shard is not None and c.des_status is not None
    batch_size = batch_size or source.settings.source.batch_size
    last_day = target_day(today, source.settings.archive.after_days)
    bits = source.layout.shard_bits
    prefix = source.layout.name_prefix
    writer = MarkWriter(source.table, c, source.engine)
    last = None
    while True:
        with source.engine.begin() as conn:
            query = sa.select(c.id, source.created_read, c.path).where(c.des_status.is_(None), source.day_range(None, last_day))
            if last is not None:
                query = query.where(c.id > last)
            query = query.order_by(c.id).limit(batch_size).with_for_update(skip_locked=True)
            rows = conn.execute(query).all()
            if not rows:
                break
            source.rows_read += len(rows)
            last = rows[-1][0]
            marks: dict[object, Mark] = {}  # by id: where ids repeat, every row of an id gets one name
            for row_id, created, path in rows:
                try:
                    day = source.day_of(created)
                except DayError as exc:
                    report.unreadable_created_at += 1
                    report._note(f"id {row_id}: {exc}")
                    continue
                if day > last_day:
                    continue  # a text value selected generously: not old enough yet
                if path is None or not str(path).strip():
                    report.empty_path += 1
                    report._note(f"id {row_id}: empty path")
                    continue
                try:
                    name = build_name(day, row_id, prefix)
                except LayoutError as exc:
                    report.bad_id += 1
                    report._note(f"id {row_id}: {exc}")
                    continue
                if day < EARLIEST_PLAUSIBLE:
                    report.early_created_at += 1
                    if len(report.early_examples) < 5:
                        report.early_examples.append(f"id {row_id}: created_at {created!s} is before {EARLIEST_PLAUSIBLE.year}; marked as {name}")
                marks[row_id] = (row_id, name, shard_of_name(name, bits))
            if marks:
                report.marked += writer.write(conn, list(marks.values()))
                failpoint("marker.in_batch")
        report.batches += 1
        failpoint("marker.between_batches")
    unmarked = c.des_status.is_(None)
    report.null_created_at, ids = source.null_created_at(unmarked)
    for row_id in ids:
        report._note(f"id {row_id}: created_at is NULL")
    for row_id, created in future_rows(source, today, unmarked):
        report.future_created_at += 1
        report._note(f"id {row_id}: created_at {created!s} is in the future")
    report.seconds = time.monotonic() - started
    return report


def future_rows(source: SourceTable, today: date, *where: sa.ColumnElement[bool]) -> Iterator[tuple[object, object]]:
    """(id, created_at) of the rows created after ``today`` in the configured zone."""
    query = sa.select(source.columns.id, source.created_read).where(source.day_range(next_day(today), None), *where)
    for batch in source.batches(query, source.settings.source.batch_size):
        for row_id, created in batch:
            try:
                if source.day_of(created) > today:
                    yield row_id, created
            except DayError:
                continue
