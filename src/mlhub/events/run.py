"""Events of the run aggregate (subject mlhub.ev.run.<run_id>.*): lifecycle, provenance and tracking."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, NamedTuple, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from mlhub.events.base import (
    Attempt,
    DomainEvent,
    EntityId,
    NonNegativeInt,
    RelativePath,
    Sha256Hex,
    sha256_of,
)
from mlhub.events.keys import Key, MetricValue, Step, TimestampMs, as_floats

#: Longest param value (MLflow's limit) and tag value (MLflow's limit), in characters.
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
#: Metric points per run.metrics_logged event, for every producer that cuts batches into events (the tracking
#: service for REST and SDK batches, the SDK's batcher, the worker's): ~45 bytes a point on the wire, so an
#: event of 8,000 stays far under the event log's 1 MiB message limit.
POINTS_PER_EVENT = 8_000
#: Who ended a run by hand (a token's name, a user): recorded on the end event.
Actor = Annotated[str, Field(min_length=1, max_length=200)]

GitCommit = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{40}([0-9a-f]{24})?$")]


class RunEvent(DomainEvent):
    """Base of events about one run."""

    aggregate_type: ClassVar[str] = "run"
    aggregate_field: ClassVar[str] = "run_id"

    run_id: EntityId


class RunCreated(RunEvent):
    """A run was created in an experiment (by a job, or by a script through the SDK)."""

    event_type: ClassVar[str] = "run.created"

    experiment_id: EntityId
    name: str = Field(min_length=1, max_length=250)
    job_id: EntityId | None = None
    source: Literal["job", "sdk"] = "job"
    reproduces_run_id: EntityId | None = None


class RunStarted(RunEvent):
    """An attempt of the run started executing."""

    event_type: ClassVar[str] = "run.started"

    attempt: Attempt = 1
    worker_id: str | None = None


class RunFinished(RunEvent):
    """The run ended successfully (schema v2: `ended_by` when a user ended it by hand)."""

    event_type: ClassVar[str] = "run.finished"
    schema_version: ClassVar[int] = 2

    attempt: Attempt = 1
    ended_by: Actor | None = None


class RunFailed(RunEvent):
    """The run ended with an error (schema v2: `ended_by` when a user ended it by hand)."""

    event_type: ClassVar[str] = "run.failed"
    schema_version: ClassVar[int] = 2

    attempt: Attempt = 1
    error_type: str = Field(min_length=1, max_length=200)
    error: str = Field(max_length=20_000)
    ended_by: Actor | None = None


class RunCancelled(RunEvent):
    """The run was stopped before it ended: its status is `killed` (a user, SIGTERM or Ctrl-C, a cancelled
    job). Schema v2: `ended_by` when a user ended it by hand."""

    event_type: ClassVar[str] = "run.cancelled"
    schema_version: ClassVar[int] = 2

    reason: str = Field(default="", max_length=2000)
    ended_by: Actor | None = None


class RunHeartbeat(RunEvent):
    """The run's producer is alive (sent when it has appended nothing else for MLHUB_RUN_HEARTBEAT_S)."""

    event_type: ClassVar[str] = "run.heartbeat"

    attempt: Attempt = 1


class RunCrashed(RunEvent):
    """The run's producer went silent: nothing of the run (or of its job) was appended for `silent_s`
    seconds, past MLHUB_RUN_DEAD_AFTER_S; the reaper ended it. It can be resumed (run.resumed)."""

    event_type: ClassVar[str] = "run.crashed"

    attempt: Attempt = 1
    reason: str = Field(max_length=2000)
    silent_s: float = Field(ge=0)
    last_seq: NonNegativeInt


class RunResumed(RunEvent):
    """A crashed run was resumed: logging goes on in the same attempt (the points from before count)."""

    event_type: ClassVar[str] = "run.resumed"

    attempt: Attempt = 1
    resumed_by: Actor | None = None


class ConfigSnapshotted(RunEvent):
    """The fully resolved config of the run and its sha256 (over canonical JSON, checked on creation)."""

    event_type: ClassVar[str] = "run.config_snapshotted"

    config: dict[str, Any]
    sha256: Sha256Hex
    overrides: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _hash_matches(self) -> Self:
        actual = sha256_of(self.config)
        if actual != self.sha256:
            raise ValueError(f"sha256 {self.sha256} does not match the config's canonical JSON hash {actual}")
        return self


