"""The marker's UPDATE: one batch's (id, name, shard) written in one statement of fixed shape.

Every form keeps ``des_status IS NULL`` in its WHERE, so a row another marker took meanwhile is
neither named again nor counted, and returns the rows actually updated. The batch travels as one
or three parameters, so SQLAlchemy compiles the statement once, not an element per row:

- PostgreSQL: ``UPDATE ... FROM unnest(ids, names, shards)``;
- SQLite 3.33+: ``UPDATE ... FROM json_each(marks)``, the batch one JSON array of
  ``[id, name, shard]`` (an id compares as a bound value would, with the column's affinity);
- MariaDB 10.6+ and MySQL 8.0.4+: ``UPDATE t, JSON_TABLE(marks)``; the id travels in the
  column's own type, character set and collation, so it matches exactly the rows
  ``id = 'value'`` would;
- anything else (and ids that are neither integers nor text): one ``UPDATE`` with a CASE per
  column, as portable as SQL gets.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler

from desq.source.table import READY, Columns

Mark = tuple[object, str, int]
"""One row's id, name and shard."""

_ID, _NAME, _SHARD = "desq_mark_id", "desq_mark_name", "desq_mark_shard"


def _state(c: Columns) -> tuple[sa.Column[Any], sa.Column[Any], sa.Column[Any]]:
    assert c.des_name is not None and c.des_shard is not None and c.des_status is not None
    return c.des_name, c.des_shard, c.des_status


def _alias(table: sa.Table) -> str:
    return "desq_marks" if table.name != "desq_marks" else "desq_marks_"


def json_each_update(table: sa.Table, c: Columns) -> sa.Update:
    """SQLite: the UPDATE of a whole batch from one JSON parameter (``_ID``) holding ``[[id, name, shard], ...]``."""
    name, shard, status = _state(c)
    marks = sa.func.json_each(sa.bindparam(_ID, type_=sa.Text())).table_valued("value").alias(_alias(table))

    def field(k: int) -> sa.ColumnElement[Any]:
        return sa.func.json_extract(marks.c.value, f"$[{k}]")

    return sa.update(table).where(c.id == field(0), status.is_(None)).values({name: field(1), shard: field(2), status: READY})


