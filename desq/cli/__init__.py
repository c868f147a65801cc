"""The ``desq`` command line (CONTRACT section 5): one group, its commands in topic modules.

Commands stay thin and call the library; ``desq.cli.base`` holds what they share.
"""

from desq.cli import archive, night, ops
from desq.cli.base import entry_point, main, run

COMMAND_MODULES = (archive, night, ops)
"""Importing these registers their commands on ``main``."""

__all__ = ["entry_point", "main", "run"]
