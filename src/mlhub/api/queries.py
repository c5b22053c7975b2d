"""Read-model queries of the API: runs search with keyset pagination, run detail with lineage, jobs, models.

Every function takes a connection and returns JSON-ready dicts (times as ISO-8601 UTC, non-finite floats as
"NaN"/"Infinity"/"-Infinity"), so hot endpoints can answer without another serialization pass.
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from mlhub.analytics.cells import json_cell
from mlhub.api.errors import ApiError, NotFound
from mlhub.api.filters import TIME_ATTRIBUTES, parse_filter, to_conditions
from mlhub.events.bounds import loads_bounded
from mlhub.readmodel import tables as t

#: Columns a runs search may sort by.
SORTABLE = ("created_at", "started_at", "ended_at", "updated_at", "name", "status", "run_id", "experiment_id")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Sorts by a key: metrics.<key> (last value), best_metrics.<key>, params.<key>, tags.<key>.
KEYED_SORTS = ("metrics", "best_metrics", "params", "tags")
#: The sort value of a run that lacks the metric: the lowest finite double (last in DESC order, first in ASC).
MISSING_METRIC = -sys.float_info.max
#: Columns of a run in the runs list (the detail has every column).
LIST_COLUMNS = ("run_id", "experiment_id", "name", "status", "source", "job_id", "created_by", "created_at",
                "started_at", "ended_at", "updated_at", "last_seq")


def jv(value: Any) -> Any:
    """A JSON-ready value: times as ISO-8601 UTC, non-finite floats as strings (`analytics.cells.json_cell`, the
    one JSON form of values the API and the CLI print)."""
    return json_cell(value)


def row_dict(row: Any, columns: Iterable[str] | None = None) -> dict[str, Any]:
    """A result row as a JSON-ready dict (of the given columns, or all)."""
    mapping = row._mapping
    names = columns if columns is not None else mapping.keys()
    return {name: jv(mapping[name]) for name in names}


# -- page tokens -----------------------------------------------------------------------------------------------

def encode_page_token(order: str, query: str, value: Any, run_id: str) -> str:
    """An opaque token: base64 of the sort key and id of the last row shown, and what they were sorted by."""
    raw = json.dumps({"o": order, "q": query, "v": jv(value), "id": run_id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_page_token(token: str, order: str, query: str) -> tuple[Any, str]:
    """(sort value, run id) from a token; INVALID_PAGE_TOKEN when it is not one of ours or belongs to another search."""
    try:  # a token is a flat object: anything nested deeper is forged (and json.loads would recurse on it)
        data = loads_bounded(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)), max_depth=1)
        ok = isinstance(data, dict) and isinstance(data.get("id"), str)
    except (binascii.Error, ValueError, UnicodeDecodeError):  # TooDeep and too many digits are ValueErrors
        ok = False
    if not ok:
        raise ApiError("page_token is not a token this API issued", code="INVALID_PAGE_TOKEN",
                       details={"page_token": token[:200]})
    if data.get("o") != order or data.get("q") != query:
        raise ApiError("page_token belongs to a search with another filter, experiment or order_by: "
                       "repeat the search that issued it", code="INVALID_PAGE_TOKEN")
    return data.get("v"), str(data["id"])


def parse_order_by(order_by: str | None) -> tuple[str, bool]:
    """(column, descending) from e.g. "created_at DESC"; default: newest first."""
    if not order_by or not order_by.strip():
        return "created_at", True
    parts = order_by.split()
    column = parts[0].removeprefix("attributes.").removeprefix("attribute.")
    direction = parts[1].upper() if len(parts) > 1 else "ASC"
    kind, dot, key = column.partition(".")
    if dot and kind in KEYED_SORTS:
        key = key[1:-1] if len(key) > 1 and key[0] == key[-1] and key[0] in "`\"" else key
        column = f"{kind}.{key}"
    if (column not in SORTABLE and not (dot and kind in KEYED_SORTS and 0 < len(key) <= 250)) \
            or direction not in ("ASC", "DESC") or len(parts) > 2:
        raise ApiError(f"order_by {order_by!r}: expected '<column> [ASC|DESC]' with a column of "
                       f"{', '.join(SORTABLE)}, or metrics.<key>, best_metrics.<key>, params.<key>, tags.<key>",
                       details={"order_by": order_by})
    return column, direction == "DESC"


def _keyed_sort_expression(column: str) -> Any:
    """The sort key of metrics.<key> (last value), best_metrics.<key> (max or min by the declared direction) or
    params.<key> (the string): a correlated subquery per run; a run without it sorts as the lowest value."""
    kind, _, key = column.partition(".")
    runs = t.runs
    if kind in ("params", "tags"):
        p = t.params if kind == "params" else t.tags
        value = sa.select(p.c.value).where(p.c.run_id == runs.c.run_id, p.c.key == key).scalar_subquery()
        return sa.func.coalesce(value, "")
    ms, md = t.metric_summaries, t.metric_definitions
    if kind == "metrics":
        number = sa.select(ms.c.last_value).where(ms.c.run_id == runs.c.run_id, ms.c.key == key)
    else:
        best = sa.case((md.c.direction == "max", ms.c.max_value), (md.c.direction == "min", ms.c.min_value),
                       else_=None)
        number = sa.select(best).select_from(ms.join(md, md.c.name == ms.c.key)).where(
            ms.c.run_id == runs.c.run_id, ms.c.key == key)
    return sa.func.coalesce(number.scalar_subquery(), sa.literal(MISSING_METRIC, type_=ms.c.last_value.type))


def _sort_expression(column: str) -> Any:
    if column.partition(".")[0] in KEYED_SORTS:
        return _keyed_sort_expression(column)
    col = t.runs.c[column]
    if column in TIME_ATTRIBUTES:
        return sa.func.coalesce(col, sa.literal(_EPOCH, type_=t.runs.c.updated_at.type))
    if column == "run_id":
        return col
    return sa.func.coalesce(col, "")


def _token_value(column: str, value: Any) -> Any:
    if column.partition(".")[0] in ("metrics", "best_metrics"):
        if isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity"):
            return float(value.replace("Infinity", "inf"))
        if isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool)
                                        and abs(value) <= sys.float_info.max):
            return float(value)
        raise ApiError("page_token is damaged", code="INVALID_PAGE_TOKEN")
    if column in TIME_ATTRIBUTES:
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            raise ApiError("page_token is damaged", code="INVALID_PAGE_TOKEN") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if not isinstance(value, str):
        raise ApiError("page_token is damaged", code="INVALID_PAGE_TOKEN")
    return value


# -- runs --------------------------------------------------------------------------------------------------------

def search_runs(conn: sa.Connection, *, experiment_ids: Sequence[str], filter_text: str | None,
                order_by: str | None, max_results: int, page_token: str | None) -> dict[str, Any]:
    """One page of runs matching the filter, sorted, with params, tags and last metric values."""
    column, descending = parse_order_by(order_by)
    clauses = parse_filter(filter_text or "")
    runs = t.runs
    sort = _sort_expression(column)
    query_key = json.dumps([sorted(experiment_ids), filter_text or ""], separators=(",", ":"))
    order_key = f"{column} {'DESC' if descending else 'ASC'}"
    stmt = sa.select(*(runs.c[c] for c in LIST_COLUMNS), sort.label("sort_key"))
    if experiment_ids:
        stmt = stmt.where(runs.c.experiment_id.in_(list(experiment_ids)))
    for condition in to_conditions(clauses):
        stmt = stmt.where(condition)
    if page_token:
        value, last_id = decode_page_token(page_token, order_key, query_key)
        value = _token_value(column, value) if column != "run_id" else last_id
        if column == "run_id":
            stmt = stmt.where(runs.c.run_id < last_id if descending else runs.c.run_id > last_id)
        elif descending:
            stmt = stmt.where(sa.or_(sort < value, sa.and_(sort == value, runs.c.run_id < last_id)))
        else:
            stmt = stmt.where(sa.or_(sort > value, sa.and_(sort == value, runs.c.run_id > last_id)))
    if column == "run_id":
        stmt = stmt.order_by(runs.c.run_id.desc() if descending else runs.c.run_id.asc())
    else:
        stmt = stmt.order_by(sort.desc() if descending else sort.asc(),
                             runs.c.run_id.desc() if descending else runs.c.run_id.asc())
    rows = conn.execute(stmt.limit(max_results + 1)).all()
    more = len(rows) > max_results
    rows = rows[:max_results]
    data = [row_dict(r, LIST_COLUMNS) for r in rows]
    ids = [d["run_id"] for d in data]
    extras = _run_extras(conn, ids)
    for item in data:
        item.update(extras[item["run_id"]])
    token = None
    if more and rows:
        last = rows[-1]
        token = encode_page_token(order_key, query_key, last.sort_key, last.run_id)
    return {"data": data, "count": len(data), "next_page_token": token}


def _run_extras(conn: sa.Connection, run_ids: list[str]) -> dict[str, dict[str, Any]]:
    extras: dict[str, dict[str, Any]] = {i: {"params": {}, "tags": {}, "metrics": {}, "best_metrics": {}}
                                         for i in run_ids}
    if not run_ids:
        return extras
    for table, target in ((t.params, "params"), (t.tags, "tags")):
        for run_id, key, value in conn.execute(
                sa.select(table.c.run_id, table.c.key, table.c.value).where(table.c.run_id.in_(run_ids))):
            extras[run_id][target][key] = value
    ms, md = t.metric_summaries, t.metric_definitions
    # best: the minimum or maximum by the direction configs/metrics.yaml declares; undeclared keys have none
    best = sa.case((md.c.direction == "max", ms.c.max_value), (md.c.direction == "min", ms.c.min_value), else_=None)
    for run_id, key, value, best_value, declared in conn.execute(
            sa.select(ms.c.run_id, ms.c.key, ms.c.last_value, best, md.c.direction)
            .select_from(ms.outerjoin(md, md.c.name == ms.c.key)).where(ms.c.run_id.in_(run_ids))):
        extras[run_id]["metrics"][key] = jv(value)
        if declared is not None:
            extras[run_id]["best_metrics"][key] = jv(best_value)
    return extras


def metric_summaries(conn: sa.Connection, run_id: str) -> list[dict[str, Any]]:
    """Every metric key of a run with its summary, by key."""
    ms = t.metric_summaries
    rows = conn.execute(sa.select(ms).where(ms.c.run_id == run_id).order_by(ms.c.key))
    columns = ("key", "last_value", "last_step", "last_timestamp", "min_value", "max_value", "count", "nan_count")
    return [row_dict(r, columns) for r in rows]


#: How many of the runs an ambiguous run reference matches its error lists.
RUN_REF_CANDIDATES = 5


def resolve_run_ref(conn: sa.Connection, ref: str) -> dict[str, Any]:
    """The run a reference names: its full id, else the one run whose id starts with it or whose name is it
    (exactly). NotFound when none does; AMBIGUOUS_RUN_REF (400), listing the newest few, when several do."""
    runs = t.runs
    columns = (runs.c.run_id, runs.c.name, runs.c.experiment_id, runs.c.created_at)
    if not ref:
        raise ApiError("a run reference is a run id, a unique prefix of one, or a run name; got ''",
                       details={"ref": ref})
    exact = conn.execute(sa.select(*columns).where(runs.c.run_id == ref)).first()
    if exact is not None:
        return {**row_dict(exact), "matched_by": "id"}
    # substr, not LIKE: exact and case-sensitive on SQLite and PostgreSQL alike, with no wildcards in `ref`.
    match = sa.or_(sa.func.substr(runs.c.run_id, 1, len(ref)) == ref, runs.c.name == ref)
    count = conn.execute(sa.select(sa.func.count()).select_from(runs).where(match)).scalar_one()
    rows = conn.execute(sa.select(*columns).where(match).order_by(runs.c.created_at.desc(), runs.c.run_id)
                        .limit(RUN_REF_CANDIDATES)).all()
    if count == 0:
        raise NotFound(f"no run has the id, id prefix or name {ref!r}", details={"ref": ref})
    found = [row_dict(row) for row in rows]
    if count > 1:
        listed = ", ".join(f"{r['run_id']} ({r['name'] or 'unnamed'}, {r['created_at'] or '-'})" for r in found)
        more = f" and {count - len(found)} more" if count > len(found) else ""
        raise ApiError(f"{count} runs match {ref!r} by id prefix or name: {listed}{more}; give more of the id",
                       code="AMBIGUOUS_RUN_REF", details={"ref": ref, "count": count, "candidates": found})
    run = found[0]
    return {**run, "matched_by": "id_prefix" if run["run_id"].startswith(ref) else "name"}


def run_exists(conn: sa.Connection, run_id: str) -> bool:
    """Whether the read model has the run."""
    return conn.execute(sa.select(t.runs.c.run_id).where(t.runs.c.run_id == run_id)).first() is not None


def get_run(conn: sa.Connection, run_id: str) -> dict[str, Any]:
    """Everything the read model knows about a run: every column, params, tags, metrics, artifacts, lineage."""
    row = conn.execute(sa.select(t.runs).where(t.runs.c.run_id == run_id)).first()
    if row is None:
        raise NotFound(f"no run {run_id!r} (with min_seq, a run just created is waited for)",
                       details={"run_id": run_id})
    run = row_dict(row)
    extras = _run_extras(conn, [run_id])[run_id]
    artifacts = list_artifacts(conn, run_id)
    job = conn.execute(sa.select(t.jobs).where(t.jobs.c.job_id == run["job_id"])).first() if run["job_id"] else None
    reproduced_by = [r for (r,) in conn.execute(
        sa.select(t.runs.c.run_id).where(t.runs.c.reproduces_run_id == run_id).order_by(t.runs.c.run_id))]
    models = [row_dict(r, ("model_name", "version", "artifact_path", "artifact_sha256", "registered_at"))
              for r in conn.execute(sa.select(t.model_versions).where(t.model_versions.c.run_id == run_id)
                                    .order_by(t.model_versions.c.model_name, t.model_versions.c.version))]
    lineage = {
        "experiment_id": run["experiment_id"],
        "job": row_dict(job) if job is not None else None,
        "config_sha256": run["config_sha256"],
        "seed": run["seed"],
        "dataset": {"name": run["dataset_name"], "fingerprint": run["dataset_fingerprint"],
                    "size_bytes": run["dataset_size_bytes"], "num_examples": run["dataset_num_examples"]},
        "code": {"git_commit": run["git_commit"], "git_dirty": run["git_dirty"],
                 "git_diff_sha256": run["git_diff_sha256"], "git_repository": run["git_repository"]},
        "environment": {k.removeprefix("env_"): v for k, v in run.items() if k.startswith("env_")},
        "reproduces_run_id": run["reproduces_run_id"],
        "reproduced_by": reproduced_by,
        "model_versions": models,
    }
    return {"run": run, "params": extras["params"], "tags": extras["tags"],
            "metrics": metric_summaries(conn, run_id), "artifacts": artifacts, "lineage": lineage}


def list_artifacts(conn: sa.Connection, run_id: str) -> list[dict[str, Any]]:
    """A run's artifacts by path."""
    a = t.artifacts
    rows = conn.execute(sa.select(a).where(a.c.run_id == run_id).order_by(a.c.path))
    return [row_dict(r, ("path", "sha256", "size_bytes", "kind", "stored_at", "last_seq")) for r in rows]


