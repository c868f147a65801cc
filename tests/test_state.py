"""desq's own tables: the key-value state, the night records and waiting for a night."""

from __future__ import annotations

import threading
import time
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from desq.errors import DesqError
from desq.pipeline.pack import PackReport
from desq.source.table import create_engine
from desq.state import StateStore, wait_for_night


@pytest.fixture
def state(tmp_path: Path) -> StateStore:
    return StateStore(create_engine(f"sqlite:///{tmp_path / 'state.db'}"))


def test_the_cutoff_only_moves_forward(state: StateStore) -> None:
    assert state.cutoff() is None
    state.set_cutoff(date(2025, 11, 20))
    state.set_cutoff(date(2025, 11, 20))
    with pytest.raises(DesqError, match="only moves forward"):
        state.set_cutoff(date(2025, 11, 19))
    assert state.cutoff() == date(2025, 11, 20)


def test_a_night_record_counts_its_finishes(state: StateStore) -> None:
    assert (state.night_runs("2025-11-21"), state.night_summary("2025-11-21"), state.night_finished_at("2025-11-21")) == (0, None, None)
    failed = PackReport.failed(date(2025, 11, 20), 5, 8, "boom").as_dict()
    assert (failed["shard"], failed["status"], failed["failures"]) == ("05", "failed", ["boom"])
    packs = [{"container": "20251120/07.des", "worker": "w1", "queue": "shards-00-3f", "status": "packed"}, {"status": "nothing"}, failed]
    assert state.record_night("2025-11-21", {"files": 3}, packs) == 1
    assert state.record_night("2025-11-21", {"files": 3}, packs) == 2
    summary = state.night_summary("2025-11-21")
    assert summary == {"files": 3, "packed_by": {"20251120/07.des": {"worker": "w1", "queue": "shards-00-3f", "status": "packed"}}}
    finished = state.night_finished_at("2025-11-21")
    assert finished is not None and finished.tzinfo is not None


def test_a_night_is_recorded_finished_with_its_summary_in_one_transaction(state: StateStore) -> None:
    """A waiter that sees the night finished must find its summary (they were two commits once,
    and a benchmark polling between them read no summary)."""
    commits: list[object] = []

    def committed(conn: object) -> None:
        commits.append(conn)

    sa.event.listen(state.engine, "commit", committed)
    try:
        state.record_night("2025-11-21", {"files": 3}, [])
    finally:
        sa.event.remove(state.engine, "commit", committed)
    assert len(commits) == 1
    assert state.night_runs("2025-11-21") == 1 and state.night_summary("2025-11-21") == {"files": 3, "packed_by": {}}


def test_pack_reports_are_kept_per_night_until_forgotten(state: StateStore) -> None:
    one = PackReport(date="2025-11-20", shard="07", container="20251120/07.des", files=3, failures=["row 9: gone"]).as_dict()
    two = PackReport.failed(date(2025, 11, 20), 255, 8, "boom").as_dict()
    state.record_pack("2025-11-21", one)
    state.record_pack("2025-11-21", two)
    state.record_pack("2025-11-21", one | {"files": 4})  # a task run again keeps its last report
    state.record_pack("2025-11-2", one)  # another night whose key is a prefix of this one's
    assert state.night_packs("2025-11-21") == {("2025-11-20", "07"): one | {"files": 4}, ("2025-11-20", "FF"): two}
    state.forget_packs("2025-11-21")
    assert state.night_packs("2025-11-21") == {} and list(state.night_packs("2025-11-2")) == [("2025-11-20", "07")]


def test_a_nights_notes_are_kept_until_replaced(state: StateStore) -> None:
    assert state.night_notes("2025-11-21") == {}
    state.record_notes("2025-11-21", {"unplaced": 2, "examples": ["row 7: créé à minuit"]})
    state.record_notes("2025-11-21", {"unplaced": 3, "examples": []})  # the night planned again
    assert state.night_notes("2025-11-21") == {"unplaced": 3, "examples": []}


def test_waiting_for_a_night(state: StateStore) -> None:
    threading.Timer(0.3, state.record_night, ("2025-11-21", {}, [])).start()
    rounds: list[int] = []
    finished = wait_for_night(state, "2025-11-21", 30, poll=0.05, check=lambda: rounds.append(1))
    assert finished == state.night_finished_at("2025-11-21") and len(rounds) > 1
    with pytest.raises(TimeoutError, match="2025-11-22 did not finish"):
        wait_for_night(state, "2025-11-22", 0.2, poll=0.05)


def test_a_check_that_raises_stops_the_wait(state: StateStore) -> None:
    def dead() -> None:
        raise RuntimeError("a worker stopped")

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="a worker stopped"):
        wait_for_night(state, "2025-11-21", 30, check=dead)
    assert time.monotonic() - started < 5
