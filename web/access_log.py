"""gunicorn's access log without the health checks: the router probes each backend's ``/healthz``
every few seconds, and an orchestrator probes ``/readyz``; a line for each answered probe buries the
requests that matter. They are logged only when gunicorn runs at ``--log-level debug``, or when the
probe was not answered with success.

Each line is also cheaper than gunicorn's own: gunicorn builds a dict of every atom, request
header, response header and environ variable for each line; here only the atoms the format names
are computed (same values, same quoting), and a format naming any header or environ atom is left
to gunicorn."""

from __future__ import annotations

import functools
import logging
import os
import re
import traceback
from collections.abc import Callable
from typing import Any

from gunicorn.glogging import Logger

PROBES = frozenset({"/healthz", "/readyz"})

Atom = Callable[[Any, Any, dict[str, Any], Any, Logger], Any]


def _status(resp: Any) -> Any:
    status = resp.status
    return status.split(None, 1)[0] if isinstance(status, str) else status


def _sent(resp: Any) -> Any:
    return getattr(resp, "sent", None)


# gunicorn's atoms (gunicorn.glogging.Logger.atoms), each computed the same way.
ATOMS: dict[str, Atom] = {
    "h": lambda resp, req, environ, took, log: environ.get("REMOTE_ADDR", "-"),
    "l": lambda resp, req, environ, took, log: "-",
    "u": lambda resp, req, environ, took, log: log._get_user(environ) or "-",
    "t": lambda resp, req, environ, took, log: log.now(),
    "r": lambda resp, req, environ, took, log: "%s %s %s" % (environ["REQUEST_METHOD"], environ["RAW_URI"], environ["SERVER_PROTOCOL"]),
    "s": lambda resp, req, environ, took, log: _status(resp),
    "m": lambda resp, req, environ, took, log: environ.get("REQUEST_METHOD"),
    "U": lambda resp, req, environ, took, log: environ.get("PATH_INFO"),
    "q": lambda resp, req, environ, took, log: environ.get("QUERY_STRING"),
    "H": lambda resp, req, environ, took, log: environ.get("SERVER_PROTOCOL"),
    "b": lambda resp, req, environ, took, log: _sent(resp) is not None and str(resp.sent) or "-",
    "B": lambda resp, req, environ, took, log: _sent(resp),
    "f": lambda resp, req, environ, took, log: environ.get("HTTP_REFERER", "-"),
    "a": lambda resp, req, environ, took, log: environ.get("HTTP_USER_AGENT", "-"),
    "T": lambda resp, req, environ, took, log: took.seconds,
    "D": lambda resp, req, environ, took, log: took.seconds * 1000000 + took.microseconds,
    "M": lambda resp, req, environ, took, log: took.seconds * 1000 + int(took.microseconds / 1000),
    "L": lambda resp, req, environ, took, log: "%d.%06d" % (took.seconds, took.microseconds),
    "p": lambda resp, req, environ, took, log: "<%s>" % os.getpid(),
}
_NAMED = re.compile(r"%\(([^)]*)\)")


@functools.lru_cache(maxsize=8)
def atoms_of(log_format: str) -> tuple[tuple[str, Atom], ...] | None:
    """The atoms ``log_format`` names, or None when it names one computed here only by gunicorn
    (a ``{header}i``, ``{header}o`` or ``{variable}e``) or none at all."""
    names = set(_NAMED.findall(log_format))
    if not names or not names <= ATOMS.keys():
        return None
    return tuple((name, ATOMS[name]) for name in sorted(names))


def is_quiet(path: str, status: int | None, debug: bool) -> bool:
    """Whether an access-log line for ``path`` answered with ``status`` is left out."""
    return not debug and path in PROBES and status is not None and 200 <= status < 300


class AccessLog(Logger):
    """gunicorn's logger, leaving out successful health probes unless at debug level, and
    computing only the atoms its format names."""

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if is_quiet(environ.get("PATH_INFO", ""), getattr(resp, "status_code", None), self.error_log.isEnabledFor(logging.DEBUG)):
            return
        atoms = atoms_of(self.cfg.access_log_format)
        if atoms is None:
            super().access(resp, req, environ, request_time)
            return
        if not self.access_log_enabled:
            return
        try:
            values = {}
            for name, atom in atoms:
                value = atom(resp, req, environ, request_time, self)
                values[name] = value.replace('"', '\\"') if isinstance(value, str) else value
            self.access_log.info(self.cfg.access_log_format, values)
        except Exception:  # noqa: BLE001 - gunicorn's own access() logs a failed line the same way
            self.error(traceback.format_exc())
