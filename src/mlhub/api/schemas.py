"""Request and response bodies of the REST API (named as in full-stack-fastapi-template: RunPublic, RunsPublic)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, Strict

from mlhub.events.keys import MetricValue as MetricValue  # a number or "NaN"/"Infinity"/"-Infinity" (strict)
from mlhub.events.keys import Step, TimestampMs


class ErrorDetail(BaseModel):
    """What went wrong: a stable code, a message naming the problem, and structured details."""

    code: str
    message: str
    details: dict[str, Any]


class ErrorBody(BaseModel):
    """The one error body of every endpoint."""

    error: ErrorDetail


class ExperimentPublic(BaseModel):
    """An experiment."""

    experiment_id: str
    name: str
    description: str
    tags: dict[str, Any]
    created_at: datetime
    created_by: str
    last_seq: int


class ExperimentsPublic(BaseModel):
    """A page of experiments."""

    data: list[ExperimentPublic]
    count: int
    next_page_token: str | None = None


class MetricSummaryPublic(BaseModel):
    """One metric key of a run: last value and step, min, max, counts."""

    key: str
    last_value: MetricValue | None
    last_step: int
    last_timestamp: int
    min_value: MetricValue | None
    max_value: MetricValue | None
    count: int
    nan_count: int


class RunPublic(BaseModel):
    """A run as listed: attributes, params, tags, the last value of each metric and the best of declared ones."""

    model_config = ConfigDict(extra="allow")

    run_id: str
    experiment_id: str | None
    name: str | None
    status: str
    source: str | None
    job_id: str | None
    created_by: str | None
    created_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    updated_at: datetime
    last_seq: int
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, MetricValue | None]
    #: The best value of each metric declared in configs/metrics.yaml (its max or min, by the declared direction).
    best_metrics: dict[str, MetricValue | None] = Field(default_factory=dict)


class RunRefPublic(BaseModel):
    """The run a reference (full id, unique id prefix, or exact name) names, and how it matched."""

    run_id: str
    name: str | None
    experiment_id: str | None
    created_at: datetime | None
    matched_by: Literal["id", "id_prefix", "name"]


class RunsPublic(BaseModel):
    """A page of runs; pass next_page_token as page_token for the next page (null on the last)."""

    data: list[RunPublic]
    count: int
    next_page_token: str | None = None


class ArtifactPublic(BaseModel):
    """A stored file of a run."""

    path: str
    sha256: str
    size_bytes: int
    kind: str
    stored_at: datetime
    last_seq: int


class ArtifactsPublic(BaseModel):
    """A run's artifacts."""

    data: list[ArtifactPublic]
    count: int


class RunDetail(BaseModel):
    """Everything the read model knows about a run, lineage included."""

    model_config = ConfigDict(extra="allow")

    run: dict[str, Any]
    params: dict[str, str]
    tags: dict[str, str]
    metrics: list[MetricSummaryPublic]
    artifacts: list[ArtifactPublic]
    lineage: dict[str, Any]


class MetricsPublic(BaseModel):
    """Every metric key of a run with its summary."""

    data: list[MetricSummaryPublic]
    count: int


class SeriesPublic(BaseModel):
    """One run's points of one key in step order (columnar), downsampled when it holds more than max_points."""

    run_id: str
    key: str
    total_points: int
    returned_points: int
    downsampled: bool
    steps: list[int]
    epochs: list[int]
    values: list[MetricValue]
    timestamps: list[int]


class CompareSeriesPublic(BaseModel):
    """Several runs' series of one key."""

    key: str
    series: list[SeriesPublic]


class EventPublic(BaseModel):
    """One stored event: its stream sequence, subject and envelope (payload included)."""

    model_config = ConfigDict(extra="allow")

    seq: int
    subject: str
    event_id: str
    type: str
    schema_version: int
    occurred_at: str
    producer: str
    correlation_id: str | None
    actor: str | None = None
    payload: dict[str, Any]


class EventsPublic(BaseModel):
    """A page of a run's events from the log; next_from_seq continues after the last one shown."""

    data: list[EventPublic]
    count: int
    next_from_seq: int | None = None


class JobPublic(BaseModel):
    """A job as the read model knows it."""

    model_config = ConfigDict(extra="allow")

    job_id: str
    run_id: str | None
    experiment_id: str | None
    plugin: str | None
    pool: str | None
    status: str
    attempts: int
    updated_at: datetime
    last_seq: int


class JobsPublic(BaseModel):
    """A page of jobs, most recently changed first; pass next_page_token as page_token for the next page."""

    data: list[JobPublic]
    count: int
    next_page_token: str | None = None


