"""The layout: contract vectors, bad input, properties (hypothesis) and shard uniformity."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from desq import layout as L
from desq.layout import Layout, LayoutError

UTC = ZoneInfo("UTC")

# --- CONTRACT section 3 vectors -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "bits", "expected"),
    [("20251120_1", 8, "FE"), ("20251120_1", 12, "0FE"), ("20251120_42", 8, "31"), ("INV_20251120_a9f3", 8, "2A")],
)
def test_name_vectors(name: str, bits: int, expected: str) -> None:
    assert L.shard_hex(L.shard_of_name(name, bits), bits) == expected


@pytest.mark.parametrize(("uid", "bits", "expected"), [("doc-000001", 8, "DE"), ("doc-000001", 10, "1DE")])
def test_text_uid_vectors(uid: str, bits: int, expected: str) -> None:
    assert L.shard_hex(L.shard_of_text_uid(uid, bits), bits) == expected


@pytest.mark.parametrize(("uid", "bits", "expected"), [(123456789, 8, "15"), (123456789, 10, "115"), (256, 8, "00")])
def test_int_uid_vectors(uid: int, bits: int, expected: str) -> None:
    assert L.shard_hex(L.shard_of_int_uid(uid, bits), bits) == expected


def test_name_mode_location_vector() -> None:
    where = Layout("name", 8, 4, UTC).locate_name("20251120_1")
    assert (where.shard_hex, where.container, where.date) == ("FE", "20251120/FE.des", date(2025, 11, 20))


def test_uid_mode_location_vectors() -> None:
    text = Layout("uid", 10, 4, UTC, uid_kind="text").locate_uid("doc-000001", "2025-11-20")
    assert (text.name, text.container) == ("doc-000001", "20251120/1DE.des")
    num = Layout("uid", 8, 4, UTC, uid_kind="int").locate_uid("256", date(2025, 11, 20))
    assert (num.name, num.shard, num.container) == ("256", 0, "20251120/00.des")


# --- shards and queues (CONTRACT section 4) -------------------------------------------------


@pytest.mark.parametrize(("bits", "width"), [(1, 1), (4, 1), (5, 2), (8, 2), (10, 3), (12, 3), (13, 4), (16, 4)])
def test_shard_width(bits: int, width: int) -> None:
    assert L.shard_width(bits) == width
    assert L.shard_hex(0, bits) == "0" * width
    assert L.shard_hex(L.shard_count(bits) - 1, bits) == format((1 << bits) - 1, f"0{width}X")


@pytest.mark.parametrize("bits", [0, 17, -1, 8.0, True, "8", None])
def test_bad_shard_bits(bits: object) -> None:
    with pytest.raises(LayoutError, match="shard_bits"):
        L.shard_width(bits)  # type: ignore[arg-type]


@pytest.mark.parametrize(("shard", "bits"), [(256, 8), (-1, 8), (2, 1), (1.0, 8), (True, 8)])
def test_bad_shard(shard: object, bits: int) -> None:
    with pytest.raises(LayoutError):
        L.shard_hex(shard, bits)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "bits"), [("F", 8), ("0FE", 8), ("GG", 8), ("", 8), ("-1", 8), ("400", 10), (" F", 8)])
def test_bad_shard_hex(text: str, bits: int) -> None:
    with pytest.raises(LayoutError):
        L.parse_shard_hex(text, bits)


def test_default_queues() -> None:
    assert L.queue_names(8, 4) == ["shards-00-3f", "shards-40-7f", "shards-80-bf", "shards-c0-ff"]
    assert L.queue_of(0x12, 8, 4) == "shards-00-3f"
    assert L.queue_of(0xC0, 8, 4) == "shards-c0-ff"


def test_queues_ten_bits_eight_queues() -> None:
    names = L.queue_names(10, 8)
    assert names[0] == "shards-000-07f" and names[-1] == "shards-380-3ff" and len(names) == 8


@pytest.mark.parametrize(("count", "bits"), [(0, 8), (3, 8), (6, 8), (512, 8), (4, 1), (-4, 8), (True, 8), (2.0, 8)])
def test_bad_queue_count(count: object, bits: int) -> None:
    with pytest.raises(LayoutError, match="queue_count"):
        L.queue_names(bits, count)  # type: ignore[arg-type]


@given(bits=st.integers(1, 16), data=st.data())
def test_queue_ranges_partition_the_shards(bits: int, data: st.DataObject) -> None:
    count = 1 << data.draw(st.integers(0, bits))
    ranges = L.queue_ranges(bits, count)
    assert ranges[0][0] == 0 and ranges[-1][1] == (1 << bits) - 1
    assert all(a[1] + 1 == b[0] for a, b in zip(ranges, ranges[1:]))
    assert len({hi - lo for lo, hi in ranges}) == 1
    shard = data.draw(st.integers(0, (1 << bits) - 1))
    name = L.queue_of(shard, bits, count)
    lo, hi = next(r for r in ranges if r[0] <= shard <= r[1])
    assert name == L.queue_name(lo, hi, bits) and name == name.lower()


@given(bits=st.integers(1, 16), data=st.data())
def test_shard_hex_round_trip(bits: int, data: st.DataObject) -> None:
    shard = data.draw(st.integers(0, (1 << bits) - 1))
    text = L.shard_hex(shard, bits)
    assert text == text.upper() and len(text) == L.shard_width(bits)
    assert L.parse_shard_hex(text, bits) == shard == L.parse_shard_hex(text.lower(), bits)


# --- names ----------------------------------------------------------------------------------

ids = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\\x7f\ufffd"), min_size=1, max_size=40
)
prefixes = st.from_regex(r"[A-Za-z0-9-]{1,12}", fullmatch=True).filter(lambda p: not (len(p) == 8 and p.isdigit()))
days = st.dates(min_value=date(1970, 1, 1), max_value=date(9999, 12, 31))


@given(day=days, row_id=ids, prefix=st.one_of(st.just(""), prefixes))
def test_name_round_trip(day: date, row_id: str, prefix: str) -> None:
    name = L.build_name(day, row_id, prefix)
    assert L.parse_name(name) == L.ParsedName(prefix=prefix, date=day, id=row_id)


@given(day=days, row_id=st.integers(0, 10**18), bits=st.integers(1, 16))
def test_name_shard_in_range_and_container_matches_date(day: date, row_id: int, bits: int) -> None:
    lay = Layout("name", bits, 1, UTC)
    where = lay.locate_name(L.build_name(day, row_id))
    assert 0 <= where.shard < (1 << bits)
    assert where.container == f"{day:%Y%m%d}/{L.shard_hex(where.shard, bits)}.des"


def test_name_is_deterministic() -> None:
    lay = Layout("name", 8, 4, UTC, name_prefix="INV")
    created = datetime(2025, 11, 20, 10, 0, tzinfo=timezone.utc)
    assert lay.name_for(created, 42) == lay.name_for(created, "42") == "INV_20251120_42"


def test_name_date_follows_the_zone() -> None:
    late_utc = datetime(2025, 11, 20, 23, 30, tzinfo=timezone.utc)
    assert Layout("name", 8, 4, UTC).name_for(late_utc, 7) == "20251120_7"
    assert Layout("name", 8, 4, ZoneInfo("Europe/Warsaw")).name_for(late_utc, 7) == "20251121_7"
    # Without an offset the value is already in the configured zone.
    assert Layout("name", 8, 4, ZoneInfo("Europe/Warsaw")).name_for(datetime(2025, 11, 20, 23, 30), 7) == "20251120_7"


@pytest.mark.parametrize(
    "name",
    [
        "", "x", "20251120", "20251120_", "_20251120_1", "2025112_1", "202511201_1", "20251340_1", "20250229_1",
        "INV_20251120", "INV_20251120_", "I V_20251120_1", "INV_2025112a_1", "INV__20251120_1",
        "../20251120_1", "20251120_1/2", "20251120_a\\b", "20251120_\x00", "20251120_a\nb", "20251120_\x7f",
        "20251120_" + "x" * 247, "20251120_\ud800", "20251120_\ufffd",
    ],
)
def test_malformed_names(name: str) -> None:
    with pytest.raises(LayoutError):
        L.parse_name(name)


def test_longest_name_is_accepted() -> None:
    name = "20251120_" + "x" * 246
    assert len(name) == L.MAX_NAME_BYTES and L.parse_name(name).id == "x" * 246


@pytest.mark.parametrize("prefix", ["", "a_b", "a b", "20251120", "ąę", "a/b"])
def test_bad_prefix(prefix: str) -> None:
    with pytest.raises(LayoutError):
        L.check_prefix(prefix)


def test_eight_digit_prefix_is_refused_not_misread() -> None:
    with pytest.raises(LayoutError, match="8 digits"):
        Layout("name", 8, 4, UTC, name_prefix="20251120")
    # A name whose id looks like a date is still read without a prefix.
    assert L.parse_name("20251120_20251121_5") == L.ParsedName("", date(2025, 11, 20), "20251121_5")


@pytest.mark.parametrize("row_id", ["", "a/b", "a\x00"])
def test_bad_row_id(row_id: str) -> None:
    with pytest.raises(LayoutError):
        L.build_name(date(2025, 1, 1), row_id)


# --- uids and dates -------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "-1", "1.5", "abc", " 1", "1 ", "+1", "١٢", "9" * 41, "0x10"])
def test_bad_int_uid(text: str) -> None:
    with pytest.raises(LayoutError):
        Layout("uid", 8, 4, UTC).locate_uid(text, "2025-11-20")


@pytest.mark.parametrize("uid", [-1, True, 1.0])
def test_bad_native_int_uid(uid: object) -> None:
    with pytest.raises(LayoutError):
        L.shard_of_int_uid(uid, 8)  # type: ignore[arg-type]


@pytest.mark.parametrize("uid", ["", "a/b", "a\x00b", "x" * 256, "\ud800"])
def test_bad_text_uid(uid: str) -> None:
    with pytest.raises(LayoutError):
        Layout("uid", 8, 4, UTC, uid_kind="text").locate_uid(uid, "2025-11-20")


@pytest.mark.parametrize(
    ("text", "zone", "expected"),
    [
        ("2025-11-20", "UTC", date(2025, 11, 20)),
        ("2025-11-20T23:30:00", "Europe/Warsaw", date(2025, 11, 20)),
        ("2025-11-20T23:30:00Z", "Europe/Warsaw", date(2025, 11, 21)),
        ("2025-11-20T23:30:00+00:00", "UTC", date(2025, 11, 20)),
        ("2025-11-21T01:00:00+02:00", "UTC", date(2025, 11, 20)),
        ("2025-11-20 12:00:00.123456", "UTC", date(2025, 11, 20)),
    ],
)
def test_parse_created_at(text: str, zone: str, expected: date) -> None:
    assert L.parse_created_at(text, ZoneInfo(zone)) == expected


@pytest.mark.parametrize("text", ["", "2025-13-01", "2025-02-30", "20251120", "yesterday", "2025-11-20T25:00", "2025-11-20" + "0" * 40, None, 20251120])
def test_bad_created_at(text: object) -> None:
    with pytest.raises(LayoutError):
        L.parse_created_at(text, UTC)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [20251120, 1.5, True, b"2025-11-20", object()])
def test_date_of_rejects_what_is_not_a_time(value: object) -> None:
    with pytest.raises(LayoutError):
        L.date_of(value, UTC)


@pytest.mark.parametrize(
    "kwargs",
    [dict(mode="both"), dict(uid_kind="uuid"), dict(queue_count=3), dict(shard_bits=0), dict(name_prefix="a_b")],
)
def test_bad_layout(kwargs: dict) -> None:
    args = dict(mode="name", shard_bits=8, queue_count=4, zone=UTC) | kwargs
    with pytest.raises(LayoutError):
        Layout(**args)


def test_layout_version_is_an_integer() -> None:
    assert isinstance(L.LAYOUT_VERSION, int) and Layout("name", 8, 4, UTC).version == L.LAYOUT_VERSION


# --- uniformity -----------------------------------------------------------------------------


def _assert_uniform(counts: Counter[int], shards: int, total: int) -> None:
    mean = total / shards
    assert len(counts) == shards
    worst = max(abs(c - mean) / mean for c in counts.values())
    assert worst <= 0.05, f"a shard is {worst:.1%} off the mean"
    # And no worse than chance: the chi-square statistic of a fair spread over 255 degrees of
    # freedom stays under 347 (p = 0.0001).
    chi2 = sum((c - mean) ** 2 / mean for c in counts.values())
    assert chi2 < 347, f"chi-square {chi2:.0f} says the spread is not uniform"


def test_name_shards_are_uniform() -> None:
    """One night of 1M names over 256 shards: every shard within 5% of the mean.

    5% of the mean (3906) is about 3.1 standard deviations, so even a perfect hash puts some
    shard past it for roughly one name set in three; this set (ids 1..1M of one date, as the
    marker names one night) measures 4.9%. The chi-square check below is the one that would
    catch a biased hash on any set.
    """
    counts = Counter(L.shard_of_name(f"20251120_{i}", 8) for i in range(1, 1_000_001))
    _assert_uniform(counts, 256, 1_000_000)


def test_text_uid_shards_are_uniform() -> None:
    counts = Counter(L.shard_of_text_uid(f"doc-{i:07d}", 8) for i in range(1_000_000))
    _assert_uniform(counts, 256, 1_000_000)
