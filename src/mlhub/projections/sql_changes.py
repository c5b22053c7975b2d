"""How each event changes the SQL read model, applied to many events at once.

`ReadModelChanges` loads every row a list of events touches with a few `IN (...)` queries, applies the events
to those rows in memory, in stream order, and writes the changed rows back with one executemany upsert per
table. That keeps a batch of thousands of events to a handful of statements.

Run statuses are `mlhub.events.RunStatus` (run.cancelled -> killed, run.crashed -> crashed); jobs keep their own
words. A run's metric summaries (metric_summaries, epoch_metrics) are those of its current attempt only, by the
rule of `mlhub.events.final_metrics`: a run.started of a higher attempt resets them, and points of a lower
attempt that arrive later are not folded in (points without an attempt, stored before schema v3, count for the
current one).
"""

from __future__ import annotations

import bisect
import functools
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from mlhub.errors import MlhubError
from mlhub.events import (
    ArtifactStored,
    AuditSealed,
    CodeVersionRecorded,
    ConfigSnapshotted,
    DatasetVersionRecorded,
    DomainEvent,
    Envelope,
    EnvironmentRecorded,
    ExperimentCreated,
    JobCancelled,
    JobFailed,
    JobHeartbeat,
    JobQueued,
    JobStarted,
    JobSucceeded,
    LoggedModelRecorded,
    MetricDefined,
    MetricMigrated,
    MetricSeries,
    MetricsLogged,
    ModelAliasRemoved,
    ModelAliasSet,
    ModelVersionRegistered,
    ParamsLogged,
    RunCancelled,
    RunCrashed,
    RunCreated,
    RunFailed,
    RunFinished,
    RunHeartbeat,
    RunResumed,
    RunStarted,
    RunStatus,
    SeedRecorded,
    TagsSet,
    TokenIssued,
    TokenRevoked,
)
from mlhub.projections import sql_mlflow
from mlhub.readmodel import tables as t

Row = dict[str, Any]
Key = tuple[Any, ...]
_DELETED: Row = {}
_IN_CHUNK = 500
#: Run events whose rows live in a table of their own, keyed by run id first (the other run events change `runs`).
_RUN_CHILD_TABLES: dict[type[DomainEvent], sa.Table] = {ParamsLogged: t.params, MetricsLogged: t.metric_summaries}


class ProjectionConflict(MlhubError):
    """An event contradicts the read model (a param changed, a model version registered twice): a poison event."""

    code = "PROJECTION_CONFLICT"


def upsert(conn: sa.Connection, table: sa.Table, rows: Sequence[Row], *, replace: bool = True) -> None:
    """Insert rows, replacing (or, replace=False, keeping) a row with the same primary key; one executemany."""
    if not rows:
        return
    conn.execute(_upsert_statement(conn.dialect.name == "postgresql", table, replace), list(rows))


@functools.cache
def _upsert_statement(postgres: bool, table: sa.Table, replace: bool) -> sa.Executable:
    """The upsert of one table, built once: building `excluded` columns per batch cost a quarter of apply()."""
    stmt = (postgresql.insert if postgres else sqlite.insert)(table)
    pk = [c.name for c in table.primary_key.columns]
    if replace:
        return stmt.on_conflict_do_update(
            index_elements=pk, set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in pk}
        )
    return stmt.on_conflict_do_nothing(index_elements=pk)


@functools.cache
def _later_point_upsert(postgres: bool) -> sa.Executable:
    """Upsert of epoch_metrics rows that replaces a stored row only with a point at a later (step, timestamp)."""
    table = t.epoch_metrics
    stmt = (postgresql.insert if postgres else sqlite.insert)(table)
    new = stmt.excluded
    later = (new.step > table.c.step) | ((new.step == table.c.step) & (new.timestamp >= table.c.timestamp))
    return stmt.on_conflict_do_update(
        index_elements=["run_id", "key", "epoch"],
        set_={c: new[c] for c in ("value", "step", "timestamp", "last_seq")},
        where=later,
    )


