"""Write endpoints: jobs (submit, cancel, reproduce) and promotion (the tracking endpoints are in
routes_tracking). Handlers validate, call one service and answer with the stream sequences it appended; they
never write the read model (the projectors do)."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Path

from mlhub.api.auth import Role
from mlhub.api.deps import StateDep, WriterDep
from mlhub.api.errors import ApiError, NotFound, PermissionDenied
from mlhub.api.routes_read import ID_PATTERN, ModelName, RunId
from mlhub.api.schemas import (
    AliasPromote,
    AliasPromoted,
    JobCancel,
    JobCancelled,
    JobCreate,
    JobSubmitted,
    RunReproduced,
)
from mlhub.api.state import AppState

if TYPE_CHECKING:
    from mlhub.registry import GatesConfig

router = APIRouter(tags=["jobs and models"])

# -- jobs ------------------------------------------------------------------------------------------------------

@router.post("/jobs", response_model=JobSubmitted, status_code=201, operation_id="submit_job")
async def submit_job(body: JobCreate, state: StateDep, _: WriterDep) -> Any:
    """Validate an experiment config (as `mlhub submit` does) and queue a job; 422 names each bad field."""
    from mlhub.scheduler import ConfigError, apply_overrides, parse_override, submit, validate_config
    from mlhub.scheduler.config import check_config_limits

    source = "request body"
    limits = {"max_bytes": state.settings.api_max_config_bytes, "max_depth": state.settings.api_max_config_depth}
    check_config_limits(body.config, source, **limits)  # before anything recursive (deepcopy) sees it
    try:
        parsed = [parse_override(text, source) for text in body.overrides]
        data = copy.deepcopy(body.config)
        problems = apply_overrides(data, parsed)
        if problems:
            raise ConfigError(source, problems)
        config = validate_config(data, source, parsed, **limits)
    except ConfigError as e:
        raise ApiError(str(e), code="INVALID_CONFIG",
                       details={"problems": [{"field": p, "message": m} for p, m in e.problems]}) from e
    result = await submit(state.event_log, config, overrides=[o.text for o in parsed], producer=state.settings.producer)
    return {"job_id": result.job_id, "run_id": result.run_id, "experiment_id": result.experiment_id,
            "seed": result.seed, "seed_source": result.seed_source, "config_sha256": result.config_sha256,
            "seq": result.seqs[-1], "seqs": list(result.seqs)}


@router.post("/jobs/{job_id}/cancel", response_model=JobCancelled, operation_id="cancel_job")
async def cancel_job(job_id: Annotated[str, Path(pattern=ID_PATTERN)], body: JobCancel, state: StateDep,
                     who: WriterDep) -> Any:
    """Cancel a queued or running job (404 unknown, 409 already ended)."""
    from mlhub.scheduler import cancel

    result = await cancel(state.event_log, job_id, body.reason, who.name, producer=state.settings.producer)
    return {"job_id": result.job_id, "previous_status": result.previous_status, "seq": result.seq,
            "run_seq": result.run_seq}


@router.post("/runs/{run_id}/reproduce", response_model=RunReproduced, status_code=201, operation_id="reproduce_run")
async def reproduce_run(run_id: RunId, state: StateDep, who: WriterDep) -> Any:
    """Resubmit a run's recorded config snapshot unchanged (same seed, same sha256) as a new job whose run
    records which run it reproduces; read from the event log (404 unknown run, 409 a run with no snapshot)."""
    from mlhub.scheduler import RunNotFound, reproduce

    try:
        _original, result = await reproduce(state.event_log, run_id, producer=state.settings.producer)
    except RunNotFound as e:
        raise NotFound(str(e), details={"run_id": run_id}) from e
    return {"job_id": result.job_id, "run_id": result.run_id, "experiment_id": result.experiment_id,
            "seed": result.seed, "seed_source": result.seed_source, "config_sha256": result.config_sha256,
            "seq": result.seqs[-1], "seqs": list(result.seqs), "reproduces_run_id": run_id}


# -- registry ----------------------------------------------------------------------------------------------------

@router.post("/models/{model_name}/aliases/{alias}", response_model=AliasPromoted, operation_id="set_model_alias")
async def set_model_alias(model_name: ModelName, alias: Annotated[str, Path(pattern=ID_PATTERN)],
                          body: AliasPromote, state: StateDep, who: WriterDep) -> Any:
    """Point an alias at a version (promotion) through the model registry: the alias must point where the caller
    expects (409 PROMOTION_CONFLICT), the alias's gates must hold (422 PROMOTION_GATE_FAILED); a protected alias
    (e.g. production) needs an admin token."""
    from mlhub.registry import current_alias, promote

    if alias.lower() in state.protected_aliases and (who.role is None or who.role < Role.admin):
        raise PermissionDenied(f"alias {alias!r} is protected: moving it needs an admin token",
                               details={"alias": alias, "required": "admin"})
    gates = registry_gates(state)
    expected = body.expected_current if "expected_current" in body.model_fields_set \
        else await current_alias(state.event_log, model_name, alias)
    result = await promote(state.event_log, model_name, alias, body.version, expected, actor=who.name,
                           reason=body.reason, gates=gates, producer=state.settings.producer)
    return {"model_name": result.model_name, "alias": result.alias, "version": result.version,
            "previous_version": result.previous_version, "changed": result.changed, "seq": result.seq,
            "seqs": [result.seq] if result.seq is not None else [],
            "gates": [{"condition": g.condition, "passed": g.passed, "detail": g.detail} for g in result.gates]}


def registry_gates(state: AppState) -> GatesConfig | None:
    """The promotion gates of the file resolved when the app started (Settings.gates_file, as `mlhub models
    promote`); the file is read per request so an edited file applies without a restart."""
    from mlhub.registry import GatesConfigError, load_gates

    if state.gates_file is None:
        return None
    try:
        return load_gates(state.gates_file)
    except GatesConfigError as e:  # the server's configuration is wrong, not the request
        raise ApiError(f"the promotion gates file cannot be used: {e}", code="REGISTRY_GATES_INVALID") from e
