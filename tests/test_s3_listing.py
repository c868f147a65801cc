"""The S3 listing: containers' names as keys, paged in UTF-8 order, against a brute-force model."""

from __future__ import annotations

import base64
import io
import random
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from desq.archive import store_external
from desq.container import ContainerWriter
from desq.layout import Layout, container_key, parse_yyyymmdd, shard_of_name
from desq.s3 import tokens
from desq.s3.listing import Lister, ListingError
from desq.s3.paging import Page, Shard, paginate, successor
from desq.s3.tokens import BadToken, decode_token, encode_token
from desq.storage import Storage
from desq.storage.counting import CountingStorage
from desq.storage.local import LocalStorage
from des_v1_writer import V1Member, write_v1
from sources import build

ZONE = ZoneInfo("Europe/Paris")
NAME = Layout(mode="name", shard_bits=2, queue_count=1, zone=ZONE)
UID = Layout(mode="uid", shard_bits=4, queue_count=1, zone=ZONE, uid_kind="text")
KEY = b"k" * 32
ODD = ["é", "\uff5e", "\U0001f600", "中文", "a/b", "a/c/d", "a", "a-", "Z", "z\U0010ffff"]
"""Names whose UTF-8 order is not their UTF-16 order (U+FF5E before U+1F600), holding ``/``, and
U+10FFFF, the greatest code point."""


def put_day(storage: Storage, layout: Layout, day: str, names: Iterable[str]) -> None:
    """Containers of ``day``, one a shard, holding ``names`` (sized by their position)."""
    shards: dict[int, list[tuple[str, bytes]]] = {}
    for i, name in enumerate(names):
        shards.setdefault(shard_of_name(name, layout.shard_bits), []).append((name, b"x" * (i % 50)))
    for shard, members in shards.items():
        storage.put(container_key(parse_yyyymmdd(day), shard, layout.shard_bits), build(members))


def archive(tmp_path: Path, layout: Layout = NAME) -> tuple[CountingStorage, dict[str, int]]:
    """Three days in name-mode style plus odd names, and the objects that must never be keys."""
    storage = CountingStorage(LocalStorage(tmp_path / "archive"))
    expected: dict[str, int] = {}
    for day, count in (("20251119", 30), ("20251120", 45), ("20260101", 7)):
        names = [f"{day}_{i}" for i in range(count)] + ([f"INV_{day}_{i}" for i in range(5)] if day == "20251120" else [])
        names += ODD if day == "20251120" else []
        put_day(storage, layout, day, names)
        expected |= {f"{day}/{name}": i % 50 for i, name in enumerate(names)}
    big = container_key(parse_yyyymmdd("20260101"), 1, layout.shard_bits)  # replaces that shard
    ref = store_external(storage, big, "20260101_big", [b"B" * 1000], 1000)
    out = io.BytesIO()
    with ContainerWriter(out) as writer:
        writer.add("20260101_small", b"s")
        writer.add_external("20260101_big", size=ref.size, checksum=ref.checksum, block_checksums=ref.block_checksums, external_key=ref.external_key)
    storage.put(big, out.getvalue())
    expected = {k: v for k, v in expected.items() if not k.startswith("20260101/") or shard_of_name(k[9:], layout.shard_bits) != 1}
    expected |= {"20260101/20260101_small": 1, "20260101/20260101_big": 1000}
    assert any(".big/" in info.key for info in storage.list("20260101/"))
    for junk in ("_desq/cutoff.json", "_desq/night.json", f"{big}.staging-1f", "20251120/00.des", "20251120/readme.txt", "20251399/0.des", "2025112/0.des", "20251120/0.DES"):
        storage.put(junk, build([("20251120_junk", b"j")]))
    storage.requests.clear()
    return storage, expected


def walk(lister: Lister, max_keys: int, **kw: str) -> tuple[list[str], list[Page]]:
    """Every entry of a listing, page by page through continuation tokens."""
    got, pages, after = [], [], ""
    while True:
        assert len(pages) < 1000, "the listing does not move on"
        page = lister.page(after=after, max_keys=max_keys, **kw)
        pages.append(page)
        got += sorted([e.key for e in page.entries] + page.common_prefixes, key=str.encode)
        if not page.truncated:
            return got, pages
        after = decode_token(encode_token(page.next_after or "", KEY), KEY)