@functools.cache
def _column_names(table: sa.Table) -> tuple[str, ...]:
    return tuple(table.columns.keys())


@functools.cache
def _text_defaults(table: sa.Table) -> tuple[tuple[str, str], ...]:
    """Columns with a plain text server default (e.g. lifecycle_stage 'active'): a new row starts with it."""
    return tuple((c.name, c.server_default.arg) for c in table.columns
                 if isinstance(c.server_default, sa.DefaultClause) and isinstance(c.server_default.arg, str))


def _template(table: sa.Table, **values: Any) -> Row:
    row: Row = dict.fromkeys(_column_names(table))
    row.update(_text_defaults(table))
    row.update(values)
    return row


class ReadModelChanges:
    """The read-model rows a list of events changes: load, apply in order, flush. One use per list of events."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        #: table -> primary key -> full row (or _DELETED); only rows in here are written by flush().
        self.rows: dict[sa.Table, dict[Key, Row]] = defaultdict(dict)
        #: Metric keys of these events that metric_definitions declares (loaded, then added to by definitions).
        self.declared: set[str] = set()
        #: Metrics defined by these events: summaries of them not in `rows` are marked declared by flush().
        self.newly_declared: set[str] = set()
        #: runs.attempt of runs whose metrics these events log but whose runs row is not loaded.
        self.attempts: dict[str, int | None] = {}
        #: Runs whose summaries a new attempt reset: flush() deletes their stored summary rows first.
        self.reset_runs: set[str] = set()
        #: Runs that may have rows in self.rows[metric_summaries] or [epoch_metrics] (what a reset must drop).
        self._summarized_runs: set[str] = set()
        self._handlers: dict[type[Any], Callable[[int, Envelope, Any], None]] = {
            ExperimentCreated: self._experiment_created,
            RunCreated: self._run_created,
            RunStarted: self._run_started,
            RunFinished: self._run_ended,
            RunFailed: self._run_ended,
            RunCancelled: self._run_ended,
            RunCrashed: self._run_ended,
            RunResumed: self._run_resumed,
            RunHeartbeat: self._run_heartbeat,
            ConfigSnapshotted: self._run_config,
            SeedRecorded: self._run_fields,
            DatasetVersionRecorded: self._run_fields,
            CodeVersionRecorded: self._run_fields,
            EnvironmentRecorded: self._run_fields,
            ParamsLogged: self._params_logged,
            TagsSet: self._tags_set,
            MetricsLogged: self._metrics_logged,
            ArtifactStored: self._artifact_stored,
            JobQueued: self._job_queued,
            JobStarted: self._job_event,
            JobHeartbeat: self._job_event,
            JobSucceeded: self._job_event,
            JobFailed: self._job_event,
            JobCancelled: self._job_event,
            ModelVersionRegistered: self._model_version_registered,
            ModelAliasSet: self._model_alias,
            ModelAliasRemoved: self._model_alias,
            MetricDefined: self._metric_definition,
            MetricMigrated: self._metric_definition,
            AuditSealed: self._audit_sealed,
            # API tokens live in each API replica's memory (folded from the log), not in the read model: skipped
            # on purpose (never a dead letter)
            TokenIssued: self._skip,
            TokenRevoked: self._skip,
        }
        self._handlers.update({cls: functools.partial(handler, self) for cls, handler in sql_mlflow.HANDLERS.items()})

    # -- driver -------------------------------------------------------------------------------------------

    def handles(self, event_class: type[DomainEvent]) -> bool:
        """Whether events of this class change the read model (every class of the catalogue must)."""
        return event_class in self._handlers

    def apply(self, events: Sequence[tuple[int, Envelope]]) -> None:
        """Load the rows these events touch, then apply them in order (nothing is written until flush())."""
        self._load(events)
        for seq, envelope in events:
            handler = self._handlers.get(type(envelope.event))
            if handler is None:
                raise ProjectionConflict(f"the SQL projector has no handler for {envelope.type}")
            handler(seq, envelope, envelope.event)

    def flush(self) -> None:
        """Write every changed row: one upsert (and one delete) statement per table."""
        if self.reset_runs:  # before the upserts: rows of the new attempt in self.rows are written after
            reset = sorted(self.reset_runs)
            for table in (t.metric_summaries, t.epoch_metrics):
                for start in range(0, len(reset), _IN_CHUNK):
                    self.conn.execute(table.delete().where(table.c.run_id.in_(reset[start : start + _IN_CHUNK])))
        for table, rows in self.rows.items():
            pk = [c.name for c in table.primary_key.columns]
            if table is t.epoch_metrics:  # never loaded: the database keeps whichever point is later
                if rows:
                    self.conn.execute(_later_point_upsert(self.conn.dialect.name == "postgresql"), list(rows.values()))
                continue
            upsert(self.conn, table, [row for row in rows.values() if row is not _DELETED])
            gone = [dict(zip(pk, key, strict=True)) for key, row in rows.items() if row is _DELETED]
            if gone:
                where = sa.and_(*(table.c[name] == sa.bindparam(f"k_{name}") for name in pk))
                self.conn.execute(table.delete().where(where), [{f"k_{k}": v for k, v in g.items()} for g in gone])
        if self.newly_declared:  # summaries logged before their metric was defined (and not in this batch)
            s = t.metric_summaries
            self.conn.execute(s.update().where(s.c.key.in_(sorted(self.newly_declared)), s.c.declared == sa.false())
                              .values(declared=True))

    def _load(self, events: Sequence[tuple[int, Envelope]]) -> None:
        wanted: dict[sa.Table, set[Any]] = defaultdict(set)
        metric_keys: set[str] = set()
        metric_runs: set[str] = set()
        for _, envelope in events:
            event = envelope.event
            kind = type(event)
            if isinstance(event, MetricsLogged):
                metric_keys.update(series.key for series in event.series)
                metric_runs.add(event.run_id)
            if isinstance(event, LoggedModelRecorded):
                wanted[t.logged_models].add(event.model_id)
            if envelope.aggregate_type == "run" and kind not in (TagsSet, ArtifactStored):
                wanted[_RUN_CHILD_TABLES.get(kind, t.runs)].add(envelope.aggregate_id)
            elif isinstance(event, JobQueued):
                wanted[t.jobs].add(event.job_id)
                wanted[t.runs].add(event.run_id)
            elif envelope.aggregate_type == "job":
                wanted[t.jobs].add(envelope.aggregate_id)
            elif envelope.aggregate_type == "model" and not isinstance(event, ModelAliasSet | ModelAliasRemoved):
                wanted[t.registered_models].add(envelope.aggregate_id)
                wanted[t.model_versions].add(envelope.aggregate_id)
            elif envelope.aggregate_type == "experiment":
                wanted[t.experiments].add(envelope.aggregate_id)
            elif isinstance(event, MetricDefined | MetricMigrated):
                wanted[t.metric_definitions].add(event.name)  # the row's key is the name, not the subject token
        for table, ids in wanted.items():
            self._load_rows(table, table.primary_key.columns.values()[0], ids)
        self._summarized_runs.update(wanted[t.metric_summaries])
        # The current attempt of runs that log metrics (only runs.attempt: the whole row is not needed).
        runs, loaded = t.runs, self.rows[t.runs]
        unloaded = sorted(r for r in metric_runs if (r,) not in loaded)
        for start in range(0, len(unloaded), _IN_CHUNK):
            chunk = unloaded[start : start + _IN_CHUNK]
            query = sa.select(runs.c.run_id, runs.c.attempt).where(runs.c.run_id.in_(chunk))
            self.attempts.update((run_id, attempt) for run_id, attempt in self.conn.execute(query))
        if metric_keys:
            names = t.metric_definitions.c.name
            keys = sorted(metric_keys)
            for start in range(0, len(keys), _IN_CHUNK):
                query = sa.select(names).where(names.in_(keys[start : start + _IN_CHUNK]))
                self.declared.update(self.conn.execute(query).scalars())

    def _load_rows(self, table: sa.Table, column: sa.Column[Any], ids: Iterable[Any]) -> None:
        pk = [c.name for c in table.primary_key.columns]
        found = self.rows[table]
        ordered = sorted(ids)
        postgres = self.conn.dialect.name == "postgresql"
        step = max(len(ordered), 1) if postgres else _IN_CHUNK
        for start in range(0, len(ordered), step):
            chunk = ordered[start : start + step]
            if postgres:  # one array parameter instead of thousands of bound names
                where = column == sa.any_(sa.bindparam("ids", chunk, type_=postgresql.ARRAY(column.type)))
            else:
                where = column.in_(chunk)
            for row in self.conn.execute(sa.select(table).where(where)).mappings():
                found[tuple(row[name] for name in pk)] = dict(row)

    #: The marker of a row to delete, and a blank row of a table (for the handlers of sql_mlflow).
    DELETED = _DELETED
    template = staticmethod(_template)

    def run_row(self, run_id: str, seq: int, at: datetime) -> Row:
        """The run's row, marked as touched (for the handlers of sql_mlflow)."""
        return self._run(run_id, seq, at)

    def run_fields(self, seq: int, env: Envelope, e: DatasetVersionRecorded) -> None:
        """The run columns a dataset sets (for the handlers of sql_mlflow)."""
        self._run_fields(seq, env, e)

    def _put(self, table: sa.Table, key: Key, row: Row) -> None:
        self.rows[table][key] = row

    def _run(self, run_id: str, seq: int, at: datetime) -> Row:
        """The run's row (a new "queued" one if it has none yet), marked as touched by event seq."""
        row = self.rows[t.runs].get((run_id,))
        if row is None:
            row = _template(t.runs, run_id=run_id, status=RunStatus.QUEUED.value)
            self.rows[t.runs][(run_id,)] = row
        row["last_seq"] = seq
        row["updated_at"] = at
        return row

    # -- experiments and runs -----------------------------------------------------------------------------

    def _experiment_created(self, seq: int, env: Envelope, e: ExperimentCreated) -> None:
        self._put(t.experiments, (e.experiment_id,), _template(
            t.experiments, experiment_id=e.experiment_id, name=e.name, description=e.description,
            tags=dict(e.tags), created_at=env.occurred_at, created_by=env.actor or env.producer, last_seq=seq,
        ))

    def _run_created(self, seq: int, env: Envelope, e: RunCreated) -> None:
        row = self._run(e.run_id, seq, env.occurred_at)
        row.update(experiment_id=e.experiment_id, name=e.name, source=e.source, created_by=env.actor or env.producer)
        row["created_at"] = row["created_at"] or env.occurred_at
        if e.job_id is not None:
            row["job_id"] = e.job_id
        if e.reproduces_run_id is not None:
            row["reproduces_run_id"] = e.reproduces_run_id

    def _current_attempt(self, run_id: str) -> int:
        """The run's current attempt (runs.attempt: the highest started; 0 before any run.started)."""
        row = self.rows[t.runs].get((run_id,))
        attempt = row["attempt"] if row is not None else self.attempts.get(run_id)
        return int(attempt or 0)

    def _reset_summaries(self, run_id: str) -> None:
        """Forget the run's metric summaries (a new attempt starts over): in memory now, stored ones at flush."""
        self.reset_runs.add(run_id)
        if run_id not in self._summarized_runs:
            return
        self._summarized_runs.discard(run_id)
        for table in (t.metric_summaries, t.epoch_metrics):
            rows = self.rows[table]
            for key in [k for k in rows if k[0] == run_id]:
                del rows[key]

    def _run_started(self, seq: int, env: Envelope, e: RunStarted) -> None:
        current = self._current_attempt(e.run_id)
        if e.attempt > current:
            self._reset_summaries(e.run_id)
        row = self._run(e.run_id, seq, env.occurred_at)
        # A late run.started of an earlier attempt does not move the attempt back (its points stay out).
        row.update(status=RunStatus.RUNNING.value, started_at=env.occurred_at, attempt=max(e.attempt, current),
                   ended_at=None, error_type=None, error=None)
        if e.worker_id is not None:
            row["worker_id"] = e.worker_id

    def _run_ended(self, seq: int, env: Envelope, e: RunFinished | RunFailed | RunCancelled | RunCrashed) -> None:
        row = self._run(e.run_id, seq, env.occurred_at)
        row["ended_at"] = env.occurred_at
        if isinstance(e, RunFinished | RunFailed | RunCrashed):
            row["attempt"] = max(e.attempt, row["attempt"] or 0)
        if isinstance(e, RunFinished):
            row["status"] = RunStatus.FINISHED.value
        elif isinstance(e, RunFailed):
            row.update(status=RunStatus.FAILED.value, error_type=e.error_type, error=e.error)
        elif isinstance(e, RunCrashed):
            row.update(status=RunStatus.CRASHED.value, error_type="RunCrashed", error=e.reason)
        else:
            row.update(status=RunStatus.KILLED.value, cancel_reason=e.reason)

    def _run_resumed(self, seq: int, env: Envelope, e: RunResumed) -> None:
        """A crashed run goes on: running again, in the same attempt (its points so far still count)."""
        row = self._run(e.run_id, seq, env.occurred_at)
        row.update(status=RunStatus.RUNNING.value, ended_at=None, error_type=None, error=None)

    def _run_heartbeat(self, seq: int, env: Envelope, e: RunHeartbeat) -> None:
        """Only that the run was alive: updated_at and last_seq of a row the read model has (no new row)."""
        if (e.run_id,) in self.rows[t.runs]:
            self._run(e.run_id, seq, env.occurred_at)

    def _run_config(self, seq: int, env: Envelope, e: ConfigSnapshotted) -> None:
        row = self._run(e.run_id, seq, env.occurred_at)
        row.update(config=e.config, config_sha256=e.sha256, config_overrides=list(e.overrides))

    def _run_fields(
        self, seq: int, env: Envelope, e: SeedRecorded | DatasetVersionRecorded | CodeVersionRecorded
        | EnvironmentRecorded,
    ) -> None:
        row = self._run(e.run_id, seq, env.occurred_at)
        if isinstance(e, SeedRecorded):
            row.update(seed=e.seed, seed_source=e.source)
        elif isinstance(e, DatasetVersionRecorded):
            row.update(dataset_name=e.name, dataset_fingerprint=e.fingerprint, dataset_size_bytes=e.size_bytes,
                       dataset_num_examples=e.num_examples)
        elif isinstance(e, CodeVersionRecorded):
            row.update(git_commit=e.git_commit, git_dirty=e.dirty, git_diff_sha256=e.diff_sha256,
                       git_repository=e.repository)
        else:
            row.update(env_python=e.python, env_platform=e.platform, env_torch=e.torch, env_lightning=e.lightning,
                       env_cuda=e.cuda, env_device_name=e.device_name, env_packages_sha256=e.packages_sha256)

    def _params_logged(self, seq: int, env: Envelope, e: ParamsLogged) -> None:
        rows = self.rows[t.params]
        changed: list[tuple[Key, Row]] = []
        for key, value in e.params.items():
            old = rows.get((e.run_id, key))
            if old is not None and old["value"] != value:
                raise ProjectionConflict(
                    f"run {e.run_id}: param {key!r} was logged as {old['value']!r} (seq {old['last_seq']}); "
                    f"a param cannot change, got {value!r}"
                )
            if old is None:
                changed.append(((e.run_id, key), {"run_id": e.run_id, "key": key, "value": value, "last_seq": seq}))
        rows.update(changed)  # only after every key passed, so a rejected event changes nothing

    def _tags_set(self, seq: int, env: Envelope, e: TagsSet) -> None:
        rows = self.rows[t.tags]
        for key, value in e.tags.items():
            rows[(e.run_id, key)] = {"run_id": e.run_id, "key": key, "value": value, "last_seq": seq}

    def _metrics_logged(self, seq: int, env: Envelope, e: MetricsLogged) -> None:
        if e.attempt is not None and e.attempt < self._current_attempt(e.run_id):
            return  # a late batch of an abandoned attempt: kept in the metric table, not in the summaries
        self._summarized_runs.add(e.run_id)
        rows = self.rows[t.metric_summaries]
        epochs = self.rows[t.epoch_metrics]
        for series in e.series:
            row = rows.get((e.run_id, series.key))
            if row is None:
                row = {"run_id": e.run_id, "key": series.key, "last_value": None, "last_step": -1,
                       "last_timestamp": -1, "min_value": None, "max_value": None, "count": 0, "nan_count": 0}
                rows[(e.run_id, series.key)] = row
            # Checked once per series, used by both folds: points in (step, timestamp) order take the fast paths.
            in_order = _ordered(series.steps) and _ordered(series.timestamps)
            _fold_series(row, series.values, series.steps, series.timestamps, in_order)
            row["declared"] = series.key in self.declared
            row["last_seq"] = seq
            _fold_epochs(epochs, e.run_id, series, seq, in_order)

    def _artifact_stored(self, seq: int, env: Envelope, e: ArtifactStored) -> None:
        self._put(t.artifacts, (e.run_id, e.path), {
            "run_id": e.run_id, "path": e.path, "sha256": e.sha256, "size_bytes": e.size_bytes, "uri": e.uri,
            "kind": e.kind, "stored_at": env.occurred_at, "last_seq": seq,
        })

    # -- jobs ---------------------------------------------------------------------------------------------

    def _job(self, job_id: str, seq: int, at: datetime) -> Row:
        row = self.rows[t.jobs].get((job_id,))
        if row is None:
            row = _template(t.jobs, job_id=job_id, status="queued", attempts=0)
            self.rows[t.jobs][(job_id,)] = row
        row["last_seq"] = seq
        row["updated_at"] = at
        return row

    def _job_queued(self, seq: int, env: Envelope, e: JobQueued) -> None:
        row = self._job(e.job_id, seq, env.occurred_at)
        row.update(run_id=e.run_id, experiment_id=e.experiment_id, plugin=e.plugin, pool=e.pool, status="queued",
                   config=e.config, config_sha256=e.config_sha256, timeout_s=e.timeout_s,
                   max_attempts=e.max_attempts, queued_at=env.occurred_at)
        run = self._run(e.run_id, seq, env.occurred_at)
        run["job_id"] = e.job_id
        run["experiment_id"] = run["experiment_id"] or e.experiment_id
        run["created_at"] = run["created_at"] or env.occurred_at
        if run["config_sha256"] is None:
            run.update(config=e.config, config_sha256=e.config_sha256)

    def _job_event(
        self, seq: int, env: Envelope, e: JobStarted | JobHeartbeat | JobSucceeded | JobFailed | JobCancelled
    ) -> None:
        row = self._job(e.job_id, seq, env.occurred_at)
        at = env.occurred_at
        if isinstance(e, JobStarted):
            row.update(status="running", attempts=max(row["attempts"], e.attempt), worker_id=e.worker_id,
                       started_at=at, heartbeat_at=at, ended_at=None, progress=None, error_type=None, error=None,
                       retryable=None)
            row["run_id"] = row["run_id"] or e.run_id
        elif isinstance(e, JobHeartbeat):
            if e.attempt >= row["attempts"]:  # a late heartbeat of an earlier attempt says nothing now
                row.update(heartbeat_at=at, worker_id=e.worker_id)
                if e.progress is not None:
                    row["progress"] = e.progress
        elif isinstance(e, JobSucceeded):
            row.update(status="succeeded", ended_at=at, progress=1.0)
        elif isinstance(e, JobFailed):
            retry = e.retryable and e.attempt < (row["max_attempts"] or 1)
            row.update(status="queued" if retry else "failed", error_type=e.error_type, error=e.error,
                       retryable=e.retryable, ended_at=None if retry else at)
        else:  # a job's own word (its run is "killed")
            row.update(status="cancelled", ended_at=at, cancel_reason=e.reason, cancelled_by=e.requested_by)

    # -- model registry, metric definitions, audit --------------------------------------------------------

    def _model_version_registered(self, seq: int, env: Envelope, e: ModelVersionRegistered) -> None:
        key = (e.model_name, e.version)
        old = self.rows[t.model_versions].get(key)
        if old:  # (a version deleted earlier in this batch is the empty DELETED marker)
            if (old["run_id"], old["artifact_sha256"]) != (e.run_id, e.artifact_sha256):
                raise ProjectionConflict(
                    f"model {e.model_name} version {e.version} is registered already (seq {old['last_seq']}, run "
                    f"{old['run_id']}); a second registration from run {e.run_id} cannot replace it"
                )
            return
        self._put(t.model_versions, key, {
            "model_name": e.model_name, "version": e.version, "run_id": e.run_id, "artifact_path": e.artifact_path,
            "artifact_sha256": e.artifact_sha256, "description": e.description, "registered_by": e.registered_by,
            "registered_at": env.occurred_at, "last_seq": seq, "tags": {},
        })
        model = self.rows[t.registered_models].get((e.model_name,))
        if not model:
            model = _template(t.registered_models, model_name=e.model_name, created_at=env.occurred_at)
            self._put(t.registered_models, (e.model_name,), model)
        model.update(latest_version=max(model["latest_version"] or 0, e.version), updated_at=env.occurred_at,
                     last_seq=seq)

    def _model_alias(self, seq: int, env: Envelope, e: ModelAliasSet | ModelAliasRemoved) -> None:
        key = (e.model_name, e.alias)
        if isinstance(e, ModelAliasSet):
            self._put(t.model_aliases, key, {
                "model_name": e.model_name, "alias": e.alias, "version": e.version, "set_by": e.actor,
                "set_at": env.occurred_at, "reason": e.reason, "last_seq": seq,
            })
            action, from_version, to_version = "set", e.previous_version, e.version
        else:
            self._put(t.model_aliases, key, _DELETED)
            action, from_version, to_version = "removed", e.previous_version, None
        self._put(t.model_alias_history, (seq,), {
            "seq": seq, "model_name": e.model_name, "alias": e.alias, "action": action, "from_version": from_version,
            "to_version": to_version, "actor": e.actor, "reason": e.reason, "occurred_at": env.occurred_at,
        })

    def _metric_definition(self, seq: int, env: Envelope, e: MetricDefined | MetricMigrated) -> None:
        old = self.rows[t.metric_definitions].get((e.name,))
        spec = e.spec
        values = {"direction": spec.direction, "unit": spec.unit, "description": spec.description,
                  "min_value": spec.min_value, "max_value": spec.max_value}
        if isinstance(e, MetricDefined) and old is not None:
            if any(old[k] != v for k, v in values.items()):
                raise ProjectionConflict(
                    f"metric {e.name} is defined already (seq {old['last_seq']}); a new definition needs a "
                    f"migration (metric.migrated), not a second metric.defined"
                )
            return
        row = old or _template(t.metric_definitions, name=e.name, revision=0, defined_at=env.occurred_at)
        row.update(values, revision=row["revision"] + 1, updated_at=env.occurred_at, last_seq=seq)
        if isinstance(e, MetricMigrated):
            row["last_migration_id"] = e.migration_id
        self._put(t.metric_definitions, (e.name,), row)
        if e.name not in self.declared:
            self.declared.add(e.name)
            self.newly_declared.add(e.name)
            for summary in self.rows[t.metric_summaries].values():
                if summary.get("key") == e.name:
                    summary["declared"] = True

    def _skip(self, seq: int, env: Envelope, e: DomainEvent) -> None:
        """An event the read model has no rows for."""

    def _audit_sealed(self, seq: int, env: Envelope, e: AuditSealed) -> None:
        self._put(t.audit_seals, (seq,), {
            "seq": seq, "chain": e.chain, "first_seq": e.first_seq, "last_seq": e.last_seq,
            "message_count": e.message_count, "digest": e.digest, "previous_digest": e.previous_digest,
            "algorithm": e.algorithm, "sealed_at": env.occurred_at,
        })


