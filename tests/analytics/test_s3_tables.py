"""The metric tables on S3-compatible storage (MLHUB_METRICS_URI=s3://bucket/prefix), against a real S3 API
(moto's server in its own process) and a real nats-server: the projector writes them exactly once, readers
(QueryEngine, as the API and `mlhub query` use it) read the same rows through Arrow, compaction and vacuum keep
them, `audit verify` compares them with a clean replay, and two writers racing for one Delta version cannot
both commit (conditional writes)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from deltalake import write_deltalake
from deltalake.exceptions import CommitFailedError
from sqlalchemy.engine import Engine
from tests.artifacts.conftest import AWS_LEAKS, FAKE_AWS, start_moto

from mlhub.analytics import MetricsLocation, MetricTables, MetricTableWriter, QueryEngine, metrics_location
from mlhub.analytics.errors import MetricTableError
from mlhub.eventlog import EventLog
from mlhub.events import Envelope, MetricSeries, MetricsLogged, RunCreated, RunFinished, RunStarted
from mlhub.projections import SqlProjector, run_until
from mlhub.projections.audit import verify
from mlhub.readmodel import migrate
from mlhub.readmodel.testing import temporary_database
from mlhub.settings import Settings


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    proc, url = start_moto()
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait()


@pytest.fixture
def s3_metrics(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> MetricsLocation:
    """A fresh bucket; the metric tables under a prefix in it (as a team shares a bucket)."""
    for name in AWS_LEAKS:
        monkeypatch.delenv(name, raising=False)
    for name, value in FAKE_AWS.items():
        monkeypatch.setenv(name, value)
    bucket = f"mlhub-metrics-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=bucket)
    settings = Settings(metrics_uri=f"s3://{bucket}/team/metrics", s3_endpoint_url=moto_endpoint)
    from mlhub.analytics import location_from_settings

    location = location_from_settings(settings)
    assert not location.is_local and location.uri == f"s3://{bucket}/team/metrics"
    return location


@pytest.fixture
def sqlite_model(tmp_path: Path) -> Iterator[Engine]:
    with temporary_database("sqlite", tmp_path) as engine:
        migrate(engine)
        yield engine


def batch(run_id: str, key: str, first_step: int, values: list[float]) -> MetricsLogged:
    steps = tuple(range(first_step, first_step + len(values)))
    series = MetricSeries(key=key, values=tuple(values), steps=steps, epochs=tuple(s // 10 for s in steps),
                          timestamps=tuple(1_700_000_000_000 + s for s in steps))
    return MetricsLogged(run_id=run_id, series=(series,), attempt=1)


async def append_runs(log: EventLog, runs: int, batches: int, per_batch: int) -> int:
    """Runs with `batches` metric events of `per_batch` points of one key (every 7th value NaN); points sent."""
    sent = 0
    for r in range(runs):
        run_id = f"run-{r}"
        events = [RunCreated(run_id=run_id, experiment_id="exp", name=run_id), RunStarted(run_id=run_id, attempt=1)]
        for b in range(batches):
            first = b * per_batch
            events.append(batch(run_id, "loss", first, [math.nan if (first + i) % 7 == 0 else 1.0 / (first + i + 1)
                                                        for i in range(per_batch)]))
            sent += per_batch
        events.append(RunFinished(run_id=run_id, attempt=1))
        for event in events:
            await log.append(Envelope(event=event, producer="tests@host"))
    return sent


async def test_the_projector_writes_s3_tables_that_readers_compaction_and_audit_agree_on(
    event_log: EventLog, s3_metrics: MetricsLocation, sqlite_model: Engine, tmp_path: Path
) -> None:
    sent = await append_runs(event_log, runs=3, batches=4, per_batch=250)
    # max_batch=5: the writer commits several times, so compaction has small files to merge.
    await run_until(event_log, [SqlProjector(sqlite_model), MetricTableWriter(s3_metrics, flush_points=400)],
                    max_batch=5)

    tables = MetricTables(s3_metrics)
    snap = tables.snapshot()
    assert snap.checkpoint == await event_log.last_sequence()
    assert all(not f.startswith("s3://") and f.startswith(s3_metrics.uri.removeprefix("s3://"))
               for f in snap.points_files)
    assert tables.count_points() == sent == 3000
    nan_points = sum(1 for r in range(3) for s in range(1000) if s % 7 == 0)

    def read_back() -> tuple[list[dict[str, object]], int]:
        with QueryEngine(s3_metrics) as q:
            per_run = q.query("SELECT run_id, count(*) AS n, count(*) FILTER (WHERE isnan(value)) AS nans, "
                              "max(step) AS last FROM metrics GROUP BY run_id ORDER BY run_id").to_pylist()
            history = q.run_history("run-1", "loss")
            assert history.column("step").to_pylist() == list(range(1000))
            assert q.query("SELECT count(*) AS n FROM run_metrics('run-2', 'loss')").to_pylist() == [{"n": 1000}]
            return per_run, sum(int(r["nans"]) for r in per_run)  # type: ignore[call-overload]

    per_run, nans = read_back()
    assert per_run == [{"run_id": f"run-{r}", "n": 1000, "nans": 143, "last": 999} for r in range(3)]
    assert nans == nan_points

    before = tables.change_stamp()
    result = tables.compact()
    assert result.files_removed > result.files_added > 0
    assert tables.change_stamp() != before  # readers (the API) see the new version by its number
    assert read_back() == (per_run, nans)
    assert tables.snapshot().checkpoint == snap.checkpoint  # compaction keeps the writer's position
    assert tables.vacuum() == []  # the default retention (7 days) keeps the replaced files for readers
    assert read_back() == (per_run, nans)

    report = await verify(event_log, sqlite_model, s3_metrics, check_seals=False, scratch_dir=tmp_path)
    assert report.ok, report.differences
    assert report.metric_points == 3000

    # A restarted writer resumes from the checkpoint stored in the S3 table: nothing is written twice.
    await event_log.append(Envelope(event=batch("run-0", "acc", 0, [0.5, 0.75]), producer="tests@host"))
    await run_until(event_log, [MetricTableWriter(s3_metrics)])
    assert MetricTables(s3_metrics).count_points() == 3002


async def test_two_writers_racing_for_one_version_cannot_both_commit(s3_metrics: MetricsLocation) -> None:
    """Conditional writes: of two commits of the same Delta version on S3 exactly one lands."""
    import pyarrow as pa
    from deltalake import DeltaTable

    uri = s3_metrics.table_uri("race")
    options = s3_metrics.storage_options
    write_deltalake(uri, pa.table({"x": [0]}), storage_options=options)
    first, second = DeltaTable(uri, storage_options=options), DeltaTable(uri, storage_options=options)
    write_deltalake(first, pa.table({"x": [1]}), mode="append")
    with pytest.raises(CommitFailedError):
        # delta-rs retries a conflicting append on the newer version unless told not to: make it a hard race.
        from deltalake import CommitProperties

        write_deltalake(second, pa.table({"x": [2]}), mode="append",
                        commit_properties=CommitProperties(max_commit_retries=0))
    assert sorted(DeltaTable(uri, storage_options=options).to_pyarrow_table().column("x").to_pylist()) == [0, 1]


def test_bad_metrics_uris_are_refused_with_the_reason() -> None:
    with pytest.raises(MetricTableError, match="bucket and a prefix"):
        metrics_location("s3://only-a-bucket")
    with pytest.raises(MetricTableError, match="expected a local path"):
        metrics_location("gs://bucket/prefix")
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        Settings(metrics_uri="s3://bucket")
    assert metrics_location(Path("relative/metrics")).uri == str(Path("relative/metrics").absolute())
