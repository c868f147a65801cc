"""``python -m desq`` is the ``desq`` command."""

from desq.cli import entry_point

entry_point()
