"""The mode objects: what a request names, and what the night's notes report, per mode."""

from __future__ import annotations

import re
from datetime import date, timezone

import pytest

from desq.errors import LayoutError
from desq.layout import Layout
from desq.mode import MissingCreatedAt, NameMode, UidMode, mode_for
from desq.pipeline.night import plan_notes
from desq.source.marker import MarkReport
from desq.source.plan import Plan


def layout(mode: str, uid_kind: str = "int") -> Layout:
    return Layout(mode=mode, shard_bits=8, queue_count=4, zone=timezone.utc, uid_kind=uid_kind)  # type: ignore[arg-type]


def test_one_mode_object_per_layout() -> None:
    assert isinstance(mode_for(layout("name")), NameMode) and isinstance(mode_for(layout("uid")), UidMode)
    assert mode_for(layout("uid")) is mode_for(layout("uid"))


def test_name_mode_locates_by_the_name_alone() -> None:
    mode = mode_for(layout("name"))
    where = mode.locate("20251114_7.txt", "ignored")
    assert (where.date, where.name, where.shard) == (date(2025, 11, 14), "20251114_7.txt", mode.shard_of("20251114_7.txt"))
    with pytest.raises(LayoutError):
        mode.locate("7.txt")


@pytest.mark.parametrize("name", ["7.txt", "20251114_", "20251314_7", "x_y_20251114_7", "20251114_a/b", "20251114_\x00", "20251114_" + "x" * 300])
def test_name_mode_shard_of_refuses_what_locate_refuses(name: str) -> None:
    mode = mode_for(layout("name"))
    with pytest.raises(LayoutError):
        mode.locate(name)
    with pytest.raises(LayoutError):
        mode.shard_of(name)


def test_name_mode_shard_of_is_the_located_shard() -> None:
    mode = mode_for(layout("name"))
    for name in ("20251114_7.txt", "pre-fix_20251114_7", "20251114_ünïcode", "20240229_x"):
        assert mode.shard_of(name) == mode.locate(name).shard


def test_uid_mode_needs_the_created_at() -> None:
    mode = mode_for(layout("uid"))
    where = mode.locate("7", "2025-11-14T23:59:59Z")
    assert (where.date, where.name, where.shard) == (date(2025, 11, 14), "7", 7)
    for missing in (None, ""):
        with pytest.raises(MissingCreatedAt):
            mode.locate("7", missing)
    with pytest.raises(LayoutError):
        mode.locate("seven", "2025-11-14")


def test_only_uid_mode_reads_newer_files_from_their_originals() -> None:
    name, uid = mode_for(layout("name")), mode_for(layout("uid"))
    where = uid.locate("7", "2025-11-14")
    asked: list[int] = []

    def cutoff(day: date | None) -> object:
        return lambda: asked.append(1) or day

    assert name.archived(where, cutoff(None)) and asked == []  # name mode never asks for a cutoff
    assert uid.archived(where, cutoff(date(2025, 11, 14)))
    assert not uid.archived(where, cutoff(date(2025, 11, 13)))
    assert not uid.archived(where, cutoff(None))


@pytest.mark.parametrize(("mode", "kind", "good", "bad"), [
    ("name", "int", ["20251114_7.txt", "files_20251114_a b.pdf"], ["7.txt", "20251114_a/b", "2025111_7"]),
    ("uid", "int", ["7", "0123"], ["-7", "7a", ""]),
    ("uid", "text", ["a b", "ünï"], ["a/b", "a\nb", ""]),
])
def test_the_name_pattern_the_api_describes(mode: str, kind: str, good: list[str], bad: list[str]) -> None:
    pattern = re.compile(mode_for(layout(mode, kind)).name_pattern())
    assert [n for n in good if not pattern.match(n)] == []
    assert [n for n in bad if pattern.match(n)] == []


def test_the_modes_declare_their_row_state() -> None:
    assert NameMode.state_columns == ("des_name", "des_shard", "des_status") and UidMode.state_columns == ()
    assert (NameMode.takes_created_at, UidMode.takes_created_at) == (False, True)


def test_name_mode_notes_report_rows_the_plan_could_not_place() -> None:
    """READY rows whose names another name_prefix wrote are reported beside the marker's examples."""
    plan = Plan(unplanned=3, problems=["3 READY rows cannot be planned: bad name (names from another name_prefix?)"])
    marked = MarkReport(examples=[f"row {i}: empty path" for i in range(12)])
    notes = plan_notes(plan, marked)
    assert notes["unplanned"] == 3 and len(notes["examples"]) == 10
    assert notes["examples"][-1].startswith("3 READY rows cannot be planned")
    assert plan_notes(Plan(), MarkReport(examples=["row 1: empty path"]))["examples"] == ["row 1: empty path"]
