"""The work plan of a night, and the rows of one (date, shard) for its packer.

The goal is that a night reads each source row about once. Name mode: the plan is one GROUP BY
(it fetches groups, not rows), and a packer reads its own READY rows through the des_shard column.
uid mode: shards are computed from the uid (modulo or CRC32), which an index cannot serve, so the
planner reads the night's rows once and hands each (date, shard) its own list; ``uid_rows_for`` is
the slower path for packing one shard by hand.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING

import sqlalchemy as sa

from desq.days import DayError, in_range
from desq.failpoints import failpoint
from desq.layout import LayoutError, parse_name, parse_yyyymmdd, yyyymmdd
from desq.source.rows import SourceRow
from desq.source.table import PACKED, READY, SourceTable

if TYPE_CHECKING:
    from desq.spool import SpoolWriter


@dataclass(frozen=True, slots=True, order=True)
class Work:
    """One pack_shard task: a (date, shard) and how many files it has."""

    date: date
    shard: int
    files: int


@dataclass
class Plan:
    """A night's work, and the rows that cannot be planned (with why)."""

    work: list[Work] = field(default_factory=list)
    rows: dict[tuple[date, int], list[SourceRow]] | None = None
    """Each task's rows, read once by the planner (uid mode without a spool); None: they are in
    the spool (``night``), or packers query them (name mode without a spool)."""
    night: str | None = None
    """The night whose spool holds each task's rows (``desq.spool``)."""
    unplanned: int = 0
    problems: list[str] = field(default_factory=list)
    unplaced: int = 0
    """Rows read whose created_at has no day (reported; they belong to no container)."""
    unplaced_examples: list[str] = field(default_factory=list)
    skipped: int = 0
    """(date, shard)s left out because their container already holds every row."""
    future: int = 0
    """uid mode: rows created after today (reported; archived once old enough)."""
    future_examples: list[str] = field(default_factory=list)

    @property
    def files(self) -> int:
        return sum(w.files for w in self.work)


# --- name mode ---------------------------------------------------------------------------------


def _name_date(source: SourceTable) -> sa.ColumnElement[str]:
    """The YYYYMMDD part of des_name, for names with the configured prefix."""
    prefix = source.layout.name_prefix
    start = len(prefix) + 2 if prefix else 1
    assert source.columns.des_name is not None
    return sa.func.substr(source.columns.des_name, start, 8)


def plan_names(source: SourceTable, spool: SpoolWriter | None = None) -> Plan:
    """Every (date, shard) with READY rows: with ``spool``, from one scan of the READY rows, each
    written to the spool for its packer; without, from one GROUP BY (packers query their rows)."""
    if spool is not None:
        return _spool_names(source, spool)
    c = source.columns
    assert c.des_status is not None and c.des_shard is not None
    day = _name_date(source)
    query = sa.select(day, c.des_shard, sa.func.count()).where(c.des_status == READY).group_by(day, c.des_shard)
    plan = Plan()
    with source.engine.connect() as conn:
        groups = conn.execute(query).all()
    source.rows_read += len(groups)
    bits = source.layout.shard_bits
    for day_text, shard, count in groups:
        try:
            day_value = parse_yyyymmdd(str(day_text))
            if not isinstance(shard, int) or not 0 <= shard < 1 << bits:
                raise LayoutError(f"shard {shard!r} is outside 0..{(1 << bits) - 1}")
        except LayoutError as exc:
            plan.unplanned += count
            plan.problems.append(f"{count} READY rows cannot be planned: {exc} (names from another name_prefix?)")
            continue
        plan.work.append(Work(day_value, shard, count))
    plan.work.sort()
    return plan


def _spool_names(source: SourceTable, spool: SpoolWriter) -> Plan:
    c = source.columns
    assert c.des_name is not None and c.des_shard is not None and c.des_status is not None
    plan = Plan()
    bits = source.layout.shard_bits
    query = sa.select(c.id, c.des_name, c.des_shard, source.created_read, c.path).where(c.des_status == READY)
    for batch in source.batches(query, source.settings.source.batch_size):
        for row_id, name, shard, created, path in batch:
            try:
                day = parse_name(str(name)).date
                if not isinstance(shard, int) or not 0 <= shard < 1 << bits:
                    raise LayoutError(f"shard {shard!r} is outside 0..{(1 << bits) - 1}")
            except LayoutError as exc:
                plan.unplanned += 1
                if len(plan.problems) < 5:
                    plan.problems.append(f"READY row {row_id} cannot be planned: {exc} (a name from another name_prefix?)")
                continue
            spool.add(SourceRow(id=row_id, name=name, created_at=source.created.aware(created), path=str(path or ""), date=day, shard=shard))
    spool.flush()
    plan.work = sorted(Work(day, shard, count) for (day, shard), count in spool.counts.items())
    plan.night = spool.night
    return plan


def name_rows_for(source: SourceTable, day: date, shard: int, *, batch_size: int | None = None) -> Iterator[SourceRow]:
    """The READY rows of (day, shard), in id order, read in keyset batches."""
    c = source.columns
    assert c.des_name is not None and c.des_shard is not None and c.des_status is not None
    query = sa.select(c.id, c.des_name, source.created_read, c.path).where(
        c.des_status == READY, c.des_shard == shard, _name_date(source) == yyyymmdd(day)
    )
    for batch in source.batches(query, batch_size or source.settings.source.batch_size):
        for row_id, name, created, path in batch:
            try:
                if parse_name(name).date != day:
                    continue
            except LayoutError:
                continue
            yield SourceRow(id=row_id, name=name, created_at=source.created.aware(created), path=str(path or ""), date=day, shard=shard)


