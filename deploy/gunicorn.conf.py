"""gunicorn settings for the files API and the router: ``gunicorn -c deploy/gunicorn.conf.py 'web:create_app()'``.

Tunable through the usual variables: ``PORT`` (or ``BIND``), ``WEB_CONCURRENCY`` (worker processes),
``WEB_THREADS`` (threads per worker). Reads are I/O-bound (storage range requests), so each worker
runs threads; ``GUNICORN_CMD_ARGS`` overrides anything here.
"""

import multiprocessing
import os

bind = os.environ.get("BIND") or f"0.0.0.0:{os.environ.get('PORT', '8080')}"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1))
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "8"))
timeout = 120  # a big member streams for a while; the worker must not be killed mid-stream
graceful_timeout = 30
keepalive = 5
max_requests = 100_000  # recycle workers now and then, staggered so they never restart together
max_requests_jitter = 10_000
accesslog = "-"
errorlog = "-"
# No query strings in the access log: uid-mode requests carry created_at there, tokens never.
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms'
