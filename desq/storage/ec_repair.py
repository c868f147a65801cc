"""Checking every fragment of erasure-coded objects, and rebuilding the missing or damaged ones.

A check reads each fragment whole, block by block (every block's checksum, the fragment's own
checksum, its footer) and looks for the commit marker on every node. A repair rebuilds the bad
fragments of an object stripe by stripe from K good ones, in bounded memory (one stripe), checks
the rebuilt object against the checksum its footers carry before anything is stored, and stores
each rebuilt fragment atomically under its own name, so readers never see a half-rebuilt one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from crc32c import crc32c

from desq.storage.base import StorageError, Upload
from desq.storage.ec import ECStorage, error_kind
from desq.storage.ec_format import FOOTER_SIZE, Footer, FragmentError, Version, fragment_key, open_blocks, parse_fragment_key, seal_cell

CHECK_CHUNK = 64
"""Blocks a check reads from a fragment per request."""


@dataclass(frozen=True, slots=True)
class FragmentProblem:
    """One fragment (or commit marker) of one object that is not as it should be."""

    key: str
    index: int
    node: str
    what: str
    marker_only: bool = False

    def line(self) -> str:
        """``BAD 20251120/FE.des: fragment 2 on file:///srv/n2: missing``"""
        part = "commit marker" if self.marker_only else "fragment"
        return f"BAD {self.key}: {part} {self.index} on {self.node}: {self.what}"


@dataclass
class Repaired:
    """What a repair of one object did."""

    key: str
    rebuilt: list[int] = field(default_factory=list)
    marked: list[int] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"rebuilt {self.key}: fragment {i}" for i in self.rebuilt]
        out += [f"rebuilt {self.key}: commit marker {i}" for i in self.marked]
        return out + [f"FAILED {self.key}: {why}" for why in self.failed]


def objects(ec: ECStorage, keys: Iterable[str] = ()) -> Iterator[tuple[str, Version, set[int]]]:
    """(key, current version, nodes holding its marker) of the keys given, or of every object."""
    wanted = list(keys)
    if not wanted:
        marked, _ = ec._versions("")
        for key in sorted(marked):
            if not (version := max(marked[key])).deleted:
                yield key, version, marked[key][version]
        return
    for key in wanted:
        versions = ec.marked(key)
        if not versions or (version := max(versions)).deleted:
            raise StorageError(f"no object {key!r} in {ec.url}")
        yield key, version, versions[version]


def check_fragment(ec: ECStorage, i: int, key: str, version: Version) -> str | None:
    """What is wrong with fragment ``i`` (None when nothing): its footer, every block, its checksum."""
    try:
        footer = ec.footer(i, key, version)
        geometry = ec._geometry(version)
        length = geometry.fragment_length(version.length)
        crc, step = 0, CHECK_CHUNK * geometry.block
        for at in range(0, length, step):
            crc = crc32c(ec.fragment_range(i, key, version, at, min(step, length - at)), crc)
        if crc != footer.fragment_crc:
            return "damaged: its cells do not match the checksum in its footer"
    except (StorageError, FragmentError) as exc:
        kind = error_kind(exc)
        return kind if kind == "missing" else f"{kind}: {getattr(exc, 'reason', exc)}"
    return None


def check(ec: ECStorage, key: str, version: Version, marked: set[int]) -> list[FragmentProblem]:
    """Every problem of one object's fragments and markers, in node order."""
    found = ec._each(lambda i: check_fragment(ec, i, key, version), range(len(ec.nodes)))
    problems = [FragmentProblem(key, i, ec.nodes[i].url, what) for i, what in sorted(found.items()) if isinstance(what, str)]
    for i, what in sorted(found.items()):
        if isinstance(what, BaseException):
            problems.append(FragmentProblem(key, i, ec.nodes[i].url, f"not checked: {what}"))
    bad = {p.index for p in problems}
    problems += [FragmentProblem(key, i, ec.nodes[i].url, "missing", marker_only=True) for i in range(len(ec.nodes)) if i not in marked and i not in bad]
    return sorted(problems, key=lambda p: (p.index, p.marker_only))


def repair(ec: ECStorage, key: str, version: Version, problems: list[FragmentProblem]) -> Repaired:
    """Rebuild the fragments ``problems`` name and store the markers missing."""
    done = Repaired(key)
    bad = sorted({p.index for p in problems if not p.marker_only})
    if bad:
        try:
            _rebuild(ec, key, version, bad)
            done.rebuilt = bad
        except (StorageError, FragmentError) as exc:
            done.failed.append(f"could not rebuild fragment(s) {', '.join(map(str, bad))}: {getattr(exc, 'reason', exc)}")
            return done
    missing = sorted({p.index for p in problems})
    done.marked = ec._mark(key, version, missing)
    done.failed += [f"could not store the commit marker on node {i} ({ec.nodes[i].url})" for i in missing if i not in done.marked]
    done.marked = [i for i in done.marked if i not in bad]
    return done


