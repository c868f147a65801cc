"""The ``desq`` command line (CONTRACT section 5).

Exit codes: 0 on success, 1 on failure with a one-line ``desq: error: ...`` on stderr (a
traceback only with ``--debug``), 2 on a usage error. Every command takes ``--config FILE``;
commands stay thin and call the library.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
import traceback
from datetime import date, datetime
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from desq import __version__
import sqlalchemy as sa

from desq.archive import Archive, StorageSource
from desq.cutoff import advance as advance_cutoff
from desq.pipeline.night import recover as recover_pipeline
from desq.pipeline.night import run_sync
from desq.days import next_day, target_day
from desq.deployment import Deployment
from desq.source.audit import audit_days, count_on_days
from desq.source.table import index_hints, masked
from desq.container import ContainerError, Problem, Reader
from desq.container.fsck import salvage
from desq.errors import DesqError
from desq.layout import LayoutError, parse_shard_hex
from desq.mode import mode_for
from desq.progress import progress
from desq.settings import Settings, dump_toml, load_settings, markdown_table
from desq.storage import InvalidKey, NotFound, Storage, StorageError, check_key, storage_for
from desq.storage.local import LocalStorage

F = TypeVar("F", bound=Callable[..., Any])


class State:
    """What the options common to every command decide: the config file and debug mode."""

    def __init__(self) -> None:
        self.config: str | None = None
        self.debug = False
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        """The settings, loaded once on first use."""
        if self._settings is None:
            self._settings = load_settings(self.config)
        return self._settings


def _remember(name: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        state = ctx.ensure_object(State)
        if value:
            setattr(state, name, value)
        return value

    return callback


def common_options(func: F) -> F:
    """``--config FILE`` and ``--debug``, accepted before or after the command name."""
    func = click.option(
        "--config",
        "config",
        metavar="FILE",
        expose_value=False,
        callback=_remember("config"),
        help="TOML settings file (default: $DESQ_CONFIG, else the embedded default).",
    )(func)
    func = click.option(
        "--debug",
        is_flag=True,
        expose_value=False,
        callback=_remember("debug"),
        help="Show a traceback on errors.",
    )(func)
    return func


def needs_settings(func: Callable[..., Any]) -> Callable[..., Any]:
    """Pass the loaded settings as the first argument."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(click.get_current_context().ensure_object(State).settings, *args, **kwargs)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="desq")
@common_options
def main() -> None:
    """desq: archive billions of small files into containers and serve any one by name."""


@main.command()
@common_options
@needs_settings
def queues(settings: Settings) -> None:
    """Print the packer queue names, one a line."""
    for name in settings.layout.queue_names():
        click.echo(name)


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
@click.option("--markdown", is_flag=True, help="Print the table of every setting (as in README.md) instead.")
def config(markdown: bool) -> None:
    """Print the effective settings as TOML, with passwords and tokens masked."""
    if markdown:
        click.echo(markdown_table(), nl=False)
    else:
        click.echo(dump_toml(click.get_current_context().ensure_object(State).settings), nl=False)


def _container(settings: Settings, target: str) -> tuple[Storage, str]:
    """A container given as a local file, or as a key under the archive (local or S3)."""
    path = Path(target)
    if path.is_file():
        return LocalStorage(path.parent), path.name
    try:
        return storage_for(settings), check_key(target)
    except InvalidKey:
        raise DesqError(f"no container at {target!r}: not a file, nor a key under the archive") from None


def _open(settings: Settings, target: str) -> Reader:
    storage, key = _container(settings, target)
    try:
        return Archive(storage).open(key)
    except NotFound:
        raise DesqError(f"no container at {target!r} (not a file, nor under {storage.url})") from None