def get_artifact(conn: sa.Connection, run_id: str, path: str) -> dict[str, Any]:
    """One artifact row (with its uri); NotFound naming the run and path."""
    a = t.artifacts
    row = conn.execute(sa.select(a).where(a.c.run_id == run_id, a.c.path == path)).first()
    if row is None:
        raise NotFound(f"run {run_id!r} has no artifact {path!r}", details={"run_id": run_id, "path": path})
    return row_dict(row)


# -- experiments, jobs, models -------------------------------------------------------------------------------------

def list_experiments(conn: sa.Connection, max_results: int, page_token: str | None) -> dict[str, Any]:
    """Experiments by id, one page."""
    e = t.experiments
    stmt = sa.select(e).order_by(e.c.experiment_id)
    if page_token:
        _, last_id = decode_page_token(page_token, "experiment_id", "")
        stmt = stmt.where(e.c.experiment_id > last_id)
    rows = conn.execute(stmt.limit(max_results + 1)).all()
    data = [row_dict(r) for r in rows[:max_results]]
    token = encode_page_token("experiment_id", "", None, data[-1]["experiment_id"]) \
        if len(rows) > max_results else None
    return {"data": data, "count": len(data), "next_page_token": token}


def get_experiment(conn: sa.Connection, experiment_id: str) -> dict[str, Any]:
    """One experiment."""
    row = conn.execute(sa.select(t.experiments).where(t.experiments.c.experiment_id == experiment_id)).first()
    if row is None:
        raise NotFound(f"no experiment {experiment_id!r}", details={"experiment_id": experiment_id})
    return row_dict(row)


