"""The statements that give a business table name mode's columns and index, for its database.

desq never alters the business table; ``desq source check`` prints these for the operator to run.
They are compiled by SQLAlchemy for the connected dialect, so identifiers (the mapped names of
``[source.columns]``, mixed case or with spaces) are quoted as that database wants.
"""

from __future__ import annotations

import re
import zlib
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import SQLAlchemyError

from desq.layout import MAX_NAME_BYTES
from desq.settings import Settings

INT_DIGITS = 20
"""Characters of the longest integer id (a signed 64-bit one)."""


def name_length(table: sa.Table, settings: Settings) -> int:
    """Characters des_name needs for ``<prefix>_<YYYYMMDD>_<id>`` with this table's id column (at
    most the 255 bytes a name may have)."""
    prefix = settings.source.name_prefix
    id_type = table.c[settings.source.columns.id].type
    if isinstance(id_type, sa.Integer):
        id_chars = INT_DIGITS
    else:
        id_chars = getattr(id_type, "length", None) or MAX_NAME_BYTES
    return min(MAX_NAME_BYTES, len(prefix) + bool(prefix) + 9 + id_chars)


def state_types(table: sa.Table, settings: Settings) -> dict[str, Any]:
    """Name mode's columns: the name, the shard (0..2**16-1, too wide for a SMALLINT), and
    NULL/READY/PACKED."""
    return {"des_name": sa.String(name_length(table, settings)), "des_shard": sa.Integer(), "des_status": sa.String(16)}


def missing_state_columns(table: sa.Table, settings: Settings, keys: tuple[str, ...]) -> list[str]:
    """The ``source.columns`` keys among ``keys`` whose mapped column ``table`` lacks."""
    return [key for key in keys if getattr(settings.source.columns, key) not in table.c]


def add_column_statements(table: sa.Table, settings: Settings, keys: list[str], dialect: Dialect) -> list[str]:
    """``ALTER TABLE ... ADD COLUMN`` for each of ``keys`` (state columns), in ``dialect``'s SQL."""
    scratch = sa.Table(table.name, sa.MetaData(), schema=table.schema)
    types = state_types(table, settings)
    out = []
    for key in keys:
        column = sa.Column(getattr(settings.source.columns, key), types[key], nullable=True)
        scratch.append_column(column)
        spec = str(sa.schema.CreateColumn(column).compile(dialect=dialect)).strip()
        out.append(f"ALTER TABLE {dialect.identifier_preparer.format_table(scratch)} ADD COLUMN {spec};")
    return out


def index_columns(settings: Settings) -> tuple[str, str, str]:
    """The index the night's queries want: status and shard lead (the marker's ``des_status IS NULL``,
    the plan's GROUP BY over READY rows, each packer's READY rows of one shard), then the id the
    keyset pages are ordered by."""
    c = settings.source.columns
    return (c.des_status, c.des_shard, c.id)


def index_statement(table: sa.Table, settings: Settings, dialect: Dialect) -> str:
    """``CREATE INDEX`` over ``index_columns`` in ``dialect``'s SQL (columns need not exist yet)."""
    scratch = sa.Table(table.name, sa.MetaData(), schema=table.schema)
    columns = []
    for name in index_columns(settings):
        existing = table.c.get(name)
        columns.append(sa.Column(name, existing.type if existing is not None else sa.Integer()))
    for column in columns:
        scratch.append_column(column)
    index = sa.Index(index_name(table.name, dialect), *columns)
    return str(sa.schema.CreateIndex(index).compile(dialect=dialect)).strip() + ";"


def index_name(table_name: str, dialect: Dialect) -> str:
    """``ix_<table>_desq`` (letters, digits and ``_`` only), or a checksum of the table name where
    that is too long for ``dialect``."""
    name = "ix_" + re.sub(r"[^A-Za-z0-9_]", "_", table_name) + "_desq"
    limit = dialect.max_identifier_length or 63
    if len(name.encode()) <= limit:
        return name
    return f"ix_desq_{zlib.crc32(table_name.encode()):08x}"


def has_state_index(engine: sa.Engine, table: sa.Table, settings: Settings) -> bool | None:
    """Whether an index leads with the status and shard columns (either order); None if unknown."""
    try:
        indexes = sa.inspect(engine).get_indexes(table.name, schema=table.schema)
    except SQLAlchemyError:
        return None
    status, shard, _ = index_columns(settings)
    leading = {tuple(ix.get("column_names") or ())[:2] for ix in indexes}
    return (status, shard) in leading or (shard, status) in leading


def type_problems(table: sa.Table, settings: Settings) -> list[str]:
    """State columns that exist with a type desq cannot use (too short, not an integer)."""
    c = settings.source.columns
    out = []
    name = table.c.get(c.des_name)
    length = getattr(name.type, "length", None) if name is not None else None
    needed = name_length(table, settings)
    if name is not None and length is not None and length < needed:
        out.append(f"column {c.des_name!r} (source.columns.des_name) holds {length} characters; a name may need {needed}")
    shard = table.c.get(c.des_shard)
    if shard is not None and not isinstance(shard.type, sa.Integer):
        out.append(f"column {c.des_shard!r} (source.columns.des_shard) is {shard.type}, not an integer type")
    return out
