"""What the night publishes beside the containers, so the read side needs no database.

``_desq/cutoff.json``: uid mode's cutoff and what holds it back; ``_desq/night.json``: the last
night's summary. Written and read through ``Storage`` only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

from desq.errors import DesqError
from desq.layout import LAYOUT_VERSION
from desq.storage import NotFound, Storage

PUBLISHED = "_desq/cutoff.json"
"""Where the cutoff is published under the archive url."""
NIGHT = "_desq/night.json"
"""The last night's summary, published under the archive url."""
UNREPORTED = "unreported"
"""A night summary's status of a pack_shard task that left no report (``by_status``)."""


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


def publish_night(storage: Storage, summary: dict[str, object]) -> None:
    """Write the night's summary beside the containers (for the files API's metrics)."""
    storage.put(NIGHT, json.dumps(summary).encode(), content_type="application/json")


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


@dataclass(frozen=True, slots=True)
class Published:
    """What the night published beside the containers, for metrics."""

    cutoff_date: date | None
    blocked_day: str | None
    night: dict[str, object] | None


def read_state(storage: Storage) -> Published:
    """The cutoff document and the last night's summary (two small reads)."""
    document = read_document(storage) or {}
    value = document.get("cutoff_date")
    blocked = document.get("blocked_day")
    return Published(date.fromisoformat(str(value)) if value else None, str(blocked) if blocked else None, read_night(storage))
