"""Commands for operators and developers: ``queues``, ``procfile``, ``config``, ``serve``, ``demo``, ``bench``, ``soak``."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import click

from desq.errors import DesqError
from desq.procfile import procfile
from desq.settings import Settings, dump_toml, markdown_table

from desq.cli.base import State, common_options, main, needs_settings


@main.command()
@common_options
@needs_settings
def queues(settings: Settings) -> None:
    """Print the packer queue names, one a line."""
    for name in settings.layout.queue_names():
        click.echo(name)


@main.command("procfile")
@common_options
@needs_settings
def procfile_(settings: Settings) -> None:
    """Print a Procfile for the configured shard_bits and queue_count."""
    click.echo(procfile(settings.layout), nl=False)


@main.command()
@common_options
@click.option("--markdown", is_flag=True, help="Print the table of every setting (as in README.md) instead.")
def config(markdown: bool) -> None:
    """Print the effective settings as TOML, with passwords and tokens masked."""
    if markdown:
        click.echo(markdown_table(), nl=False)
    else:
        click.echo(dump_toml(click.get_current_context().ensure_object(State).settings), nl=False)


@main.command()
@common_options
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option("--role", type=click.Choice(["files", "router", "s3"]), default="files", show_default=True)
@needs_settings
def serve(settings: Settings, host: str, port: int, role: str) -> None:
    """Run the web app with the development server (production: gunicorn, deploy/gunicorn.conf.py)."""
    from web import create_app
    from web.dev_server import QueryFreeHandler

    create_app(settings, role=role).run(host=host, port=port, threaded=True, request_handler=QueryFreeHandler)


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
        run_demo(count, serve, click.echo, show, click.get_current_context().ensure_object(State).config)
    finally:
        if bar is not None:
            bar.close()


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
    script = Path(__file__).resolve().parents[2] / "bench" / "run.py"
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
    script = Path(__file__).resolve().parents[2] / "bench" / "soak.py"
    if not script.is_file():
        raise DesqError("desq soak runs from a checkout of desq (it needs bench/)")
    args = [sys.executable, str(script), "--seconds", f"{seconds:g}", "--warmup", f"{warmup:g}", "--connections", str(connections), "--members", str(members)]
    if subprocess.call(args + (["--json", json_path] if json_path else [])):
        raise DesqError("the soak failed (errors, a worker restarted, or worker memory grew by 10% or more); see its table")
