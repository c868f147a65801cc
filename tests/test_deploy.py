"""Deployment files: the Procfile's packer lines match the queues, gunicorn's config loads."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from desq.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def procfile() -> dict[str, str]:
    lines = [line for line in (ROOT / "Procfile").read_text().splitlines() if line.strip() and not line.startswith("#")]
    entries = dict(line.split(": ", 1) for line in lines)
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", name) for name in entries)
    return entries


def test_one_packer_per_default_queue() -> None:
    packers = {name: cmd for name, cmd in procfile().items() if name.startswith("packer_")}
    queues = [re.search(r" -Q (\S+)", cmd).group(1) for cmd in packers.values()]
    assert queues == load_settings(env={}).layout.queue_names()
    assert all(cmd.startswith("celery -A tasks worker -Q ") for cmd in packers.values())


def test_process_types() -> None:
    entries = procfile()
    assert {"web", "beat", "control", "flower"} <= entries.keys()
    assert "FLOWER_BASIC_AUTH:?" in entries["flower"] and "--basic-auth" not in entries["flower"]
    assert "deploy/gunicorn.conf.py" in entries["web"]


def test_gunicorn_config_loads_the_app() -> None:
    result = subprocess.run(
        [str(BIN / "gunicorn"), "--check-config", "-c", "deploy/gunicorn.conf.py", "web:create_app()"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr


def _gunicorn_setting(name: str, **env: str) -> str:
    result = subprocess.run(
        [str(BIN / "gunicorn"), "--print-config", "-c", "deploy/gunicorn.conf.py", "web:create_app()"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env={k: v for k, v in os.environ.items() if k not in ("PORT", "BIND")} | env,
    )
    assert result.returncode == 0, result.stderr
    return next(line.split("=", 1)[1].strip() for line in result.stdout.splitlines() if line.split("=", 1)[0].strip() == name)


def test_each_gunicorn_master_has_its_own_control_socket() -> None:
    """The Procfile's web and router masters must not take gunicornc's socket from each other."""
    web, router = _gunicorn_setting("control_socket", PORT="8080"), _gunicorn_setting("control_socket", PORT="8081")
    assert web != router and web.endswith(".ctl") and "8080" in web and "8081" in router
    assert _gunicorn_setting("control_socket", PORT="8080", GUNICORN_CONTROL_SOCKET="/run/desq/web.ctl") == "/run/desq/web.ctl"


def test_the_web_roles_run_the_json_gevent_worker_with_their_knobs() -> None:
    assert _gunicorn_setting("worker_class") == "web.worker.JSONGeventWorker"
    assert _gunicorn_setting("worker_connections") == "1000"
    assert _gunicorn_setting("worker_connections", WEB_CONNECTIONS="300") == "300"
    assert _gunicorn_setting("workers", WEB_CONCURRENCY="3") == "3"
    assert _gunicorn_setting("worker_class", GUNICORN_CMD_ARGS="--worker-class gthread") == "gthread"


def test_the_config_raises_a_low_soft_descriptor_limit_to_fit_the_connections(tmp_path: Path) -> None:
    script = (
        "import resource, runpy\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "runpy.run_path('deploy/gunicorn.conf.py')\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "WEB_CONNECTIONS"} | {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    soft, hard = (int(n) for n in result.stdout.split())
    assert soft == min(3 * 1000 + 1024, hard) and soft > 256