def model(keys: Iterable[str], prefix: str = "", delimiter: str | None = None, after: str = "") -> list[str]:
    """S3's listing, brute force: roll keys up at the first delimiter after the prefix, keep what
    sorts after ``after``, in UTF-8 byte order."""
    entries = set()
    for key in keys:
        if key.startswith(prefix):
            at = key.find(delimiter, len(prefix)) if delimiter else -1
            entries.add(key if at == -1 else key[: at + len(delimiter)])
    return sorted((e for e in entries if e.encode() > after.encode()), key=str.encode)


# --- the archive's keys -----------------------------------------------------------------------


def test_the_listing_is_every_member_in_utf8_order_and_nothing_else(tmp_path: Path) -> None:
    storage, expected = archive(tmp_path)
    page = Lister(storage, NAME).page()
    assert [e.key for e in page.entries] == sorted(expected, key=str.encode)
    assert {e.key: e.size for e in page.entries} == expected
    assert not page.truncated and page.next_after is None and page.common_prefixes == []
    keys = [e.key for e in page.entries]
    assert keys.index("20251120/\uff5e") < keys.index("20251120/\U0001f600")  # UTF-16 would say otherwise
    assert not any("junk" in k or ".big" in k or "_desq" in k for k in keys)
    assert page.entries[0].last_modified == datetime(2025, 11, 18, 23, 0, tzinfo=timezone.utc)  # the day's start in Paris


def test_uid_mode_lists_uids_and_des_v1_containers(tmp_path: Path) -> None:
    storage = CountingStorage(LocalStorage(tmp_path / "a"))
    uids = ["doc-000001", "doc-000002", "123", "Ünïcode-uid"]
    put_day(storage, UID, "20240229", uids)
    storage.put("20240301/A.des", write_v1([V1Member("old-1", b"abc"), V1Member("old-2", b"")]))
    page = Lister(storage, UID).page()
    assert [(e.key, e.size) for e in page.entries] == sorted([(f"20240229/{u}", i % 50) for i, u in enumerate(uids)] + [("20240301/old-1", 3), ("20240301/old-2", 0)])


@pytest.mark.parametrize("max_keys", range(1, 8))
@pytest.mark.parametrize("delimiter", [None, "/", "_"])
def test_pages_concatenate_to_the_whole_listing(tmp_path: Path, max_keys: int, delimiter: str | None) -> None:
    storage, expected = archive(tmp_path)
    lister = Lister(storage, NAME)
    got, pages = walk(lister, max_keys, **({"delimiter": delimiter} if delimiter else {}))
    assert got == model(expected, delimiter=delimiter)
    assert all(len(p.entries) + len(p.common_prefixes) == max_keys for p in pages[:-1])


def test_start_after_and_tokens_combine(tmp_path: Path) -> None:
    storage, expected = archive(tmp_path)
    lister = Lister(storage, NAME)
    start_after = "20251120/20251120_3"
    first = lister.page(after=start_after, max_keys=4)
    token = encode_token(first.next_after or "", KEY)
    second = lister.page(after=max(start_after, decode_token(token, KEY), key=str.encode), max_keys=1000)
    assert [e.key for e in first.entries + second.entries] == model(expected, after=start_after)
    assert lister.page(after="20251120/20251120_3", max_keys=1).entries[0].key == "20251120/20251120_30"


def test_a_delimiter_gives_one_prefix_per_day_reading_no_names(tmp_path: Path) -> None:
    storage, _ = archive(tmp_path)
    lister = Lister(storage, NAME)
    assert lister.page(delimiter="/").common_prefixes == ["20251119/", "20251120/", "20260101/"]
    assert list(storage.requests) == ["folders "]  # which days exist, and no names
    storage.requests.clear()
    got, pages = walk(lister, 1, delimiter="/")
    assert got == ["20251119/", "20251120/", "20260101/"] and [p.truncated for p in pages] == [True, True, False]
    assert sum(p.requests for p in pages) == 0  # which days exist is kept a while
    assert lister.page(prefix="2025", delimiter="/").common_prefixes == ["20251119/", "20251120/"]
    assert lister.page(prefix="2025", delimiter="1").common_prefixes == ["20251"]
    assert lister.page(prefix="20251", delimiter="1").common_prefixes == ["202511"]
    assert lister.page(delimiter="/", after="20251119/").common_prefixes == ["20251120/", "20260101/"]
    assert lister.page(delimiter="/", after="20251119/20251119_3").common_prefixes == ["20251120/", "20260101/"]