def mark_packed(source: SourceTable, ids: Iterable[object], *, batch_size: int = 1000) -> int:
    """Set des_status = 'PACKED' on these READY rows (after their container is verified)."""
    c = source.columns
    assert c.des_status is not None
    done = 0
    pending = list(ids)
    for at in range(0, len(pending), batch_size):
        chunk = pending[at : at + batch_size]
        if at:
            failpoint("pack.marked_batch")
        result = source.execute(sa.update(source.table).where(c.id.in_(chunk), c.des_status == READY).values({c.des_status: PACKED}))
        done += result.rowcount
    return done


# --- uid mode ----------------------------------------------------------------------------------


@dataclass
class UidReadReport:
    """Rows of a uid-mode read that could not become files, with why.

    ``unplanned`` rows are on a day but cannot be packed (a bad uid, an empty path): they keep
    their day from being complete. ``unplaced`` rows have no day at all (created_at NULL in a
    text column, not a time, out of range): they belong to no container and are only reported."""

    unplanned: int = 0
    problems: list[str] = field(default_factory=list)
    unplaced_rows: int = 0
    unplaced_examples: list[str] = field(default_factory=list)
    by_day: Counter[date] = field(default_factory=Counter)
    """Unplanned rows on each day."""
    day_problems: dict[date, list[str]] = field(default_factory=dict)

    def note(self, text: str, day: date) -> None:
        self.unplanned += 1
        self.by_day[day] += 1
        if len(self.problems) < 10:
            self.problems.append(text)
        seen = self.day_problems.setdefault(day, [])
        if len(seen) < 3:
            seen.append(text)

    def unplaced(self, text: str) -> None:
        self.unplaced_rows += 1
        if len(self.unplaced_examples) < 10:
            self.unplaced_examples.append(text)


def uid_rows(source: SourceTable, first: date | None, last: date | None, report: UidReadReport | None = None, *, where: sa.ColumnElement[bool] | None = None) -> Iterator[SourceRow]:
    """Every row whose day is in ``first``..``last`` (None: open) as a SourceRow, read once in keyset
    batches. Rows whose created_at has no day are noted in ``report`` (they belong to no range)."""
    report = report if report is not None else UidReadReport()
    c = source.columns
    layout = source.layout
    query = sa.select(c.id, source.created_read, c.path).where(source.day_range(first, last))
    if where is not None:
        query = query.where(where)
    for batch in source.batches(query, source.settings.source.batch_size):
        for uid, created, path in batch:
            try:
                day = source.day_of(created)
            except DayError as exc:
                report.unplaced(f"uid {uid}: {exc}")
                continue
            if not in_range(day, first, last):
                continue  # a text value the SQL let through generously, on a neighbouring day
            try:
                shard = layout.shard_of_uid(uid if isinstance(uid, int) else str(uid))
            except LayoutError as exc:
                report.note(f"uid {uid}: {exc}", day)
                continue
            if path is None or not str(path).strip():
                report.note(f"uid {uid}: empty path", day)
                continue
            yield SourceRow(id=uid, name=str(uid), created_at=source.created.aware(created), path=str(path), date=day, shard=shard)


def plan_uids(source: SourceTable, first: date | None, last: date, spool: SpoolWriter | None = None) -> Plan:
    """uid mode: read days ``first``..``last`` (None: from the first) once and hand each (date, shard)
    its rows: into ``spool``, else in ``Plan.rows``."""
    if first is not None and last < first:
        return Plan(rows=None if spool is not None else {}, night=spool.night if spool is not None else None)
    report = UidReadReport()
    grouped: dict[tuple[date, int], list[SourceRow]] = defaultdict(list)
    for row in uid_rows(source, first, last, report):
        if spool is not None:
            spool.add(row)
        else:
            grouped[(row.date, row.shard)].append(row)
    nulls, ids = source.null_created_at()
    for uid in ids:
        report.unplaced(f"uid {uid}: created_at is NULL")
    report.unplaced_rows += nulls - len(ids)
    if spool is not None:
        spool.flush()
        counts = dict(spool.counts)
    else:
        counts = {key: len(rows) for key, rows in grouped.items()}
    work = sorted(Work(day, shard, count) for (day, shard), count in counts.items())
    return Plan(work=work, rows=None if spool is not None else dict(grouped), night=spool.night if spool is not None else None, unplanned=report.unplanned, problems=report.problems, unplaced=report.unplaced_rows, unplaced_examples=report.unplaced_examples)


def uid_rows_for(source: SourceTable, day: date, shard: int) -> Iterator[SourceRow]:
    """uid mode, one (date, shard) by hand: the day's rows of that shard (modulo in SQL for int uids)."""
    layout = source.layout
    where = None
    if layout.uid_kind == "int" and isinstance(source.columns.id.type, sa.Integer):
        where = source.columns.id % (1 << layout.shard_bits) == shard
    for row in uid_rows(source, day, day, where=where):
        if row.shard == shard and row.date == day:
            yield row
