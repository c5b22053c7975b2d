"""`mlhub projector`: migrate the read model, then run every projector in the foreground until Ctrl-C/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING

import click

from mlhub.commands.common import event_log_url, fail, load_settings, open_event_log
from mlhub.errors import MlhubError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from mlhub.eventlog import EventLog
    from mlhub.projections import ProjectorRunner
    from mlhub.settings import Settings


@click.command("projector")
@click.option("--no-wait", is_flag=True,
              help="Exit with an error when another instance runs a projector (default: wait as a standby and "
                   "take over when it stops).")
@click.option("--until-caught-up", is_flag=True,
              help="Apply everything stored now, then exit (instead of following the stream).")
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=1000, show_default=True,
              help="Most events applied in one transaction.")
@click.option("--status-every", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds between progress lines on stderr (0: none).")
@click.option("--only", "only", multiple=True, metavar="NAME",
              help="Run only this projector (repeatable; e.g. --only sql, --only metrics). Projectors in separate "
                   "processes do not share a Python interpreter lock: `mlhub up` runs sql and metrics apart.")
def projector(no_wait: bool, until_caught_up: bool, batch_size: int, status_every: float,
              only: tuple[str, ...]) -> None:
    """Build the read models from the event log: the SQL read model and every registered projector.

    Runs `alembic upgrade head` on the read model first (MLHUB_DATABASE_URL, default SQLite in MLHUB_DATA_DIR),
    then follows the event log (MLHUB_NATS_URL, or the embedded server) from each projector's checkpoint.
    Only one instance per projector writes: a second one waits until the first stops (or, --no-wait, exits).
    Every MLHUB_SEAL_INTERVAL_S seconds (default 60) it also appends an audit seal over the new events, and every
    MLHUB_COMPACT_INTERVAL_S seconds (default 60) it compacts the metric tables' small files.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    try:
        with event_log_url(settings) as url:
            positions = _run_in_loop(settings, url, no_wait=no_wait, until_caught_up=until_caught_up,
                                     batch_size=batch_size, status_every=status_every, only=only)
    except MlhubError as e:
        fail(e)
    if positions is not None:
        click.echo(", ".join(f"{name}: seq {seq}" for name, seq in positions.items()))


def _run_in_loop(
    settings: Settings, url: str, *, no_wait: bool, until_caught_up: bool, batch_size: int, status_every: float,
    only: tuple[str, ...] = (),
) -> dict[str, int] | None:
    async def main() -> dict[str, int] | None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await _serve(settings, url, no_wait=no_wait, until_caught_up=until_caught_up,
                                batch_size=batch_size, status_every=status_every, only=only)
        except asyncio.CancelledError:
            click.echo("projectors stopped", err=True)
            return None

    return asyncio.run(main())


async def _serve(
    settings: Settings, url: str, *, no_wait: bool, until_caught_up: bool, batch_size: int, status_every: float,
    only: tuple[str, ...] = (),
) -> dict[str, int]:
    from mlhub.eventlog import run_sealer
    from mlhub.projections import (
        SqlDeadLetterSink,
        build_projectors,
        projector_lock,
        run_projectors,
    )
    from mlhub.readmodel import create_engine, migrate

    engine = create_engine(settings.resolved_database_url, writer=True)
    try:
        await asyncio.to_thread(migrate, engine)
        projectors = build_projectors(settings, engine)
        if only:
            known = [p.name for p in projectors]
            unknown = sorted(set(only) - set(known))
            if unknown:
                raise click.BadParameter(f"no projector named {', '.join(unknown)} (projectors: {', '.join(known)})",
                                         param_hint="--only")
            projectors = [p for p in projectors if p.name in only]
        names = {p.name for p in projectors}
        async with open_event_log(settings, url, "mlhub-projector") as event_log:
            until = await event_log.last_sequence() if until_caught_up else None
            runners: list[ProjectorRunner] = []
            reporter = asyncio.create_task(_report(event_log, runners, status_every))
            stop_sealing = asyncio.Event()
            housekeeping: list[asyncio.Task[None]] = []
            # Sealing goes with the SQL projector, compaction with the metric tables (once each when split).
            if settings.seal_interval_s > 0 and not until_caught_up and "sql" in names:
                housekeeping.append(asyncio.create_task(run_sealer(
                    event_log, producer=settings.producer, interval_s=settings.seal_interval_s, stop=stop_sealing)))
            if settings.compact_interval_s > 0 and not until_caught_up and "metrics" in names:
                housekeeping.append(asyncio.create_task(_compact_periodically(settings)))
            # The reaper reads its candidates from the SQL read model, so it goes with the SQL projector.
            if not until_caught_up and "sql" in names:
                housekeeping.append(asyncio.create_task(_reap(settings, event_log, engine, stop_sealing)))
            try:
                return await run_projectors(
                    event_log, projectors, until_seq=until, locks=lambda name: projector_lock(engine, name),
                    wait_for_lock=not no_wait, dead_letters=SqlDeadLetterSink(engine), max_batch=batch_size,
                    on_start=runners.extend,
                )
            finally:
                reporter.cancel()
                stop_sealing.set()
                for task in housekeeping:
                    task.cancel()
    finally:
        engine.dispose()


