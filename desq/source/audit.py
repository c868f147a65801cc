"""``desq source check``'s look at created_at: rows whose value cannot be placed on a day, and
values that are placed but suspicious (in the future, before 1900), each with examples.

Native timestamp columns are counted in SQL. A text column is read once in full (keyset batches):
only Python can tell ``2025-11-14 garbage`` from a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import sqlalchemy as sa

from desq.days import EARLIEST_PLAUSIBLE, DayError
from desq.source.marker import future_rows
from desq.source.table import SourceTable

EXAMPLES = 5


@dataclass
class DayAudit:
    """What desq found in the created_at column, per kind of problem."""

    read_all: bool = False
    null: int = 0
    unplaced: int = 0
    future: int = 0
    early: int = 0
    examples: dict[str, list[str]] = field(default_factory=lambda: {"null": [], "unplaced": [], "future": [], "early": []})

    def note(self, kind: str, text: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.examples[kind]) < EXAMPLES:
            self.examples[kind].append(text)

    def lines(self) -> list[str]:
        """The report, one line each (examples indented)."""
        how = "every row read" if self.read_all else "counted in SQL"
        out = [f"created_at ({how}): {self.null} NULL, {self.unplaced} not placeable on a day, {self.future} in the future, {self.early} before {EARLIEST_PLAUSIBLE.year}"]
        labels = {"null": "NULL (never archived)", "unplaced": "no day (never archived)", "future": "in the future (archived once old enough)", "early": f"before {EARLIEST_PLAUSIBLE.year} (archived under that day: a placeholder?)"}
        for kind, label in labels.items():
            for example in self.examples[kind]:
                out.append(f"  {label}: {example}")
        return out


def audit_days(source: SourceTable, today: date) -> DayAudit:
    """Look at every row's created_at as the marker, planner and cutoff will."""
    c = source.columns
    audit = DayAudit(read_all=not source.created.exact)
    audit.null, ids = source.null_created_at(examples=EXAMPLES)
    audit.examples["null"] = [f"id {i}" for i in ids]
    if audit.read_all:
        query = sa.select(c.id, source.created_read).where(c.created_at.is_not(None))
        for batch in source.batches(query, source.settings.source.batch_size):
            for row_id, value in batch:
                try:
                    day = source.day_of(value)
                except DayError as exc:
                    audit.note("unplaced", f"id {row_id}: {exc}")
                    continue
                if day > today:
                    audit.note("future", f"id {row_id}: {value!s}")
                elif day < EARLIEST_PLAUSIBLE:
                    audit.note("early", f"id {row_id}: {value!s}")
        return audit
    for row_id, value in future_rows(source, today):
        audit.note("future", f"id {row_id}: {value!s}")
    early = sa.select(c.id, source.created_read).where(source.day_range(None, date(EARLIEST_PLAUSIBLE.year - 1, 12, 31)))
    for batch in source.batches(early, source.settings.source.batch_size):
        for row_id, value in batch:
            audit.note("early", f"id {row_id}: {value!s}")
    return audit


def count_on_days(source: SourceTable, first: date | None, last: date | None, *where: sa.ColumnElement[bool]) -> int:
    """Rows whose day is in ``first``..``last`` (None: open): counted in SQL where it is exact."""
    if source.created.exact:
        return source.count(source.day_range(first, last), *where)
    query = sa.select(source.columns.id, source.created_read).where(source.day_range(first, last), *where)
    count = 0
    for batch in source.batches(query, source.settings.source.batch_size):
        for _, value in batch:
            try:
                day = source.day_of(value)
            except DayError:
                continue
            count += (first is None or day >= first) and (last is None or day <= last)
    return count
