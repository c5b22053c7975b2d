"""The runs filter language (MLflow's): `metrics.val_acc > 0.9 and params.lr = '0.01' and tags.team = 'vision'`.

Grammar: clause (AND clause)*; a clause is `entity comparator value`.
- entity: `metrics.<key>` (the run's last value), `params.<key>`, `tags.<key>`, `attributes.<name>` or a bare
  attribute name (status, name, run_id, ...). A key with other characters is quoted with backticks or double
  quotes: metrics.`val/acc`.
- comparator: = != < <= > >= for metrics and numbers; = != LIKE ILIKE IN for strings; IN ('a', 'b').
- value: a number, or a string in single quotes ('it''s' escapes a quote). `status` compared with =, != or IN
  takes the words of mlhub.events.RunStatus only (queued, running, finished, failed, killed, crashed).
Every problem raises FilterError naming the token and its position. The result is a list of SQLAlchemy
conditions with bound parameters: nothing from the filter is ever spliced into SQL text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from mlhub.api.errors import ApiError
from mlhub.readmodel import tables as t

#: What a run status was called before it became mlhub.events.RunStatus, and its word now.
_OLD_RUN_STATUSES = {"cancelled": "killed", "created": "queued"}

MAX_FILTER_LENGTH = 10_000
MAX_CLAUSES = 50

#: Attributes a filter may name, and their kind.
STRING_ATTRIBUTES = ("run_id", "experiment_id", "name", "status", "source", "job_id", "reproduces_run_id",
                     "created_by", "worker_id", "config_sha256", "dataset_name", "dataset_fingerprint",
                     "git_commit", "error_type", "lifecycle_stage")
TIME_ATTRIBUTES = ("created_at", "started_at", "ended_at", "updated_at")
NUMBER_ATTRIBUTES = ("seed", "attempt")
_ATTRIBUTES = set(STRING_ATTRIBUTES) | set(TIME_ATTRIBUTES) | set(NUMBER_ATTRIBUTES)

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![A-Za-z_]))
      | (?P<string>'(?:[^']|'')*')
      | (?P<op><=|>=|!=|<>|=|<|>)
      | (?P<lparen>\() | (?P<rparen>\)) | (?P<comma>,)
      | (?P<entity>(?:[A-Za-z_][A-Za-z0-9_]*)(?:\.(?:`[^`]+`|"[^"]+"|[A-Za-z0-9_\-./:]+))?)
    )""",
    re.VERBOSE,
)


class FilterError(ApiError):
    """A filter that does not parse or names something unknown (400); details name the token and position."""

    code = "INVALID_FILTER"


@dataclass(frozen=True)
class Token:
    """A lexical token of a filter: its kind, text and character offset."""

    kind: str
    text: str
    pos: int


@dataclass(frozen=True)
class Clause:
    """One comparison: entity kind (metric, param, tag, attribute), key, comparator and value(s)."""

    kind: str
    key: str
    op: str
    value: Any
    pos: int


def _fail(message: str, token: Token | None, text: str) -> FilterError:
    if token is None:
        return FilterError(f"invalid filter: {message} at the end of the filter",
                           details={"token": None, "position": len(text)})
    return FilterError(f"invalid filter: {message}: {token.text!r} at position {token.pos}",
                       details={"token": token.text, "position": token.pos})


