"""The SQL projector against a real event log and real databases: every event type lands in the right rows."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mlhub.eventlog import EventLog
from mlhub.events import (
    EVENT_CLASSES,
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
    MetricDefined,
    MetricMigrated,
    MetricsLogged,
    MetricSpec,
    ModelAliasRemoved,
    ModelAliasSet,
    ModelVersionRegistered,
    ParamsLogged,
    RunCancelled,
    RunCreated,
    RunFailed,
    RunFinished,
    RunStarted,
    SeedRecorded,
    TagsSet,
    sha256_of,
)
from mlhub.projections import ReadModelChanges, SqlProjector, run_until
from mlhub.readmodel import dead_letters
from mlhub.readmodel import tables as t

CONFIG = {"model": {"hidden": 8, "lr": 0.1}, "seed": 42}


async def append(log: EventLog, *events: DomainEvent) -> list[tuple[int, Envelope]]:
    """Append events one by one (in order); their sequences and envelopes."""
    stored = []
    for event in events:
        envelope = Envelope(event=event, producer="tests@host")
        stored.append(((await log.append(envelope)).seq, envelope))
    return stored


def row(engine: Engine, table: sa.Table, **key: Any) -> dict[str, Any]:
    """The one row of a table with this primary key, as a dict."""
    query = sa.select(table).where(*(table.c[k] == v for k, v in key.items()))
    with engine.connect() as conn:
        return dict(conn.execute(query).mappings().one())


def rows(engine: Engine, table: sa.Table, *order_by: str) -> list[dict[str, Any]]:
    """Every row of a table, ordered."""
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(table).order_by(*(table.c[c] for c in order_by))).mappings()]


def utc(value: datetime | None) -> datetime | None:
    """A stored time as an aware UTC datetime (SQLite returns naive UTC)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


async def test_every_event_class_of_the_catalogue_has_a_handler(database: Engine) -> None:
    with database.connect() as conn:
        changes = ReadModelChanges(conn)
        assert [cls.event_type for cls in EVENT_CLASSES if not changes.handles(cls)] == []