class JobCreate(BaseModel):
    """A job to submit: an experiment config (the same document as a configs/*.yaml file) and overrides."""

    model_config = ConfigDict(extra="forbid")

    config: dict[str, Any]
    overrides: list[str] = Field(default_factory=list, max_length=100,
                                 description="key.path=value overrides, as `mlhub submit --set`")


class JobSubmitted(BaseModel):
    """A queued job, with the stream sequences of the events appended (read with min_seq=seq)."""

    job_id: str
    run_id: str
    experiment_id: str
    seed: int
    seed_source: str
    config_sha256: str
    seq: int
    seqs: list[int]


class RunReproduced(JobSubmitted):
    """A job that resubmits a run's recorded config snapshot unchanged (same seed and sha256) as a new run."""

    reproduces_run_id: str


class JobCancel(BaseModel):
    """Why a job is cancelled."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=2000)


class JobCancelled(BaseModel):
    """A cancelled job and the sequence of its job.cancelled (and run.cancelled) event."""

    job_id: str
    previous_status: str
    seq: int
    run_seq: int | None = None


class ModelVersionPublic(BaseModel):
    """A registered model version."""

    model_name: str
    version: int
    run_id: str
    artifact_path: str
    artifact_sha256: str
    description: str
    registered_by: str | None
    registered_at: datetime
    last_seq: int


class ModelAliasPublic(BaseModel):
    """Where an alias points."""

    alias: str
    version: int
    set_by: str
    set_at: datetime
    reason: str
    last_seq: int


class ModelPublic(BaseModel):
    """A registered model with its versions and aliases."""

    model_name: str
    created_at: datetime
    latest_version: int | None
    updated_at: datetime
    last_seq: int
    versions: list[ModelVersionPublic] = Field(default_factory=list)
    aliases: list[ModelAliasPublic] = Field(default_factory=list)


class ModelsPublic(BaseModel):
    """Registered models (without their versions)."""

    data: list[ModelPublic]
    count: int


class AliasChangePublic(BaseModel):
    """One change of an alias."""

    seq: int
    action: str
    from_version: int | None
    to_version: int | None
    actor: str
    reason: str
    occurred_at: datetime


class AliasHistoryPublic(BaseModel):
    """Every change of one alias, oldest first."""

    model_name: str
    alias: str
    data: list[AliasChangePublic]
    count: int


class AliasPromote(BaseModel):
    """Point an alias at a version."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1)
    reason: str = Field(default="", max_length=2000)
    expected_current: int | None = Field(default=None, ge=1, description=(
        "the version the alias points to now as the caller believes (null: not set); left out: whatever it "
        "points to when the request is handled. A promotion that landed in between is a 409."))


class AliasPromoted(BaseModel):
    """A promotion: the alias now points to version (it pointed to previous_version); seq is null and changed
    false when it already did (nothing appended)."""

    model_name: str
    alias: str
    version: int
    previous_version: int | None
    changed: bool
    seq: int | None
    seqs: list[int]
    gates: list[dict[str, Any]]


class QueryRequest(BaseModel):
    """One read-only SELECT over the analytics views."""

    model_config = ConfigDict(extra="forbid")

    sql: str = Field(min_length=1, max_length=100_000)
    max_rows: int | None = Field(default=None, ge=1, le=1_000_000)


class QueryLimit(BaseModel):
    """The limit that cut a query's answer off: `max_rows` (the request's or MLHUB_API_QUERY_MAX_ROWS) or
    `MLHUB_API_QUERY_MAX_BYTES`, with its value."""

    name: Literal["max_rows", "MLHUB_API_QUERY_MAX_BYTES"]
    value: int


class QueryResult(BaseModel):
    """Rows of a query (as lists, in column order); truncated says that a limit cut the answer off, truncated_by
    which one ("rows" or "bytes") and limit its name and value."""

    columns: list[str]
    rows: list[list[Any]]
    row_count: int
    truncated: bool
    truncated_by: Literal["rows", "bytes"] | None = None
    limit: QueryLimit | None = None
    elapsed_ms: float


class RunCreate(BaseModel):
    """A run of a script that no worker runs (the SDK's `start_run`)."""

    model_config = ConfigDict(extra="forbid")

    experiment: str = Field(min_length=1, max_length=200, description="experiment name (created when new)")
    name: str | None = Field(default=None, min_length=1, max_length=250)
    params: dict[str, str] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    request_id: uuid.UUID | None = Field(default=None, description=(
        "client-chosen id of this request: the run id and the events' ids are derived from it, so a retried "
        "request (the answer was lost) names the same run and appends nothing new; the same id with another "
        "body is refused (409 IDEMPOTENCY_KEY_REUSED)"))


class RunCreated(BaseModel):
    """A created run, with the sequences of its events (duplicate: a retried request_id, nothing new)."""

    run_id: str
    experiment_id: str
    seq: int
    seqs: list[int]
    duplicate: bool = False