def unnest_update(table: sa.Table, c: Columns) -> sa.Update:
    """PostgreSQL: the UPDATE of a whole batch from three array parameters (``_ID``, ``_NAME``, ``_SHARD``).

    The names travel as ``text[]`` and the shards as ``integer[]``: a cast to the column's own
    ``varchar(n)`` would cut a long name silently, where assigning it fails as it should."""
    name, shard, status = _state(c)
    marks = (
        sa.func.unnest(
            sa.bindparam(_ID, type_=postgresql.ARRAY(c.id.type)),
            sa.bindparam(_NAME, type_=postgresql.ARRAY(sa.Text())),
            sa.bindparam(_SHARD, type_=postgresql.ARRAY(sa.Integer())),
        )
        .table_valued(sa.column("id", c.id.type), sa.column("name", sa.Text()), sa.column("shard", sa.Integer()))
        .render_derived()
        .alias(_alias(table))
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


class JsonMarks(sa.TableClause):
    """MySQL/MariaDB: a batch's marks as a table, ``JSON_TABLE`` over one parameter (``_ID``)
    holding ``[[id, name, shard], ...]``; its id column is declared ``id_type``."""

    __visit_name__ = "desq_json_marks"
    inherit_cache = False

    def __init__(self, name: str, id_type: sa.types.TypeEngine[Any]) -> None:
        super().__init__(name, sa.column("id", id_type), sa.column("name", sa.Text()), sa.column("shard", sa.Integer()))
        self.id_type = id_type


@compiles(JsonMarks)
def _json_marks(element: JsonMarks, compiler: SQLCompiler, **kw: Any) -> str:
    types = compiler.dialect.type_compiler_instance
    path = compiler.render_literal_value
    columns = ", ".join(
        f"{compiler.preparer.quote(col)} {types.process(kind)} PATH {path(f'$[{k}]', sa.String())}"
        for k, (col, kind) in enumerate((("id", element.id_type), ("name", mysql.TEXT(charset="utf8mb4")), ("shard", sa.Integer())))
    )
    doc = compiler.process(sa.bindparam(_ID, type_=sa.Text(), required=False), **kw)
    return f"JSON_TABLE({doc}, {path('$[*]', sa.String())} COLUMNS({columns})) AS {compiler.preparer.quote(element.name)}"


def json_table_update(table: sa.Table, c: Columns, id_type: sa.types.TypeEngine[Any]) -> sa.Update:
    """MySQL/MariaDB: the UPDATE of a whole batch joined to ``JsonMarks`` (one parameter, ``_ID``)."""
    name, shard, status = _state(c)
    marks = JsonMarks(_alias(table), id_type)
    return sa.update(table).where(c.id == marks.c.id, status.is_(None)).values({name: marks.c.name, shard: marks.c.shard, status: READY})


def json_id_type(engine: Engine, table: sa.Table, column: sa.Column[Any]) -> sa.types.TypeEngine[Any] | None:
    """The type ``JsonMarks`` declares for ``column``, None where JSON_TABLE cannot carry it (or
    the server has no JSON_TABLE): an integer as the column is, text with its character set and
    collation as ``information_schema`` tells them (a table's default is not in the reflected type)."""
    dialect = engine.dialect
    version = dialect.server_version_info or ()
    if version < ((10, 6) if getattr(dialect, "is_mariadb", False) else (8, 0, 4)):
        return None
    if isinstance(column.type, sa.Integer):
        return column.type
    if not isinstance(column.type, sa.String):
        return None
    query = sa.text(
        "SELECT CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLUMNS"
        " WHERE TABLE_SCHEMA = COALESCE(:schema, DATABASE()) AND TABLE_NAME = :table AND COLUMN_NAME = :column"
    )
    with engine.connect() as conn:
        found = conn.execute(query, {"schema": table.schema, "table": table.name, "column": column.name}).first()
    if found is None or found[0] is None:
        return None
    length = getattr(column.type, "length", None)
    return mysql.VARCHAR(length, charset=found[0], collation=found[1]) if length else mysql.TEXT(charset=found[0], collation=found[1])


class MarkWriter:
    """Writes batches of marks to one source table in its database's fastest form."""

    def __init__(self, table: sa.Table, columns: Columns, engine: Engine) -> None:
        self.table = table
        self.columns = columns
        self.statement: sa.Update | None = None
        dialect = engine.dialect
        self.form = "case"
        if dialect.name == "postgresql":
            self.form, self.statement = "postgresql", unnest_update(table, columns)
        elif dialect.name == "sqlite" and sqlite3.sqlite_version_info >= (3, 33) and isinstance(columns.id.type, (sa.Integer, sa.String)):
            self.form, self.statement = "json", json_each_update(table, columns)
        elif dialect.name in ("mysql", "mariadb") and (id_type := json_id_type(engine, table, columns.id)) is not None:
            self.form, self.statement = "json", json_table_update(table, columns, id_type)

    def write(self, conn: Connection, marks: list[Mark]) -> int:
        """Mark the rows of ``marks`` still unmarked; return how many were."""
        if not marks:
            return 0
        if self.form == "postgresql":
            ids, names, shards = (list(x) for x in zip(*marks))
            result = conn.execute(self.statement, {_ID: ids, _NAME: names, _SHARD: shards})
        elif self.form == "json" and all(type(m[0]) in (int, str) for m in marks):
            result = conn.execute(self.statement, {_ID: json.dumps(marks, ensure_ascii=False)})
        else:
            result = conn.execute(case_update(self.table, self.columns, marks))
        return result.rowcount
