"""The row lookup of ``{path}`` in ``web.original_url``: the files API, asked for a uid-mode file
newer than the cutoff, reads that row's path column (one query by id) to know where it lives.

Only a ``{path}`` template makes the web role read the source database; it then needs
``source.db_url`` (read access suffices) and answers 503 for such reads while the database is down.
"""

from __future__ import annotations

import threading
from datetime import date

from sqlalchemy.exc import SQLAlchemyError

from desq.files import OriginalsUnavailable
from desq.settings import Settings
from desq.source.table import SourceError, SourceTable, first_line


class SourcePaths:
    """``FileService.path_of`` over the source table, connected on first use and shared by threads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._table: SourceTable | None = None
        self._lock = threading.Lock()

    def table(self) -> SourceTable:
        with self._lock:
            if self._table is None:
                self._table = SourceTable.connect(self.settings)
            return self._table

    def __call__(self, uid: str, day: date) -> str | None:
        try:
            return self.table().path_of(uid, day)
        except SourceError as exc:
            raise OriginalsUnavailable(f"cannot look up the file's path: {exc}") from None
        except SQLAlchemyError as exc:
            raise OriginalsUnavailable(f"the source database did not answer: {first_line(exc)}") from None