class SeedRecorded(RunEvent):
    """The seed the run used, and whether the config gave it or it was drawn (and then recorded)."""

    event_type: ClassVar[str] = "run.seed_recorded"

    seed: int = Field(ge=0, le=2**32 - 1)
    source: Literal["config", "drawn"] = "config"


class DatasetVersionRecorded(RunEvent):
    """The exact data the run saw: a name, the sha256 fingerprint of its content and its size.

    Schema v2 adds what an MLflow dataset input says of itself (`mlflow.log_input`): its digest, source type,
    source, schema, profile and context tag (e.g. "train"); a run may record several datasets. The size is
    optional in v2 (None: MLflow does not say it)."""

    event_type: ClassVar[str] = "run.dataset_version_recorded"
    schema_version: ClassVar[int] = 2

    name: str = Field(min_length=1, max_length=250)
    fingerprint: Sha256Hex
    size_bytes: NonNegativeInt | None
    num_examples: NonNegativeInt | None = None
    digest: str | None = Field(default=None, max_length=36)
    source_type: str | None = Field(default=None, max_length=36)
    source: str | None = Field(default=None, max_length=65535)
    schema_text: str | None = Field(default=None, max_length=1_048_576)
    profile: str | None = Field(default=None, max_length=16_384)
    context: str | None = Field(default=None, max_length=250)


class CodeVersionRecorded(RunEvent):
    """The code the run ran: git commit, whether the tree was dirty, and the sha256 of the uncommitted diff."""

    event_type: ClassVar[str] = "run.code_version_recorded"
    schema_version: ClassVar[int] = 2

    git_commit: GitCommit | None
    #: Whether tracked files differ from the commit (untracked files do not make a tree dirty).
    dirty: bool
    #: sha256 of the real diff of tracked files against the commit (`git diff HEAD --binary`), when dirty.
    diff_sha256: Sha256Hex | None = None
    repository: str | None = None
    #: Untracked files (not ignored) in the tree, listed apart (v2; the first 1,000) and how many there were.
    untracked: tuple[Annotated[str, Field(max_length=1000)], ...] = Field(default=(), max_length=1000)
    untracked_count: NonNegativeInt = 0


class EnvironmentRecorded(RunEvent):
    """The software and hardware the run ran on."""

    event_type: ClassVar[str] = "run.environment_recorded"

    python: str
    platform: str
    torch: str | None = None
    lightning: str | None = None
    cuda: str | None = None
    device_name: str | None = None
    packages_sha256: Sha256Hex


class ParamsLogged(RunEvent):
    """Hyperparameters, as strings (MLflow's convention); a param once logged may not change its value."""

    event_type: ClassVar[str] = "run.params_logged"

    params: dict[Key, Annotated[str, Field(max_length=MAX_PARAM_VALUE_LENGTH)]]


class TagsSet(RunEvent):
    """Tags set on the run (a later value of the same key replaces the earlier one)."""

    event_type: ClassVar[str] = "run.tags_set"

    tags: dict[Key, Annotated[str, Field(max_length=MAX_TAG_VALUE_LENGTH)]]


class MetricPoint(NamedTuple):
    """One metric value at a step and epoch; timestamp in milliseconds since the Unix epoch (validated by the
    event that carries it, with the rules of mlhub.events.keys)."""

    key: str
    value: float
    step: int
    epoch: int
    timestamp: int


def point_columns(points: Iterable[tuple[str, float, int, int, int]]
                  ) -> dict[str, tuple[list[float], list[int], list[int], list[int]]]:
    """Points (key, value, step, epoch, timestamp) in any key order as columns per key, in first-seen key order
    (the order within a key is kept): the columnar form of a metric batch, in an event or on the wire."""
    columns: dict[str, tuple[list[float], list[int], list[int], list[int]]] = {}
    for key, value, step, epoch, timestamp in points:
        col = columns.setdefault(key, ([], [], [], []))
        col[0].append(value)
        col[1].append(step)
        col[2].append(epoch)
        col[3].append(timestamp)
    return columns


