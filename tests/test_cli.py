"""The ``desq`` command: contract outputs, exit codes 0/1/2, and one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from desq.cli import run

DESQ = shutil.which("desq", path=str(Path(sys.executable).parent)) or "desq"


def desq(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed console script the way a user does."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DESQ_")}
    return subprocess.run([DESQ, *args], env=clean | (env or {}), cwd=cwd, capture_output=True, text=True, timeout=60)


def run_in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# --- the console script (CONTRACT section 5 and the "done when") ---------------------


def test_queues_default(in_tmp: Path) -> None:
    result = desq("queues")
    assert (result.returncode, result.stdout, result.stderr) == (0, "shards-00-3f\nshards-40-7f\nshards-80-bf\nshards-c0-ff\n", "")


def test_queues_ten_bits_eight_queues(in_tmp: Path) -> None:
    result = desq("queues", env={"DESQ_SHARD_BITS": "10", "DESQ_QUEUE_COUNT": "8"})
    assert result.returncode == 0
    assert result.stdout.split() == [
        "shards-000-07f", "shards-080-0ff", "shards-100-17f", "shards-180-1ff",
        "shards-200-27f", "shards-280-2ff", "shards-300-37f", "shards-380-3ff",
    ]


def test_locate_vector(in_tmp: Path) -> None:
    result = desq("locate", "20251120_1")
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"name": "20251120_1", "shard": "FE", "container": "20251120/FE.des", "offset": None, "length": None}


@pytest.mark.parametrize(
    ("setup", "env"),
    [
        ("misspelt", {}),
        (None, {"DESQ_SHARD_BITS": "abc"}),
        (None, {"DESQ_SHARD_BITS": "40"}),
    ],
)
def test_bad_settings_exit_1_with_one_line_naming_the_key(in_tmp: Path, setup: str | None, env: dict[str, str]) -> None:
    args = ["queues"]
    if setup:
        (in_tmp / "desq.toml").write_text("shard_bits = 8\nshard_bitz = 9\n")
        args = ["--config", "desq.toml", "queues"]
    result = desq(*args, env=env)
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("desq: error: ")
    assert ("shard_bitz" if setup else "DESQ_SHARD_BITS") in lines[0]
    assert "Traceback" not in result.stderr


def test_usage_error_exits_2(in_tmp: Path) -> None:
    for args in (["locate"], ["no-such-command"], ["queues", "--bogus"], ["locate", "20251120_1", "--created-at", "2025-11-20"]):
        result = desq(*args)
        assert result.returncode == 2, args
        assert "Usage:" in result.stderr and result.stdout == ""


def test_debug_shows_a_traceback(in_tmp: Path) -> None:
    result = desq("locate", "2025_1", "--debug")
    assert result.returncode == 1 and "Traceback" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("desq: error: ")


def test_python_dash_m(in_tmp: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "desq", "queues"], capture_output=True, text=True, cwd=in_tmp, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("shards-00-3f\n")


# --- in process: options, modes and bad input ------------------------------------------------


def test_config_option_before_or_after_the_command(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (in_tmp / "c.toml").write_text("shard_bits = 12\nqueue_count = 2\n")
    assert run_in_process(capsys, "--config", "c.toml", "queues")[1] == "shards-000-7ff\nshards-800-fff\n"
    assert run_in_process(capsys, "queues", "--config", "c.toml")[1] == "shards-000-7ff\nshards-800-fff\n"


def test_desq_config_variable(in_tmp: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    (in_tmp / "c.toml").write_text("shard_bits = 12\n")
    monkeypatch.setenv("DESQ_CONFIG", str(in_tmp / "c.toml"))
    code, out, _ = run_in_process(capsys, "locate", "20251120_1")
    assert code == 0 and json.loads(out)["shard"] == "0FE"


@pytest.mark.parametrize(
    "name",
    ["", "2025_1", "20251340_1", "20251120", "../20251120_1", "20251120_1/../../x", "a b_20251120_1", "20251120_\x01", "20251120_" + "x" * 300],
)
def test_locate_malformed_names(capsys: pytest.CaptureFixture[str], name: str) -> None:
    code, out, err = run_in_process(capsys, "locate", name)
    assert code == 1 and out == ""
    assert err.startswith("desq: error: ") and err.count("\n") == 1


def test_locate_uid_mode(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESQ_MODE", "uid")
    code, out, _ = run_in_process(capsys, "locate", "123456789", "--created-at", "2025-11-20T23:30:00-05:00")
    assert code == 0 and json.loads(out) == {"name": "123456789", "shard": "15", "container": "20251121/15.des", "offset": None, "length": None}
    monkeypatch.setenv("DESQ_SOURCE_UID_KIND", "text")
    monkeypatch.setenv("DESQ_SHARD_BITS", "10")
    code, out, _ = run_in_process(capsys, "locate", "doc-000001", "--created-at", "2025-11-20")
    assert code == 0 and json.loads(out)["shard"] == "1DE"


def test_locate_uid_mode_bad_input(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESQ_MODE", "uid")
    assert run_in_process(capsys, "locate", "123")[0] == 2  # --created-at is required
    for uid, created in (("-5", "2025-11-20"), ("12a", "2025-11-20"), ("5", "2025-02-30"), ("5", "soon")):
        code, _, err = run_in_process(capsys, "locate", "--created-at", created, "--", uid)
        assert code == 1 and err.startswith("desq: error: "), (uid, created)


def test_unicode_name_prints_as_utf8(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_in_process(capsys, "locate", "20251120_zażółć")
    assert code == 0 and json.loads(out)["name"] == "20251120_zażółć" and "zażółć" in out


def test_config_command(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESQ_SOURCE_DB_URL", "postgresql://app:pw-secret@db/erp")
    code, out, _ = run_in_process(capsys, "config")
    assert code == 0 and "pw-secret" not in out and 'db_url = "postgresql://app:***@db/erp"' in out
    code, out, _ = run_in_process(capsys, "config", "--markdown")
    assert code == 0 and out.startswith("| key |")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_in_process(capsys, "--version")
    assert code == 0 and out.startswith("desq, version ")


def test_repair_is_for_an_erasure_coded_archive(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DESQ_ARCHIVE_URL", str(tmp_path / "plain"))
    code, _, err = run_in_process(capsys, "repair", "--all")
    assert code == 1 and err.strip().endswith("is not one") and "ec://K+M" in err and err.count("\n") == 1
    assert run_in_process(capsys, "repair")[0] == 2
    assert run_in_process(capsys, "repair", "--all", "20251120/00.des")[0] == 2


def test_repair_and_verify_of_a_container_that_is_not_there(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import json

    monkeypatch.setenv("DESQ_ARCHIVE_URL", "ec://2+1")
    monkeypatch.setenv("DESQ_ARCHIVE_NODES", json.dumps([str(tmp_path / f"n{i}") for i in range(3)]))
    code, out, err = run_in_process(capsys, "repair", "20251120/00.des")
    assert (code, out) == (1, "") and "no object '20251120/00.des' in ec://2+1" in err and err.count("\n") == 1
    code, out, err = run_in_process(capsys, "verify", "--all")
    assert code == 0 and "fragments of 0 object(s) checked, 0 missing or damaged" in err
