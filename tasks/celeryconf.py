"""Celery's configuration, derived from desq's settings (pure: no I/O).

``celeryconfig.py`` at the top of the repository is a thin shim over ``celery_config``, so the
broker, result backend, queues and time zone come from the same settings as everything else.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from celery.backends.redis import RedisBackend
from celery.schedules import crontab
from kombu import Exchange, Queue

from desq.layout import Layout
from desq.settings import Settings, data_path

CONTROL_QUEUE = "desq"
"""Queue of the tasks that are not per shard: nightly, finish_night, recover, watch_nights."""


PACK_TASK = "desq.pack_shard"
TASK_TIME_LIMIT = 4 * 3600
"""Hard limit of one task; the Redis visibility timeout is set above it, so no running task is
ever redelivered to a second worker while the first still works on it (celery#5935, #3430)."""
VISIBILITY_TIMEOUT = TASK_TIME_LIMIT + 3600
RESULT_RETRIES = 100
"""Attempts to store a task's result (or count it in its chord) while Redis is unreachable (backoff up to 10 s each)."""
PUBLISH_RETRY_POLICY = {"max_retries": 60, "interval_start": 0, "interval_step": 0.5, "interval_max": 2}
"""Sending a task (the night's fan-out, the chord's finish_night) waits up to about two minutes for the broker."""

REDIS_RESULT_BACKEND = "tasks.celeryconf:RedisResultBackend"
logger = logging.getLogger(__name__)


class RedisResultBackend(RedisBackend):
    """Celery's Redis result backend, whose chord bookkeeping also waits out a Redis restart.

    Celery retries storing a result (``result_backend_always_retry``) but not counting the task in
    its chord: a connection error there turned a packed shard into a failed chord member, and the
    night's finish_night never ran. Counting is idempotent per task (Celery's script records each
    task id once), so it is retried like a result. ``tasks.app`` installs this for redis:// URLs.
    """

    def on_chord_part_return(self, request: Any, state: str, result: Any, **kwargs: Any) -> Any:
        for attempt in range(1, RESULT_RETRIES + 1):
            try:
                return super().on_chord_part_return(request, state, result, **kwargs)
            except self.connection_errors as exc:
                if attempt == RESULT_RETRIES:
                    raise
                logger.warning("counting task %s in its chord failed (%r); retrying", getattr(request, "id", "?"), exc)
                time.sleep(min(10.0, 0.1 * 2**attempt))
        raise AssertionError("unreachable")


class ShardRouter:
    """Celery router: ``pack_shard(date, shard)`` goes to the queue of its shard; others to ``desq``."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def __call__(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any], task: Any = None, **_: Any) -> dict[str, str] | None:
        if name != PACK_TASK:
            return None
        shard = kwargs["shard"] if kwargs and "shard" in kwargs else args[1]
        return {"queue": self.layout.queue_of(int(shard))}


def embedded_broker_folders(settings: Settings) -> dict[str, Path]:
    """The folders of the embedded (kombu filesystem) broker and results, absolute."""
    root = data_path(settings, "broker").resolve()
    return {
        "data_folder_in": root / "messages",
        "data_folder_out": root / "messages",
        "control_folder": root / "control",
        "processed_folder": root / "processed",
        "results": data_path(settings, "results").resolve(),
    }


def broker_and_backend(settings: Settings) -> tuple[str, dict[str, Any], str]:
    """``(broker_url, broker_transport_options, result_backend)`` for these settings."""
    url, backend = settings.broker.url, settings.broker.result_backend
    if url:
        if not backend and url.startswith(("redis://", "rediss://")):
            backend = url
        return url, ({"visibility_timeout": VISIBILITY_TIMEOUT} if url.startswith(("redis://", "rediss://")) else {}), backend
    folders = embedded_broker_folders(settings)
    options = {k: str(v) for k, v in folders.items() if k != "results"}
    options["store_processed"] = False
    return "filesystem://", options, backend or folders["results"].as_uri()


def celery_config(settings: Settings) -> dict[str, Any]:
    """Every Celery setting desq sets, as the lowercase names Celery reads."""
    broker_url, transport_options, result_backend = broker_and_backend(settings)
    shard_queues = [
        Queue(name, Exchange(name, type="direct"), routing_key=name)
        for name in settings.layout.queue_names()
    ]
    return {
        "broker_url": broker_url,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "result_backend": result_backend,
        "result_extended": True,
        "task_queues": [Queue(CONTROL_QUEUE, Exchange(CONTROL_QUEUE, type="direct"), routing_key=CONTROL_QUEUE), *shard_queues],
        "task_default_queue": CONTROL_QUEUE,
        "task_default_exchange": CONTROL_QUEUE,
        "task_default_routing_key": CONTROL_QUEUE,
        # A task sent to an undeclared queue is a bug (a typo, a wrong shard width): fail loudly.
        "task_create_missing_queues": False,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "timezone": settings.timezone,
        "enable_utc": True,
        # Packing is long and must survive a worker dying mid-task: acknowledge only when done.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": TASK_TIME_LIMIT,
        "task_soft_time_limit": TASK_TIME_LIMIT - 300,
        "task_routes": (ShardRouter(settings.layout),),
        "task_track_started": True,
        "result_expires": 7 * 86400,
        # A result stored while Redis restarts waits for it to come back, instead of the finished task
        # being lost (its message stuck unacknowledged for the visibility timeout, its chord never done).
        "result_backend_always_retry": True,
        "result_backend_max_retries": RESULT_RETRIES,
        "task_publish_retry_policy": PUBLISH_RETRY_POLICY,
        # Events for Flower.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        # Beat's schedule state goes with desq's other local state, not into its working directory.
        "beat_schedule_filename": str(data_path(settings, "celerybeat-schedule").resolve()),
        "beat_schedule": {
            "nightly": {"task": "desq.nightly", "schedule": crontab(minute=0, hour=0)},
            "recover": {"task": "desq.recover", "schedule": crontab(minute=30)},
            # Sends again what a broker restart lost of a night's pack_shard messages (tasks.watch).
            "watch_nights": {"task": "desq.watch_nights", "schedule": float(max(5, settings.pipeline.lease_seconds))},
        },
    }
