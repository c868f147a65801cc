"""uid mode's one piece of state: ARCHIVE_CUTOFF_DATE, and the controller that moves it.

Every file created on or before the cutoff is in its container; reads of later files go to the
original. The date lives in a small table of desq's own (``desq_state``, in the source database
unless ``state.db_url`` says otherwise) and is published beside the containers as
``_desq/cutoff.json``, so the files API needs no database. It only moves forward, over days whose
every source row is found in its container's index.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from desq.archive import Archive
from desq.errors import DesqError
from desq.layout import LAYOUT_VERSION, container_key
from desq.days import next_day, shifted, target_day
from desq.pipeline.present import Presence, Unreadable
from desq.source.plan import UidReadReport, uid_rows
from desq.source.table import SourceTable, create_engine, first_line, masked
from desq.storage import NotFound, Storage

CUTOFF_KEY = "archive_cutoff_date"
PUBLISHED = "_desq/cutoff.json"
"""Where the cutoff is published under the archive url."""
NIGHT = "_desq/night.json"
"""The last night's summary, published under the archive url."""

_metadata = sa.MetaData()
STATE = sa.Table(
    "desq_state",
    _metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)


def create_tables(engine: Engine, tables: list[sa.Table]) -> None:
    """Create desq's own ``tables`` where missing. Packers starting together race to create them:
    the loser's error (a duplicate table or type) is no error once the tables are there."""
    for attempt in range(1, 4):
        try:
            _metadata.create_all(engine, tables=tables, checkfirst=True)
            return
        except SQLAlchemyError:
            inspector = sa.inspect(engine)
            if all(inspector.has_table(t.name, schema=t.schema) for t in tables):
                return
            if attempt == 3:
                raise
            # Someone else created some of them meanwhile (our transaction rolled back): again.


