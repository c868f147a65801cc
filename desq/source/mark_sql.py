"""The marker's UPDATE: one batch's (id, name, shard) written in the fastest form each database has.

Every form keeps ``des_status IS NULL`` in its WHERE, so a row another marker took meanwhile is
neither named again nor counted, and returns the rows actually updated:

- PostgreSQL: one ``UPDATE ... FROM unnest(ids, names, shards)``, a statement of fixed shape
  whose three arrays are single parameters (compiled once, one round trip a batch);
- SQLite: one fixed ``UPDATE ... WHERE id = ?`` run as executemany (in-process, so a row costs
  a few microseconds; sqlite3's rowcount is the sum over the rows);
- any other database: one ``UPDATE`` with a CASE per column, as portable as SQL gets.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from desq.source.table import READY, Columns

Mark = tuple[object, str, int]
"""One row's id, name and shard."""

_ID, _NAME, _SHARD = "desq_mark_id", "desq_mark_name", "desq_mark_shard"


def _state(c: Columns) -> tuple[sa.Column[Any], sa.Column[Any], sa.Column[Any]]:
    assert c.des_name is not None and c.des_shard is not None and c.des_status is not None
    return c.des_name, c.des_shard, c.des_status


def row_update(table: sa.Table, c: Columns) -> sa.Update:
    """The UPDATE of one row, its id, name and shard bound by name (``_ID``, ``_NAME``, ``_SHARD``): for executemany."""
    name, shard, status = _state(c)
    return (
        sa.update(table)
        .where(c.id == sa.bindparam(_ID, type_=c.id.type), status.is_(None))
        .values({name: sa.bindparam(_NAME, type_=name.type), shard: sa.bindparam(_SHARD, type_=shard.type), status: READY})
    )


def unnest_update(table: sa.Table, c: Columns) -> sa.Update:
    """PostgreSQL: the UPDATE of a whole batch from three array parameters (``_ID``, ``_NAME``, ``_SHARD``).

    The names travel as ``text[]`` and the shards as ``integer[]``: a cast to the column's own
    ``varchar(n)`` would cut a long name silently, where assigning it fails as it should."""
    name, shard, status = _state(c)
    alias = "desq_marks" if table.name != "desq_marks" else "desq_marks_"
    marks = (
        sa.func.unnest(
            sa.bindparam(_ID, type_=postgresql.ARRAY(c.id.type)),
            sa.bindparam(_NAME, type_=postgresql.ARRAY(sa.Text())),
            sa.bindparam(_SHARD, type_=postgresql.ARRAY(sa.Integer())),
        )
        .table_valued(sa.column("id", c.id.type), sa.column("name", sa.Text()), sa.column("shard", sa.Integer()))
        .render_derived()
        .alias(alias)
    )
    return sa.update(table).where(c.id == marks.c.id, status.is_(None)).values({name: marks.c.name, shard: marks.c.shard, status: READY})


def case_update(table: sa.Table, c: Columns, marks: list[Mark]) -> sa.Update:
    """The UPDATE of a whole batch with the names and shards as CASE expressions on the id."""
    name, shard, status = _state(c)
    return (
        sa.update(table)
        .where(c.id.in_([m[0] for m in marks]), status.is_(None))
        .values({name: sa.case({m[0]: m[1] for m in marks}, value=c.id), shard: sa.case({m[0]: m[2] for m in marks}, value=c.id), status: READY})
    )


class MarkWriter:
    """Writes batches of marks to one source table in its database's fastest form."""

    def __init__(self, table: sa.Table, columns: Columns, dialect: str) -> None:
        self.table = table
        self.columns = columns
        self.dialect = dialect
        self.statement: sa.Update | None = None
        if dialect == "postgresql":
            self.statement = unnest_update(table, columns)
        elif dialect == "sqlite":
            self.statement = row_update(table, columns)

    def write(self, conn: Connection, marks: list[Mark]) -> int:
        """Mark the rows of ``marks`` still unmarked; return how many were."""
        if not marks:
            return 0
        if self.dialect == "postgresql":
            ids, names, shards = (list(x) for x in zip(*marks))
            result = conn.execute(self.statement, {_ID: ids, _NAME: names, _SHARD: shards})
        elif self.dialect == "sqlite":
            result = conn.execute(self.statement, [{_ID: i, _NAME: n, _SHARD: s} for i, n, s in marks])
        else:
            result = conn.execute(case_update(self.table, self.columns, marks))
        return result.rowcount