async def test_run_lifecycle_projects_every_field(
    event_log: EventLog, database: Engine, sql_projector: SqlProjector
) -> None:
    first = await append(
        event_log,
        ExperimentCreated(experiment_id="exp1", name="Experiment 1", description="d", tags={"team": "vision"}),
        JobQueued(job_id="job1", run_id="run1", experiment_id="exp1", plugin="mnist", pool="gpu", config=CONFIG,
                  config_sha256=sha256_of(CONFIG), timeout_s=60.0, max_attempts=2),
    )
    await run_until(event_log, [sql_projector])
    queued = row(database, t.runs, run_id="run1")
    assert (queued["status"], queued["job_id"], queued["experiment_id"]) == ("queued", "job1", "exp1")
    assert queued["config"] == CONFIG and utc(queued["created_at"]) == first[1][1].occurred_at
    experiment = row(database, t.experiments, experiment_id="exp1")
    assert (experiment["name"], experiment["description"], experiment["tags"]) == ("Experiment 1", "d",
                                                                                  {"team": "vision"})
    assert experiment["created_by"] == "tests@host" and experiment["last_seq"] == first[0][0]

    stored = await append(
        event_log,
        RunCreated(run_id="run1", experiment_id="exp1", name="first", job_id="job1", reproduces_run_id="run0"),
        ConfigSnapshotted(run_id="run1", config=CONFIG, sha256=sha256_of(CONFIG), overrides=("model.lr=0.1",)),
        SeedRecorded(run_id="run1", seed=42, source="drawn"),
        DatasetVersionRecorded(run_id="run1", name="mnist", fingerprint="a" * 64, size_bytes=1234,
                               num_examples=60000),
        CodeVersionRecorded(run_id="run1", git_commit="b" * 40, dirty=True, diff_sha256="c" * 64,
                            repository="git@example.com:team/repo.git"),
        EnvironmentRecorded(run_id="run1", python="3.11.9", platform="Linux-x86_64", torch="2.5.1",
                            lightning="2.4.0", cuda="12.4", device_name="NVIDIA H100", packages_sha256="d" * 64),
        JobStarted(job_id="job1", run_id="run1", attempt=1, worker_id="w1"),
        RunStarted(run_id="run1", attempt=1, worker_id="w1"),
        ParamsLogged(run_id="run1", params={"lr": "0.1", "hidden": "8"}),
        TagsSet(run_id="run1", tags={"stage": "dev"}),
        TagsSet(run_id="run1", tags={"stage": "prod", "owner": "ann"}),
        ArtifactStored(run_id="run1", path="ckpt/last.ckpt", sha256="e" * 64, size_bytes=99, uri="file:///a/e",
                       kind="checkpoint"),
        RunFailed(run_id="run1", attempt=1, error_type="RuntimeError", error="CUDA out of memory"),
        JobFailed(job_id="job1", attempt=1, error_type="RuntimeError", error="CUDA out of memory", retryable=True),
    )
    await run_until(event_log, [sql_projector], max_batch=3)
    failed = row(database, t.runs, run_id="run1")
    assert (failed["status"], failed["error_type"], failed["error"]) == ("failed", "RuntimeError",
                                                                         "CUDA out of memory")
    assert utc(failed["ended_at"]) == stored[-2][1].occurred_at
    job = row(database, t.jobs, job_id="job1")
    assert (job["status"], job["attempts"], job["retryable"], job["ended_at"]) == ("queued", 1, True, None)

    retry = await append(
        event_log,
        JobStarted(job_id="job1", run_id="run1", attempt=2, worker_id="w2"),
        RunStarted(run_id="run1", attempt=2, worker_id="w2"),
        JobHeartbeat(job_id="job1", attempt=2, worker_id="w2", progress=0.5),
        JobHeartbeat(job_id="job1", attempt=1, worker_id="w1", progress=0.9),  # late, from the old attempt
        RunFinished(run_id="run1", attempt=2),
        JobSucceeded(job_id="job1", attempt=2),
    )
    await run_until(event_log, [sql_projector])
    run = row(database, t.runs, run_id="run1")
    expected = {
        "run_id": "run1", "experiment_id": "exp1", "name": "first", "status": "finished", "source": "job",
        "job_id": "job1", "reproduces_run_id": "run0", "created_by": "tests@host", "attempt": 2, "worker_id": "w2",
        "error_type": None, "error": None, "cancel_reason": None, "config": CONFIG,
        "config_sha256": sha256_of(CONFIG), "config_overrides": ["model.lr=0.1"], "seed": 42, "seed_source": "drawn",
        "dataset_name": "mnist", "dataset_fingerprint": "a" * 64, "dataset_size_bytes": 1234,
        "dataset_num_examples": 60000, "git_commit": "b" * 40, "git_dirty": True, "git_diff_sha256": "c" * 64,
        "git_repository": "git@example.com:team/repo.git", "env_python": "3.11.9", "env_platform": "Linux-x86_64",
        "env_torch": "2.5.1", "env_lightning": "2.4.0", "env_cuda": "12.4", "env_device_name": "NVIDIA H100",
        "env_packages_sha256": "d" * 64, "last_seq": retry[4][0],
    }
    assert {k: run[k] for k in expected} == expected
    assert utc(run["created_at"]) == first[1][1].occurred_at  # the run row was born with its job
    assert utc(run["started_at"]) == retry[1][1].occurred_at
    assert utc(run["ended_at"]) == utc(run["updated_at"]) == retry[4][1].occurred_at

    job = row(database, t.jobs, job_id="job1")
    assert {k: job[k] for k in ("run_id", "experiment_id", "plugin", "pool", "status", "config", "config_sha256",
                                "timeout_s", "max_attempts", "attempts", "worker_id", "progress", "error_type")} == {
        "run_id": "run1", "experiment_id": "exp1", "plugin": "mnist", "pool": "gpu", "status": "succeeded",
        "config": CONFIG, "config_sha256": sha256_of(CONFIG), "timeout_s": 60.0, "max_attempts": 2, "attempts": 2,
        "worker_id": "w2", "progress": 1.0, "error_type": None,
    }
    assert utc(job["queued_at"]) == first[1][1].occurred_at
    assert utc(job["started_at"]) == retry[0][1].occurred_at
    assert utc(job["heartbeat_at"]) == retry[2][1].occurred_at
    assert utc(job["ended_at"]) == retry[5][1].occurred_at and job["last_seq"] == retry[5][0]

    assert [(r["key"], r["value"]) for r in rows(database, t.params, "key")] == [("hidden", "8"), ("lr", "0.1")]
    assert [(r["key"], r["value"]) for r in rows(database, t.tags, "key")] == [("owner", "ann"), ("stage", "prod")]
    artifact = row(database, t.artifacts, run_id="run1", path="ckpt/last.ckpt")
    assert (artifact["sha256"], artifact["size_bytes"], artifact["uri"], artifact["kind"]) == (
        "e" * 64, 99, "file:///a/e", "checkpoint")
    assert sql_projector.checkpoint() == retry[-1][0]


