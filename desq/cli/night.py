"""The night's commands: ``source check``, ``mark``, ``cutoff``, ``nightly``, ``pack``, ``recover``."""

from __future__ import annotations

from datetime import date
from typing import Any

import click
import sqlalchemy as sa

from desq.cutoff import advance as advance_cutoff
from desq.pipeline.night import recover as recover_pipeline
from desq.pipeline.night import run_sync
from desq.days import next_day, target_day
from desq.deployment import Deployment
from desq.source.audit import audit_days, count_on_days
from desq.source.table import index_hints, masked
from desq.errors import DesqError
from desq.layout import LayoutError, parse_shard_hex
from desq.progress import progress
from desq.settings import Settings
from desq.source.table import MissingStateColumns

from desq.cli.base import _parse_day, _today, common_options, main, needs_settings, today_option


@main.group()
def source() -> None:
    """The business application's table of files."""


@source.command("check")
@common_options
@needs_settings
def source_check(settings: Settings) -> None:
    """Print the column mapping found in the source table and a count of rows per state."""
    deployment = Deployment(settings)
    click.echo(f"source: {settings.source.table} in {masked(settings.source.db_url)} ({settings.mode} mode)")
    try:
        table = deployment.source
    except MissingStateColumns as exc:
        click.echo("name mode's columns are missing; run these statements (desq never alters the table):\n" + "\n".join(f"  {s}" for s in exc.statements))
        raise
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
    troubles = [f"{failed} of {summary['tasks']} pack task(s) failed"] if failed else []
    if summary.get("failed_rows"):
        troubles.append(f"{summary['failed_rows']} row(s) could not be packed (the next night tries them again)")
    if troubles:
        raise DesqError("; ".join(troubles) + "; see above")


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
    report = recover_pipeline(Deployment(settings))
    for key in report.removed:
        click.echo(f"removed {key}")
    click.echo(report.summary())
