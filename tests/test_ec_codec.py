"""The code: parity of K cells, and any K of the K+M cells back to every one of them."""

from __future__ import annotations

import os
from itertools import combinations

import pytest

from desq.storage.ec_codec import Codec


@pytest.mark.parametrize("k,m", [(1, 1), (2, 1), (4, 2), (3, 3), (10, 4)])
def test_any_k_cells_give_back_all(k: int, m: int) -> None:
    codec = Codec(k, m)
    cells = [os.urandom(777) for _ in range(k)]
    every = cells + codec.parity(cells)
    assert len(every) == k + m
    for chosen in list(combinations(range(k + m), k))[:200]:
        have = {i: every[i] for i in chosen}
        assert codec.data(have) == cells, chosen
        assert codec.rebuild(have, range(k + m)) == dict(enumerate(every)), chosen


def test_any_byte_range_of_the_cells_decodes_on_its_own() -> None:
    codec = Codec(4, 2)
    cells = [os.urandom(1 << 16) for _ in range(4)]
    every = cells + codec.parity(cells)
    for lo, hi in ((0, 1), (12_345, 16_441), (65_535, 65_536)):
        have = {i: every[i][lo:hi] for i in (1, 3, 4, 5)}
        assert codec.data(have) == [c[lo:hi] for c in cells]


def test_fewer_than_k_cells_is_an_error() -> None:
    codec = Codec(4, 2)
    with pytest.raises(ValueError, match="3 cells given, 4 needed"):
        codec.data({0: b"a", 1: b"b", 5: b"c"})
