"""The Celery tasks: thin wrappers around desq.pipeline (each reads like a few library calls)."""

from __future__ import annotations

import functools
import time
from datetime import date, datetime
from typing import Any

from celery import chord
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from desq.deployment import Deployment
from desq.pipeline import night
from desq.pipeline.lease import LeaseLost
from desq.pipeline.pack import Packer, PackReport
from desq.settings import Settings, load_settings
from desq.source.fetch import OriginalsUnavailable
from desq.source.rows import SourceRow
from desq.state import StateStore
from desq.storage import StorageUnavailable
from tasks.app import app
from tasks.watch import remember_night

TRANSIENT = (StorageUnavailable, OriginalsUnavailable, OperationalError, LeaseLost)
"""Worth trying again later; any other failure is the data's and is reported, not retried."""
MAX_RETRIES = 6
BUSY_RETRIES = 30
"""A busy pack is tried again when the holder's lease expires: once for a killed packer's, every 2/3
to 1 lease period while a live packer renews its own; 30 wait out 20 to 30 lease periods of that."""


@functools.cache
def deployment() -> Deployment:
    """This worker process's deployment (its database pools and storage clients are reused)."""
    return Deployment(load_settings())


def settings() -> Settings:
    return deployment().settings


@functools.cache
def packer() -> Packer:
    """One packer per worker process."""
    return deployment().packer(worker=app.current_worker_task.request.hostname if app.current_worker_task else None)


def state() -> StateStore:
    """desq's state table (watch_nights reads it every few seconds)."""
    return deployment().state


def _day(value: str | None) -> date:
    return date.fromisoformat(value) if value else datetime.now(settings().zone).date()


def date_from(text: str) -> date:
    """Parse a task's date argument (the parameter itself is called ``date``, as in the contract)."""
    return date.fromisoformat(text)


def _rows(rows: list[list[Any]] | None, day: date, shard: int) -> list[SourceRow] | None:
    if rows is None:
        return None
    return [SourceRow(id=r[0], name=r[1], created_at=r[2], path=r[3], date=day, shard=shard) for r in rows]


@app.task(name="desq.nightly")
def nightly(today: str | None = None) -> dict[str, Any]:
    """Mark (name mode), plan, fan out one pack_shard per (date, shard), then finish_night once.

    Every message is small whatever the night's size: a pack_shard carries its (date, shard, night),
    and the chord's finish_night only the night and its task count; the rows are in the spool, the
    notes and the reports in desq's state."""
    day = _day(today)
    marker = deployment().mode.mark(deployment().source, day)
    marked = marker.summary() if marker else ""
    plan = night.plan_night(deployment(), day)
    state().record_notes(day.isoformat(), night.plan_notes(plan, marker))
    header = [pack_shard.s(date=work.date.isoformat(), shard=work.shard, night=plan.night) for work in plan.work]
    if header:
        result = chord(header)(finish_night.si(today=day.isoformat(), tasks=len(header)))
        remember_night(day.isoformat(), result, [(w.date.isoformat(), w.shard) for w in plan.work])
    else:
        finish_night.delay(today=day.isoformat(), tasks=0)
    return {"marked": marked, "tasks": len(header), "files": plan.files}


@app.task(name="desq.pack_shard", bind=True, max_retries=MAX_RETRIES)
def pack_shard(self: Any, date: str, shard: int, rows: list[list[Any]] | None = None, night: str | None = None) -> dict[str, Any]:
    """Pack one (date, shard): the rows spooled for ``night`` (the nightly task's), else ``rows``,
    else the source's rows of (date, shard) now. Busy leases and transient failures are retried
    with backoff; a definitive failure is returned (not raised), so the night's chord still finishes."""
    day = date_from(date)
    where = {"worker": self.request.hostname, "queue": (self.request.delivery_info or {}).get("routing_key", "")}
    try:
        report = packer().pack(day, shard, _rows(rows, day, shard), night=night)
    except TRANSIENT as exc:
        if self.request.retries < self.max_retries:
            raise self.retry(exc=exc, countdown=min(900, 15 * 2**self.request.retries)) from exc
        report = PackReport.failed(day, shard, settings().shard_bits, f"gave up after retries: {exc}")
    except Exception as exc:  # noqa: BLE001 - PackFailed and other bad data: reported, never retried
        report = PackReport.failed(day, shard, settings().shard_bits, str(exc))
    if report.status == "busy" and self.request.retries < BUSY_RETRIES:
        raise self.retry(countdown=min(settings().pipeline.lease_seconds + 5, max(1.0, report.retry_in + 2)), max_retries=BUSY_RETRIES)
    return _receipt(night, report.as_dict() | where)


RECEIPT = ("date", "shard", "status", "container", "files", "seconds", "worker", "queue")
"""What a receipt says (also what Flower and the result backend show of a pack)."""


KEEP_ATTEMPTS = 5


def _receipt(night: str | None, result: dict[str, Any]) -> dict[str, Any]:
    """What a night's pack_shard returns: its report is kept in desq's state for finish_night, and
    the result is a receipt of it. A report that cannot be kept (desq's database down for ~15 s) is
    the result itself: finish_night then counts the pack as unreported."""
    if night is None:
        return result
    for attempt in range(KEEP_ATTEMPTS):
        try:
            state().record_pack(night, result)
            return {k: result[k] for k in RECEIPT}
        except SQLAlchemyError:
            if attempt + 1 < KEEP_ATTEMPTS:
                time.sleep(2**attempt)
    return result


@app.task(name="desq.finish_night")
def finish_night(results: list[dict[str, Any]] | None = None, today: str = "", tasks: int | None = None, notes: dict[str, Any] | None = None) -> dict[str, Any]:
    """After every shard of a night: the cutoff step (uid mode) and the summary, recorded once.

    The reports are the ones the night's pack_shard tasks kept in desq's state; ``results`` and
    ``notes`` are read too, from chords sent before they were kept there."""
    reports = night.gather_reports(state().night_packs(today), results or [], tasks)
    notes = state().night_notes(today) if notes is None else notes
    summary = night.finish(deployment(), _day(today), reports, notes)
    state().record_night(today, summary, reports)
    state().forget_packs(today)
    return summary


@app.task(name="desq.recover")
def recover() -> str:
    return night.recover(deployment()).summary()