class MetricBatch(BaseModel):
    """Points of one key in columnar form; steps default to 0, epochs to 0 and timestamps to now. Keys and
    values follow mlhub.events.keys (any Unicode letters and digits and `_-./: @#()[],=+%`; values are numbers
    or "NaN"/"Infinity"/"-Infinity", never bools or numeric strings)."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(max_length=1000, description="checked by the tracking service, which names a bad key")
    values: list[MetricValue] = Field(min_length=1)
    steps: list[Step] | None = None
    epochs: list[Step] | None = None
    timestamps: list[TimestampMs] | None = Field(
        default=None, description="milliseconds since the Unix epoch, within the years 1 to 9999")


class LogBatch(BaseModel):
    """Params, tags and metric points for one run, appended in one call."""

    model_config = ConfigDict(extra="forbid")

    params: dict[str, str] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    metrics: list[MetricBatch] = Field(default_factory=list)
    batch_id: UUID | None = Field(
        default=None,
        description="a client-chosen id that makes a resent batch idempotent: the events' ids derive from it "
                    "(the i-th metric event's is uuid5(batch_id, 'log-batch/<i>')), so a resend of the same body "
                    "within the event log's duplicate window (MLHUB_DUPLICATE_WINDOW_S) stores nothing new, and "
                    "the same id with another body is refused (409 IDEMPOTENCY_KEY_REUSED); without it every "
                    "call appends new events")


class FiniteMetricBatch(MetricBatch):
    """A MetricBatch whose values are all JSON numbers: parsed without the union with the "NaN" strings (the
    common case, ~40% faster); a body this refuses is parsed again as a LogBatch, which names any problem."""

    values: list[Annotated[float, Strict()]] = Field(min_length=1)  # type: ignore[assignment]


class FiniteLogBatch(LogBatch):
    """A LogBatch of FiniteMetricBatch (the fast path of POST /runs/{id}/log-batch)."""

    metrics: list[FiniteMetricBatch] = Field(default_factory=list)  # type: ignore[assignment]


class Appended(BaseModel):
    """What a write appended: the last stream sequence (read with min_seq=seq) and every sequence; duplicate
    when a resent request (same batch_id and body) found everything stored already."""

    seq: int
    seqs: list[int]
    points: int = 0
    duplicate: bool = False


class ArtifactUploaded(BaseModel):
    """An artifact stored for a run, with the sequence of its run.artifact_stored event."""

    run_id: str
    path: str
    sha256: str
    size_bytes: int
    kind: str
    uri: str
    event_id: str
    duplicate: bool
    seq: int
    seqs: list[int]


class RunFinish(BaseModel):
    """How a run ended ("cancelled" is read as "killed", the status word of a run that was stopped)."""

    model_config = ConfigDict(extra="forbid")

    #: "killed": stopped before it ended ("cancelled" is its older name and means the same).
    status: Literal["finished", "failed", "killed", "cancelled"] = "finished"
    error_type: str | None = Field(default=None, max_length=200)
    error: str | None = Field(default=None, max_length=20_000)


class RunEnd(BaseModel):
    """End a run by hand (a stuck or crashed script's run)."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["finished", "failed", "killed"] = "killed"
    reason: str = Field(default="", max_length=2000)


class RunResumed(BaseModel):
    """A resumed run: its sequence and the last step logged before (the SDK's auto-step goes on after it)."""

    run_id: str
    experiment_id: str | None
    seq: int
    seqs: list[int]
    last_step: int | None


class CallerPublic(BaseModel):
    """Who the caller is to the API: the token's role (null: no token, reads open) and what it may do."""

    role: Literal["reader", "writer", "admin"] | None
    name: str
    can_write: bool
    can_admin: bool
    protected_aliases: list[str]


class Health(BaseModel):
    """Liveness."""

    status: str


class HubPart(BaseModel):
    """One part of the `mlhub up` process tree, as its supervisor last saw it."""

    name: str
    #: "running", "restarting" (it died; restarted after a backoff) or "failed" (the hub gives up and stops).
    state: str
    pid: int | None = None
    #: Restarts of this part since `mlhub up` started.
    restarts: int = 0
    last_exit_code: int | None = None
    #: When the part entered its state (UTC, ISO 8601).
    since: str | None = None


class Readiness(BaseModel):
    """Readiness: the event log reachable, each projector's lag within the bound, every part of the hub up.

    status: "ready" (200), else 503 with "lagging", "degraded" (a part of the hub is not running) or
    "event_log_unavailable" (then last_seq is -1 and `error` says why)."""

    status: str
    last_seq: int
    lag: dict[str, int]
    max_lag: int
    #: The parts of the `mlhub up` this API runs under; null when it runs on its own.
    parts: list[HubPart] | None = None
    error: str | None = None