def get_job(conn: sa.Connection, job_id: str) -> dict[str, Any]:
    """One job."""
    row = conn.execute(sa.select(t.jobs).where(t.jobs.c.job_id == job_id)).first()
    if row is None:
        raise NotFound(f"no job {job_id!r}", details={"job_id": job_id})
    return row_dict(row)


def list_models(conn: sa.Connection) -> list[dict[str, Any]]:
    """Registered models by name."""
    m = t.registered_models
    return [row_dict(r) for r in conn.execute(sa.select(m).order_by(m.c.model_name))]


def get_model(conn: sa.Connection, name: str) -> dict[str, Any]:
    """A registered model with its versions and aliases."""
    m, v, a = t.registered_models, t.model_versions, t.model_aliases
    row = conn.execute(sa.select(m).where(m.c.model_name == name)).first()
    if row is None:
        raise NotFound(f"no registered model {name!r}", details={"model_name": name})
    model = row_dict(row)
    model["versions"] = [row_dict(r) for r in conn.execute(
        sa.select(v).where(v.c.model_name == name).order_by(v.c.version))]
    model["aliases"] = [row_dict(r, ("alias", "version", "set_by", "set_at", "reason", "last_seq"))
                        for r in conn.execute(sa.select(a).where(a.c.model_name == name).order_by(a.c.alias))]
    return model


