"""The Celery application, configured from ``celeryconfig`` (that is, from desq's settings)."""

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from celery import Celery

from tasks.celeryconf import REDIS_RESULT_BACKEND

app = Celery("desq")
app.config_from_object("celeryconfig")
# Chord counting that survives a Redis restart (see RedisResultBackend).
app.loader.override_backends = {"redis": REDIS_RESULT_BACKEND, "rediss": REDIS_RESULT_BACKEND}


@app.on_after_configure.connect
def make_data_folders(sender: Celery, source: Any, **_: Any) -> None:
    """Beat's schedule file, the embedded broker and its file result backend need their folders
    (under ``data_dir``) before first use.

    Done once the configuration is read (before any message is sent or received), not on import,
    so that importing ``tasks.celeryconf`` reads no settings and writes nothing.
    """
    Path(source.beat_schedule_filename).parent.mkdir(parents=True, exist_ok=True)
    if source.broker_url != "filesystem://":
        return
    options = source.broker_transport_options
    folders = [options[k] for k in ("data_folder_in", "data_folder_out", "control_folder", "processed_folder")]
    folders.append(unquote(urlsplit(source.result_backend).path))
    for folder in folders:
        Path(folder).mkdir(parents=True, exist_ok=True)
