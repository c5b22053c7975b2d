"""The read-only guard of user queries: one SELECT, parsed by DuckDB itself, over mlhub's views only.

Two layers. This module refuses, with a message naming what it refused, any statement that is not a single
SELECT (INSERT, CREATE, COPY, ATTACH, INSTALL, LOAD, PRAGMA, SET, CALL, ...) and any SELECT that calls a table
function other than a few pure generators, or names a file path as a table (DuckDB's replacement scans). The
query engine then runs accepted queries on a connection whose external access is disabled and whose
configuration is locked, so a file read that slipped past the parse still fails.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Collection, Iterator
from typing import Any

import duckdb

from mlhub.analytics.errors import QueryRefused

#: Table functions a query may call: pure generators that touch no file, setting or catalog outside the views.
ALLOWED_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})
#: Scalar functions refused although they read no file: they reveal the process environment or settings.
REFUSED_FUNCTIONS = frozenset({"getenv", "current_setting", "query", "query_table", "which_secret",
                               "current_database", "current_catalog", "current_schemas"})
#: Prefixes of the system catalogue's functions and views (duckdb_views() and the duckdb_views view hold the
#: views' SQL, with the server's absolute paths; pg_get_viewdef() too; pragma_* read settings).
SYSTEM_PREFIXES = ("duckdb_", "pragma_", "pg_", "sqlite_")
#: Schemas of the system catalogue.
SYSTEM_SCHEMAS = frozenset({"information_schema", "pg_catalog", "system", "temp"})
#: The one macro (defined by the engine) that may be called as a table function.
ENGINE_TABLE_MACROS = frozenset({"run_metrics"})


_parser_lock = threading.Lock()
_parser_connection: duckdb.DuckDBPyConnection | None = None


def _parser() -> duckdb.DuckDBPyConnection:
    """One empty in-memory connection used only to parse (opening one per query cost ~13 ms a query)."""
    global _parser_connection
    if _parser_connection is None:
        _parser_connection = duckdb.connect(":memory:")
    return _parser_connection


def check_read_only(sql: str, relations: Collection[str] | None = None) -> None:
    """Raise QueryRefused unless sql is exactly one SELECT that reads only tables and views by name, never the
    system catalogue; given relations (lower-case names, `schema.name` outside the main schema), only those
    and the query's own CTEs."""
    text = sql.strip()
    if not text:
        raise QueryRefused("empty query: give one SELECT statement")
    with _parser_lock:  # a DuckDB connection serves one thread at a time
        parser = _parser()
        try:
            statements = parser.extract_statements(text)
        except duckdb.Error as e:
            raise QueryRefused(f"the query does not parse: {_first_line(e)}") from e
        if len(statements) != 1:
            raise QueryRefused(f"give exactly one statement, got {len(statements)}")
        kind = statements[0].type
        if kind != duckdb.StatementType.SELECT:
            raise QueryRefused(
                f"{kind.name} statements are refused: queries are read-only, only SELECT is allowed"
            )
        row = parser.execute("SELECT json_serialize_sql($1)", [text]).fetchone()
    tree = json.loads(row[0]) if row is not None else {"error": True, "error_message": "no parse tree"}
    if tree.get("error"):
        raise QueryRefused(f"only a plain SELECT is allowed: {tree.get('error_message', 'it could not be parsed')}")
    ctes = {str(entry.get("key", "")).lower() for node in _nodes(tree) if isinstance(node.get("cte_map"), dict)
            for entry in node["cte_map"].get("map") or [] if isinstance(entry, dict)}
    for node in _nodes(tree):
        node_type = node.get("type")
        if node_type == "TABLE_FUNCTION":
            name = _function_name(node.get("function"))
            if name not in ALLOWED_TABLE_FUNCTIONS and name not in ENGINE_TABLE_MACROS:
                raise QueryRefused(
                    f"table function {name}() is refused: queries may read mlhub's views only "
                    f"(allowed table functions: {', '.join(sorted(ALLOWED_TABLE_FUNCTIONS | ENGINE_TABLE_MACROS))})"
                )
        elif node_type == "BASE_TABLE":
            name = str(node.get("table_name", ""))
            if any(ch in name for ch in "/\\.:*?") or name.startswith("~"):
                raise QueryRefused(f"reading the file {name!r} is refused: queries may read mlhub's views only")
            _check_relation(node, name, ctes, relations)
        elif node.get("class") == "FUNCTION" and (
                _function_name(node) in REFUSED_FUNCTIONS or _function_name(node).startswith(SYSTEM_PREFIXES)
                or str(node.get("schema", "")).lower() in SYSTEM_SCHEMAS):
            raise QueryRefused(f"function {_function_name(node)}() is refused in queries")


def _check_relation(node: dict[str, Any], name: str, ctes: set[str], relations: Collection[str] | None) -> None:
    """Refuse a table or view of the system catalogue, or (given relations) any but those and the CTEs."""
    catalog = str(node.get("catalog_name", "")).lower()
    schema = str(node.get("schema_name", "")).lower()
    lowered = name.lower()
    qualified = lowered if schema in ("", "main") else f"{schema}.{lowered}"
    if (catalog not in ("", "memory") or schema in SYSTEM_SCHEMAS
            or (lowered.startswith(SYSTEM_PREFIXES) and not (schema == "" and lowered in ctes))):
        raise QueryRefused(f"the system catalogue ({'.'.join(p for p in (catalog, schema, name) if p)}) is refused: "
                           "queries may read mlhub's views only")
    if relations is not None and qualified not in relations and not (schema == "" and lowered in ctes):
        shown = ", ".join(sorted(r for r in relations if "." not in r))
        raise QueryRefused(f"there is no view {qualified!r} a query may read; the views: {shown}")


def _function_name(node: Any) -> str:
    if not isinstance(node, dict):
        return "?"
    return str(node.get("function_name", "?")).lower()


def _nodes(value: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in the parse tree, depth first."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
