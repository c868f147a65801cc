"""The Procfile of a deployment (``desq procfile``): one process type a line, one packer a queue range.

Pure: the text depends only on the layout's shard bits and queue count. Under honcho (or foreman)
each line gets ``PORT`` = 5000 + 100 × its position, so the web roles listen on 5000 (files API),
5100 (router) and 5200 (S3 API); Flower listens on ``FLOWER_PORT`` (default 5555).
"""

from __future__ import annotations

from desq.layout import Layout, queue_names

GUNICORN = "gunicorn -c deploy/gunicorn.conf.py"
CELERY = "celery -A tasks"
FLOWER = (
    ': "${FLOWER_BASIC_AUTH:?must be user:password; Flower never starts without basic auth}"'
    f' && exec {CELERY} flower --port="${{FLOWER_PORT:-5555}}"'
)


def process_types(shard_bits: int, queue_count: int) -> list[tuple[str, str]]:
    """``(name, command)`` for every process of a deployment, in Procfile order."""
    packers = []
    for queue in queue_names(shard_bits, queue_count):
        lo_hi = queue.removeprefix("shards-")
        packers.append((
            "packer_" + lo_hi.replace("-", "_"),
            f"{CELERY} worker -Q {queue} -n packer-{lo_hi}@%h --concurrency=${{PACKER_CONCURRENCY:-1}} --loglevel=INFO",
        ))
    return [
        ("web", f"{GUNICORN} 'web:create_app()'"),
        ("router", f"{GUNICORN} \"web:create_app(role='router')\""),
        ("s3", f"{GUNICORN} \"web:create_app(role='s3')\""),
        ("beat", f"{CELERY} beat --loglevel=INFO"),
        ("control", f"{CELERY} worker -Q desq -n control@%h --concurrency=1 --loglevel=INFO"),
        *packers,
        ("flower", FLOWER),
    ]


def procfile(layout: Layout) -> str:
    """The whole Procfile for ``layout``, with a header saying what it was made for."""
    header = (
        f"# Made by `desq procfile` for shard_bits = {layout.shard_bits}, queue_count = {layout.queue_count}.\n"
        "# Under honcho: web on port 5000, router 5100, s3 5200 (PORT); Flower on FLOWER_PORT (5555).\n"
    )
    return header + "".join(f"{name}: {command}\n" for name, command in process_types(layout.shard_bits, layout.queue_count))