def test_prefixes_cut_inside_days_and_names(tmp_path: Path) -> None:
    storage, expected = archive(tmp_path)
    lister = Lister(storage, NAME)
    for prefix, delimiter in [("2025112", None), ("20251120/INV_", None), ("20251120/a", "/"), ("20251120/a/", "/"), ("20251120/", "/"),
                              ("20251120/20251120_1", None), ("20251120/\U0001f600", None), ("20251120/", "_"), ("20251120/", "é"), ("20251120/z", None)]:
        storage.requests.clear()
        got, _ = walk(lister, 2, prefix=prefix, **({"delimiter": delimiter} if delimiter else {}))
        assert got == model(expected, prefix, delimiter), (prefix, delimiter)
        if prefix.startswith("20251120/"):
            assert all(r.split()[1].startswith("20251120/") for r in storage.requests), storage.requests  # no other day is read
    page = lister.page(prefix="20251120/", delimiter="/")
    assert "20251120/a/" in page.common_prefixes and "20251120/a" in [e.key for e in page.entries]
    storage.requests.clear()
    assert lister.page(prefix="20251120X") == Page([], [], False, None) and list(storage.requests) == []


def test_max_keys_zero_is_an_empty_page_reading_nothing(tmp_path: Path) -> None:
    storage, _ = archive(tmp_path)
    assert Lister(storage, NAME).page(max_keys=0) == Page([], [], False, None)
    assert list(storage.requests) == []


@pytest.mark.parametrize("args", [{"max_keys": -1}, {"max_keys": 1001}, {"max_keys": True}, {"max_keys": 2.0}, {"prefix": "\udc80"},
                                  {"after": "x" * 1025}, {"delimiter": 7}, {"prefix": None}])
def test_impossible_arguments_are_refused_before_any_request(tmp_path: Path, args: dict) -> None:
    storage, _ = archive(tmp_path)
    with pytest.raises(ValueError):
        Lister(storage, NAME).page(**args)
    assert list(storage.requests) == []


def test_request_counts_cold_and_warm(tmp_path: Path) -> None:
    storage = CountingStorage(LocalStorage(tmp_path / "a"))
    layout = Layout(mode="name", shard_bits=8, queue_count=1, zone=ZONE)
    put_day(storage, layout, "20251120", [f"20251120_{i}" for i in range(5000)])
    containers = len([i for i in storage.list("20251120/")])
    assert containers == 256
    seen: list[str] = []
    lister = Lister(storage, layout, on_request=seen.append)
    cold = lister.page(prefix="20251120/")
    assert cold.requests == 1 + 256 and seen.count("suffix") == 256 and seen.count("list") == 1
    warm = lister.page(prefix="20251120/", after=cold.next_after or "")
    assert warm.requests == 1 and warm.entries[0].key > cold.entries[-1].key
    assert lister.page().requests == 2  # which days exist, then the day's containers: no names to read
    assert lister.page().requests == 1  # the days are kept: the day's containers


SHORT = ["", "2", "20", "202", "2025", "20251", "202511", "2025112", "20251120", "20251119", "2026", "20260101", "1", "3", "x", "_", "_desq", "2025113"]
"""Prefixes shorter than a day: cuts of the days, of no day, and of the objects that are no day."""


def folder_listings(storage: CountingStorage) -> list[str]:
    """The storage requests that read which days exist (or, before, everything under a short prefix)."""
    return [r for r in storage.requests if r.startswith("folders") or (r.startswith("list") and len(r) < len("list ") + 9)]