def _parse_day(_ctx: click.Context, param: click.Parameter, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not YYYY-MM-DD") from None


def _today(value: date | None, settings: Settings) -> date:
    return value or datetime.now(settings.zone).date()


today_option = click.option("--today", metavar="YYYY-MM-DD", callback=_parse_day, help="Act as if today were this day (default: today in the configured zone).")


@main.group()
def source() -> None:
    """The business application's table of files."""


@source.command("check")
@common_options
@needs_settings
def source_check(settings: Settings) -> None:
    """Print the column mapping found in the source table and a count of rows per state."""
    deployment = Deployment(settings)
    table = deployment.source
    click.echo(f"source: {settings.source.table} in {masked(settings.source.db_url)} ({settings.mode} mode)")
    for key, column, kind in table.describe():
        click.echo(f"  {key:<28} -> {column} ({kind})")
    c = table.columns
    today = _today(None, settings)
    click.echo(f"rows: {table.count()}")
    for line in audit_days(table, today).lines():
        click.echo(line)
    if not deployment.mode.has_cutoff:
        assert c.des_status is not None
        with table.engine.connect() as conn:
            states = conn.execute(sa.select(c.des_status, sa.func.count()).group_by(c.des_status)).all()
        for status, count in sorted(states, key=lambda s: (s[0] is not None, str(s[0]))):
            click.echo(f"  des_status {status if status is not None else 'NULL'}: {count}")
        old_enough = count_on_days(table, None, target_day(today, settings.archive.after_days), c.des_status.is_(None))
        click.echo(f"  not marked and old enough to mark now: {old_enough}")
        for hint in index_hints(table):
            click.echo(f"hint: {hint}")
    else:
        cutoff_day = deployment.state.cutoff()
        click.echo(f"  archive cutoff: {cutoff_day or 'none yet'}")
        if cutoff_day:
            click.echo(f"  created after the cutoff (read from the originals): {count_on_days(table, next_day(cutoff_day), None)}")


@main.command("mark")
@common_options
@today_option
@needs_settings
def mark_(settings: Settings, today: date | None) -> None:
    """Run the marker once (name mode)."""
    deployment = Deployment(settings)
    if not deployment.mode.state_columns:
        raise DesqError("desq mark is for name mode; uid mode keeps no per-row state")
    report = deployment.mode.mark(deployment.source, _today(today, settings))
    assert report is not None
    click.echo(report.summary())
    for example in report.examples + report.early_examples:
        click.echo(f"  {example}")


@main.command()
@common_options
@click.option("--advance", is_flag=True, help="Move the cutoff as far as verification allows.")
@today_option
@needs_settings
def cutoff(settings: Settings, advance: bool, today: date | None) -> None:
    """Print ARCHIVE_CUTOFF_DATE (uid mode) and, on stderr, what holds it behind its target;
    --advance moves it over fully archived days."""
    deployment = Deployment(settings)
    if not deployment.mode.has_cutoff:
        raise DesqError("the archive cutoff is uid mode's state; name mode tracks each row's des_status")
    state = deployment.state
    report = advance_cutoff(deployment.source, state, deployment.archive(), today=_today(today, settings), move=advance)
    if advance or report.after != report.target or report.after != report.before:
        click.echo(report.summary(), err=True)
    current = state.cutoff()
    click.echo(current.isoformat() if current else "none")


def _send(name: str, **kwargs: Any) -> str:
    """Send a task by name through the Celery app of these settings; returns its id."""
    from tasks import app

    return app.send_task(name, kwargs=kwargs).id


@main.command()
@common_options
@today_option
@click.option("--sync", is_flag=True, help="Do it all in this process, with no broker.")
@needs_settings
def nightly(settings: Settings, today: date | None, sync: bool) -> None:
    """What beat triggers each night: mark, one pack_shard per (date, shard), the cutoff step."""
    day = _today(today, settings)
    if not sync:
        click.echo(f"sent desq.nightly for {day}: task {_send('desq.nightly', today=day.isoformat())}")
        return
    report = run_sync(settings, day)
    if report.marked:
        click.echo(report.marked)
    click.echo(f"planned {len(report.plan)} (date, shard) task(s) with {sum(f for *_, f in report.plan)} file(s)")
    summary = report.summary
    found = f", found {summary['present']} already in their containers" if summary.get("present") else ""
    click.echo(f"packed {summary['files']} file(s){found}, kept {summary['kept']}, {summary['bytes']} bytes, {summary['by_status']} in {report.seconds} s")
    click.echo(f"rewrote {summary['rewritten']} container(s); left {summary['complete_containers']} complete container(s) as they were")
    left = [(summary.get("unplaced", 0), "with no day (created_at NULL or not a time)"), (summary.get("future", 0), "created in the future"), (summary.get("unplanned", 0), "that cannot be packed (uid or path)")]
    if any(n for n, _ in left):
        click.echo("rows left out: " + "; ".join(f"{n} {why}" for n, why in left if n))
        for example in summary.get("examples", [])[:5]:
            click.echo(f"  {example}")
    if "cutoff" in summary:
        click.echo(summary["cutoff"])
    for failure in summary["failures"]:
        click.echo(f"  {failure}")
    failed = summary["by_status"].get("failed", 0)
    if failed:
        raise DesqError(f"{failed} of {summary['tasks']} pack task(s) failed; see above")


@main.command()
@common_options
@click.option("--date", "day", required=True, metavar="YYYY-MM-DD", callback=_parse_day, help="The day whose containers to pack.")
@click.option("--shard", metavar="HEX", help="One shard, in hex (e.g. FE).")
@click.option("--all", "everything", is_flag=True, help="Every shard of that day with work.")
@click.option("--enqueue", is_flag=True, help="Send pack_shard tasks to the queues instead of packing here.")
@needs_settings
def pack(settings: Settings, day: date, shard: str | None, everything: bool, enqueue: bool) -> None:
    """Pack one or all shards of a date, here or through the queues."""
    if (shard is None) == (not everything):
        raise click.UsageError("give exactly one of --shard HEX and --all")
    if shard is not None:
        try:
            shards = [parse_shard_hex(shard, settings.shard_bits)]
        except LayoutError as exc:
            raise click.BadParameter(str(exc), param_hint="--shard") from None
    else:
        deployment = Deployment(settings)
        plan = deployment.mode.plan_day(deployment.source, day)
        shards = [w.shard for w in plan.work if w.date == day]
    if enqueue:
        for s in shards:
            _send("desq.pack_shard", date=day.isoformat(), shard=s)
        click.echo(f"sent {len(shards)} pack_shard task(s) for {day}")
        return
    packer = Deployment(settings).packer()
    failed = 0
    for s in progress(shards, f"pack {day}"):
        report = packer.pack(day, s)
        click.echo(f"{report.container}: {report.status}, {report.files} new, {report.kept} kept, {report.failed_rows} failed rows")
        for failure in report.failures:
            click.echo(f"  {failure}")
        failed += report.status not in ("packed", "present", "nothing")
    if failed:
        raise DesqError(f"{failed} of {len(shards)} shard(s) were not packed")


@main.command()
@common_options
@needs_settings
def recover(settings: Settings) -> None:
    """Clear expired leases, abort abandoned uploads, remove stale staging objects."""
    click.echo(recover_pipeline(Deployment(settings)).summary())


@main.command()
@common_options
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option("--role", type=click.Choice(["files", "router", "s3"]), default="files", show_default=True)
@needs_settings
def serve(settings: Settings, host: str, port: int, role: str) -> None:
    """Run the web app with the development server (production: gunicorn, deploy/gunicorn.conf.py)."""
    from web import create_app

    create_app(settings, role=role).run(host=host, port=port, threaded=True)


@main.command()
@common_options
@click.option("--files", "count", default=10_000, show_default=True, type=click.IntRange(20, 1_000_000), help="How many sample files.")
@click.option("--serve", is_flag=True, help="Keep the web app up after the demo, until Ctrl-C.")
def demo(count: int, serve: bool) -> None:
    """The whole system on the embedded default: sample files, workers, a night, reads over HTTP."""
    from desq.demo import run as run_demo

    bar = None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=count, desc="packed", unit="file", leave=False)
    last = [0.0, -1]

    def show(done: int, total: int) -> None:
        if bar is not None:
            bar.n = done
            bar.refresh()
        elif done != last[1] and (time.monotonic() - last[0] > 5 or done == total):
            click.echo(f"packed: {done}/{total}", err=True)
            last[0], last[1] = time.monotonic(), done

    try:
        run_demo(count, serve, click.echo, show)
    finally:
        if bar is not None:
            bar.close()


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


