"""Read-model queries that the MLflow-compatible API added (each question has one query, here or in
api/queries.py): experiments search, runs' full rows, metric summaries and inputs of many runs at once, logged
models, and the registry's models and versions with descriptions and tags."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from mlhub.api.errors import ApiError, NotFound
from mlhub.api.filters import Clause, _compare
from mlhub.api.queries import decode_page_token, encode_page_token, row_dict
from mlhub.readmodel import tables as t

#: Columns an experiments search may sort by.
EXPERIMENT_SORTS = ("name", "experiment_id", "created_at", "updated_at")


def search_experiments(conn: sa.Connection, *, clauses: Sequence[Clause], stages: Sequence[str],
                       order_by: tuple[str, bool], max_results: int, page_token: str | None) -> dict[str, Any]:
    """Experiments matching attribute clauses (name, experiment_id) and tag clauses (`tags.<key>`, matched in
    Python over the JSON column: experiments are few), in the given lifecycle stages, sorted, a page at a time
    (the token holds the offset)."""
    e = t.experiments
    stmt = sa.select(e).where(e.c.lifecycle_stage.in_(list(stages)))
    for clause in clauses:
        if clause.kind == "attribute":
            stmt = stmt.where(_compare(e.c[clause.key], clause.op, clause.value))
    column, descending = order_by
    sort = sa.func.coalesce(e.c.updated_at, e.c.created_at) if column == "updated_at" else e.c[column]
    stmt = stmt.order_by(sort.desc() if descending else sort.asc(), e.c.experiment_id.asc())
    query_key = json.dumps([[c.kind, c.key, c.op, str(c.value)] for c in clauses] + [sorted(stages)])
    offset = 0
    if page_token:
        value, _ = decode_page_token(page_token, f"experiments {column} {descending}", query_key)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
            raise ApiError("page_token is not a token this API issued", code="INVALID_PAGE_TOKEN")
        offset = value
    rows = [row_dict(r) for r in conn.execute(stmt)]
    tag_clauses = [c for c in clauses if c.kind == "tag"]
    if tag_clauses:
        rows = [r for r in rows if all(clause_matches(r["tags"] or {}, c) for c in tag_clauses)]
    page = rows[offset:offset + max_results]
    more = len(rows) > offset + max_results
    token = encode_page_token(f"experiments {column} {descending}", query_key, offset + max_results, "") \
        if more else None
    return {"data": page, "next_page_token": token}


def clause_matches(values: dict[str, Any], clause: Clause) -> bool:
    """Whether a clause (=, !=, LIKE, ILIKE, IN, NOT IN) holds for the value of its key in `values`."""
    value = values.get(clause.key)
    if value is None:  # a missing tag differs from every value (MLflow's `tags.k != 'v'` keeps it)
        return clause.op in ("!=", "NOT IN")
    wanted = clause.value
    if clause.op == "=":
        return bool(value == wanted)
    if clause.op == "!=":
        return bool(value != wanted)
    if clause.op in ("LIKE", "ILIKE"):
        pattern = "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in str(wanted))
        return re.fullmatch(pattern, value, re.DOTALL | (re.IGNORECASE if clause.op == "ILIKE" else 0)) is not None
    if clause.op in ("IN", "NOT IN"):
        return (value in wanted) == (clause.op == "IN")
    return False


def experiment_by_name(conn: sa.Connection, name: str) -> dict[str, Any]:
    """The experiment of that (current) name; NotFound otherwise."""
    row = conn.execute(sa.select(t.experiments).where(t.experiments.c.name == name)
                       .order_by(t.experiments.c.lifecycle_stage)).first()
    if row is None:
        raise NotFound(f"no experiment named {name!r}", details={"name": name})
    return row_dict(row)


def run_rows(conn: sa.Connection, run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The full rows of some runs, by id."""
    if not run_ids:
        return {}
    return {r.run_id: row_dict(r) for r in conn.execute(sa.select(t.runs).where(t.runs.c.run_id.in_(list(run_ids))))}