def test_which_days_exist_is_one_folders_listing_for_every_short_prefix(tmp_path: Path) -> None:
    storage, expected = archive(tmp_path)
    now = [0.0]
    lister = Lister(storage, NAME, days_ttl=30, clock=lambda: now[0])
    top = lister.page(delimiter="/")
    assert top.common_prefixes == ["20251119/", "20251120/", "20260101/"] and top.requests == 1
    assert lister.page(delimiter="/").requests == 0
    asked = SHORT + [f"{c}{d}" for c in "0123456789" for d in "0123456789"][:60] + [f"y{i}" for i in range(10)]
    assert len(set(asked)) > 65  # more than the old per-prefix cache held
    for _ in range(2):
        for prefix in asked:
            for delimiter in (None, "/", "1"):
                got, pages = walk(lister, 4, prefix=prefix, **({"delimiter": delimiter} if delimiter else {}))
                assert got == model(expected, prefix, delimiter), (prefix, delimiter)
    assert folder_listings(storage) == ["folders "]  # one for all of them, within days_ttl
    assert all(len(r) >= len("list ") + 9 for r in storage.requests if r.startswith("list"))  # the rest: one day each
    storage.put("20260102/0.des", build([("20260102_1", b"n")]))
    now[0] = 29.9
    assert lister.page(prefix="2026", delimiter="/").common_prefixes == ["20260101/"] and len(folder_listings(storage)) == 1
    now[0] = 30
    assert lister.page(prefix="2026", delimiter="/").common_prefixes == ["20260101/", "20260102/"]
    assert lister.page(prefix="20", delimiter="/").requests == 0 and len(folder_listings(storage)) == 2


def test_pages_at_once_share_one_reading_of_the_days(tmp_path: Path) -> None:
    storage, _ = archive(tmp_path)

    class Slow(CountingStorage):
        def folders(self, prefix: str = "") -> Iterator[str]:
            time.sleep(0.2)
            return super().folders(prefix)

    slow = Slow(storage.inner)
    lister = Lister(slow, NAME)
    with ThreadPoolExecutor(8) as pool:
        pages = list(pool.map(lambda p: lister.page(prefix=p, delimiter="/"), ["", "2", "20", "2025", "202511", "2026", "", "1"]))
    assert [len(p.common_prefixes) for p in pages] == [3, 3, 3, 2, 2, 1, 3, 0]
    assert list(slow.requests) == ["folders "]


def test_a_day_folder_without_containers_lists_no_keys(tmp_path: Path) -> None:
    storage, expected = archive(tmp_path)
    for leftover in ("20251121/0.des.staging-1f", "20251122/readme.txt", "20251123/0.des.big/ab/cd", "20260102/_desq.json", "29991231/x"):
        storage.put(leftover, b"not a container")
    lister = Lister(storage, NAME)
    for max_keys in (1, 2, 3, 7, 1000):
        for prefix in ("", "2025112", "20251121/", "2026", "2999"):
            got, pages = walk(lister, max_keys, prefix=prefix)
            assert got == model(expected, prefix), (max_keys, prefix)
            assert all(len(p.entries) == max_keys for p in pages[:-1])  # at worst a last page is empty
    assert lister.page(prefix="20251121/") == replace(Page([], [], False, None), requests=1)
    assert lister.page(prefix="20251121/", delimiter="/").common_prefixes == []
    empty_days = ["20251121/", "20251122/", "20251123/", "20260102/", "29991231/"]  # only a day's listing could tell
    got, pages = walk(lister, 2, delimiter="/")
    assert got == sorted(model(expected, delimiter="/") + empty_days) and sum(p.requests for p in pages) == 0


def test_a_replaced_container_is_read_again(tmp_path: Path) -> None:
    storage = CountingStorage(LocalStorage(tmp_path / "a"))
    storage.put("20251120/0.des", build([("20251120_1", b"a"), ("20251120_2", b"b")]))
    lister = Lister(storage, NAME)
    assert [e.key for e in lister.page(prefix="20251120/").entries] == ["20251120/20251120_1", "20251120/20251120_2"]
    storage.put("20251120/0.des", build([("20251120_1", b"a"), ("20251120_3", b"ccc")]))
    page = lister.page(prefix="20251120/")
    assert [(e.key, e.size) for e in page.entries] == [("20251120/20251120_1", 1), ("20251120/20251120_3", 3)] and page.requests == 2


def test_a_name_in_two_shards_is_listed_once() -> None:
    shards = [Shard(["a", "b"], [1, 2]), Shard(["b", "c"], [2, 3])]
    page = paginate([("20251120", lambda: shards)], modified=lambda d: datetime(2025, 1, 1))
    assert [e.key for e in page.entries] == ["20251120/a", "20251120/b", "20251120/c"]


