"""The event catalogue: every event round-trips, is frozen, validates with clear errors, and upcasts."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from pydantic import ValidationError

from mlhub.errors import EventDecodeError
from mlhub.events import (
    EVENT_CLASSES,
    EVENT_TYPES,
    ArtifactStored,
    AuditSealed,
    CodeVersionRecorded,
    ConfigSnapshotted,
    DatasetVersionRecorded,
    DomainEvent,
    Envelope,
    EnvironmentRecorded,
    ExperimentCreated,
    ExperimentDeleted,
    ExperimentRenamed,
    ExperimentRestored,
    ExperimentTagsSet,
    JobCancelled,
    JobFailed,
    JobHeartbeat,
    JobQueued,
    JobStarted,
    JobSucceeded,
    LoggedModelRecorded,
    MetricDefined,
    MetricMigrated,
    MetricsLogged,
    MetricSpec,
    ModelAliasRemoved,
    ModelAliasSet,
    ModelCreated,
    ModelDeleted,
    ModelUpdated,
    ModelVersionDeleted,
    ModelVersionRegistered,
    ParamsLogged,
    RunCancelled,
    RunCrashed,
    RunCreated,
    RunDeleted,
    RunFailed,
    RunFinished,
    RunHeartbeat,
    RunRenamed,
    RunRestored,
    RunResumed,
    RunStarted,
    SeedRecorded,
    TagsDeleted,
    TagsSet,
    TokenIssued,
    TokenRevoked,
    decode,
    encode,
    event_subject,
    sha256_of,
)

H = "ab" * 32
CONFIG = {"model": {"lr": 0.01}, "seed": 7}

SAMPLES: list[DomainEvent] = [
    ExperimentCreated(experiment_id="exp-1", name="Digits", description="d", tags={"team": "vision"}),
    RunCreated(run_id="run1", experiment_id="exp-1", name="r", job_id="job1", reproduces_run_id="run0"),
    RunStarted(run_id="run1", attempt=2, worker_id="w1"),
    RunFinished(run_id="run1", attempt=2),
    RunFailed(run_id="run1", attempt=1, error_type="ValueError", error="boom"),
    RunCancelled(run_id="run1", reason="user", ended_by="ana"),
    RunHeartbeat(run_id="run1", attempt=1),
    RunCrashed(run_id="run1", attempt=1, reason="no heartbeat for 301 s", silent_s=301.5, last_seq=42),
    RunResumed(run_id="run1", attempt=1, resumed_by="ana"),
    ConfigSnapshotted(run_id="run1", config=CONFIG, sha256=sha256_of(CONFIG), overrides=("model.lr=0.01",)),
    SeedRecorded(run_id="run1", seed=2**32 - 1, source="drawn"),
    DatasetVersionRecorded(run_id="run1", name="digits", fingerprint=H, size_bytes=10, num_examples=1797),
    CodeVersionRecorded(run_id="run1", git_commit="a" * 40, dirty=True, diff_sha256=H, untracked=("notes.txt",),
                        untracked_count=1),
    EnvironmentRecorded(run_id="run1", python="3.11.7", platform="linux", torch="2.5", lightning="2.4",
                        cuda="12.4", device_name="H100", packages_sha256=H),
    ParamsLogged(run_id="run1", params={"lr": "0.01", "model/hidden": "64"}),
    TagsSet(run_id="run1", tags={"team": "vision"}),
    MetricsLogged.from_points(
        "run1", [("loss", 0.5, 0, 0, 1), ("acc", math.nan, 0, 0, 1), ("loss", -math.inf, 1, 0, 2)]
    ),
    ArtifactStored(run_id="run1", path="checkpoints/last.ckpt", sha256=H, size_bytes=3, uri="file:///x",
                   kind="checkpoint"),
    JobQueued(job_id="job1", run_id="run1", experiment_id="exp-1", plugin="digits-mlp", pool="gpu", config=CONFIG,
              config_sha256=sha256_of(CONFIG), timeout_s=60),
    JobStarted(job_id="job1", run_id="run1", attempt=1, worker_id="w1"),
    JobHeartbeat(job_id="job1", attempt=1, worker_id="w1", progress=0.5),
    JobSucceeded(job_id="job1", attempt=1),
    JobFailed(job_id="job1", attempt=1, error_type="RuntimeError", error="x", retryable=True),
    JobCancelled(job_id="job1", reason="timeout", requested_by="scheduler"),
    ModelVersionRegistered(model_name="digits", version=1, run_id="run1", artifact_path="model.onnx",
                           artifact_sha256=H),
    ModelAliasSet(model_name="digits", alias="production", version=2, previous_version=1, actor="ana", reason="better"),
    ModelAliasRemoved(model_name="digits", alias="staging", previous_version=1, actor="ana"),
    MetricDefined(name="val_acc", spec=MetricSpec(direction="max", unit="ratio", min_value=0, max_value=1)),
    MetricMigrated(name="val_acc", migration_id="0002", previous=MetricSpec(direction="max"),
                   spec=MetricSpec(direction="max", unit="%")),
    AuditSealed(first_seq=1, last_seq=10, message_count=10, digest=H, previous_digest=None),
    # the MLflow-compatible API's events
    ExperimentRenamed(experiment_id="exp1", name="renamed"),
    ExperimentDeleted(experiment_id="exp1"),
    ExperimentRestored(experiment_id="exp1"),
    ExperimentTagsSet(experiment_id="exp1", tags={"team": "vision"}, removed=("old",)),
    RunDeleted(run_id="run1"),
    RunRestored(run_id="run1"),
    RunRenamed(run_id="run1", name="better-name"),
    TagsDeleted(run_id="run1", keys=("team",)),
    LoggedModelRecorded(run_id="run1", model_id="m-1", name="model", artifact_path="logged-models/m-1",
                        status="ready", params={"lr": "0.1"}, tags={"flavor": "sklearn"}),
    ModelCreated(model_name="digits", description="a model", tags={"team": "vision"}),
    ModelUpdated(model_name="digits", version=1, description="v1", tags={"k": "v"}, removed=("old",)),
    ModelVersionDeleted(model_name="digits", version=1, actor="ana"),
    ModelDeleted(model_name="digits", actor="ana"),
    DatasetVersionRecorded(run_id="run1", name="iris", fingerprint=H, size_bytes=None, digest="abc123",
                           source_type="code", source='{"tags": {}}', context="train"),
    TokenIssued(name="ci-writer", role="writer", token_sha256=H, issued_by="cli:ana"),
    TokenRevoked(name="ci-writer", revoked_by="token:hub-admin", reason="leaked"),
]


def test_samples_cover_the_whole_catalogue() -> None:
    assert {type(e) for e in SAMPLES} == set(EVENT_CLASSES)
    assert len(EVENT_TYPES) == len(EVENT_CLASSES) >= 27


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.event_type)
def test_every_event_round_trips_through_the_serializer(event: DomainEvent) -> None:
    envelope = Envelope(event=event, producer="test", correlation_id="job1")
    data = encode(envelope)
    json.loads(data)  # strict JSON: NaN and infinities are written as strings
    back = decode(data)
    assert type(back.event) is type(event)
    assert back.event_id == envelope.event_id
    assert back.occurred_at == envelope.occurred_at
    assert back.correlation_id == "job1"
    assert back.subject == event_subject(event)
    assert encode(back) == data  # byte-identical: one serializer, deterministic


def test_the_actor_travels_in_the_envelope_only_when_set() -> None:
    from mlhub.events import CURRENT_ACTOR

    plain = encode(Envelope(event=RunStarted(run_id="abc", attempt=1), producer="p"))
    assert "actor" not in json.loads(plain) and decode(plain).actor is None  # older events keep their bytes
    reset = CURRENT_ACTOR.set("token:ci")
    try:
        acted = Envelope(event=RunStarted(run_id="abc", attempt=1), producer="p")
    finally:
        CURRENT_ACTOR.reset(reset)
    assert acted.actor == "token:ci" and decode(encode(acted)).actor == "token:ci"
    assert Envelope(event=RunStarted(run_id="abc", attempt=1), producer="p").actor is None


def test_token_names_are_checked_and_the_fold_keeps_a_revoke() -> None:
    from mlhub.errors import InvalidInput
    from mlhub.events import check_token_name, fold_tokens

    for bad in ("", "-x", "a.b", "x" * 65, "has space", "admin"):
        with pytest.raises(InvalidInput, match="token name"):
            check_token_name(bad)
    issued = Envelope(event=TokenIssued(name="ci", role="reader", token_sha256=H), producer="p", actor="cli:ana")
    revoked = Envelope(event=TokenRevoked(name="ci"), producer="p", actor="token:hub-admin")
    tokens = fold_tokens([(1, issued), (2, revoked), (1, issued)])  # an issue seen again changes nothing
    assert tokens["ci"].revoked and tokens["ci"].revoked_by == "token:hub-admin"
    assert tokens["ci"].created_by == "cli:ana" and tokens["ci"].role == "reader"


def test_envelope_metadata_and_subject() -> None:
    env = Envelope(event=RunStarted(run_id="abc", attempt=1), producer="p")
    head = json.loads(encode(env))
    assert head["type"] == "run.started" and head["schema_version"] == 1
    assert head["aggregate_type"] == "run" and head["aggregate_id"] == "abc"
    assert head["occurred_at"].endswith("Z")
    assert env.subject == "mlhub.ev.run.abc.started"


def test_events_are_frozen() -> None:
    event = RunStarted(run_id="abc", attempt=1)
    with pytest.raises(ValidationError, match="frozen"):
        event.attempt = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: RunStarted(run_id="has.dot", attempt=1), "run_id"),
        (lambda: RunStarted(run_id="r", attempt=0), "attempt"),
        (lambda: ParamsLogged(run_id="r", params={"../x": "1"}), "params"),
        (lambda: ArtifactStored(run_id="r", path="../etc/passwd", sha256=H, size_bytes=1, uri="u"), "path"),
        (lambda: SeedRecorded(run_id="r", seed=-1), "seed"),
        (lambda: DatasetVersionRecorded(run_id="r", name="d", fingerprint="nothex", size_bytes=1), "fingerprint"),
        (lambda: RunStarted(run_id="r", attempt=1, bogus=1), "bogus"),
    ],
)
def test_bad_input_names_the_field(build: Any, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        build()
    assert field in str(info.value)


def test_config_hash_must_match_the_config() -> None:
    with pytest.raises(ValidationError, match="does not match"):
        ConfigSnapshotted(run_id="r", config=CONFIG, sha256=H)


def test_metric_series_columns_must_have_one_length() -> None:
    with pytest.raises(ValidationError, match="one non-zero length"):
        MetricsLogged(run_id="r", series=({"key": "a", "values": [1.0, 2.0], "steps": [0], "epochs": [0],
                                           "timestamps": [0]},))  # type: ignore[arg-type]


def test_metric_batch_keeps_points_and_non_finite_values() -> None:
    points = [("loss", float(i), i, i // 10, 1000 + i) for i in range(25)] + [("acc", math.nan, 3, 0, 5)]
    batch = MetricsLogged.from_points("r", points)
    assert batch.num_points == 26
    back = decode(encode(Envelope(event=batch, producer="p"))).event
    assert isinstance(back, MetricsLogged)
    got = list(back.points())
    assert got[:25] == [tuple(p) for p in points[:25]]
    assert got[25].key == "acc" and math.isnan(got[25].value)


def _v1_metrics_message(points: list[dict[str, Any]]) -> bytes:
    return json.dumps({
        "event_id": "00000000-0000-4000-8000-000000000001", "type": "run.metrics_logged", "schema_version": 1,
        "occurred_at": "2025-01-01T00:00:00.000000Z", "producer": "mlhub-0.0", "correlation_id": None,
        "aggregate_type": "run", "aggregate_id": "old", "payload": {"run_id": "old", "points": points},
    }).encode()


def test_a_stored_v1_payload_reads_back_as_the_current_class() -> None:
    v1 = _v1_metrics_message([
        {"key": "loss", "value": 1.0, "step": 0, "epoch": 0, "timestamp": 10},
        {"key": "acc", "value": 0.1, "step": 0, "epoch": 0, "timestamp": 10},
        {"key": "loss", "value": 0.5, "step": 1, "epoch": 0, "timestamp": 20},
    ])
    env = decode(v1)
    assert isinstance(env.event, MetricsLogged) and env.schema_version == MetricsLogged.schema_version == 3
    assert [s.key for s in env.event.series] == ["loss", "acc"]
    assert env.event.series[0].values == (1.0, 0.5) and env.event.series[0].steps == (0, 1)
    # Written again, it is written in the current version.
    assert json.loads(encode(env))["schema_version"] == 3 and env.event.attempt is None


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m: {**m, "type": "run.exploded"}, "unknown or missing event type"),
        (lambda m: {**m, "schema_version": 99}, "newer than this mlhub knows"),
        (lambda m: {**m, "aggregate_id": "other"}, "belongs to run/old"),
        (lambda m: {**m, "payload": {"run_id": "old", "points": [{"key": "x"}]}}, "invalid field|malformed"),
        (lambda m: {k: v for k, v in m.items() if k != "producer"}, "producer"),
    ],
)
def test_unreadable_messages_raise_event_decode_error(mutate: Any, message: str) -> None:
    good = json.loads(_v1_metrics_message([{"key": "x", "value": 1.0, "step": 0, "epoch": 0, "timestamp": 1}]))
    with pytest.raises(EventDecodeError, match=message):
        decode(json.dumps(mutate(good)).encode())
    with pytest.raises(EventDecodeError, match="not JSON"):
        decode(b"\x00garbage")
