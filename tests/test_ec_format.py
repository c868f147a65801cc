"""The erasure-coded layout, pure: stripes and segments at every boundary, stored blocks, the
footer (and what is not one), names, ETags and markers."""

from __future__ import annotations

import os
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from desq.storage.ec_format import (
    FOOTER_SIZE, Footer, FragmentError, Geometry, Version, fragment_key, new_version, open_blocks, parse_fragment_key, parse_marker_key,
    seal_cell, version_time,
)

G = Geometry(4, 2, cell=4096, block=1024)


def test_geometry_refuses_what_cannot_be() -> None:
    for bad in (dict(k=0, m=2), dict(k=4, m=0), dict(k=200, m=100), dict(k=4, m=2, cell=5000, block=1024), dict(k=4, m=2, cell=256, block=256)):
        with pytest.raises(ValueError):
            Geometry(**bad)


@pytest.mark.parametrize("length", [0, 1, 3, 4, 5, 4095, 4096 * 4 - 1, 4096 * 4, 4096 * 4 + 1, 4096 * 4 * 3 + 7])
def test_padding_is_under_k_bytes_and_fragments_are_equal(length: int) -> None:
    stripes = G.stripes(length)
    assert stripes == -(-length // G.stripe)
    cells = sum(G.cell_size(length, s) for s in range(stripes))
    assert cells == G.fragment_length(length)
    assert 0 <= cells * G.k - length < G.k
    assert G.stored_size(length) == cells + 4 * -(-cells // G.block) + FOOTER_SIZE


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 5 * 4096 * 4), st.data())
def test_segments_tile_the_range_each_inside_one_cell(length: int, data: st.DataObject) -> None:
    offset = data.draw(st.integers(0, length))
    size = data.draw(st.integers(0, length - offset))
    segments = G.segments(length, offset, size)
    assert sum(s.size for s in segments) == size
    at = offset
    for segment in segments:
        cell = G.cell_size(length, segment.stripe)
        assert segment.offset == at and 0 <= segment.index < G.k and segment.size > 0
        assert segment.stripe * G.cell <= segment.at and segment.at + segment.size <= segment.stripe * G.cell + cell
        # the byte's place: stripe, then its cell, then inside the cell
        assert at == segment.stripe * G.stripe + segment.index * cell + (segment.at - segment.stripe * G.cell)
        at += segment.size


def test_a_small_read_inside_one_cell_is_one_segment() -> None:
    assert len(G.segments(10 * G.stripe, G.cell + 10, 100)) == 1
    assert [s.index for s in G.segments(10 * G.stripe, G.cell - 10, 100)] == [0, 1]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 20_000), st.data())
def test_blocks_span_exactly_the_stored_bytes_of_a_range(length: int, data: st.DataObject) -> None:
    version = new_version()
    cell = os.urandom(length)
    stored = seal_cell(cell, version, 3, 0, G.block)
    at = data.draw(st.integers(0, length - 1))
    size = data.draw(st.integers(1, length - at))
    span = G.blocks(length, at, size)
    assert open_blocks(stored[span.start : span.start + span.stored], span, G.block, version, 3) == cell[at : at + size]


def test_a_block_of_another_fragment_version_or_place_fails() -> None:
    version = new_version()
    cell = os.urandom(3000)
    stored = seal_cell(cell, version, 1, 0, G.block)
    span = G.blocks(3000, 0, 3000)
    with pytest.raises(FragmentError, match="block 0"):
        open_blocks(stored, span, G.block, version, 2)  # another fragment's index
    with pytest.raises(FragmentError):
        open_blocks(stored, span, G.block, new_version(), 1)  # another version
    moved = seal_cell(cell, version, 1, 1, G.block)  # numbered as if it were one block later
    with pytest.raises(FragmentError):
        open_blocks(moved, span, G.block, version, 1)
    with pytest.raises(FragmentError, match="stored bytes"):
        open_blocks(stored[:-1], span, G.block, version, 1)
    for at in random.Random(5).sample(range(len(stored)), 40):
        flipped = bytearray(stored)
        flipped[at] ^= 1
        with pytest.raises(FragmentError):
            open_blocks(bytes(flipped), span, G.block, version, 1)


def footer() -> Footer:
    return Footer(4, 2, 5, 1 << 20, 16 << 10, 123_456_789, new_version(), 0xDEADBEEF, 0x12345678)


def test_the_footer_round_trips_and_is_128_bytes() -> None:
    f = footer()
    packed = f.pack()
    assert len(packed) == FOOTER_SIZE and Footer.parse(packed) == f
    assert f.geometry() == Geometry(4, 2, 1 << 20, 16 << 10)


def test_what_is_not_a_footer_is_a_fragment_error() -> None:
    packed = footer().pack()
    for at in range(FOOTER_SIZE):
        flipped = bytearray(packed)
        flipped[at] ^= 0x80
        with pytest.raises(FragmentError):
            Footer.parse(bytes(flipped))
    with pytest.raises(FragmentError):
        Footer.parse(packed[:-1])
    impossible = Footer(4, 2, 9, 1 << 20, 16 << 10, 1, new_version(), 0, 0).pack()  # index 9 of 4+2
    with pytest.raises(FragmentError, match="index"):
        Footer.parse(impossible)
    body = bytearray(packed)
    struct.pack_into("<H", body, 8, 7)  # a format from the future, with a valid checksum
    from crc32c import crc32c

    body[-4:] = struct.pack("<I", crc32c(bytes(body[:-4])))
    with pytest.raises(FragmentError, match="format 7"):
        Footer.parse(bytes(body))


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=200))
def test_random_bytes_are_never_a_footer(data: bytes) -> None:
    with pytest.raises(FragmentError):
        Footer.parse(data)


@pytest.mark.parametrize("key", ["20251120/FE.des", "a~b", "x~" + "0" * 32, "zażółć/空 ~", "k~" + "a" * 32 + "~1-2-3"])
def test_names_parse_back_whatever_the_key_holds(key: str) -> None:
    version = new_version()
    assert parse_fragment_key(fragment_key(key, version)) == (key, version)
    mark = Version(version, 10, 4096, 1024)
    assert parse_marker_key(mark.marker(key)) == (key, mark)
    assert parse_marker_key(fragment_key(key, version)) is None or parse_marker_key(fragment_key(key, version))[0] != key
    assert parse_fragment_key(mark.marker(key)) is None
    deletion = Version.deletion(after=version)
    assert parse_marker_key(deletion.marker(key)) == (key, deletion) and deletion.marker(key).endswith("~0-0-0")
    assert deletion.deleted and not mark.deleted and mark < deletion < Version(new_version(), 10, 4096, 1024)
    assert Version.deletion(after=b"\x01" + b"\xff" * 15).id == b"\x02" + b"\x00" * 15


def test_etags_name_their_version_and_nothing_else_passes() -> None:
    version = Version(new_version(), 5_000_000, 1 << 20, 16 << 10)
    assert Version.from_etag(version.etag) == version
    for other in ("", '"d41d8cd98f00b204e9800998ecf8427e"', "ec1-zz", version.etag + "-1", "ec1-" + "0" * 31 + "-1-2-3"):
        assert Version.from_etag(other) is None


def test_versions_sort_by_age() -> None:
    first = new_version()
    second = new_version()
    assert first < second and version_time(first) <= version_time(second)