def test_a_damaged_container_refuses_the_page_with_one_clear_error(tmp_path: Path) -> None:
    storage = CountingStorage(LocalStorage(tmp_path / "a"))
    blob = bytearray(build([(f"20251120_{i}", b"data") for i in range(20)]))
    at = blob.rindex(b"20251120_5")  # in the NAMES region, after every frame
    blob[at] ^= 1
    storage.put("20251120/0.des", bytes(blob))
    storage.put("20251119/0.des", build([("20251119_1", b"a")]))
    lister = Lister(storage, NAME)
    with pytest.raises(ListingError, match=r"20251120/0\.des cannot be listed: container names checksum does not match"):
        lister.page()
    assert lister.page(delimiter="/").common_prefixes == ["20251119/", "20251120/"]  # no names needed
    assert [e.key for e in lister.page(max_keys=1).entries] == ["20251119/20251119_1"]  # the page stops before it


def test_the_names_cache_is_bounded(tmp_path: Path) -> None:
    storage, expected = archive(tmp_path)
    lister = Lister(storage, NAME, cache_bytes=3000)
    assert len(lister.page().entries) == len(expected)
    assert 0 < lister.cached_bytes() <= 3000


# --- tokens -----------------------------------------------------------------------------------


def test_tokens_round_trip_and_refuse_anything_else() -> None:
    for position in ["", "20251120/", "20251120/\U0001f600 é/中", "x" * 1024]:
        token = encode_token(position, KEY)
        assert decode_token(token, KEY) == position and len(token) <= tokens.MAX_TOKEN_CHARS
        assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    token = encode_token("20251120/20251120_5", KEY)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    forged = [
        encode_token("20251120/20251120_5", b"another key, 32 bytes long......"),
        token[:-1], token[:-4], token + "A", token + "=", token + "==", token[:10],
        token.replace("-", "+").replace("_", "/"), "", "!" * 20, "A" * 5000,
        base64.urlsafe_b64encode(b"\x01" + b"20251120/20251120_9" + raw[-32:]).rstrip(b"=").decode(),
        base64.urlsafe_b64encode(b"\x02" + raw[1:-32] + tokens._mac(KEY, b"\x02" + raw[1:-32])).rstrip(b"=").decode(),
    ]
    flipped = list(token)
    flipped[len(token) // 2] = "A" if flipped[len(token) // 2] != "A" else "B"
    forged.append("".join(flipped))
    if len(token) % 4:  # the last character carries unused bits: another with the same bytes
        forged.append(token[:-1] + chr(ord(token[-1]) + 1))
    for bad in forged:
        with pytest.raises(BadToken):
            decode_token(bad, KEY)
    with pytest.raises(ValueError):
        encode_token("x" * 1025, KEY)
    with pytest.raises(ValueError):
        encode_token("x", b"short")


# --- the model --------------------------------------------------------------------------------

ALPHABET = ["a", "b", "/", "_", "é", "\uff5e", "\U0001f600", "中", "\U0010ffff", "0", "2"]
text = st.text(st.sampled_from(ALPHABET), max_size=4)


@st.composite
def archives(draw: st.DrawFn) -> dict[str, list[list[str]]]:
    days = draw(st.lists(st.sampled_from(["20251119", "20251120", "20260101", "20250101"]), min_size=1, max_size=3, unique=True))
    out = {}
    for day in sorted(days):
        names = draw(st.lists(st.text(st.sampled_from(ALPHABET), min_size=1, max_size=5), min_size=1, max_size=12, unique=True))
        count = draw(st.integers(1, 3))
        shards = [sorted(names[i::count]) for i in range(count)]
        out[day] = [s for s in shards if s]
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(archives(), st.data())
def test_pages_match_the_brute_force_model(days: dict[str, list[list[str]]], data: st.DataObject) -> None:
    keys = [f"{d}/{n}" for d, shards in days.items() for s in shards for n in s]
    cut = lambda: data.draw(st.one_of(text, st.sampled_from(keys).flatmap(lambda k: st.integers(0, len(k)).map(lambda i: k[:i]))))  # noqa: E731
    prefix, after = cut(), cut()
    delimiter = data.draw(st.one_of(st.none(), st.sampled_from(["/", "_", "0/", "1/2", "é", "2"]), st.text(st.sampled_from(ALPHABET), min_size=1, max_size=2)))
    max_keys = data.draw(st.integers(0, 5))
    sources = [(d, lambda shards=shards: [Shard(s, [len(n) for n in s]) for s in shards]) for d, shards in days.items()]
    want = model(keys, prefix, delimiter, after)
    page = paginate(sources, prefix=prefix, delimiter=delimiter, after=after, max_keys=max_keys, modified=lambda d: datetime(2025, 1, 1))
    assert [e.key for e in page.entries] == sorted((e.key for e in page.entries), key=str.encode)
    assert page.common_prefixes == sorted(page.common_prefixes, key=str.encode)
    got = sorted([e.key for e in page.entries] + page.common_prefixes, key=str.encode)
    assert got == want[:max_keys]
    assert page.truncated == (0 < max_keys < len(want))
    assert set(page.common_prefixes) <= {w for w in want if delimiter and w.endswith(delimiter)}
    if page.truncated:
        assert page.next_after == got[-1]
        rest = paginate(sources, prefix=prefix, delimiter=delimiter, after=page.next_after, max_keys=1000, modified=lambda d: datetime(2025, 1, 1))
        assert got + sorted([e.key for e in rest.entries] + rest.common_prefixes, key=str.encode) == want


def test_successor_is_above_every_extension() -> None:
    rng = random.Random(5)
    for prefix in ["a", "a\U0010ffff", "\ud7ff", "20251120/z"]:
        above = successor(prefix)
        assert above is not None and above > prefix
        for _ in range(200):
            longer = prefix + "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 6)))
            assert longer < above
    assert successor("\U0010ffff") is None


# --- on the S3 test server --------------------------------------------------------------------


@pytest.mark.integration
def test_listing_on_s3_storage(s3_endpoint: str, s3_bucket: str) -> None:
    from desq.storage.s3 import S3Storage

    storage = CountingStorage(S3Storage(f"s3://{s3_bucket}/desq", endpoint_url=s3_endpoint))
    expected = []
    for day in ("20251119", "20251120"):
        names = [f"{day}_{i}" for i in range(40)] + ODD
        put_day(storage, NAME, day, names)
        expected += [f"{day}/{n}" for n in names]
    storage.put("_desq/cutoff.json", b"{}")
    storage.put("20251120/0.des.staging-9", b"partial")
    storage.requests.clear()
    lister = Lister(storage, NAME)
    got, pages = walk(lister, 17)
    assert got == sorted(expected, key=str.encode)
    assert pages[0].requests == 1 + 1 + 4  # the days, the first day's listing, then its four containers
    assert sum(r.startswith("suffix") for r in storage.requests) == 8  # each container read once
    assert sum(p.requests for p in pages) == len(storage.requests) and all(p.requests <= 2 + 4 for p in pages)
    assert lister.page(prefix="20251120/", after="20251120/20251120_5", max_keys=3).requests == 1
    assert lister.page(delimiter="/").common_prefixes == ["20251119/", "20251120/"]


@pytest.mark.integration
def test_which_days_exist_is_one_delimiter_request_on_s3(s3_endpoint: str, s3_bucket: str) -> None:
    from desq.storage.s3 import S3Storage

    s3 = S3Storage(f"s3://{s3_bucket}/desq", endpoint_url=s3_endpoint)
    layout = Layout(mode="name", shard_bits=8, queue_count=1, zone=ZONE)
    days = ["20251119", "20251120", "20251121", "20260101"]
    blob = build([("x_1", b"a")])
    with ThreadPoolExecutor(16) as pool:  # 1,024 containers: a full listing would take two requests
        list(pool.map(lambda key: s3.put(key, blob), [container_key(parse_yyyymmdd(d), shard, 8) for d in days for shard in range(256)]))
    s3.put("20251122/00.des.staging-9", b"partial")
    s3.put("_desq/cutoff.json", b"{}")
    sent: list[str] = []
    s3.client.meta.events.register("before-send.s3.ListObjectsV2", lambda request, **_: sent.append(request.url))
    lister = Lister(s3, layout)
    assert lister.page(delimiter="/").common_prefixes == [f"{d}/" for d in days[:3]] + ["20251122/", "20260101/"]
    assert len(sent) == 1 and "delimiter=%2F" in sent[0]
    for prefix in ["2", "20", "202511", "2025112", "20251120", "2026", "1"] + [f"x{i}" for i in range(64)]:
        assert lister.page(prefix=prefix, delimiter="/").requests == 0
    assert lister.page(prefix="202511", delimiter="/").common_prefixes == [f"{d}/" for d in days[:3]] + ["20251122/"]
    page = lister.page(prefix="2025112", max_keys=3)
    assert [e.key for e in page.entries] == ["20251120/x_1", "20251121/x_1"] and not page.truncated
    assert len(sent) == 1 + 3  # then one listing of each day 2025112x: 20251122 holds no container
