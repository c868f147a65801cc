"""Celery's configuration from desq's settings, and real workers on both brokers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tasks.celeryconf import CONTROL_QUEUE, celery_config
from desq.settings import load_settings

BIN = Path(sys.executable).parent


def test_embedded_default_is_the_filesystem_broker(in_tmp: Path) -> None:
    conf = celery_config(load_settings(env={}))
    assert conf["broker_url"] == "filesystem://"
    folder = conf["broker_transport_options"]["data_folder_in"]
    assert Path(folder) == in_tmp.resolve() / "desq-data" / "broker" / "messages"
    assert conf["result_backend"] == (in_tmp.resolve() / "desq-data" / "results").as_uri()


def test_redis_broker_is_also_the_result_backend() -> None:
    conf = celery_config(load_settings(env={"DESQ_BROKER_URL": "redis://cache:6379/0"}))
    assert conf["broker_url"] == conf["result_backend"] == "redis://cache:6379/0"
    # A running task is never redelivered to a second worker: redelivery waits past the time limit.
    assert conf["broker_transport_options"]["visibility_timeout"] > conf["task_time_limit"] > conf["task_soft_time_limit"]
    conf = celery_config(load_settings(env={"DESQ_BROKER_URL": "redis://cache:6379/0", "DESQ_BROKER_RESULT_BACKEND": "redis://other/1"}))
    assert conf["result_backend"] == "redis://other/1"


def test_queues_follow_the_layout() -> None:
    conf = celery_config(load_settings(env={"DESQ_SHARD_BITS": "10", "DESQ_QUEUE_COUNT": "8"}))
    names = [q.name for q in conf["task_queues"]]
    assert names == [CONTROL_QUEUE, *load_settings(env={"DESQ_SHARD_BITS": "10", "DESQ_QUEUE_COUNT": "8"}).layout.queue_names()]
    assert all(q.routing_key == q.name for q in conf["task_queues"])
    assert conf["task_create_missing_queues"] is False and conf["task_default_queue"] == CONTROL_QUEUE


def test_pack_shard_is_routed_to_the_queue_of_its_shard() -> None:
    settings = load_settings(env={})
    (router,) = celery_config(settings)["task_routes"]
    assert router("desq.pack_shard", (), {"date": "2025-11-20", "shard": 0x12}, {}) == {"queue": "shards-00-3f"}
    assert router("desq.pack_shard", ("2025-11-20", 0xC0), {}, {}) == {"queue": "shards-c0-ff"}
    assert router("desq.nightly", (), {}, {}) is None  # the default queue, desq


def test_beat_runs_the_night_at_midnight_and_recovery_hourly() -> None:
    conf = celery_config(load_settings(env={"DESQ_TIMEZONE": "Europe/Warsaw"}))
    schedule = conf["beat_schedule"]
    assert schedule["nightly"]["task"] == "desq.nightly" and schedule["nightly"]["schedule"].hour == {0}
    assert schedule["recover"]["task"] == "desq.recover" and conf["timezone"] == "Europe/Warsaw"
    assert conf["worker_send_task_events"] and conf["task_send_sent_event"]


def test_long_task_safety_and_zone() -> None:
    conf = celery_config(load_settings(env={"DESQ_TIMEZONE": "Europe/Warsaw"}))
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"] and conf["worker_prefetch_multiplier"] == 1
    assert conf["timezone"] == "Europe/Warsaw" and conf["accept_content"] == ["json"]


# --- real workers ----------------------------------------------------------------------------

ASK_QUEUES = """
import json, sys
from tasks import app
replies = app.control.inspect(destination=[sys.argv[1]], timeout=2).active_queues() or {}
print(json.dumps({host: sorted(q["name"] for q in queues) for host, queues in replies.items()}))
"""


def _env(extra: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DESQ_")} | extra


def _worker_queues(cwd: Path, env: dict[str, str], queue: str) -> dict[str, list[str]]:
    """Start a worker consuming ``queue`` and return what it reports it consumes."""
    name = f"test-{uuid.uuid4().hex[:8]}@localhost"
    log = open(cwd / "worker.log", "w")
    worker = subprocess.Popen(
        [str(BIN / "celery"), "-A", "tasks", "worker", "-Q", queue, "-n", name, "--pool=solo", "--without-mingle", "--without-gossip", "-l", "INFO"],
        cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert worker.poll() is None, (cwd / "worker.log").read_text()
            ask = subprocess.run([sys.executable, "-c", ASK_QUEUES, name], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
            assert ask.returncode == 0, ask.stderr
            replies = json.loads(ask.stdout)
            if replies:
                return replies
        pytest.fail("the worker never answered: " + (cwd / "worker.log").read_text())
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        log.close()


@pytest.mark.integration
def test_worker_on_the_embedded_broker(in_tmp: Path) -> None:
    replies = _worker_queues(in_tmp, _env({}), "shards-40-7f")
    assert list(replies.values()) == [["shards-40-7f"]]
    assert (in_tmp / "desq-data" / "broker" / "messages").is_dir()


@pytest.mark.integration
def test_worker_on_redis(in_tmp: Path, redis_url: str) -> None:
    replies = _worker_queues(in_tmp, _env({"DESQ_BROKER_URL": redis_url, "DESQ_SHARD_BITS": "10", "DESQ_QUEUE_COUNT": "8"}), "shards-380-3ff")
    assert list(replies.values()) == [["shards-380-3ff"]]


@pytest.mark.integration
def test_a_typo_queue_fails_loudly(in_tmp: Path, redis_url: str) -> None:
    code = "from tasks import app\napp.send_task('desq.nothing', queue='shards-00-ff')"
    result = subprocess.run([sys.executable, "-c", code], cwd=in_tmp, env=_env({"DESQ_BROKER_URL": redis_url}), capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "shards-00-ff" in result.stderr


REGISTERED = """
import json
from tasks import app
print(json.dumps(sorted(name for name in app.tasks if name.startswith("desq."))))
"""


def test_every_task_is_registered_by_importing_tasks(in_tmp: Path) -> None:
    """What ``celery -A tasks`` loads: the tasks of tasks.pipeline and tasks.watch, by their names."""
    result = subprocess.run([sys.executable, "-c", REGISTERED], cwd=in_tmp, env=_env({}), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["desq.finish_night", "desq.nightly", "desq.pack_shard", "desq.recover", "desq.watch_nights"]


def test_beats_schedule_file_is_under_data_dir(in_tmp: Path) -> None:
    conf = celery_config(load_settings(env={"DESQ_DATA_DIR": "state"}))
    assert conf["beat_schedule_filename"] == str(in_tmp.resolve() / "state" / "celerybeat-schedule")


@pytest.mark.integration
def test_beat_writes_its_schedule_under_data_dir_not_where_it_starts(in_tmp: Path) -> None:
    data = in_tmp / "data" / "desq"  # not there yet: beat's start makes it
    started_in = in_tmp / "elsewhere"
    started_in.mkdir()
    log = open(in_tmp / "beat.log", "w")
    beat = subprocess.Popen([str(BIN / "celery"), "-A", "tasks", "beat", "-l", "INFO"], cwd=started_in, env=_env({"DESQ_DATA_DIR": str(data)}), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not list(data.glob("celerybeat-schedule*")):
            assert beat.poll() is None and time.monotonic() < deadline, (in_tmp / "beat.log").read_text()
            time.sleep(0.2)
    finally:
        beat.terminate()
        beat.wait(timeout=30)
        log.close()
    assert list(started_in.iterdir()) == []
