"""Commands that read the archive: ``locate``, ``get``, ``ls``, ``cat``, ``verify``, ``fsck``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from desq.archive import Archive, StorageSource
from desq.container import Problem, Reader
from desq.container.fsck import salvage
from desq.errors import DesqError
from desq.mode import mode_for
from desq.progress import progress
from desq.settings import Settings
from desq.verify import DEFAULT_JOBS, Targets, VerifyRun, check
from desq.storage import NotFound, Storage, storage_for

from desq.cli.base import common_options, main, needs_settings


def _container(settings: Settings, target: str) -> tuple[Storage, str]:
    """A container given as a local file, or as a key under the archive (local or S3)."""
    return Targets(lambda: storage_for(settings)).locate(target)


def _open(settings: Settings, target: str) -> Reader:
    return Targets(lambda: storage_for(settings)).open(target)[0]


@main.command()
@common_options
@click.argument("name")
@click.option("--created-at", metavar="DATE", help="uid mode: the file's created_at (YYYY-MM-DD or ISO 8601).")
@needs_settings
def locate(settings: Settings, name: str, created_at: str | None) -> None:
    """Print where NAME (uid mode: a uid) lives, as JSON."""
    mode = mode_for(settings.layout)
    if mode.takes_created_at and created_at is None:
        raise click.UsageError("uid mode needs --created-at DATE to locate a uid")
    if not mode.takes_created_at and created_at is not None:
        raise click.UsageError("--created-at is for uid mode; a name-mode name carries its date")
    where = mode.locate(name, created_at)
    member = None
    try:
        member = Archive(storage_for(settings)).find(where.container, where.name)
    except NotFound:
        pass  # not packed yet: offset and length stay null
    offset, length = (member.offset, member.size) if member else (None, None)
    record = {"name": where.name, "shard": where.shard_hex, "container": where.container, "offset": offset, "length": length}
    click.echo(json.dumps(record, ensure_ascii=False))


@main.command()
@common_options
@click.argument("name")
@click.option("--created-at", metavar="DATE", help="uid mode: the file's created_at.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write to this file instead of stdout.")
@needs_settings
def get(settings: Settings, name: str, created_at: str | None, output: str | None) -> None:
    """Write one archived file to stdout or FILE, checked against its checksums."""
    from desq.files import FileService, FilesError

    service = FileService(settings, Archive(storage_for(settings)))
    try:
        target = service.locate(name, created_at)
    except FilesError as exc:
        raise DesqError(str(exc)) from None
    if target.original is not None:
        raise DesqError(f"{name} is not archived yet (created after the cutoff); it is at {target.original}")
    try:
        _, chunks = service.archive.open_range(target.container, target.name)
        first = next(chunks, b"")
    except NotFound:
        raise DesqError(f"{name} is not in the archive ({target.container} has no such file)") from None
    if output:
        partial = Path(output).with_name(f".{Path(output).name}.partial")
        with open(partial, "wb") as fh:
            fh.write(first)
            for chunk in chunks:
                fh.write(chunk)
        partial.replace(output)
    else:
        out = sys.stdout.buffer
        out.write(first)
        for chunk in chunks:
            out.write(chunk)
        out.flush()


def _check(settings: Settings, target: str) -> tuple[list[Problem], int, int]:
    """Verify one container, printing a BAD line a problem: (problems, members, format version)."""
    checked = check(Targets(lambda: storage_for(settings)), target)
    for line in checked.lines() if checked.problems else []:
        click.echo(line)
    return checked.problems, checked.members, checked.version


@main.command("ls")
@common_options
@click.argument("container")
@needs_settings
def ls_(settings: Settings, container: str) -> None:
    """List a container (v2 or DES v1): name<TAB>size a line."""
    for member in _open(settings, container).members():
        click.echo(f"{member.name}\t{member.size}")


@main.command()
@common_options
@click.argument("container")
@click.argument("name")
@needs_settings
def cat(settings: Settings, container: str, name: str) -> None:
    """Write one member to stdout, checked against its checksums."""
    out = sys.stdout.buffer
    for chunk in _open(settings, container).iter_range(name):
        out.write(chunk)
    out.flush()


@main.command()
@common_options
@click.argument("containers", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Every container under the archive, and the leftovers beside them.")
@click.option("--jobs", type=click.IntRange(1, 256), default=DEFAULT_JOBS, show_default=True, help="Containers verified at once.")
@needs_settings
def verify(settings: Settings, containers: tuple[str, ...], everything: bool, jobs: int) -> None:
    """Check every checksum; name each bad member and exit 1 if any. Leftovers are listed, not failed."""
    if not containers and not everything:
        raise click.UsageError("name containers to verify, or give --all")
    found = VerifyRun(Targets(lambda: storage_for(settings)), list(containers), everything, jobs)
    for line in found.run(progress, settings.pipeline.lease_seconds):
        click.echo(line)
    click.echo(found.tally.summary(), err=True)
    if found.leftovers:
        click.echo(f"desq: warning: {found.leftover_note()}", err=True)
    if found.tally.bad:
        raise DesqError(f"{found.tally.bad} of {found.tally.containers} container(s) failed verification")
    if found.tally.fragments_bad:
        raise DesqError(f"{found.tally.fragments_bad} fragment(s) missing or damaged (every file may still read); `desq repair --all` rebuilds them")


@main.command()
@common_options
@click.argument("containers", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Every object of the archive.")
@click.option("--jobs", type=click.IntRange(1, 64), default=2, show_default=True, help="Objects repaired at once.")
@needs_settings
def repair(settings: Settings, containers: tuple[str, ...], everything: bool, jobs: int) -> None:
    """Erasure-coded archive: rebuild missing or damaged fragments onto their nodes; exit 1 naming
    what could not be rebuilt."""
    from desq.storage.ec import ec_of
    from desq.storage.ec_repair import repair_many, targets

    if not containers and not everything:
        raise click.UsageError("name containers to repair, or give --all")
    if containers and everything:
        raise click.UsageError("name containers or give --all, not both")
    ec = ec_of(storage_for(settings))
    if ec is None:
        raise DesqError(f"desq repair is for an erasure-coded archive (archive.url = \"ec://K+M\"); {settings.archive.url!r} is not one")
    checked = rebuilt = 0
    failed: list[str] = []
    for key, problems, done in repair_many(ec, targets(ec, containers), jobs):
        checked += 1
        if done is None:
            continue
        for line in done.lines():
            click.echo(line)
        rebuilt += len(done.rebuilt) + len(done.marked)
        failed += done.failed
    click.echo(f"checked {checked} object(s); rebuilt {rebuilt} fragment(s) and marker(s); {len(failed)} failed", err=True)
    if failed:
        raise DesqError(f"{len(failed)} repair(s) failed: {failed[0]}" + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""))


@main.command()
@common_options
@click.argument("container")
@click.option("--salvage", "out", metavar="OUT", help="Write every member still provably intact into a new container OUT.")
@needs_settings
def fsck(settings: Settings, container: str, out: str | None) -> None:
    """Check a container; with --salvage, rebuild what can be proven intact into OUT. A fragment
    file of an erasure-coded archive's node is identified and checked from its own bytes."""
    from desq.storage.ec_repair import identify

    fragment = identify(container) if Path(container).is_file() and not out else None
    if fragment is not None:
        what, bad = fragment
        click.echo(f"{container}: {what}")
        for problem in bad:
            click.echo(f"BAD {container}: {problem}")
        if bad:
            raise DesqError(f"{container} is a damaged fragment: {len(bad)} problem(s)")
        click.echo(f"ok  {container}")
        return
    problems, _, version = _check(settings, container)
    path = container
    salvaged = ""
    if out:
        if version != 2:
            raise DesqError("--salvage rebuilds format v2 containers only")
        target = Path(out)
        if target.exists():
            raise DesqError(f"{out} exists; salvage never overwrites a file")
        partial = target.with_name(f".{target.name}.partial")
        storage, key = _container(settings, container)
        with open(partial, "wb") as fh:
            summary, report = salvage(StorageSource(storage, key), fh)
            fh.flush()
            os.fsync(fh.fileno())
        partial.rename(target)
        for lo, hi in report.damaged:
            click.echo(f"lost {path}: bytes {lo}..{hi} hold no intact member")
        salvaged = f"; salvaged {summary.count} members into {out}"
        click.echo(f"salvaged {summary.count} intact members into {out}")
    if problems:
        raise DesqError(f"{path} is damaged: {len(problems)} problem(s){salvaged}")
    click.echo(f"ok  {path}")
