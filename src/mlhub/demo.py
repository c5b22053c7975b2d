"""The demo: a scripted run appended to the embedded event log, read back, projected and queried.

Later issues replace this with `mlhub up` plus real training jobs; until then this shows the event log at
work (conditional appends, metric batches, an aggregate read, a replay) and its projections (the SQL read
model and the metric tables, queried through DuckDB).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import Callable

from mlhub.commands.common import event_log_url, open_event_log
from mlhub.errors import ConcurrencyError
from mlhub.eventlog import STREAM_NAME, EventLog
from mlhub.events import (
    ConfigSnapshotted,
    Envelope,
    ExperimentCreated,
    MetricsLogged,
    ParamsLogged,
    RunCreated,
    RunFinished,
    RunStarted,
    SeedRecorded,
    aggregate_subject_filter,
    sha256_of,
)
from mlhub.settings import Settings

DEMO_CONFIG = {"experiment": "demo", "plugin": "scripted", "model": {"lr": 0.01, "hidden": 64}, "seed": 42}


async def _demo(url: str, settings: Settings, echo: Callable[[str], None]) -> None:
    producer = settings.producer
    async with open_event_log(settings, url, "mlhub-demo") as log:
        try:
            await log.append(
                Envelope(event=ExperimentCreated(experiment_id="demo", name="demo"), producer=producer),
                expected_version=0,
            )
            echo("experiment 'demo' created")
        except ConcurrencyError:
            echo("experiment 'demo' exists already")

        run_id = uuid.uuid4().hex
        version = 0
        for event in (
            RunCreated(run_id=run_id, experiment_id="demo", name=f"demo-{run_id[:8]}", source="sdk"),
            ConfigSnapshotted(run_id=run_id, config=DEMO_CONFIG, sha256=sha256_of(DEMO_CONFIG)),
            SeedRecorded(run_id=run_id, seed=42),
            ParamsLogged(run_id=run_id, params={"lr": "0.01", "hidden": "64"}),
            RunStarted(run_id=run_id, attempt=1, worker_id="demo"),
        ):
            version = (await log.append(Envelope(event=event, producer=producer), expected_version=version)).seq

        # Ten epochs of 100 steps: one metric batch event per epoch, appended pipelined.
        now_ms = int(time.time() * 1000)
        batches = []
        for epoch in range(10):
            points = []
            for i in range(100):
                step = epoch * 100 + i
                points.append(("train_loss", 2.3 * math.exp(-step / 300) + 0.05, step, epoch, now_ms + step))
            points.append(("val_acc", 1 - 0.9 * math.exp(-epoch / 3), (epoch + 1) * 100 - 1, epoch, now_ms))
            batches.append(Envelope(event=MetricsLogged.from_points(run_id, points), producer=producer))
        started = time.perf_counter()
        await log.append_many(batches)
        elapsed = time.perf_counter() - started
        npoints = sum(b.event.num_points for b in batches if isinstance(b.event, MetricsLogged))
        echo(f"run {run_id}: {npoints} metric points in {len(batches)} batch events ({elapsed * 1000:.1f} ms)")

        agg = await log.read_aggregate("run", run_id)
        await log.append(
            Envelope(event=RunFinished(run_id=run_id, attempt=1), producer=producer), expected_version=agg.version
        )
        agg = await log.read_aggregate("run", run_id)
        last_val = [
            p.value for r in agg.events if isinstance(r.envelope.event, MetricsLogged)
            for p in r.envelope.event.points() if p.key == "val_acc"
        ][-1]
        echo(f"read back {len(agg.events)} events, version {agg.version}, final val_acc {last_val:.3f}")

        echo(f"events of the run (mlhub events tail --subject '{aggregate_subject_filter('run', run_id)}'):")
        async for rec in log.replay(subject_filter=aggregate_subject_filter("run", run_id)):
            env = rec.envelope
            summary = {"seq": rec.seq, "type": env.type, "event_id": str(env.event_id)}
            if isinstance(env.event, MetricsLogged):
                summary["points"] = env.event.num_points
            echo(json.dumps(summary))
        echo(f"stream {STREAM_NAME} holds {await log.last_sequence()} events in all")
        await _project_and_query(log, settings, run_id, echo)


async def _project_and_query(log: EventLog, settings: Settings, run_id: str, echo: Callable[[str], None]) -> None:
    """Bring the read model and metric tables up to date (unless a running `mlhub projector` does) and query."""
    from mlhub.analytics import MetricTables, QueryEngine
    from mlhub.commands.query import load_readmodel_tables, render
    from mlhub.projections import ProjectorLocked, SqlDeadLetterSink, build_projectors, projector_lock, run_projectors
    from mlhub.readmodel import checkpoints, create_engine, migrate

    target = await log.last_sequence()
    engine = create_engine(settings.resolved_database_url, writer=True)
    try:
        await asyncio.to_thread(migrate, engine)
        try:
            await run_projectors(log, build_projectors(settings, engine), until_seq=target, wait_for_lock=False,
                                 locks=lambda name: projector_lock(engine, name), max_failures=3,
                                 dead_letters=SqlDeadLetterSink(engine))
        except ProjectorLocked:
            echo("a running `mlhub projector` owns the projections: waiting for it to catch up")
            while True:
                with engine.connect() as conn:
                    sql_at = checkpoints(conn).get("sql", 0)
                if sql_at >= target and MetricTables(settings.metrics_dir).snapshot().checkpoint >= target:
                    break
                await asyncio.sleep(0.2)
    finally:
        engine.dispose()
    echo(f"projected up to seq {target}: read model {settings.resolved_database_url}, "
         f"metric tables {settings.metrics_dir}")
    sql = ("SELECT r.name, r.status, s.key, s.count AS points, round(s.min_value, 4) AS min, "
           "round(s.max_value, 4) AS max, round(s.last_value, 4) AS last FROM runs r "
           f"JOIN metric_summary s USING (run_id) WHERE r.run_id = '{run_id}' ORDER BY s.key")
    echo(f"mlhub query \"{sql}\"")
    with QueryEngine(settings.metrics_dir, load_readmodel_tables(settings.resolved_database_url)) as query:
        echo(render(query.query(sql), "table").rstrip())


def run_demo(settings: Settings, echo: Callable[[str], None]) -> None:
    """Run the demo against MLHUB_NATS_URL, or the embedded server (started for the demo if not running)."""
    with event_log_url(settings) as url:
        echo(f"event log at {url} (data dir {settings.data_dir.resolve()})")
        asyncio.run(_demo(url, settings, echo))