def tokenize(text: str) -> list[Token]:
    """The filter's tokens; FilterError names the first character that starts no token."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            start = len(text) - len(text[pos:].lstrip())
            bad = text[start:].split(None, 1)[0] if text[start:].split() else text[start:]
            raise FilterError(f"invalid filter: unexpected {bad!r} at position {start}",
                              details={"token": bad, "position": start})
        kind = match.lastgroup or ""
        tokens.append(Token(kind, match.group(kind), match.start(kind)))
        pos = match.end()
    return tokens


def parse_filter(text: str) -> list[Clause]:
    """Parse a filter into clauses (joined by AND); an empty filter has none."""
    if len(text) > MAX_FILTER_LENGTH:
        raise FilterError(f"invalid filter: longer than {MAX_FILTER_LENGTH} characters",
                          details={"token": None, "position": MAX_FILTER_LENGTH})
    tokens = tokenize(text)
    clauses: list[Clause] = []
    i = 0

    def peek() -> Token | None:
        return tokens[i] if i < len(tokens) else None

    while i < len(tokens):
        if clauses:
            conj = tokens[i]
            if conj.kind != "entity" or conj.text.lower() != "and":
                hint = " (only AND joins clauses)" if conj.text.lower() == "or" else ", expected AND"
                raise _fail(f"unexpected token{hint}", conj, text)
            i += 1
            if peek() is None:
                raise _fail("expected a clause after AND", None, text)
        entity = tokens[i]
        if entity.kind != "entity":
            raise _fail("expected metrics.<key>, params.<key>, tags.<key> or an attribute", entity, text)
        kind, key = _entity(entity, text)
        i += 1
        op_token = peek()
        if op_token is None:
            raise _fail(f"expected a comparator after {entity.text!r}", None, text)
        op = op_token.text.upper()
        if op_token.kind == "op":
            op = "!=" if op == "<>" else op
        elif op_token.kind == "entity" and op in ("LIKE", "ILIKE", "IN"):
            pass
        elif op_token.kind == "entity" and op == "NOT" and i + 1 < len(tokens) and tokens[i + 1].text.upper() == "IN":
            op = "NOT IN"
            i += 1
        else:
            raise _fail("expected a comparator (=, !=, <, <=, >, >=, LIKE, ILIKE, IN)", op_token, text)
        i += 1
        if op in ("IN", "NOT IN"):
            value, i = _value_list(tokens, i, text)
        else:
            value_token = peek()
            if value_token is None:
                raise _fail(f"expected a value after {op_token.text!r}", None, text)
            value = _literal(value_token, text)
            i += 1
        clauses.append(_checked(Clause(kind, key, op, value, entity.pos), op_token, text))
        if len(clauses) > MAX_CLAUSES:
            raise _fail(f"more than {MAX_CLAUSES} clauses", entity, text)
    return clauses


def _entity(token: Token, text: str) -> tuple[str, str]:
    prefix, dot, rest = token.text.partition(".")
    key = rest[1:-1] if rest[:1] in ("`", '"') else rest
    kinds = {"metrics": "metric", "metric": "metric", "params": "param", "param": "param", "tags": "tag",
             "tag": "tag", "attributes": "attribute", "attribute": "attribute", "attr": "attribute"}
    if not dot:
        if token.text in _ATTRIBUTES:
            return "attribute", token.text
        raise _fail("unknown attribute (use metrics.<key>, params.<key>, tags.<key> or one of "
                    f"{', '.join(sorted(_ATTRIBUTES))})", token, text)
    kind = kinds.get(prefix.lower())
    if kind is None:
        raise _fail("unknown entity type (expected metrics, params, tags or attributes)", token, text)
    if not key:
        raise _fail("empty key", token, text)
    if kind == "attribute" and key not in _ATTRIBUTES:
        raise _fail(f"unknown attribute (known: {', '.join(sorted(_ATTRIBUTES))})", token, text)
    return kind, key


def _literal(token: Token, text: str) -> Any:
    if token.kind == "number":
        number = float(token.text)
        return int(number) if re.fullmatch(r"[-+]?\d+", token.text) and abs(number) < 2**63 else number
    if token.kind == "string":
        return token.text[1:-1].replace("''", "'")
    raise _fail("expected a number or a 'quoted string'", token, text)


def _value_list(tokens: list[Token], i: int, text: str) -> tuple[list[Any], int]:
    if i >= len(tokens) or tokens[i].kind != "lparen":
        raise _fail("expected '(' after IN", tokens[i] if i < len(tokens) else None, text)
    i += 1
    values: list[Any] = []
    while True:
        if i >= len(tokens):
            raise _fail("unclosed '(' of IN", None, text)
        values.append(_literal(tokens[i], text))
        i += 1
        if i >= len(tokens):
            raise _fail("unclosed '(' of IN", None, text)
        if tokens[i].kind == "rparen":
            return values, i + 1
        if tokens[i].kind != "comma":
            raise _fail("expected ',' or ')' in the IN list", tokens[i], text)
        i += 1


def _checked(clause: Clause, op_token: Token, text: str) -> Clause:
    values = clause.value if isinstance(clause.value, list) else [clause.value]
    numeric = clause.kind == "metric" or (clause.kind == "attribute" and clause.key in NUMBER_ATTRIBUTES)
    if numeric:
        if clause.op in ("LIKE", "ILIKE"):
            raise _fail(f"{clause.op} compares strings; {clause.kind} {clause.key!r} is a number", op_token, text)
        if any(isinstance(v, str) for v in values):
            raise _fail(f"{clause.kind} {clause.key!r} is a number: compare it with a number", op_token, text)
    elif clause.kind == "attribute" and clause.key in TIME_ATTRIBUTES:
        if clause.op in ("LIKE", "ILIKE", "IN", "NOT IN"):
            raise _fail(f"{clause.key} is a time: compare it with =, !=, <, <=, >, >=", op_token, text)
        converted = _time_value(values[0], op_token, text)
        return Clause(clause.kind, clause.key, clause.op, converted, clause.pos)
    else:
        if clause.op in ("<", "<=", ">", ">="):
            raise _fail(f"{clause.kind} {clause.key!r} is a string: use =, !=, LIKE, ILIKE or IN", op_token, text)
        if any(not isinstance(v, str) for v in values):
            raise _fail(f"{clause.kind} {clause.key!r} is a string: quote the value ('...')", op_token, text)
        if clause.kind == "attribute" and clause.key == "status" and clause.op in ("=", "!=", "IN", "NOT IN"):
            for v in values:
                if v not in t.RUN_STATUSES:  # a typo (or an old word) would match nothing, silently
                    hint = f" (it is called {_OLD_RUN_STATUSES[v]!r} now)" if v in _OLD_RUN_STATUSES else ""
                    raise _fail(f"{v!r} is not a run status{hint}; one of {', '.join(t.RUN_STATUSES)}",
                                op_token, text)
    return clause


def _time_value(value: Any, token: Token, text: str) -> datetime:
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value / 1000, UTC)  # milliseconds since the epoch, like MLflow
        except (OverflowError, OSError, ValueError):
            raise _fail("time out of range (milliseconds since the Unix epoch)", token, text) from None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise _fail("expected an ISO-8601 time or milliseconds since the epoch", token, text) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _compare(column: Any, op: str, value: Any) -> sa.ColumnElement[bool]:
    if op == "=":
        return column == value  # type: ignore[no-any-return]
    if op == "!=":
        return column != value  # type: ignore[no-any-return]
    if op == "<":
        return column < value  # type: ignore[no-any-return]
    if op == "<=":
        return column <= value  # type: ignore[no-any-return]
    if op == ">":
        return column > value  # type: ignore[no-any-return]
    if op == ">=":
        return column >= value  # type: ignore[no-any-return]
    if op == "LIKE":
        return column.like(value)  # type: ignore[no-any-return]
    if op == "ILIKE":
        return column.ilike(value)  # type: ignore[no-any-return]
    if op == "IN":
        return column.in_(value)  # type: ignore[no-any-return]
    if op == "NOT IN":
        return column.not_in(value)  # type: ignore[no-any-return]
    raise AssertionError(op)  # pragma: no cover


def to_conditions(clauses: list[Clause]) -> list[sa.ColumnElement[bool]]:
    """SQL conditions on the `runs` table, with bound parameters only."""
    runs = t.runs
    conditions: list[sa.ColumnElement[bool]] = []
    for clause in clauses:
        if clause.kind == "attribute":
            conditions.append(_compare(runs.c[clause.key], clause.op, clause.value))
            continue
        table, column = {
            "metric": (t.metric_summaries, t.metric_summaries.c.last_value),
            "param": (t.params, t.params.c.value),
            "tag": (t.tags, t.tags.c.value),
        }[clause.kind]
        conditions.append(
            sa.exists().where(table.c.run_id == runs.c.run_id, table.c.key == clause.key,
                              _compare(column, clause.op, clause.value))
        )
    return conditions
