"""One JSON form of a query result's cells, for every reader of query results (the API's `POST /query`, the
CLI's `mlhub query --format json` in both modes), so the two modes print the same values; and `text_cell`, the
one text form of a value in the CLI's text output (`show`, `runs`, `models`, `query`, `reproduce`)."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from typing import Any
from uuid import UUID


def json_cell(value: Any) -> Any:
    """A DuckDB result value as JSON: non-finite floats as "NaN"/"Infinity"/"-Infinity" (as the event log writes
    them), timestamps as ISO-8601 UTC (a naive one is UTC), dates and times as ISO text, decimals as floats,
    intervals as seconds, blobs as hex, UUIDs as text, lists and structs cell by cell; anything else as text."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, date | dtime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [json_cell(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_cell(v) for k, v in value.items()}
    return str(value)


#: A string that, printed bare, would read as another JSON value (a number, true/false/null, NaN, Infinity).
_LOOKS_LIKE_A_VALUE = re.compile(r"-?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?|true|false|null|NaN|-?Infinity")


def text_cell(value: Any, *, none: str = "null", quote: bool = True) -> str:
    """A value as the CLI's text output prints it: its JSON (`json_cell`), never a Python repr: `true`, `null`
    (or `none`), `0.1`, `NaN`, `[1, "a"]`, `{"k": null}`. A string prints as itself, unless it would be read
    as something else (empty, a number, true/false/null, spaces at either end, a leading quote): then as a JSON
    string, `"true"`, `""`. Times print as ISO-8601. quote=False: every string as itself, for a field that is
    text by type (a param or tag, whose writers already wrote non-strings as JSON; a column of a query answer,
    where the hub's JSON carries NaN as the string "NaN")."""
    cell = json_cell(value)
    if cell is None:
        return none
    if isinstance(cell, str):
        if quote and isinstance(value, str) and (cell == "" or cell != cell.strip() or cell.startswith('"')
                                       or _LOOKS_LIKE_A_VALUE.fullmatch(cell)):
            return json.dumps(cell, ensure_ascii=False)
        return cell
    return json.dumps(cell, ensure_ascii=False)