@main.command()
@common_options
@click.option("--quick", is_flag=True, help="Small sizes and few repeats (what CI runs).")
@click.option("--json", "json_path", metavar="FILE", help="Also write the results here.")
@click.option("--pg", metavar="URL", help="PostgreSQL for the marker and night benchmarks.")
@click.option("--s3", metavar="ENDPOINT", help="S3 test server for the S3 benchmarks.")
@click.option("--redis", metavar="URL", help="Redis (a spare database: it is flushed) for the night benchmark.")
@click.option("--publish", is_flag=True, help="Write BENCHMARKS.md and bench/plots/ (a full run).")
@click.option("--only", multiple=True, metavar="WORD", help="Run only benchmarks whose name holds WORD.")
def bench(quick: bool, json_path: str | None, pg: str | None, s3: str | None, redis: str | None, publish: bool, only: tuple[str, ...]) -> None:
    """Run the benchmarks of BENCHMARKS.md beside their anchors (from a checkout: bench/)."""
    script = Path(__file__).resolve().parents[1] / "bench" / "run.py"
    if not script.is_file():
        raise DesqError("desq bench runs from a checkout of desq (it needs bench/)")
    args = [sys.executable, str(script)] + (["--quick"] if quick else []) + (["--json", json_path] if json_path else [])
    args += (["--pg", pg] if pg else []) + (["--s3", s3] if s3 else []) + (["--redis", redis] if redis else [])
    args += (["--publish"] if publish else []) + [a for word in only for a in ("--only", word)]
    code = subprocess.call(args)
    if code:
        raise DesqError("a benchmark failed; see its row in bench/results/latest.md")