async def test_cancelled_and_failed_jobs_and_runs(
    event_log: EventLog, database: Engine, sql_projector: SqlProjector
) -> None:
    await append(
        event_log,
        JobQueued(job_id="j2", run_id="r2", experiment_id="e", plugin="p", config={}, config_sha256=sha256_of({})),
        JobCancelled(job_id="j2", reason="not needed", requested_by="ann"),
        RunCancelled(run_id="r2", reason="not needed"),
        JobQueued(job_id="j3", run_id="r3", experiment_id="e", plugin="p", config={}, config_sha256=sha256_of({}),
                  max_attempts=3),
        JobStarted(job_id="j3", run_id="r3", attempt=1, worker_id="w"),
        JobFailed(job_id="j3", attempt=1, error_type="ValueError", error="bad config", retryable=False),
    )
    await run_until(event_log, [sql_projector])
    j2, r2, j3 = row(database, t.jobs, job_id="j2"), row(database, t.runs, run_id="r2"), row(database, t.jobs,
                                                                                            job_id="j3")
    assert (j2["status"], j2["cancel_reason"], j2["cancelled_by"]) == ("cancelled", "not needed", "ann")
    assert (r2["status"], r2["cancel_reason"]) == ("killed", "not needed") and r2["ended_at"] is not None
    assert (j3["status"], j3["error"], j3["retryable"], j3["attempts"]) == ("failed", "bad config", False, 1)


async def test_metric_summaries_are_folded_incrementally_with_nan_counted(
    event_log: EventLog, database: Engine, sql_projector: SqlProjector
) -> None:
    nan, inf = math.nan, math.inf
    await append(
        event_log,
        MetricsLogged.from_points("r", [("loss", 3.0, 0, 0, 100), ("loss", nan, 1, 0, 101), ("loss", 1.0, 2, 0, 102),
                                        ("acc", 0.5, 0, 0, 100)]),
        MetricsLogged.from_points("r", [("loss", 0.5, 1, 0, 103), ("loss", nan, 3, 1, 104)]),
    )
    await run_until(event_log, [sql_projector], max_batch=1)
    loss = row(database, t.metric_summaries, run_id="r", key="loss")
    assert {k: loss[k] for k in ("count", "nan_count", "min_value", "max_value", "last_value", "last_step",
                                 "last_timestamp")} == {"count": 5, "nan_count": 2, "min_value": 0.5, "max_value": 3.0,
                                                        "last_value": None, "last_step": 3, "last_timestamp": 104}
    stored = await append(
        event_log,
        MetricsLogged.from_points("r", [("loss", inf, 2, 0, 105), ("loss", 0.25, 4, 1, 106), ("acc", nan, 0, 0, 99)]),
    )
    await run_until(event_log, [sql_projector])
    loss = row(database, t.metric_summaries, run_id="r", key="loss")
    assert (loss["count"], loss["nan_count"], loss["min_value"], loss["max_value"]) == (7, 2, 0.25, inf)
    assert (loss["last_value"], loss["last_step"], loss["last_seq"]) == (0.25, 4, stored[0][0])
    acc = row(database, t.metric_summaries, run_id="r", key="acc")  # an older point never becomes "last"
    assert (acc["count"], acc["nan_count"], acc["last_value"], acc["min_value"], acc["max_value"]) == (
        2, 1, 0.5, 0.5, 0.5)


async def test_epoch_metrics_keep_each_epochs_last_point_across_batches_and_out_of_order_points(
    event_log: EventLog, database: Engine, sql_projector: SqlProjector
) -> None:
    nan = math.nan
    await append(
        event_log,
        # In order (the fast path): epoch 0 ends at step 2, epoch 1 is still going.
        MetricsLogged.from_points("r", [("loss", 3.0, 0, 0, 100), ("loss", 2.0, 1, 0, 101), ("loss", 1.5, 2, 0, 102),
                                        ("loss", 1.0, 3, 1, 103), ("val_acc", 0.5, 2, 0, 102)]),
        MetricsLogged.from_points("r", [("loss", 0.75, 4, 1, 104), ("val_acc", nan, 4, 1, 104)]),
    )
    await run_until(event_log, [sql_projector], max_batch=1)
    # Out of order (the point-by-point path), one batch later: an older point never replaces a later one.
    await append(event_log, MetricsLogged.from_points("r", [("loss", 9.0, 1, 0, 150), ("loss", 0.5, 5, 1, 105),
                                                            ("loss", 0.25, 6, 2, 106), ("loss", 7.0, 3, 1, 99)]))
    await run_until(event_log, [sql_projector])
    with database.connect() as conn:
        got = {(r.key, r.epoch): (r.value, r.step, r.timestamp) for r in conn.execute(sa.select(t.epoch_metrics))}
    assert got == {("loss", 0): (1.5, 2, 102), ("loss", 1): (0.5, 5, 105), ("loss", 2): (0.25, 6, 106),
                   ("val_acc", 0): (0.5, 2, 102), ("val_acc", 1): (None, 4, 104)}