class StateStore:
    """desq's own small key-value table (created by desq; the business table is never touched)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        try:
            create_tables(engine, [STATE])
        except SQLAlchemyError as exc:
            raise DesqError(f"cannot create desq's state table in {masked(str(engine.url))}: {first_line(exc)}") from None

    @classmethod
    def connect(cls, url: str) -> StateStore:
        return cls(create_engine(url))

    def get(self, key: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(STATE.c.value).where(STATE.c.key == key)).scalar_one_or_none()

    def set(self, key: str, value: str) -> None:
        now = datetime.now(timezone.utc)
        with self.engine.begin() as conn:
            updated = conn.execute(sa.update(STATE).where(STATE.c.key == key).values(value=value, updated_at=now)).rowcount
            if not updated:
                conn.execute(sa.insert(STATE).values(key=key, value=value, updated_at=now))

    def cutoff(self) -> date | None:
        value = self.get(CUTOFF_KEY)
        return date.fromisoformat(value) if value else None

    def set_cutoff(self, day: date) -> None:
        current = self.cutoff()
        if current is not None and day < current:
            raise DesqError(f"the cutoff only moves forward: {day} is before {current}")
        self.set(CUTOFF_KEY, day.isoformat())


def publish(storage: Storage, cutoff: date | None, report: AdvanceReport | None = None) -> None:
    """Write the cutoff beside the containers for the files API (with what holds it, if anything)."""
    body: dict[str, object] = {"cutoff_date": cutoff.isoformat() if cutoff else None, "layout_version": LAYOUT_VERSION, "published_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if report is not None:
        body |= {
            "target_date": report.target.isoformat(),
            "blocked_day": report.blocked_day.isoformat() if report.blocked_day else None,
            "missing": report.missing,
            "examples": [e[:300] for e in report.examples[:5]],
        }
    storage.put(PUBLISHED, json.dumps(body).encode(), content_type="application/json")


def read_document(storage: Storage) -> dict[str, object] | None:
    """The cutoff document as the controller last published it (None: nothing is archived yet)."""
    try:
        data, _ = storage.read_suffix(PUBLISHED, 1 << 16)
    except NotFound:
        return None
    try:
        body = json.loads(data)
        value = body["cutoff_date"]
        if value is not None:
            date.fromisoformat(value)
        return body if isinstance(body, dict) else None
    except (ValueError, KeyError, TypeError):
        raise DesqError(f"{PUBLISHED} under the archive is not a cutoff document") from None


def read_night(storage: Storage) -> dict[str, object] | None:
    """The summary the last night published (None before the first night)."""
    try:
        data, _ = storage.read_suffix(NIGHT, 1 << 20)
        body = json.loads(data)
    except NotFound:
        return None
    except ValueError:
        raise DesqError(f"{NIGHT} under the archive is not a night's summary") from None
    return body if isinstance(body, dict) else None


def read_published(storage: Storage) -> date | None:
    """The cutoff the controller last published (None: nothing is archived yet)."""
    body = read_document(storage)
    value = body.get("cutoff_date") if body else None
    return date.fromisoformat(str(value)) if value else None


@dataclass
class AdvanceReport:
    """How far the cutoff moved, and what stopped it."""

    before: date | None
    after: date | None
    target: date
    checked_days: int = 0
    checked_rows: int = 0
    blocked_day: date | None = None
    missing: int = 0
    examples: list[str] = field(default_factory=list)
    unplaced: int = 0
    """Rows read whose created_at has no day: they are in no container and block no day."""
    unplaced_examples: list[str] = field(default_factory=list)
    moved: bool = True
    """False for a check that only says how far the cutoff could move."""

    @property
    def lag_days(self) -> int | None:
        """Days the cutoff is behind its target (None before anything is archived)."""
        return None if self.after is None else max(0, (self.target - self.after).days)

    def summary(self) -> str:
        if self.after == self.before:
            moved = f"cutoff stays at {self.after}"
        else:
            moved = f"cutoff {self.before} -> {self.after}" if self.moved else f"cutoff {self.before} could move to {self.after} (desq cutoff --advance)"
        text = f"{moved} (target {self.target}; {self.checked_rows} rows on {self.checked_days} days checked)"
        if self.blocked_day:
            text += f"; blocked by {self.blocked_day}: {self.missing} file(s) not in their containers, e.g. {'; '.join(self.examples[:3])}"
        if self.unplaced:
            text += f"; {self.unplaced} row(s) whose created_at has no day, e.g. {'; '.join(self.unplaced_examples[:3])}"
        return text


def _examples(report: AdvanceReport, items: Iterable[str]) -> None:
    for item in items:
        if len(report.examples) >= 5:
            return
        report.examples.append(item)


def advance(source: SourceTable, state: StateStore, archive: Archive, *, today: date, move: bool = True) -> AdvanceReport:
    """Move the cutoff forward over every day whose rows are all in their containers, then publish.

    The rows after the cutoff are read once; a day with no rows holds nothing back, so a created_at
    in the year 1 costs one day's check, not two thousand years of them. With ``move=False`` it only
    says how far the cutoff could move and what blocks it."""
    before = state.cutoff()
    target = target_day(today, source.settings.archive.after_days)
    report = AdvanceReport(before=before, after=before, target=target, moved=move)
    if before is None or before < target:
        _check(source, archive, report, None if before is None else next_day(before))
    if move:
        if report.after is not None and report.after != before:
            state.set_cutoff(report.after)
        publish(archive.storage, report.after, report)
    return report


def _check(source: SourceTable, archive: Archive, report: AdvanceReport, first: date | None) -> None:
    unread = UidReadReport()
    by_day: dict[date, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    for row in uid_rows(source, first, report.target, unread):
        by_day[row.date][row.shard].append(row.name)
        report.checked_rows += 1
    report.checked_rows += unread.unplanned
    report.unplaced, report.unplaced_examples = unread.unplaced_rows, unread.unplaced_examples
    days = sorted(set(by_day) | set(unread.by_day))
    if not days and report.before is None:
        return  # nothing to archive yet: no cutoff to claim
    presence = Presence(archive, source.layout.shard_bits)
    bits = source.layout.shard_bits
    complete: date | None = None
    for day in days:
        report.checked_days += 1
        missing = unread.by_day[day]
        _examples(report, unread.day_problems.get(day, []))
        for shard, names in sorted(by_day[day].items()):
            key = container_key(day, shard, bits)
            try:
                absent = presence.missing(day, shard, names)
            except Unreadable as exc:
                absent = names
                _examples(report, [str(exc)])
            missing += len(absent)
            _examples(report, (f"{n} (looked in {key})" for n in absent))
        if missing:
            report.blocked_day, report.missing = day, missing
            previous = shifted(day, -1)
            if previous is not None and (complete is not None or (report.before is not None and previous > report.before)):
                report.after = previous
            return
        complete = day
    report.after = report.target
