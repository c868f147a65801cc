"""Reed-Solomon over GF(2^8) with zfec: parity for K cells, any K cells back to all of them.

zfec works byte by byte across its blocks, so any byte range of a stripe's cells decodes on its
own: a degraded read fetches from K fragments only the range it needs, never whole cells.
(pyeclib's fragments each carry their own header and decode only whole; see BENCHMARKS.md for
both libraries measured here.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import zfec


class Codec:
    """A systematic K+M code: fragments 0..K-1 are the data itself, K..K+M-1 its parity."""

    def __init__(self, k: int, m: int) -> None:
        self.k, self.m = k, m
        self._encoder = zfec.Encoder(k, k + m)
        self._decoder = zfec.Decoder(k, k + m)
        self._parity = tuple(range(k, k + m))

    def parity(self, cells: Sequence[bytes]) -> list[bytes]:
        """The M parity cells of K data cells of one length."""
        return [bytes(p) for p in self._encoder.encode(tuple(cells), self._parity)]

    def data(self, have: Mapping[int, bytes]) -> list[bytes]:
        """The K data cells from any K of the K+M cells (index -> bytes, all one length)."""
        if len(have) < self.k:
            raise ValueError(f"{len(have)} cells given, {self.k} needed")
        chosen = sorted(have)[: self.k]
        if chosen == list(range(self.k)):
            return [have[i] for i in chosen]
        return [bytes(b) for b in self._decoder.decode(tuple(have[i] for i in chosen), tuple(chosen))]

    def rebuild(self, have: Mapping[int, bytes], wanted: Sequence[int]) -> dict[int, bytes]:
        """The cells ``wanted`` (data or parity) from any K others."""
        data = self.data(have)
        out = {i: data[i] for i in wanted if i < self.k}
        if any(i >= self.k for i in wanted):
            parity = self.parity(data)
            out.update({i: parity[i - self.k] for i in wanted if i >= self.k})
        return out
