"""uid mode's one piece of state: ARCHIVE_CUTOFF_DATE, and the controller that moves it.

Every file created on or before the cutoff is in its container; reads of later files go to the
original. The date lives in a small table of desq's own (``desq_state``, in the source database
unless ``state.db_url`` says otherwise) and is published beside the containers as
``_desq/cutoff.json``, so the files API needs no database. It only moves forward, one day at a
time, over days whose every source row is found in its container's index.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from desq.archive import Archive
from desq.container import ContainerError
from desq.errors import DesqError
from desq.layout import LAYOUT_VERSION, container_key
from desq.source.plan import UidReadReport, target_day, uid_rows
from desq.source.table import SourceTable, create_engine, first_line, masked
from desq.storage import NotFound, Storage

CUTOFF_KEY = "archive_cutoff_date"
PUBLISHED = "_desq/cutoff.json"
"""Where the cutoff is published under the archive url."""

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


def publish(storage: Storage, cutoff: date | None) -> None:
    """Write the cutoff beside the containers for the files API."""
    body = {"cutoff_date": cutoff.isoformat() if cutoff else None, "layout_version": LAYOUT_VERSION, "published_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    storage.put(PUBLISHED, json.dumps(body).encode(), content_type="application/json")


def read_published(storage: Storage) -> date | None:
    """The cutoff the controller last published (None: nothing is archived yet)."""
    try:
        data, info = storage.read_suffix(PUBLISHED, 4096)
    except NotFound:
        return None
    try:
        value = json.loads(data)["cutoff_date"]
        return date.fromisoformat(value) if value else None
    except (ValueError, KeyError, TypeError):
        raise DesqError(f"{PUBLISHED} under the archive is not a cutoff document") from None


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

    def summary(self) -> str:
        moved = f"cutoff {self.before} -> {self.after}" if self.after != self.before else f"cutoff stays at {self.after}"
        text = f"{moved} (target {self.target}; {self.checked_rows} rows on {self.checked_days} days checked)"
        if self.blocked_day:
            text += f"; {self.blocked_day} has {self.missing} file(s) not in their containers, e.g. {', '.join(self.examples[:3])}"
        return text


def _first_day(source: SourceTable) -> date | None:
    """The day of the earliest readable created_at (unreadable values are skipped)."""
    c = source.columns
    query = sa.select(source.created_read).where(c.created_at.is_not(None)).order_by(c.created_at).limit(1000)
    with source.engine.connect() as conn:
        for (value,) in conn.execute(query):
            day = source.day_of(value)
            if day is not None:
                return day
    return None


def _missing_on(source: SourceTable, archive: Archive, day: date, report: AdvanceReport) -> int:
    """Rows of ``day`` not found in their containers (each container's names read once)."""
    unread = UidReadReport()
    by_shard: dict[int, list[str]] = defaultdict(list)
    for row in uid_rows(source, day, day, unread):
        by_shard[row.shard].append(row.name)
        report.checked_rows += 1
    missing = unread.unplanned
    report.examples.extend(unread.problems[:3])
    bits = source.layout.shard_bits
    for shard, names in by_shard.items():
        key = container_key(day, shard, bits)
        try:
            present = {m.name for m in archive.open(key).members()}
        except NotFound:
            present = set()
        except ContainerError as exc:
            raise DesqError(f"cannot check {key}: {exc}") from None
        absent = [n for n in names if n not in present]
        missing += len(absent)
        report.examples.extend(f"{n} ({key})" for n in absent[: max(0, 5 - len(report.examples))])
    return missing


def advance(source: SourceTable, state: StateStore, archive: Archive, *, today: date) -> AdvanceReport:
    """Move the cutoff forward over every day whose rows are all in their containers, then publish."""
    before = state.cutoff()
    target = target_day(today, source.settings.archive.after_days)
    report = AdvanceReport(before=before, after=before, target=target)
    day = before + timedelta(days=1) if before else _first_day(source)
    while day is not None and day <= target:
        report.checked_days += 1
        missing = _missing_on(source, archive, day, report)
        if missing:
            report.blocked_day, report.missing = day, missing
            break
        state.set_cutoff(day)
        report.after = day
        day += timedelta(days=1)
    publish(archive.storage, report.after)
    return report
