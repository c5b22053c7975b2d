"""What every MLflow router shares: reading a request as the MLflow client sends it (JSON body, or query
parameters for GET), consistent reads, running read-model queries, and mlhub's words and ids in MLflow's."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from mlhub.api.mlflow.errors import MlflowApiError
from mlhub.api.state import AppState
from mlhub.events.bounds import TooDeep, loads_bounded

T = TypeVar("T")

#: MLflow's experiment "0" ("Default", which every MLflow server has) is mlhub's experiment "Default".
DEFAULT_EXPERIMENT = "Default"
#: Request fields the client sends as lists (repeated query parameters on a GET).
_LIST_FIELDS = {"experiment_ids", "run_ids", "order_by", "metric_keys"}

#: mlhub's run statuses -> MLflow's (crashed reads as FAILED, with the mlhub.status tag saying why).
STATUS_TO_MLFLOW = {"queued": "SCHEDULED", "running": "RUNNING", "finished": "FINISHED", "failed": "FAILED",
                    "killed": "KILLED", "cancelled": "KILLED", "crashed": "FAILED"}


async def body(request: Request) -> dict[str, Any]:
    """The request's fields: the JSON body of a POST/PATCH/DELETE (when it has one) merged over the query
    parameters (lists for the fields MLflow repeats)."""
    fields: dict[str, Any] = {}
    for key in request.query_params:
        values = request.query_params.getlist(key)
        fields[key] = values if key in _LIST_FIELDS else values[-1]
    if request.method != "GET":
        raw = await request.body()
        if raw.strip():
            try:
                data = loads_bounded(raw, what="the request body")
            except TooDeep as e:
                raise MlflowApiError(f"The request body is refused: {e}", "BAD_REQUEST") from None
            except ValueError as e:  # malformed, or an integer of more than 4,300 digits
                raise MlflowApiError(f"The request body is not JSON: {str(e).split(';')[0]}", "BAD_REQUEST") from None
            if not isinstance(data, dict):
                raise MlflowApiError("The request body must be a JSON object")
            fields.update(data)
    return fields


def text(fields: dict[str, Any], name: str, *, required: bool = False, default: str | None = None) -> str | None:
    """A string field; MLflow's error naming it when it is missing (required) or not a string."""
    value = fields.get(name)
    if value is None or value == "":
        if required:
            raise MlflowApiError(f"Missing value for required parameter '{name}'.")
        return default
    if not isinstance(value, str):
        raise MlflowApiError(f"Invalid value {value!r} for parameter '{name}' supplied: it must be a string.")
    return value


def integer(fields: dict[str, Any], name: str, *, required: bool = False, default: int | None = None) -> int | None:
    """An integer field (the client sends int64 as a number or a string)."""
    value = fields.get(name)
    if value is None or value == "":
        if required:
            raise MlflowApiError(f"Missing value for required parameter '{name}'.")
        return default
    if isinstance(value, bool):
        raise MlflowApiError(f"Invalid value {value!r} for parameter '{name}': expected an integer")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise MlflowApiError(f"Invalid value {value!r} for parameter '{name}': expected an integer") from None


#: MLflow's view types (by name or number) -> the lifecycle stages of mlhub's experiments and runs they show.
_VIEW_TYPES = {"ACTIVE_ONLY": ("active",), "DELETED_ONLY": ("deleted",), "ALL": ("active", "deleted"),
               "1": ("active",), "2": ("deleted",), "3": ("active", "deleted")}


def search_paging(fields: dict[str, Any], view_field: str) -> tuple[tuple[str, ...], int]:
    """(lifecycle stages, max_results) of a search request, as MLflow checks them (1,000 results by default)."""
    view = str(fields.get(view_field) or "ACTIVE_ONLY")
    if view not in _VIEW_TYPES:
        raise MlflowApiError(f"Invalid {view_field} {view!r}: ACTIVE_ONLY, DELETED_ONLY or ALL")
    max_results = integer(fields, "max_results", default=1000) or 1000
    if not 1 <= max_results <= 50_000:
        raise MlflowApiError(f"Invalid value {max_results} for parameter 'max_results': 1 to 50000")
    return _VIEW_TYPES[view], max_results


def key_and_value(fields: dict[str, Any]) -> tuple[str, str]:
    """The `key` (required) and `value` (a string; "" when absent) of a one-param or one-tag request."""
    key = text(fields, "key", required=True)
    assert key is not None
    value = fields.get("value")
    return key, "" if value is None else str(value)


def strings(fields: dict[str, Any], name: str) -> list[str]:
    """A list-of-strings field (absent: empty)."""
    value = fields.get(name)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MlflowApiError(f"Invalid value {value!r} for parameter '{name}': expected a list of strings")
    return value


def key_values(fields: dict[str, Any], name: str) -> dict[str, str]:
    """A list of {key, value} (tags, params) as a dict; values made strings as MLflow stores them."""
    found: dict[str, str] = {}
    items = fields.get(name) or []
    if not isinstance(items, list):
        raise MlflowApiError(f"Invalid value for parameter '{name}': expected a list of {{key, value}}")
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            raise MlflowApiError(f"Invalid value for parameter '{name}': each item needs a string 'key'")
        value = item.get("value")
        found[item["key"]] = "" if value is None else value if isinstance(value, str) else str(value)
    return found


async def consistent(state: AppState, *, metrics: bool = False) -> bool:
    """Wait until the read model (and the metric tables) applied everything appended before this read began:
    an MLflow client reads its own writes at once, and has no min_seq to pass. True when the metric engine
    must be reopened."""
    last = await state.event_log.last_sequence()
    await state.wait_for_sql(last)
    return await state.wait_for_metrics(last) if metrics else False


async def read(state: AppState, work: Callable[..., T], *args: Any, fresh: bool = True, **kwargs: Any) -> T:
    """A read-model query in a worker thread, after the consistency wait (unless fresh=False)."""
    if fresh:
        await consistent(state)

    def run() -> T:
        with state.engine.connect() as conn:
            return work(conn, *args, **kwargs)

    return await run_in_threadpool(run)


def mlflow_experiment_id(experiment_id: str | None) -> str:
    """mlhub's experiment id as MLflow's ("Default" is "0")."""
    return "0" if experiment_id == DEFAULT_EXPERIMENT else (experiment_id or "")


def mlhub_experiment_id(experiment_id: str) -> str:
    """MLflow's experiment id as mlhub's ("0" is "Default")."""
    return DEFAULT_EXPERIMENT if experiment_id == "0" else experiment_id


def millis(value: Any) -> int | None:
    """An ISO-8601 time (as the read model's rows carry them) as ms since the epoch."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(datetime.fromisoformat(str(value)).timestamp() * 1000)


def artifact_root(experiment_id: str | None, run_id: str) -> str:
    """A run's artifact URI as the client resolves it: proxied through this hub (mlflow-artifacts)."""
    return f"mlflow-artifacts:/{mlflow_experiment_id(experiment_id)}/{run_id}/artifacts"


def pairs(mapping: dict[str, Any] | None) -> list[dict[str, Any]]:
    """{k: v} as MLflow's [{key, value}] (sorted by key)."""
    return [{"key": k, "value": v} for k, v in sorted((mapping or {}).items())]


def caller_tag(principal_name: str) -> dict[str, str]:
    """The tag that records who created a run through the MLflow API (the Basic user name and token name)."""
    return {"mlhub.caller": principal_name[:250]}
