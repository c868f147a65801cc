"""The Celery tasks: thin wrappers around desq.pipeline (each reads like a few library calls)."""

from __future__ import annotations

import functools
import json
import time
from datetime import date, datetime
from typing import Any

from celery import chord, states
from celery.backends.base import BaseKeyValueStoreBackend
from celery.result import AsyncResult
from celery.utils.log import get_task_logger
from sqlalchemy.exc import OperationalError

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

TRANSIENT = (StorageUnavailable, OriginalsUnavailable, OperationalError, LeaseLost)
"""Worth trying again later; any other failure is the data's and is reported, not retried."""
MAX_RETRIES = 6
WATCH_SECONDS = 2 * 86400
"""watch_nights looks after a night this long at most."""
logger = get_task_logger(__name__)


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
    """Mark (name mode), plan, fan out one pack_shard per (date, shard), then finish_night once."""
    day = _day(today)
    marker = deployment().mode.mark(deployment().source, day)
    marked = marker.summary() if marker else ""
    plan = night.plan_night(deployment(), day)
    notes = night.plan_notes(plan, marker)
    header = []
    for work in plan.work:
        rows = plan.rows.get((work.date, work.shard)) if plan.rows is not None else None
        payload = [[r.id, r.name, r.created_at.isoformat() if r.created_at else None, r.path] for r in rows] if rows is not None else None
        header.append(pack_shard.s(date=work.date.isoformat(), shard=work.shard, rows=payload))
    if header:
        result = chord(header)(finish_night.s(today=day.isoformat(), notes=notes))
        _watch(day.isoformat(), result, [(w.date.isoformat(), w.shard) for w in plan.work], notes)
    else:
        finish_night.delay([], today=day.isoformat(), notes=notes)
    return {"marked": marked, "tasks": len(header), "files": plan.files}


WATCHED = "desq-nights-watched"
"""Result-backend key: the nights whose chords watch_nights looks after until they finish."""


def _watch_key(today: str) -> str:
    return f"desq-night-watch-{today}"


def _watch(today: str, result: AsyncResult, work: list[tuple[str, int]], notes: dict[str, Any]) -> None:
    """Remember which task packs which (date, shard) of the night's chord, for watch_nights."""
    if not isinstance(app.backend, BaseKeyValueStoreBackend):
        return
    group = result.parent
    tasks = [[child.id, day, shard] for child, (day, shard) in zip(group.results, work, strict=True)]
    record = {"group": group.id, "callback": result.id, "tasks": tasks, "since": time.time(), "notes": notes}
    app.backend.set(_watch_key(today), json.dumps(record))
    watched = set(json.loads(app.backend.get(WATCHED) or "[]"))
    app.backend.set(WATCHED, json.dumps(sorted(watched | {today})))


def _queues_empty() -> bool:
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        for queue in settings().layout.queue_names():
            try:
                if channel.queue_declare(queue=queue, passive=True).message_count:
                    return False
            except conn.channel_errors:  # Redis drops an emptied list: "no queue" is an empty one
                channel = conn.channel()
        return True


def _watch_night(today: str) -> str:
    raw = app.backend.get(_watch_key(today))
    if raw is None:
        return "done"
    finished = state().get(f"night:{today}:finished")
    record = json.loads(raw)
    if finished or time.time() - record["since"] > WATCH_SECONDS:
        app.backend.delete(_watch_key(today))
        return "done" if finished else "gave up"
    if not _queues_empty():
        return "waiting"
    callback = finish_night.s(today=today, notes=record.get("notes")).set(task_id=record["callback"], group_id=record["group"])
    resent = 0
    for index, (task_id, day, shard) in enumerate(record["tasks"]):
        if AsyncResult(task_id, app=app).state == states.PENDING:
            pack_shard.apply_async(kwargs={"date": day, "shard": shard, "rows": None}, task_id=task_id, group_id=record["group"], group_index=index, chord=callback)
            resent += 1
    if resent:
        logger.warning("night %s: sent %d lost pack_shard task(s) again", today, resent)
    return f"sent {resent} again"


@app.task(name="desq.watch_nights")
def watch_nights() -> dict[str, str]:
    """(beat, every lease_seconds) Send again the pack_shard messages a night's broker lost, so its
    chord, and with it finish_night, completes.

    The Redis transport pops a message before the worker has recorded it as unacknowledged: a
    Redis restart in between loses it, its rows left READY. Once every shard queue is empty, a
    task of an unfinished night that never started (PENDING) was lost, and is sent again under its
    own id and place in the chord. A duplicate is harmless: packing is idempotent under its lease,
    and the chord counts each task id once.
    """
    if not isinstance(app.backend, BaseKeyValueStoreBackend):
        return {}
    watched = json.loads(app.backend.get(WATCHED) or "[]")
    seen = {}
    for today in watched:
        try:
            seen[today] = _watch_night(today)
        except Exception as exc:  # noqa: BLE001 - the broker or a database is down: look again next time
            seen[today] = f"cannot look now: {exc!r}"
    still = [t for t in watched if seen[t] not in ("done", "gave up")]
    if still != watched:
        app.backend.set(WATCHED, json.dumps(still))
    return seen


@app.task(name="desq.pack_shard", bind=True, max_retries=MAX_RETRIES)
def pack_shard(self: Any, date: str, shard: int, rows: list[list[Any]] | None = None) -> dict[str, Any]:
    """Pack one (date, shard). Busy leases and transient failures are retried with backoff; a
    definitive failure is returned (not raised), so the night's chord still finishes."""
    day = date_from(date)
    where = {"worker": self.request.hostname, "queue": (self.request.delivery_info or {}).get("routing_key", "")}
    try:
        report = packer().pack(day, shard, _rows(rows, day, shard))
    except TRANSIENT as exc:
        if self.request.retries < self.max_retries:
            raise self.retry(exc=exc, countdown=min(900, 15 * 2**self.request.retries)) from exc
        report = PackReport.failed(day, shard, settings().shard_bits, f"gave up after retries: {exc}")
    except Exception as exc:  # noqa: BLE001 - PackFailed and other bad data: reported, never retried
        report = PackReport.failed(day, shard, settings().shard_bits, str(exc))
    if report.status == "busy" and self.request.retries < self.max_retries:
        raise self.retry(countdown=settings().pipeline.lease_seconds)
    return report.as_dict() | where


@app.task(name="desq.finish_night")
def finish_night(results: list[dict[str, Any]], today: str, notes: dict[str, Any] | None = None) -> dict[str, Any]:
    """After every shard of a night: the cutoff step (uid mode) and the summary, recorded once."""
    summary = night.finish(deployment(), _day(today), results, notes)
    state().record_night(today, summary, results)
    return summary


@app.task(name="desq.recover")
def recover() -> str:
    return night.recover(settings()).summary()