def _rebuild(ec: ECStorage, key: str, version: Version, bad: list[int]) -> None:
    geometry = ec._geometry(version)
    footer = _good_footer(ec, key, version, bad)
    uploads: dict[int, Upload] = {i: ec.nodes[i].open_upload(fragment_key(key, version.id)) for i in bad}
    try:
        crcs = {i: 0 for i in bad}
        object_crc, left, blocks = 0, version.length, 0
        failed: dict[int, BaseException] = {i: FragmentError("being rebuilt") for i in bad}
        for stripe in range(geometry.stripes(version.length)):
            cell = geometry.cell_size(version.length, stripe)
            have = ec.gather(key, version, stripe * geometry.cell, cell, dict(failed))
            data = ec.codec.data(have)
            for piece in data:
                take = min(left, cell)
                object_crc = crc32c(piece[:take], object_crc)
                left -= take
            rebuilt = ec.codec.rebuild(dict(enumerate(data)), bad)
            for i in bad:
                crcs[i] = crc32c(rebuilt[i], crcs[i])
                uploads[i].write(seal_cell(rebuilt[i], version.id, i, blocks, geometry.block))
            blocks += -(-cell // geometry.block)
        if object_crc != footer.object_crc:
            raise FragmentError("the rebuilt object does not match the checksum its fragments carry; nothing stored")
        for i in bad:
            uploads[i].write(Footer(ec.k, ec.m, i, version.cell, version.block, version.length, version.id, footer.object_crc, crcs[i]).pack())
        for i in bad:
            uploads[i].commit()
    except BaseException:
        for upload in uploads.values():
            upload.abort()
        raise


def _good_footer(ec: ECStorage, key: str, version: Version, bad: list[int]) -> Footer:
    for i in range(len(ec.nodes)):
        if i not in bad:
            try:
                return ec.footer(i, key, version)
            except (StorageError, FragmentError):
                continue
    raise FragmentError("no intact footer to rebuild from")


def targets(ec: ECStorage, containers: Iterable[str]) -> list[str]:
    """The objects of the containers named: each one and the big files stored beside it."""
    keys: list[str] = []
    for key in containers:
        keys.append(key)
        keys += [info.key for info in ec.list(f"{key}.big/")]
    return keys


def check_many(ec: ECStorage, keys: Iterable[str] = (), jobs: int = 4) -> Iterator[tuple[str, list[FragmentProblem]]]:
    """(key, problems) of the keys given, or of every object, in key order, ``jobs`` at a time."""
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="ec-check") as pool:
        for key, problems in pool.map(lambda found: (found[0], check(ec, *found)), objects(ec, keys)):
            yield key, problems


def repair_many(ec: ECStorage, keys: Iterable[str] = (), jobs: int = 2) -> Iterator[tuple[str, list[FragmentProblem], Repaired | None]]:
    """Check the keys given (or every object) and repair those with problems, in key order."""
    def one(found: tuple[str, Version, set[int]]) -> tuple[str, list[FragmentProblem], Repaired | None]:
        problems = check(ec, *found)
        return found[0], problems, repair(ec, found[0], found[1], problems) if problems else None

    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="ec-repair") as pool:
        yield from pool.map(one, objects(ec, keys))


def identify(path: str) -> tuple[str, list[str]] | None:
    """What a fragment file on a node is, from its own bytes only (no index, no other node): a
    line naming its object and place, and one line a problem (bad blocks, a wrong checksum).
    None when the file is no fragment."""
    parsed = parse_fragment_key(os.path.basename(path))
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size < FOOTER_SIZE:
            return None
        fh.seek(size - FOOTER_SIZE)
        try:
            footer = Footer.parse(fh.read(FOOTER_SIZE))
        except FragmentError:
            return None
        geometry = footer.geometry()
        what = (f"fragment {footer.index} of {footer.k}+{footer.m} ({'data' if footer.index < footer.k else 'parity'}) of version "
                f"{footer.version.hex()}: object of {footer.length:,} bytes, CRC32C {footer.object_crc:08x}, "
                f"cells of {footer.cell:,}, blocks of {footer.block:,}")
        problems: list[str] = []
        if parsed is not None and parsed[1] != footer.version:
            problems.append(f"its name says version {parsed[1].hex()}, its footer {footer.version.hex()}")
        if size != geometry.stored_size(footer.length):
            problems.append(f"{size:,} bytes, {geometry.stored_size(footer.length):,} expected")
            return what, problems
        length, crc = geometry.fragment_length(footer.length), 0
        fh.seek(0)
        for number in range(-(-length // footer.block)):
            body = min(footer.block, length - number * footer.block)
            stored = fh.read(body + 4)
            span = geometry.blocks(length, number * footer.block, body)
            try:
                crc = crc32c(open_blocks(stored, span, footer.block, footer.version, footer.index), crc)
            except FragmentError as exc:
                problems.append(str(exc))
        if not problems and crc != footer.fragment_crc:
            problems.append("its cells do not match the checksum in its footer")
        return what, problems
