"""``desq procfile``: the committed Procfile is its output, and its output starts under honcho."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from celery import Celery

from desq.layout import queue_names
from desq.procfile import process_types, procfile
from desq.settings import load_settings
from procs import session_members
from test_files_gunicorn import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HONCHO_REDIS_DB = 11  # this test's own database: no other test uses it


def entries(text: str) -> dict[str, str]:
    """A Procfile's process types as honcho reads them (comment lines ignored)."""
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    found = dict(line.split(": ", 1) for line in lines)
    assert len(found) == len(lines), "a process type is named twice"
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", name) for name in found)
    return found


def test_the_committed_procfile_is_desq_procfile_for_the_defaults() -> None:
    assert (ROOT / "Procfile").read_text() == procfile(load_settings(env={}).layout)


def test_the_command_prints_the_procfile_of_the_configured_layout() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESQ_")} | {"DESQ_SHARD_BITS": "10", "DESQ_QUEUE_COUNT": "8"}
    result = subprocess.run([str(BIN / "desq"), "procfile"], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout == procfile(load_settings(env={"DESQ_SHARD_BITS": "10", "DESQ_QUEUE_COUNT": "8"}).layout)
    assert "shard_bits = 10, queue_count = 8" in result.stdout.splitlines()[0]


def test_a_bad_layout_is_a_one_line_error() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESQ_")} | {"DESQ_SHARD_BITS": "4", "DESQ_QUEUE_COUNT": "32"}
    result = subprocess.run([str(BIN / "desq"), "procfile"], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 1 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and "queue_count" in result.stderr


@pytest.mark.parametrize(("bits", "count"), [(1, 1), (1, 2), (8, 4), (10, 8), (12, 1), (16, 64)])
def test_one_packer_line_per_queue_range(bits: int, count: int) -> None:
    found = entries("".join(f"{name}: {command}\n" for name, command in process_types(bits, count)))
    assert list(found)[:5] == ["web", "router", "s3", "beat", "control"] and list(found)[-1] == "flower"
    packers = {name: command for name, command in found.items() if name.startswith("packer_")}
    assert len(packers) == count == len(found) - 6
    queues = [re.search(r" -Q (\S+) ", command).group(1) for command in packers.values()]
    assert queues == queue_names(bits, count)
    nodes = [re.search(r" -n (\S+) ", command).group(1) for command in packers.values()]
    assert len(set(nodes)) == count and all(node.endswith("@%h") for node in nodes)
    for name, queue in zip(packers, queues):
        assert name == "packer_" + queue.removeprefix("shards-").replace("-", "_")
    assert "role='router'" in found["router"] and "role='s3'" in found["s3"] and "create_app()" in found["web"]
    assert " -Q desq " in found["control"]


# --- the Procfile for 10 bits and 8 queues under honcho, with real workers ----------------------


def _free_base() -> int:
    """A port P with P, P+100 and P+200 free (honcho gives the first three lines those ports)."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + 200 > 65535:
            continue
        try:
            for port in (base, base + 100, base + 200):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError("no free base port")


def _status(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def _wait(what: str, check, seconds: float, log: Path) -> object:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} not within {seconds}s; honcho said:\n{log.read_text()[-4000:]}")


@pytest.mark.integration
def test_the_procfile_for_10_bits_and_8_queues_starts_under_honcho(tmp_path: Path, redis_url: str) -> None:
    broker = redis_url.rsplit("/", 1)[0] + f"/{HONCHO_REDIS_DB}"
    Celery(broker=broker).connection_for_write().default_channel.client.flushdb()
    base, flower_port = _free_base(), free_port()
    config = tmp_path / "desq.toml"
    config.write_text(
        f'shard_bits = 10\nqueue_count = 8\ndata_dir = "{tmp_path / "data"}"\n'
        f'[source]\ndb_url = "sqlite:///{tmp_path / "source.db"}"\n'
        f'[archive]\nurl = "{tmp_path / "archive"}"\n'
        f'[broker]\nurl = "{broker}"\n'
        f'[web]\nbackends = ["http://127.0.0.1:{base}"]\nhealth_interval = 1\n'
    )
    settings = load_settings(str(config), env={})
    (tmp_path / "Procfile").write_text(procfile(settings.layout))
    password = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DESQ_", "FLOWER_", "PORT", "WEB_"))} | {
        "DESQ_CONFIG": str(config), "PATH": f"{BIN}:{os.environ['PATH']}",
        "FLOWER_BASIC_AUTH": f"ops:{password}", "FLOWER_PORT": str(flower_port),
        "GUNICORN_CMD_ARGS": "--workers=1 --threads=2", "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "honcho.log"
    with log.open("w") as out:
        honcho = subprocess.Popen(
            [str(BIN / "honcho"), "-f", str(tmp_path / "Procfile"), "-d", str(ROOT), "start", "-p", str(base), "--no-colour"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        for port in (base, base + 100, base + 200):
            _wait(f"/healthz on {port}", lambda port=port: _status(f"http://127.0.0.1:{port}/healthz") == 200, 90, log)
        _wait("the router's backend healthy", lambda: _status(f"http://127.0.0.1:{base + 100}/readyz") == 200, 60, log)
        auth = "Basic " + base64.b64encode(f"ops:{password}".encode()).decode()
        _wait("Flower behind basic auth", lambda: _status(f"http://127.0.0.1:{flower_port}/", {"Authorization": auth}) == 200, 90, log)
        assert _status(f"http://127.0.0.1:{flower_port}/") == 401

        inspect = Celery(broker=broker).control.inspect(timeout=3)
        wanted = {f"packer-{q.removeprefix('shards-')}": q for q in settings.layout.queue_names()} | {"control": "desq"}

        def every_worker_answers() -> dict | None:
            answer = inspect.active_queues() or {}
            return answer if {node.split("@")[0] for node in answer} >= wanted.keys() else None

        queues = _wait("every worker in Celery's inspect", every_worker_answers, 120, log)
        consumed = {node.split("@")[0]: sorted(q["name"] for q in got) for node, got in queues.items()}
        assert consumed == {node: [queue] for node, queue in wanted.items()}
        assert honcho.poll() is None, log.read_text()[-4000:]
    finally:
        os.killpg(honcho.pid, signal.SIGTERM)
        try:
            honcho.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait(timeout=10)
        for pid in session_members(honcho.pid):
            os.kill(pid, signal.SIGKILL)
    text = log.read_text()
    assert "Traceback" not in text, text[-4000:]
    assert json.dumps(password) not in text and password not in text