def get_model_version(conn: sa.Connection, name: str, version: int) -> dict[str, Any]:
    """One model version."""
    v = t.model_versions
    row = conn.execute(sa.select(v).where(v.c.model_name == name, v.c.version == version)).first()
    if row is None:
        raise NotFound(f"model {name!r} has no version {version}", details={"model_name": name, "version": version})
    return row_dict(row)


def alias_history(conn: sa.Connection, name: str, alias: str) -> list[dict[str, Any]]:
    """Every change of an alias, oldest first."""
    h = t.model_alias_history
    rows = conn.execute(sa.select(h).where(h.c.model_name == name, h.c.alias == alias).order_by(h.c.seq))
    return [row_dict(r, ("seq", "action", "from_version", "to_version", "actor", "reason", "occurred_at"))
            for r in rows]


#: Job statuses a jobs list may filter by (a job's own words; a run's are mlhub.events.RunStatus).
JOB_STATUSES = t.JOB_STATUSES
#: Columns of a job in the jobs list (the config is left to GET /jobs/{id}).
JOB_LIST_COLUMNS = ("job_id", "run_id", "experiment_id", "plugin", "pool", "status", "attempts", "max_attempts",
                    "worker_id", "queued_at", "started_at", "ended_at", "heartbeat_at", "progress", "error_type",
                    "error", "cancel_reason", "cancelled_by", "updated_at", "last_seq")


