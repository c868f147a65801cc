"""gunicorn settings for the files API: ``gunicorn -c deploy/gunicorn.conf.py 'web:create_app()'``.

The worker class is web.worker's: gunicorn's gevent worker (one greenlet a connection, so slow or
stalled clients hold no thread and everyone else is still answered) whose own refusals are the
contract's JSON errors. Tunable through the usual variables: ``PORT`` (or ``BIND``),
``WEB_CONCURRENCY`` (worker processes), ``WEB_CONNECTIONS`` (open connections per worker),
``WEB_THREADS`` (threads per worker, should ``--worker-class gthread`` be chosen instead),
``GUNICORN_CONTROL_SOCKET`` (gunicornc's socket; default: one per bind address);
``GUNICORN_CMD_ARGS`` overrides anything here. Prometheus metrics are collected across
workers in ``PROMETHEUS_MULTIPROC_DIR`` (a fresh folder per start unless given).
"""

import multiprocessing
import os
import resource
import shutil
import tempfile

bind = os.environ.get("BIND") or f"0.0.0.0:{os.environ.get('PORT', '8080')}"
# gunicorn's control socket (for gunicornc) defaults to one path per user, so the web and router
# masters of one Procfile would take it from each other: each master gets its own, named by its bind.
_runtime = os.environ.get("XDG_RUNTIME_DIR")
_ctl_dir = _runtime if _runtime and os.path.isdir(_runtime) else os.path.join(os.path.expanduser("~"), ".gunicorn")
control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET") or os.path.join(_ctl_dir, "desq-" + "".join(c if c.isalnum() else "-" for c in bind) + ".ctl")
# The box also runs beat and the packers (one process a queue range): half the cores in workers,
# each serving many connections at once (reads wait on storage, not the CPU), not gunicorn's usual
# 2 × cores + 1.
workers = int(os.environ.get("WEB_CONCURRENCY", max(2, multiprocessing.cpu_count() // 2)))
worker_class = "web.worker.JSONGeventWorker"
worker_connections = int(os.environ.get("WEB_CONNECTIONS", "1000"))
threads = int(os.environ.get("WEB_THREADS", "8"))
timeout = 120  # a big member streams for a while; the worker must not be killed mid-stream
graceful_timeout = 30
keepalive = 5  # also the most a gevent worker waits for a request's line and headers
max_requests = 100_000  # recycle workers now and then, staggered so they never restart together
max_requests_jitter = 10_000
# gunicorn's largest; names are at most 255 bytes, so a longer request line is refused with 414
# before it reaches the app (anything shorter that is malformed gets the app's JSON 400).
limit_request_line = 8190
accesslog = "-"
errorlog = "-"
# No query strings and no headers in the access log: created_at stays out, tokens never get in.
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms'
# Successful /healthz and /readyz probes are logged only at --log-level debug.
logger_class = "web.access_log.AccessLog"

# Each connection is a descriptor, and a read may hold a storage connection and a file beside it:
# the soft limit (often 1024) is raised toward the hard one to fit them.
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
_wanted = 3 * worker_connections + 1024
if _soft != resource.RLIM_INFINITY and _soft < _wanted:
    resource.setrlimit(resource.RLIMIT_NOFILE, (_wanted if _hard == resource.RLIM_INFINITY else min(_wanted, _hard), _hard))

_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
_own_metrics_dir = _metrics_dir is None
if _own_metrics_dir:
    _metrics_dir = tempfile.mkdtemp(prefix="desq-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir


def child_exit(server, worker):  # noqa: ANN001, ANN201 - gunicorn's hook signature
    """Drop a dead worker's live gauges from the shared metrics."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):  # noqa: ANN001, ANN201
    if _own_metrics_dir and _metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)
