"""gunicorn's access log without the health checks: the router probes each backend's ``/healthz``
every few seconds, and an orchestrator probes ``/readyz``; a line for each answered probe buries the
requests that matter. They are logged only when gunicorn runs at ``--log-level debug``, or when the
probe was not answered with success."""

from __future__ import annotations

import logging
from typing import Any

from gunicorn.glogging import Logger

PROBES = frozenset({"/healthz", "/readyz"})


def is_quiet(path: str, status: int | None, debug: bool) -> bool:
    """Whether an access-log line for ``path`` answered with ``status`` is left out."""
    return not debug and path in PROBES and status is not None and 200 <= status < 300


class AccessLog(Logger):
    """gunicorn's logger, leaving out successful health probes unless at debug level."""

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if is_quiet(environ.get("PATH_INFO", ""), getattr(resp, "status_code", None), self.error_log.isEnabledFor(logging.DEBUG)):
            return
        super().access(resp, req, environ, request_time)