async def _reap(settings: Settings, event_log: EventLog, engine: Engine, stop: asyncio.Event) -> None:
    """The reaper (mlhub.tracking.Reaper) with one active instance: it takes the "reaper" lock (as a projector
    takes its own), waits as a standby while another instance holds it, and ends silent runs as crashed."""
    from mlhub.projections import ProjectorLockLost, projector_lock
    from mlhub.tracking import Reaper, TrackingService

    log = logging.getLogger(__name__)
    lock = projector_lock(engine, "reaper")
    service = TrackingService(event_log, producer=f"reaper@{settings.producer}")
    reaper = Reaper(event_log, engine, service, dead_after_s=settings.run_dead_after_s,
                    interval_s=settings.reaper_interval_s)
    try:
        while not await asyncio.to_thread(lock.try_acquire):
            await asyncio.sleep(settings.reaper_interval_s)
        log.info("reaper: active (runs silent for %g s end as crashed)", settings.run_dead_after_s)
        while not stop.is_set():
            try:
                await asyncio.to_thread(lock.check)
                await reaper.sweep()
            except ProjectorLockLost:
                log.error("reaper: lost its lock; stopping")
                return
            except MlhubError as e:
                log.warning("reaper: a sweep failed (%s); trying again", e)
            try:
                await asyncio.wait_for(stop.wait(), timeout=settings.reaper_interval_s)
            except TimeoutError:
                pass
    finally:
        await asyncio.to_thread(lock.release)


async def _compact_periodically(settings: Settings) -> None:
    """Compact the metric tables' small files every MLHUB_COMPACT_INTERVAL_S (one atomic commit per bucket)."""
    from mlhub.analytics import MetricTables, location_from_settings

    tables = MetricTables(location_from_settings(settings))
    while True:
        await asyncio.sleep(settings.compact_interval_s)
        try:
            result = await asyncio.to_thread(tables.compact)
        except MlhubError as e:
            logging.getLogger(__name__).warning("metric table compaction failed: %s", e)
            continue
        if result.files_removed:
            logging.getLogger(__name__).info(
                "compacted %d metric buckets: %d files -> %d (%d rows)%s", len(result.partitions),
                result.files_removed, result.files_added, result.rows,
                f", skipped {result.skipped} (written meanwhile)" if result.skipped else "")


async def _report(event_log: EventLog, runners: list[ProjectorRunner], every: float) -> None:
    """A progress line per projector every `every` seconds: position, lag, events applied, dead letters."""
    if every <= 0:
        return
    while True:
        await asyncio.sleep(every)
        try:
            last = await event_log.last_sequence()
        except MlhubError:
            continue
        for runner in runners:
            click.echo(f"projector {runner.name}: at seq {runner.position}, lag {max(0, last - runner.position)}, "
                       f"applied {runner.applied}, dead letters {runner.dead_lettered}", err=True)
