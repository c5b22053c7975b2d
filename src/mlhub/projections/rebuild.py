"""Replay: rebuild every projection from sequence 1 into a fresh target (a database and a metrics folder)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mlhub.analytics import MetricTables, MetricTableWriter
from mlhub.errors import InvalidInput
from mlhub.eventlog import EventLog
from mlhub.projections.runner import ProjectorRunner, run_projectors
from mlhub.projections.runtime import Projector
from mlhub.projections.sql_projector import SqlDeadLetterSink, SqlProjector
from mlhub.readmodel import create_engine, migrate, tables

#: Called with (events applied so far, target sequence) while a rebuild runs.
Progress = Callable[[int, int], None]


def check_fresh_target(engine: Engine | None, metrics_dir: Path | None) -> None:
    """Refuse a target that already holds projected state (a replay must start from nothing)."""
    if engine is not None:
        with engine.connect() as conn:
            existing = set(sa.inspect(conn).get_table_names())
            if tables.projector_checkpoints.name in existing:
                count = sa.select(sa.func.count()).select_from(tables.projector_checkpoints)
                rows = conn.execute(count).scalar_one()
                if rows:
                    raise InvalidInput(
                        f"replay target {engine.url.render_as_string(hide_password=True)} already holds "
                        f"projections ({rows} projector checkpoints): replay into a fresh, empty database"
                    )
    if metrics_dir is not None and MetricTables(metrics_dir).snapshot().checkpoint > 0:
        raise InvalidInput(f"metrics folder {metrics_dir} already holds metric tables: choose an empty folder")


async def rebuild(
    event_log: EventLog,
    *,
    engine: Engine | None = None,
    metrics_dir: Path | None = None,
    sql_until: int | None = None,
    metrics_until: int | None = None,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Project the log from sequence 1 into `engine` (migrated here) and/or `metrics_dir`, which must be fresh.

    Each part stops at its own target sequence (default: the last stored now). Returns positions by projector.
    """
    last = await event_log.last_sequence()
    jobs: list[tuple[Projector, int]] = []
    if engine is not None:
        await asyncio.to_thread(migrate, engine)
    await asyncio.to_thread(check_fresh_target, engine, metrics_dir)
    if engine is not None:
        jobs.append((SqlProjector(engine), last if sql_until is None else sql_until))
    if metrics_dir is not None:
        jobs.append((MetricTableWriter(metrics_dir), last if metrics_until is None else metrics_until))
    sink = SqlDeadLetterSink(engine) if engine is not None else None
    positions: dict[str, int] = {}
    runners: list[ProjectorRunner] = []
    total = sum(target for _, target in jobs)
    reporter = asyncio.create_task(_report(runners, total, progress)) if progress else None
    try:
        # One projector after the other: side by side they compete for the one interpreter (GIL) and made the
        # client read its socket too slowly for the server (measured: slower in all, and disconnects).
        for projector, target in jobs:
            if target <= 0:
                positions[projector.name] = 0
                continue
            positions.update(await run_projectors(event_log, [projector], until_seq=target, dead_letters=sink,
                                                  max_failures=3, on_start=runners.extend))
    finally:
        if reporter is not None:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
    if progress:
        progress(total, total)
    return positions


async def _report(runners: list[ProjectorRunner], total: int, progress: Progress | None) -> None:
    assert progress is not None
    while True:
        await asyncio.sleep(0.2)
        progress(min(total, sum(runner.position for runner in runners)), total)


def open_target(database_url: str) -> Engine:
    """A writer engine on the replay target database."""
    return create_engine(database_url, writer=True)