def metric_summaries_of(conn: sa.Connection, run_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """The metric summaries (last value, step, timestamp, ...) of several runs in one query, by run."""
    ms = t.metric_summaries
    found: dict[str, list[dict[str, Any]]] = {i: [] for i in run_ids}
    if run_ids:
        for r in conn.execute(sa.select(ms).where(ms.c.run_id.in_(list(run_ids))).order_by(ms.c.run_id, ms.c.key)):
            found[r.run_id].append(row_dict(r, ("key", "last_value", "last_step", "last_timestamp", "count",
                                                "nan_count")))
    return found


def inputs_of(conn: sa.Connection, run_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """The datasets several runs recorded, by run."""
    return _rows_by_run(conn, t.run_inputs, run_ids, t.run_inputs.c.last_seq)


def logged_models_of(conn: sa.Connection, run_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """The models several runs logged, by run (oldest first)."""
    return _rows_by_run(conn, t.logged_models, run_ids, t.logged_models.c.created_at)


def _rows_by_run(conn: sa.Connection, table: sa.Table, run_ids: Sequence[str],
                 order: sa.ColumnElement[Any]) -> dict[str, list[dict[str, Any]]]:
    """The rows of a table with a run_id column for several runs, by run, in `order`."""
    found: dict[str, list[dict[str, Any]]] = {i: [] for i in run_ids}
    if run_ids:
        for r in conn.execute(sa.select(table).where(table.c.run_id.in_(list(run_ids))).order_by(order)):
            found[r.run_id].append(row_dict(r))
    return found


def logged_model(conn: sa.Connection, model_id: str) -> dict[str, Any]:
    """One logged model; NotFound otherwise."""
    row = conn.execute(sa.select(t.logged_models).where(t.logged_models.c.model_id == model_id)).first()
    if row is None:
        raise NotFound(f"no logged model {model_id!r}", details={"model_id": model_id})
    return row_dict(row)


def search_logged_models(conn: sa.Connection, experiment_ids: Sequence[str], max_results: int, *,
                         name: str | None = None, run_id: str | None = None) -> list[dict[str, Any]]:
    """Active logged models of some experiments (of a name, of a run), newest first."""
    lm = t.logged_models
    stmt = sa.select(lm).where(lm.c.lifecycle_stage == "active")
    if name is not None:
        stmt = stmt.where(lm.c.name == name)
    if run_id is not None:
        stmt = stmt.where(lm.c.run_id == run_id)
    if experiment_ids:
        stmt = stmt.where(lm.c.experiment_id.in_(list(experiment_ids)))
    return [row_dict(r) for r in conn.execute(stmt.order_by(lm.c.created_at.desc()).limit(max_results))]


# -- registry --------------------------------------------------------------------------------------------------

_VERSION_COLUMNS = ("model_name", "version", "run_id", "artifact_path", "artifact_sha256", "description",
                    "registered_by", "registered_at", "last_seq", "tags")


def registered_models(conn: sa.Connection, names: Sequence[str] | None = None,
                      name_like: str | None = None) -> list[dict[str, Any]]:
    """Registered models (all, some names, or names LIKE a pattern) with description, tags, aliases and
    latest version, by name."""
    m, a = t.registered_models, t.model_aliases
    stmt = sa.select(m).order_by(m.c.model_name)
    if names is not None:
        stmt = stmt.where(m.c.model_name.in_(list(names)))
    if name_like is not None:
        stmt = stmt.where(m.c.model_name.like(name_like))
    models = [row_dict(r) for r in conn.execute(stmt)]
    ids = [x["model_name"] for x in models]
    aliases: dict[str, dict[str, int]] = {i: {} for i in ids}
    if ids:
        for r in conn.execute(sa.select(a.c.model_name, a.c.alias, a.c.version).where(a.c.model_name.in_(ids))):
            aliases[r.model_name][r.alias] = r.version
    for x in models:
        x["aliases"] = aliases[x["model_name"]]
    return models


def registered_model(conn: sa.Connection, name: str) -> dict[str, Any]:
    """One registered model (see registered_models); NotFound otherwise."""
    found = registered_models(conn, [name])
    if not found:
        raise NotFound(f"no registered model {name!r}", details={"name": name})
    return found[0]


def model_versions(conn: sa.Connection, *, name: str | None = None, run_id: str | None = None,
                   version: int | None = None) -> list[dict[str, Any]]:
    """Model versions (of a model, a run, or one version) with the aliases pointing at each and the run's
    status, newest first."""
    v, a, runs = t.model_versions, t.model_aliases, t.runs
    stmt = sa.select(*(v.c[c] for c in _VERSION_COLUMNS), runs.c.status.label("run_status"),
                     runs.c.experiment_id).select_from(v.outerjoin(runs, runs.c.run_id == v.c.run_id))
    if name is not None:
        stmt = stmt.where(v.c.model_name == name)
    if run_id is not None:
        stmt = stmt.where(v.c.run_id == run_id)
    if version is not None:
        stmt = stmt.where(v.c.version == version)
    rows = [row_dict(r) for r in conn.execute(stmt.order_by(v.c.model_name, v.c.version.desc()))]
    if rows:
        names = sorted({r["model_name"] for r in rows})
        pointing: dict[tuple[str, int], list[str]] = {}
        for model_name, alias, version_number in conn.execute(
                sa.select(a.c.model_name, a.c.alias, a.c.version).where(a.c.model_name.in_(names)).order_by(a.c.alias)):
            pointing.setdefault((model_name, version_number), []).append(alias)
        for item in rows:
            item["aliases"] = pointing.get((item["model_name"], item["version"]), [])
    return rows
