"""MLflow's search grammar translated onto mlhub's own: a runs filter becomes mlhub filter text (run by
api/queries.search_runs, the one runs search), an order_by becomes mlhub's, an experiments filter becomes
clauses for api/reads.search_experiments. Nothing here touches SQL.

MLflow filter: clauses joined by AND; `metrics.<key>`, `params.<key>`, `tags.<key>`, `attributes.<name>` (or a
bare attribute) with =, !=, <, <=, >, >=, LIKE, ILIKE, IN, NOT IN; strings in single or double quotes; keys
with other characters in backticks or double quotes. Run statuses are MLflow's words (FINISHED, ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mlhub.api.filters import Clause
from mlhub.api.mlflow.errors import MlflowApiError

_TOKEN = re.compile(r"""\s*(?:
      (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![A-Za-z_]))
    | (?P<string>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.)*")
    | (?P<op><=|>=|!=|<>|==|=|<|>)
    | (?P<lparen>\() | (?P<rparen>\)) | (?P<comma>,)
    | (?P<entity>[A-Za-z_][A-Za-z0-9_]*(?:\.(?:`[^`]+`|"[^"]+"|[A-Za-z0-9_\-./:]+))?)
)""", re.VERBOSE)

#: MLflow's run statuses -> mlhub's (a word of either side may stand for several of the other).
STATUS_TO_MLHUB: dict[str, tuple[str, ...]] = {
    "RUNNING": ("running",), "SCHEDULED": ("queued",), "FINISHED": ("finished",),
    "FAILED": ("failed", "crashed"), "KILLED": ("killed", "cancelled"),
}
#: MLflow run attributes -> mlhub's runs columns.
RUN_ATTRIBUTES = {"run_id": "run_id", "run_name": "name", "status": "status", "start_time": "started_at",
                  "end_time": "ended_at", "created": "created_at", "lifecycle_stage": "lifecycle_stage",
                  "experiment_id": "experiment_id"}
#: MLflow's sortable run attributes -> mlhub's order_by columns.
RUN_SORTS = {"start_time": "started_at", "end_time": "ended_at", "run_name": "name", "status": "status",
             "run_id": "run_id", "experiment_id": "experiment_id", "created": "created_at"}
_KINDS = {"metrics": "metrics", "metric": "metrics", "params": "params", "param": "params", "parameter": "params",
          "parameters": "params", "tags": "tags", "tag": "tags", "attributes": "attribute", "attribute": "attribute",
          "attr": "attribute", "run": "attribute", "datasets": "datasets", "dataset": "datasets"}


@dataclass(frozen=True)
class _Clause:
    kind: str
    key: str
    op: str
    values: list[Any]
    listed: bool


def _bad(message: str) -> MlflowApiError:
    return MlflowApiError(f"Invalid filter: {message}")


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"`":
        body = text[1:-1]
        return body.replace("''", "'") if text[0] == "'" else body
    return text


def _tokens(text: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text) and text[pos:].strip():
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise _bad(f"unexpected {text[pos:].strip()[:30]!r} at position {pos}")
        kind = match.lastgroup or ""
        found.append((kind, match.group(kind)))
        pos = match.end()
    return found


def _parse(text: str | None) -> list[_Clause]:
    tokens = _tokens(text or "")
    clauses: list[_Clause] = []
    i = 0
    while i < len(tokens):
        if clauses:
            if tokens[i][1].upper() != "AND":
                raise _bad(f"expected AND, got {tokens[i][1]!r} (MLflow's grammar joins clauses with AND only)")
            i += 1
        if i >= len(tokens) or tokens[i][0] != "entity":
            raise _bad("expected an entity such as metrics.acc, params.lr, tags.team or attributes.status")
        prefix, dot, rest = tokens[i][1].partition(".")
        kind = _KINDS.get(prefix.lower()) if dot else "attribute"
        if kind is None:
            raise _bad(f"unknown entity type {prefix!r} (metrics, params, tags, attributes)")
        key = _unquote(rest) if dot else prefix
        i += 1
        if i >= len(tokens):
            raise _bad(f"expected a comparator after {key!r}")
        op = tokens[i][1].upper()
        if op == "NOT" and i + 1 < len(tokens) and tokens[i + 1][1].upper() == "IN":
            op, i = "NOT IN", i + 1
        op = {"<>": "!=", "==": "="}.get(op, op)
        if op not in ("=", "!=", "<", "<=", ">", ">=", "LIKE", "ILIKE", "IN", "NOT IN"):
            raise _bad(f"unknown comparator {tokens[i][1]!r}")
        i += 1
        values: list[Any] = []
        if op in ("IN", "NOT IN"):
            if i >= len(tokens) or tokens[i][0] != "lparen":
                raise _bad(f"expected '(' after {op}")
            i += 1
            while i < len(tokens) and tokens[i][0] != "rparen":
                if tokens[i][0] != "comma":
                    values.append(_literal(tokens[i]))
                i += 1
            if i >= len(tokens):
                raise _bad(f"unclosed '(' of {op}")
            i += 1
        else:
            if i >= len(tokens):
                raise _bad(f"expected a value after {op}")
            values.append(_literal(tokens[i]))
            i += 1
        clauses.append(_Clause(kind, key, op, values, op in ("IN", "NOT IN")))
    return clauses


def _literal(token: tuple[str, str]) -> Any:
    kind, text = token
    if kind == "number":
        return float(text) if re.search(r"[.eE]", text) else int(text)
    if kind == "string":
        return _unquote(text)
    raise _bad(f"expected a number or a quoted string, got {text!r}")


def _quote(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def _key(key: str) -> str:
    if "`" in key:
        raise _bad(f"a key with a backtick cannot be searched: {key!r}")
    return f"`{key}`"


def runs_filter(text: str | None) -> str:
    """An MLflow runs filter as mlhub filter text (statuses mapped, attributes renamed)."""
    parts: list[str] = []
    for c in _parse(text):
        if c.kind == "datasets":
            raise MlflowApiError("searching runs by datasets.* is not supported by mlhub (docs/mlflow.md)")
        if c.kind in ("metrics", "params", "tags"):
            entity, values = f"{c.kind}.{_key(c.key)}", c.values
        else:
            name = c.key.lower()
            if name == "user_id":
                entity, values = "tags.`mlflow.user`", c.values
            elif name in RUN_ATTRIBUTES:
                entity, values = RUN_ATTRIBUTES[name], c.values
            else:
                raise MlflowApiError(f"Invalid attribute key '{c.key}' specified. Valid keys are "
                                     f"{sorted([*RUN_ATTRIBUTES, 'user_id'])}")
            if name == "status":
                if c.op not in ("=", "!=", "IN", "NOT IN"):
                    raise MlflowApiError(f"status compares with =, !=, IN or NOT IN, not {c.op}")
                mapped: list[str] = []
                for v in values:
                    if str(v).upper() not in STATUS_TO_MLHUB:
                        raise MlflowApiError(f"status {v!r} is not one of {', '.join(STATUS_TO_MLHUB)}")
                    mapped += STATUS_TO_MLHUB[str(v).upper()]
                op = "IN" if c.op in ("=", "IN") else "NOT IN"
                parts.append(f"status {op} ({', '.join(map(_quote, mapped))})")
                continue
        if c.listed:
            parts.append(f"{entity} {c.op} ({', '.join(map(_quote, values))})")
        else:
            parts.append(f"{entity} {c.op} {_quote(values[0])}")
    return " and ".join(parts)


def runs_order_by(order_by: list[str] | None) -> str | None:
    """MLflow's order_by (a list; mlhub applies the first, then the run id) as mlhub's order_by."""
    items = [o for o in (order_by or []) if o and o.strip()]
    if not items:
        return None
    match = re.fullmatch(r"\s*(.+?)(?:\s+(ASC|DESC))?\s*", items[0], re.IGNORECASE)
    assert match is not None
    column, direction = match.group(1), (match.group(2) or "ASC").upper()
    prefix, dot, rest = column.partition(".")
    kind = _KINDS.get(prefix.lower()) if dot else "attribute"
    key = _unquote(rest) if dot else prefix
    if kind in ("metrics", "params", "tags"):
        if re.search(r"\s", key):
            raise MlflowApiError(f"order_by {items[0]!r}: mlhub cannot sort by a key with spaces")
        return f"{kind}.{key} {direction}"
    if kind == "attribute" and key.lower() in RUN_SORTS:
        return f"{RUN_SORTS[key.lower()]} {direction}"
    raise MlflowApiError(f"Invalid order_by clause {items[0]!r}: sort by metrics.<key>, params.<key>, "
                         f"tags.<key> or one of {sorted(RUN_SORTS)}")


#: MLflow experiment attributes -> the experiments table's columns.
EXPERIMENT_ATTRIBUTES = {"name": "name", "experiment_id": "experiment_id", "creation_time": "created_at",
                         "last_update_time": "updated_at"}


def experiments_filter(text: str | None) -> list[Clause]:
    """An MLflow experiments filter (name, tags.<key>) as clauses for reads.search_experiments."""
    clauses: list[Clause] = []
    for c in _parse(text):
        if c.kind == "tags":
            clauses.append(Clause("tag", c.key, c.op, c.values if c.listed else c.values[0], 0))
        elif c.kind == "attribute" and c.key.lower() in ("name", "experiment_id"):
            if c.op in ("<", "<=", ">", ">="):
                raise MlflowApiError(f"{c.key} compares with =, !=, LIKE, ILIKE or IN")
            clauses.append(Clause("attribute", c.key.lower(), c.op, c.values if c.listed else c.values[0], 0))
        else:
            raise MlflowApiError(f"Invalid experiments filter entity {c.kind}.{c.key}: name and tags.<key> are "
                                 "supported by mlhub")
    return clauses


def experiments_order_by(order_by: list[str] | None) -> tuple[str, bool]:
    """MLflow's experiments order_by (the first item) as (column, descending); default: newest first."""
    items = [o for o in (order_by or []) if o and o.strip()]
    if not items:
        return "created_at", True
    parts = items[0].split()
    column = parts[0].removeprefix("attributes.").removeprefix("attribute.")
    if column not in EXPERIMENT_ATTRIBUTES or len(parts) > 2 or (len(parts) == 2 and parts[1].upper() not in (
            "ASC", "DESC")):
        raise MlflowApiError(f"Invalid order_by clause {items[0]!r}: one of {sorted(EXPERIMENT_ATTRIBUTES)} "
                             "with ASC or DESC")
    return EXPERIMENT_ATTRIBUTES[column], len(parts) == 2 and parts[1].upper() == "DESC"