def _fold_series(row: Row, values: Sequence[float], steps: Sequence[int], timestamps: Sequence[int],
                 in_order: bool | None = None) -> None:
    """Fold points into a summary: count (NaN included), min/max over non-NaN, last by (step, timestamp).

    The common case, no NaN and points in (step, timestamp) order, takes C-speed builtins only (sum() is NaN
    exactly when a value is NaN or infinities cancel; either falls back to the loop): a metric event carries
    up to thousands of points, and a per-point Python loop was most of the SQL projector's time on them.
    """
    row["count"] += len(values)
    last = (row["last_step"], row["last_timestamp"])
    total = sum(values)
    if in_order is None:
        in_order = _ordered(steps) and _ordered(timestamps)
    if total == total and in_order and (steps[0], timestamps[0]) >= last:
        lo, hi = min(values), max(values)
        row["min_value"] = lo if row["min_value"] is None else min(row["min_value"], lo)
        row["max_value"] = hi if row["max_value"] is None else max(row["max_value"], hi)
        row["last_value"] = values[-1]
        row["last_step"], row["last_timestamp"] = steps[-1], timestamps[-1]
        return
    finite = [v for v in values if not math.isnan(v)]
    row["nan_count"] += len(values) - len(finite)
    if finite:
        lo, hi = min(finite), max(finite)
        row["min_value"] = lo if row["min_value"] is None else min(row["min_value"], lo)
        row["max_value"] = hi if row["max_value"] is None else max(row["max_value"], hi)
    for value, step, ts in zip(values, steps, timestamps, strict=True):
        if (step, ts) >= last:  # a later point at the same step and time wins
            last = (step, ts)
            row["last_value"] = None if math.isnan(value) else value
    row["last_step"], row["last_timestamp"] = last


