"""Shard ownership: consistent hashing with bounded loads (pure)."""

from __future__ import annotations

import statistics

import pytest

from desq.ownership import Ring, StaticTable, moved

THREE = ["http://files-1:8080", "http://files-2:8080", "http://files-3:8080"]


def test_three_to_four_backends_moves_about_a_quarter() -> None:
    share = moved(Ring(THREE), Ring([*THREE, "http://files-4:8080"]), 8)
    assert 0.20 <= share <= 0.30, share


def test_the_figure_holds_for_backend_names_at_large() -> None:
    """300 sets of names: the ideal is 1/4; what the cap on loads adds stays small."""
    shares = []
    for k in range(300):
        names = [f"http://10.1.{k}.{i}:8080" for i in range(3)]
        shares.append(moved(Ring(names), Ring([*names, f"http://10.1.{k}.3:8080"]), 8))
    inside = sum(0.20 <= s <= 0.30 for s in shares) / len(shares)
    assert 0.23 <= statistics.median(shares) <= 0.28 and inside >= 0.97, (statistics.median(shares), inside, max(shares))


def test_removing_a_backend_moves_mostly_its_own_shards() -> None:
    four = Ring([*THREE, "http://files-4:8080"])
    share = moved(four, Ring(THREE), 8)
    owned = sum(1 for b in four.assignment(8).values() if b == "http://files-4:8080") / 256
    assert owned <= share <= owned + 0.06


@pytest.mark.parametrize("bits", [1, 4, 8, 12])
def test_loads_stay_within_five_percent_of_the_average(bits: int) -> None:
    ring = Ring([f"http://b{i}" for i in range(5)])
    owners = list(ring.assignment(bits).values())
    assert len(owners) == 1 << bits
    if bits >= 8:
        assert max(owners.count(b) for b in ring.backends) <= 1.06 * len(owners) / 5


def test_choices_give_a_distinct_failover_and_agree_everywhere() -> None:
    ring, again = Ring(THREE), Ring(list(reversed(THREE)))
    for shard in range(256):
        first, second = ring.choices(shard, 8)
        assert first != second and [first, second] == again.choices(shard, 8)
        assert ring.choices(shard, 8, count=3)[:2] == [first, second]
    assert Ring([]).choices(3, 8) == [] and Ring(["http://only"]).choices(3, 8) == ["http://only"]


def test_static_table() -> None:
    table = StaticTable({"shards-00-7f": "http://a", "shards-80-ff": "http://b"}, 8, 2)
    assert table.choices(0x12, 8) == ["http://a", "http://b"] and table.choices(0x80, 8)[0] == "http://b"
    with pytest.raises(ValueError, match="shards-80-ff"):
        StaticTable({"shards-00-7f": "http://a"}, 8, 2)
