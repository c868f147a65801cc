"""A 2 GiB member packs and reads back byte-exact with peak RSS under 256 MiB (both backends).

Runs ``bench/bigfile.py`` in its own process so that its peak RSS is the figure measured.
Through moto the read-back takes minutes: moto copies the whole object for every range request.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIMIT_MIB = 256


def run_bigfile(*args: str) -> dict:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bigfile.py"), "--gib", "2", *args],
        capture_output=True, text=True, timeout=1200, env=os.environ.copy(),
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_two_gib_member_local(tmp_path: Path) -> None:
    figures = run_bigfile("--url", str(tmp_path / "archive"))
    assert figures["same_bytes"] and figures["ranged_read_bytes"] == 100
    assert figures["peak_rss_MiB"] < LIMIT_MIB, figures


@pytest.mark.integration
def test_two_gib_member_s3(s3_endpoint: str, s3_bucket: str) -> None:
    figures = run_bigfile("--url", f"s3://{s3_bucket}/desq", "--endpoint", s3_endpoint)
    assert figures["same_bytes"] and figures["ranged_read_bytes"] == 100
    assert figures["peak_rss_MiB"] < LIMIT_MIB, figures