def _fold_epochs(rows: dict[Key, Row], run_id: str, series: MetricSeries, seq: int, in_order: bool) -> None:
    """Keep, per epoch of the series, its last point by (step, timestamp) in rows (keyed run, key, epoch).

    Series almost always come with epochs, steps and timestamps in order; then the last point of an epoch is
    found by bisection (C-speed checks, no loop over points). Anything else takes the point-by-point path.
    """
    epochs, steps, stamps, values = series.epochs, series.steps, series.timestamps, series.values
    if in_order and _ordered(epochs):
        candidates: Iterable[int] = (bisect.bisect_right(epochs, epoch) - 1 for epoch in sorted(set(epochs)))
    else:
        candidates = range(len(values))
    for i in candidates:
        key = (run_id, series.key, epochs[i])
        old = rows.get(key)
        if old is None or (steps[i], stamps[i]) >= (old["step"], old["timestamp"]):
            value = values[i]
            rows[key] = {"run_id": run_id, "key": series.key, "epoch": epochs[i],
                         "value": None if math.isnan(value) else value, "step": steps[i],
                         "timestamp": stamps[i], "last_seq": seq}


def _ordered(column: Sequence[int]) -> bool:
    """Whether a column is non-decreasing (sorted() is linear on sorted input)."""
    return len(column) < 2 or (column[0] <= column[-1] and list(column) == sorted(column))