async def test_model_versions_aliases_and_alias_history(
    event_log: EventLog, database: Engine, sql_projector: SqlProjector
) -> None:
    stored = await append(
        event_log,
        ModelVersionRegistered(model_name="clf", version=1, run_id="r1", artifact_path="model.onnx",
                               artifact_sha256="1" * 64, description="first", registered_by="ann"),
        ModelVersionRegistered(model_name="clf", version=2, run_id="r2", artifact_path="model.onnx",
                               artifact_sha256="2" * 64),
        ModelAliasSet(model_name="clf", alias="production", version=1, actor="ann", reason="first release"),
        ModelAliasSet(model_name="clf", alias="staging", version=2, actor="bob"),
        ModelAliasSet(model_name="clf", alias="production", version=2, previous_version=1, actor="bob",
                      reason="better val_loss"),
        ModelAliasRemoved(model_name="clf", alias="staging", previous_version=2, actor="bob", reason="promoted"),
        ModelVersionRegistered(model_name="clf", version=1, run_id="r1", artifact_path="model.onnx",
                               artifact_sha256="1" * 64, description="first", registered_by="ann"),  # a repeat
    )
    await run_until(event_log, [sql_projector], max_batch=4)
    versions = rows(database, t.model_versions, "version")
    assert [(v["version"], v["run_id"], v["artifact_sha256"], v["description"], v["registered_by"])
            for v in versions] == [(1, "r1", "1" * 64, "first", "ann"), (2, "r2", "2" * 64, "", None)]
    assert utc(versions[0]["registered_at"]) == stored[0][1].occurred_at
    model = row(database, t.registered_models, model_name="clf")
    assert (model["latest_version"], utc(model["created_at"])) == (2, stored[0][1].occurred_at)
    aliases = rows(database, t.model_aliases, "alias")
    assert [(a["alias"], a["version"], a["set_by"], a["reason"]) for a in aliases] == [
        ("production", 2, "bob", "better val_loss")]
    history = rows(database, t.model_alias_history, "seq")
    assert [(h["seq"], h["alias"], h["action"], h["from_version"], h["to_version"], h["actor"], h["reason"])
            for h in history] == [
        (stored[2][0], "production", "set", None, 1, "ann", "first release"),
        (stored[3][0], "staging", "set", None, 2, "bob", ""),
        (stored[4][0], "production", "set", 1, 2, "bob", "better val_loss"),
        (stored[5][0], "staging", "removed", 2, None, "bob", "promoted"),
    ]
    assert [utc(h["occurred_at"]) for h in history] == [s[1].occurred_at for s in stored[2:6]]
    with database.connect() as conn:
        assert dead_letters(conn) == []


async def test_metric_definitions_experiments_and_audit_seals(
    event_log: EventLog, database: Engine, sql_projector: SqlProjector
) -> None:
    v1 = MetricSpec(direction="min", unit="nats", description="validation loss")
    v2 = MetricSpec(direction="min", unit="nats", description="validation loss", min_value=0.0)
    stored = await append(
        event_log,
        MetricDefined(name="val_loss", spec=v1),
        MetricDefined(name="val_loss", spec=v1),  # the same definition again changes nothing
        MetricMigrated(name="val_loss", migration_id="0002_val_loss_nonnegative", previous=v1, spec=v2),
        AuditSealed(first_seq=1, last_seq=3, message_count=3, digest="f" * 64, previous_digest=None),
    )
    await run_until(event_log, [sql_projector])
    definition = row(database, t.metric_definitions, name="val_loss")
    assert {k: definition[k] for k in ("direction", "unit", "description", "min_value", "max_value", "revision",
                                       "last_migration_id", "last_seq")} == {
        "direction": "min", "unit": "nats", "description": "validation loss", "min_value": 0.0, "max_value": None,
        "revision": 2, "last_migration_id": "0002_val_loss_nonnegative", "last_seq": stored[2][0]}
    assert utc(definition["defined_at"]) == stored[0][1].occurred_at
    assert utc(definition["updated_at"]) == stored[2][1].occurred_at
    seal = row(database, t.audit_seals, seq=stored[3][0])
    assert (seal["first_seq"], seal["last_seq"], seal["message_count"], seal["digest"], seal["previous_digest"],
            seal["algorithm"], seal["chain"]) == (1, 3, 3, "f" * 64, None, "sha256-chain-v1", "seals")
