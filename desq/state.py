"""desq's own tables: the key-value state (uid mode's cutoff, night records), the leases and the
night's spool (``desq.spool``).

They live in ``state.db_url``, else in the source database beside the business table (which desq
never alters; ``Deployment.state_engine`` decides). Packers starting together may race to create
them; that is no error.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import date, datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from desq.errors import DesqError
from desq.source.table import first_line, masked

CUTOFF_KEY = "archive_cutoff_date"

METADATA = sa.MetaData()
STATE = sa.Table(
    "desq_state",
    METADATA,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
LEASE = sa.Table(
    "desq_lease",
    METADATA,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(255), nullable=False),
    sa.Column("token", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)
SPOOL = sa.Table(
    "desq_spool",
    METADATA,
    sa.Column("night", sa.String(10), primary_key=True),
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("shard", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("id_int", sa.BigInteger),
    sa.Column("id_text", sa.Text),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("created_at", sa.String(40)),
    sa.Column("path", sa.Text, nullable=False),
)


def create_tables(engine: Engine, tables: list[sa.Table]) -> None:
    """Create desq's own ``tables`` where missing. Packers starting together race to create them:
    the loser's error (a duplicate table or type) is no error once the tables are there. SQLite
    answers "database is locked" at once, without waiting its busy timeout, when a transaction
    that began by reading (the check for the tables) goes on to write after another process
    wrote: that is tried again after a pause, up to ~13 s in all."""
    attempts = 8
    for attempt in range(1, attempts + 1):
        try:
            METADATA.create_all(engine, tables=tables, checkfirst=True)
            return
        except SQLAlchemyError:
            inspector = sa.inspect(engine)
            if all(inspector.has_table(t.name, schema=t.schema) for t in tables):
                return
            if attempt == attempts:
                raise
            # Someone else created some of them, or wrote, meanwhile (our transaction rolled back): again.
            time.sleep(0.05 * 2**attempt)


def _pack_key(night: str, day: str, shard: str) -> str:
    return f"pack:{night}:{day}:{shard}"


def _finished_key(today: str) -> str:
    return f"night:{today}:finished"


class StateStore:
    """desq's own small key-value table (created by desq; the business table is never touched)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        try:
            create_tables(engine, [STATE])
        except SQLAlchemyError as exc:
            raise DesqError(f"cannot create desq's state table in {masked(str(engine.url))}: {first_line(exc)}") from None

    def get(self, key: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(STATE.c.value).where(STATE.c.key == key)).scalar_one_or_none()

    def set(self, key: str, value: str) -> None:
        self.set_many({key: value})

    def set_many(self, values: dict[str, str]) -> None:
        """Set every key in one transaction: a reader sees all of them or none."""
        now = datetime.now(timezone.utc)
        with self.engine.begin() as conn:
            for key, value in values.items():
                updated = conn.execute(sa.update(STATE).where(STATE.c.key == key).values(value=value, updated_at=now)).rowcount
                if not updated:
                    conn.execute(sa.insert(STATE).values(key=key, value=value, updated_at=now))

    def cutoff(self) -> date | None:
        """uid mode's ARCHIVE_CUTOFF_DATE (None before anything is archived)."""
        value = self.get(CUTOFF_KEY)
        return date.fromisoformat(value) if value else None

    def set_cutoff(self, day: date) -> None:
        current = self.cutoff()
        if current is not None and day < current:
            raise DesqError(f"the cutoff only moves forward: {day} is before {current}")
        self.set(CUTOFF_KEY, day.isoformat())

    def record_pack(self, night: str, report: dict[str, Any]) -> None:
        """Keep one pack_shard report of ``night`` for its finish (the chord then passes only a
        receipt, so finish_night's message stays small however many containers a night has)."""
        self.set(_pack_key(night, report["date"], report["shard"]), json.dumps(report))

    def night_packs(self, night: str) -> dict[tuple[str, str], dict[str, Any]]:
        """The reports kept for ``night``, by (date, shard)."""
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(STATE.c.value).where(STATE.c.key.startswith(_pack_key(night, "", "")[:-1], autoescape=True))).scalars().all()
        reports = [json.loads(v) for v in found]
        return {(r["date"], r["shard"]): r for r in reports}

    def forget_packs(self, night: str) -> None:
        """Drop the reports kept for ``night`` (its summary is recorded)."""
        with self.engine.begin() as conn:
            conn.execute(sa.delete(STATE).where(STATE.c.key.startswith(_pack_key(night, "", "")[:-1], autoescape=True)))

    def record_notes(self, night: str, notes: dict[str, Any]) -> None:
        """Keep what the plan of ``night`` says (rows left out, with examples) for its finish."""
        self.set(f"night:{night}:notes", json.dumps(notes))

    def night_notes(self, night: str) -> dict[str, Any]:
        """The plan's notes kept for ``night`` ({} if none were)."""
        value = self.get(f"night:{night}:notes")
        return json.loads(value) if value else {}

    def record_night(self, today: str, summary: dict[str, Any], packs: list[dict[str, Any]]) -> int:
        """Keep a night's summary (with who packed each container); how often it has finished."""
        runs = self.night_runs(today) + 1
        packed_by = {p["container"]: {"worker": p.get("worker", ""), "queue": p.get("queue", ""), "status": p.get("status")} for p in packs if p.get("container")}
        # One transaction: whoever sees the night finished also finds its summary.
        self.set_many({f"night:{today}:summary": json.dumps(summary | {"packed_by": packed_by}), _finished_key(today): str(runs)})
        return runs

    def night_runs(self, today: str) -> int:
        """How many times the night of ``today`` has finished (0: not yet)."""
        return int(self.get(_finished_key(today)) or 0)

    def night_finished_at(self, today: str) -> datetime | None:
        """When the night of ``today`` last finished (None: not yet)."""
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(STATE.c.updated_at).where(STATE.c.key == _finished_key(today))).scalar_one_or_none()
        return value if value is None or value.tzinfo else value.replace(tzinfo=timezone.utc)

    def night_summary(self, today: str) -> dict[str, Any] | None:
        """The recorded summary of the night of ``today`` (None before it finished)."""
        value = self.get(f"night:{today}:summary")
        return json.loads(value) if value else None


def wait_for_night(state: StateStore, today: str, timeout: float, *, runs: int = 1, poll: float = 0.5, check: Callable[[], None] | None = None) -> datetime:
    """Wait until the night of ``today`` has finished ``runs`` times; when it last finished.

    ``check`` runs every round (a harness raises there when a worker died or to show progress);
    a database that does not answer for a while is waited out; TimeoutError once ``timeout``
    seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        if check is not None:
            check()
        try:
            done = state.night_runs(today) >= runs
        except DBAPIError:
            done = False
        if done:
            finished = state.night_finished_at(today)
            assert finished is not None
            return finished
        if time.monotonic() > deadline:
            raise TimeoutError(f"the night {today} did not finish within {timeout:.0f} s")
        time.sleep(poll)
