"""What every ``desq`` command shares: the group, ``--config``/``--debug``, settings, exit codes.

Exit codes: 0 on success, 1 on failure with a one-line ``desq: error: ...`` on stderr (a
traceback only with ``--debug``), 2 on a usage error. Every command takes ``--config FILE``.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from datetime import date, datetime
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from desq import __version__
from desq.errors import DesqError
from desq.layout import LayoutError
from desq.settings import Settings, load_settings

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
