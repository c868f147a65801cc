"""Watching a night's chord: ``watch_nights`` sends again the pack_shard messages a broker lost.

``nightly`` calls ``remember_night`` after sending a night's chord; beat runs ``watch_nights``
every ``pipeline.lease_seconds`` (``tasks.celeryconf``'s schedule).
"""

from __future__ import annotations

import json
import time

from celery import states
from celery.backends.base import BaseKeyValueStoreBackend
from celery.result import AsyncResult
from celery.utils.log import get_task_logger

from tasks.app import app

WATCH_SECONDS = 2 * 86400
"""watch_nights looks after a night this long at most."""
WATCHED = "desq-nights-watched"
"""Result-backend key: the nights whose chords watch_nights looks after until they finish."""
logger = get_task_logger(__name__)


def _watch_key(today: str) -> str:
    return f"desq-night-watch-{today}"


def remember_night(today: str, result: AsyncResult, work: list[tuple[str, int]]) -> None:
    """Remember which task packs which (date, shard) of the night's chord, for watch_nights."""
    if not isinstance(app.backend, BaseKeyValueStoreBackend):
        return
    group = result.parent
    tasks = [[child.id, day, shard] for child, (day, shard) in zip(group.results, work, strict=True)]
    record = {"group": group.id, "callback": result.id, "tasks": tasks, "since": time.time()}
    app.backend.set(_watch_key(today), json.dumps(record))
    watched = set(json.loads(app.backend.get(WATCHED) or "[]"))
    app.backend.set(WATCHED, json.dumps(sorted(watched | {today})))


def _queues_empty(queues: list[str]) -> bool:
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        for queue in queues:
            try:
                if channel.queue_declare(queue=queue, passive=True).message_count:
                    return False
            except conn.channel_errors:  # Redis drops an emptied list: "no queue" is an empty one
                channel = conn.channel()
        return True


def _watch_night(today: str) -> str:
    # Imported here: tasks.pipeline imports this module (nightly calls remember_night).
    from tasks.pipeline import finish_night, pack_shard, settings, state

    raw = app.backend.get(_watch_key(today))
    if raw is None:
        return "done"
    finished = state().night_runs(today)
    record = json.loads(raw)
    if finished or time.time() - record["since"] > WATCH_SECONDS:
        app.backend.delete(_watch_key(today))
        return "done" if finished else "gave up"
    if not _queues_empty(settings().layout.queue_names()):
        return "waiting"
    callback = finish_night.si(today=today, tasks=len(record["tasks"])).set(task_id=record["callback"], group_id=record["group"])
    resent = 0
    for index, (task_id, day, shard) in enumerate(record["tasks"]):
        if AsyncResult(task_id, app=app).state == states.PENDING:
            pack_shard.apply_async(kwargs={"date": day, "shard": shard, "night": today}, task_id=task_id, group_id=record["group"], group_index=index, chord=callback)
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