def list_jobs(conn: sa.Connection, statuses: Sequence[str], max_results: int,
              page_token: str | None) -> dict[str, Any]:
    """Jobs, most recently changed first (by the sequence of their last event), optionally of some statuses."""
    j = t.jobs
    unknown = [s for s in statuses if s not in JOB_STATUSES]
    if unknown:
        raise ApiError(f"status {unknown[0]!r} is not a job status; one of {', '.join(JOB_STATUSES)}",
                       details={"status": unknown[0], "allowed": list(JOB_STATUSES)})
    query_key = ",".join(sorted(set(statuses)))
    stmt = sa.select(*(j.c[c] for c in JOB_LIST_COLUMNS))
    if statuses:
        stmt = stmt.where(j.c.status.in_(sorted(set(statuses))))
    if page_token:
        value, _ = decode_page_token(page_token, "last_seq DESC", query_key)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
            raise ApiError("page_token is not a token this API issued", code="INVALID_PAGE_TOKEN")
        stmt = stmt.where(j.c.last_seq < value)
    rows = conn.execute(stmt.order_by(j.c.last_seq.desc()).limit(max_results + 1)).all()
    data = [row_dict(r, JOB_LIST_COLUMNS) for r in rows[:max_results]]
    token = encode_page_token("last_seq DESC", query_key, data[-1]["last_seq"], data[-1]["job_id"]) \
        if len(rows) > max_results else None
    return {"data": data, "count": len(data), "next_page_token": token}