@main.command()
@common_options
@click.option("--seconds", type=click.FloatRange(min=1), default=60.0, show_default=True, help="Length of each soak: direct, then through the router.")
@click.option("--warmup", type=click.FloatRange(min=0), default=10.0, show_default=True, help="Seconds of load before the first memory sample.")
@click.option("--connections", type=click.IntRange(min=1), default=64, show_default=True, help="Concurrent connections (wrk).")
@click.option("--members", type=click.IntRange(min=1), default=2000, show_default=True, help="Members of 1-64 KiB in the soak's own archive.")
@click.option("--json", "json_path", metavar="FILE", help="Also write the full report here.")
def soak(seconds: float, warmup: float, connections: int, members: int, json_path: str | None) -> None:
    """Load soak of the files API under gunicorn and through the router: errors, p50/p99, worker memory (from a checkout: bench/)."""
    script = Path(__file__).resolve().parents[1] / "bench" / "soak.py"
    if not script.is_file():
        raise DesqError("desq soak runs from a checkout of desq (it needs bench/)")
    args = [sys.executable, str(script), "--seconds", f"{seconds:g}", "--warmup", f"{warmup:g}", "--connections", str(connections), "--members", str(members)]
    if subprocess.call(args + (["--json", json_path] if json_path else [])):
        raise DesqError("the soak failed (errors, a worker restarted, or worker memory grew by 10% or more); see its table")


def _check(settings: Settings, target: str) -> tuple[list[Problem], int, int]:
    """Verify one container, printing a BAD line a problem: (problems, members, format version)."""
    try:
        reader = _open(settings, target)
        problems, count, version = reader.verify(), reader.count, reader.version
    except (ContainerError, StorageError, DesqError) as exc:
        problems, count, version = [Problem(None, str(exc))], 0, 2
    for problem in problems:
        click.echo(f"BAD {target}: {problem}")
    return problems, count, version


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
@click.option("--all", "everything", is_flag=True, help="Every container under the local archive.")
@needs_settings
def verify(settings: Settings, containers: tuple[str, ...], everything: bool) -> None:
    """Check every checksum; name each bad member and exit 1 if any."""
    if not containers and not everything:
        raise click.UsageError("name containers to verify, or give --all")
    targets = list(containers)
    if everything:
        targets += [o.key for o in storage_for(settings).list() if o.key.endswith(".des")]
    bad = 0
    for target in progress(targets, "verify"):
        problems, count, _ = _check(settings, target)
        if problems:
            bad += 1
        else:
            click.echo(f"ok  {target}: {count} members")
    if bad:
        raise DesqError(f"{bad} of {len(targets)} container(s) failed verification")


@main.command()
@common_options
@click.argument("container")
@click.option("--salvage", "out", metavar="OUT", help="Write every member still provably intact into a new container OUT.")
@needs_settings
def fsck(settings: Settings, container: str, out: str | None) -> None:
    """Check a container; with --salvage, rebuild what can be proven intact into OUT."""
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


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, (DesqError, LayoutError, OSError)) else f"{type(exc).__name__}: {text}"


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit code (0, 1 or 2)."""
    args = list(sys.argv[1:] if argv is None else argv)
    state = State()
    debug = "--debug" in args or os.environ.get("DESQ_DEBUG", "") not in ("", "0")
    try:
        main.main(args=args, prog_name="desq", standalone_mode=False, obj=state)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("desq: interrupted", err=True)
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `desq ls | head`): nothing more to say to it.
        sys.stderr.close()
        return 1
    except Exception as exc:  # noqa: BLE001 - the one place that turns any failure into exit 1
        if debug or state.debug:
            traceback.print_exc()
        click.echo(f"desq: error: {_one_line(exc)}", err=True)
        return 1
    return 0


def entry_point() -> None:
    """The ``desq`` console script."""
    sys.exit(run())
