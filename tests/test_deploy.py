"""Deployment files: the Procfile's packer lines match the queues, gunicorn's config loads."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from desq.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def procfile() -> dict[str, str]:
    lines = [line for line in (ROOT / "Procfile").read_text().splitlines() if line.strip()]
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
    assert "--basic-auth" in entries["flower"]
    assert "deploy/gunicorn.conf.py" in entries["web"]


def test_gunicorn_config_loads_the_app() -> None:
    result = subprocess.run(
        [str(BIN / "gunicorn"), "--check-config", "-c", "deploy/gunicorn.conf.py", "web:create_app()"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
