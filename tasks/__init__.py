"""The Celery app: ``celery -A tasks worker -Q shards-00-3f`` runs a packer worker."""

from tasks import pipeline, watch  # noqa: F401 - registers the tasks
from tasks.app import app

__all__ = ["app"]
