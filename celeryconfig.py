"""Celery reads its configuration here; every value comes from desq's settings."""

from tasks.celeryconf import celery_config
from desq.settings import load_settings

globals().update(celery_config(load_settings()))
