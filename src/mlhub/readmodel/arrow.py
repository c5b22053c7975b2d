"""Read-model rows as Arrow tables, for DuckDB (`mlhub query`, the API's /query).

Column types follow the SQL types; JSON columns become JSON text (keys sorted); naive datetimes (SQLite) are
read as UTC. Imported on demand only: pyarrow is not loaded with `mlhub.readmodel`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import sqlalchemy as sa


def arrow_type(column: sa.Column[Any]) -> pa.DataType:
    """The Arrow type of a read-model column (strings, text and JSON become strings)."""
    kind = column.type
    if isinstance(kind, sa.Boolean):
        return pa.bool_()
    if isinstance(kind, sa.Integer):
        return pa.int64()
    if isinstance(kind, sa.Float | sa.Numeric):
        return pa.float64()
    if isinstance(kind, sa.DateTime):
        return pa.timestamp("us", tz="UTC")
    if isinstance(kind, sa.LargeBinary):
        return pa.binary()
    return pa.string()


def rows_to_arrow(table: sa.Table, rows: Iterable[Mapping[Any, Any]]) -> pa.Table:
    """Rows of `table` (declared or reflected) as an Arrow table with the column types of `arrow_type`."""
    fields = [pa.field(c.name, arrow_type(c)) for c in table.columns]
    columns: dict[str, list[Any]] = {f.name: [] for f in fields}
    json_columns = {c.name for c in table.columns if isinstance(c.type, sa.JSON)}
    for row in rows:
        for name, values in columns.items():
            value = row[name]
            if name in json_columns and value is not None and not isinstance(value, str):
                value = json.dumps(value, sort_keys=True)
            elif isinstance(value, datetime) and value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
            values.append(value)
    return pa.table({f.name: pa.array(columns[f.name], f.type) for f in fields}, schema=pa.schema(fields))
