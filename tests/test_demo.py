"""``desq demo`` end to end on the embedded default, twice; ``desq get``; Ctrl-C leaves nothing behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path


import pytest

from procs import session_members

BIN = Path(sys.executable).parent


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DESQ_")}


def test_the_demo_twice_then_get_and_locate(tmp_path: Path) -> None:
    for _ in range(2):  # running it twice works
        result = subprocess.run([str(BIN / "desq"), "demo", "--files", "2000"], cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "packed 2,000 files" in out and "compared byte for byte: 21 files" in out
    name = re.search(r"/files/(\d{8}_7)", out).group(1)
    got = subprocess.run([str(BIN / "desq"), "get", name, "-o", "seven"], cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=60)
    assert got.returncode == 0, got.stderr
    original = next((tmp_path / "desq-data" / "originals").rglob("*-7.*"))
    assert (tmp_path / "seven").read_bytes() == original.read_bytes()
    located = json.loads(subprocess.run([str(BIN / "desq"), "locate", name], cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=60).stdout)
    assert located["length"] == original.stat().st_size and located["offset"] > 16
    assert subprocess.run([str(BIN / "desq"), "get", name[:9] + "999999"], cwd=tmp_path, env=env(), capture_output=True, timeout=60).returncode == 1


def test_the_demo_refuses_someone_elses_data(tmp_path: Path) -> None:
    (tmp_path / "desq-data").mkdir()
    (tmp_path / "desq-data" / "precious.db").write_bytes(b"x")
    result = subprocess.run([str(BIN / "desq"), "demo", "--files", "20"], cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "did not make" in result.stderr and (tmp_path / "desq-data" / "precious.db").exists()


@pytest.mark.parametrize("where", ["--config", "DESQ_CONFIG", "DESQ_ARCHIVE_URL"])
def test_the_demo_refuses_settings_other_than_the_embedded_default(tmp_path: Path, where: str) -> None:
    (tmp_path / "ec.toml").write_text('[archive]\nurl = "ec://4+2"\nnodes = ["n0", "n1", "n2", "n3", "n4", "n5"]\n')
    args, extra = {"--config": (["--config", "ec.toml"], {}), "DESQ_CONFIG": ([], {"DESQ_CONFIG": "ec.toml"}),
                   "DESQ_ARCHIVE_URL": ([], {"DESQ_ARCHIVE_URL": "other-archive"})}[where]
    result = subprocess.run([str(BIN / "desq"), *args, "demo", "--files", "20"], cwd=tmp_path, env=env() | extra, capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stderr.strip()) == (1, "desq: error: desq demo runs on the embedded default; unset DESQ_* and --config")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ec.toml"]


def test_ctrl_c_while_serving_leaves_no_process(tmp_path: Path) -> None:
    demo = subprocess.Popen([str(BIN / "desq"), "demo", "--files", "200", "--serve"], cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    deadline = time.monotonic() + 300
    assert demo.stdout is not None
    while time.monotonic() < deadline:
        line = demo.stdout.readline()
        lines.append(line)
        if line.startswith("try:"):
            url = re.search(r"(http://127\.0\.0\.1:\d+/files/\S+)", line).group(1)
        if line.startswith("serving on") or not line:
            break
    assert lines[-1].startswith("serving on"), "".join(lines)
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as answer:  # the printed curl command works meanwhile
        assert answer.status == 200 and answer.read()
    os.killpg(demo.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    demo.wait(timeout=60)
    deadline = time.monotonic() + 30
    while session_members(demo.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert session_members(demo.pid) == []
