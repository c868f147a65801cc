"""``desq bench --quick`` produces every figure it knows how to measure (no timing assertions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_quick_bench_produces_its_figures(tmp_path: Path, pg_url: str, s3_endpoint: str, redis_url: str) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [str(BIN / "desq"), "bench", "--quick", "--json", str(out), "--pg", pg_url, "--s3", s3_endpoint, "--redis", redis_url.rsplit("/", 1)[0] + "/12"],
        capture_output=True, text=True, timeout=600, env={k: v for k, v in os.environ.items() if not k.startswith(("DESQ_", "AWS_"))},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(out.read_text())
    assert len(document["results"]) == 22
    for name, figures in document["results"].items():
        assert "figure" in figures and "ratio" in figures and "goal" in figures, (name, figures)
        assert figures.get("plot") or "progress" not in figures, name
    cold = document["results"]["cold reads against container size"]["details"]
    assert {(r["members"], r["storage"]) for r in cold["rows"]} == {(n, s) for n in (1_000, 100_000) for s in ("local", "s3")}
    assert all(r["cold_bytes_fetched"] >= r["index_bytes"] for r in cold["rows"]), cold["rows"]
    assert cold["table_markdown"].count("\n") == 1 + len(cold["rows"])
    stored = document["results"]["EC archive 4+2: bytes over all nodes vs plain"]["details"]
    assert stored["ratio"] <= 1.65 and stored["unaccounted"] == 0, stored
    asked = document["results"]["EC archive 4+2: warm reads vs plain"]["details"]["requests_per_warm_read"]["by_cells_spanned"]
    assert asked["1"]["max_requests"] == 1, asked
    assert document["results"]["EC archive 4+2: rebuild a node, check every fragment"]["details"]["rebuilt_identical"]
    assert (ROOT / "bench" / "results" / "summary.png").stat().st_size > 1000
    assert "| benchmark | desq | anchor |" in result.stdout