class MetricSeries(BaseModel):
    """Points of one metric key in columnar form (the four columns have one length). Values are strict numbers
    (or "NaN"/"Infinity"/"-Infinity", turned into floats); steps and epochs 0..2**63-1; timestamps in ms
    within the years 1 to 9999 (mlhub.events.keys)."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="strings")

    key: Key
    if TYPE_CHECKING:  # what the validator below leaves: floats only
        values: tuple[float, ...]
    else:
        values: tuple[MetricValue, ...]
    steps: tuple[Step, ...]
    epochs: tuple[Step, ...]
    timestamps: tuple[TimestampMs, ...]

    @field_validator("values")
    @classmethod
    def _floats(cls, values: tuple[float | str, ...]) -> tuple[float, ...]:
        return as_floats(values)

    @model_validator(mode="after")
    def _same_lengths(self) -> Self:
        n = len(self.values)
        if not (len(self.steps) == len(self.epochs) == len(self.timestamps) == n) or n == 0:
            raise ValueError(
                f"series {self.key!r}: values, steps, epochs and timestamps must have one non-zero length, got "
                f"{n}, {len(self.steps)}, {len(self.epochs)}, {len(self.timestamps)}"
            )
        return self


class MetricsLogged(RunEvent):
    """A batch of metric points of one attempt of the run (schema v3: `attempt`; v2: one columnar series per
    key; v1 stored a list of points). Readers of a run's results use its last attempt's points only."""

    event_type: ClassVar[str] = "run.metrics_logged"
    schema_version: ClassVar[int] = 3

    series: tuple[MetricSeries, ...] = Field(min_length=1)
    #: The attempt the points belong to; None for points stored before v3 (which did not say: they belong to
    #: the attempt whose run.started came last before them).
    attempt: Attempt | None = 1

    @field_validator("series")
    @classmethod
    def _unique_keys(cls, series: tuple[MetricSeries, ...]) -> tuple[MetricSeries, ...]:
        keys = [s.key for s in series]
        if len(set(keys)) != len(keys):
            raise ValueError(f"each key may appear in one series only, got {keys}")
        return series

    @classmethod
    def from_points(cls, run_id: str, points: Sequence[MetricPoint] | Sequence[tuple[str, float, int, int, int]],
                    attempt: int = 1) -> Self:
        """Build a batch from points in any key order (the order within a key is kept)."""
        return cls(
            run_id=run_id,
            attempt=attempt,
            series=tuple(
                MetricSeries(key=k, values=tuple(v), steps=tuple(s), epochs=tuple(e), timestamps=tuple(t))
                for k, (v, s, e, t) in point_columns(points).items()
            ),
        )

    @property
    def num_points(self) -> int:
        """How many points the batch carries."""
        return sum(len(s.values) for s in self.series)

    def points(self) -> Iterator[MetricPoint]:
        """Every point of the batch, series by series."""
        for s in self.series:
            for value, step, epoch, ts in zip(s.values, s.steps, s.epochs, s.timestamps, strict=True):
                yield MetricPoint(s.key, value, step, epoch, ts)


class ArtifactStored(RunEvent):
    """A file of the run was stored in the content-addressed artifact store."""

    event_type: ClassVar[str] = "run.artifact_stored"

    path: RelativePath
    sha256: Sha256Hex
    size_bytes: NonNegativeInt
    uri: str = Field(min_length=1, max_length=2000)
    kind: Literal["checkpoint", "model", "onnx", "file"] = "file"


class RunDeleted(RunEvent):
    """The run was deleted (soft, as MLflow does: hidden from searches by default, can be restored)."""

    event_type: ClassVar[str] = "run.deleted"


class RunRestored(RunEvent):
    """A deleted run was restored."""

    event_type: ClassVar[str] = "run.restored"


class RunRenamed(RunEvent):
    """The run was given a new name."""

    event_type: ClassVar[str] = "run.renamed"

    name: str = Field(min_length=1, max_length=250)


class TagsDeleted(RunEvent):
    """Tags were removed from the run."""

    event_type: ClassVar[str] = "run.tags_deleted"

    keys: tuple[Key, ...] = Field(min_length=1)


class LoggedModelRecorded(RunEvent):
    """A model logged by the run (MLflow 3's logged model, `mlflow.<flavor>.log_model`): its id, name, state,
    params and tags. Each change records the whole model again; the last record of a model id is its state.
    Its files are artifacts of the run under `artifact_path`."""

    event_type: ClassVar[str] = "run.logged_model_recorded"

    model_id: EntityId
    name: str = Field(min_length=1, max_length=250)
    artifact_path: RelativePath
    status: Literal["pending", "ready", "failed"] = "pending"
    model_type: str | None = Field(default=None, max_length=250)
    params: dict[Key, Annotated[str, Field(max_length=MAX_PARAM_VALUE_LENGTH)]] = Field(default_factory=dict)
    tags: dict[Key, Annotated[str, Field(max_length=MAX_TAG_VALUE_LENGTH)]] = Field(default_factory=dict)
    deleted: bool = False
