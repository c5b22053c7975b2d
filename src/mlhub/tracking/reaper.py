"""The reaper: every run ends. A running run whose producer went silent (a SIGKILLed script, a lost host) is
ended as `crashed` once nothing of it was stored for MLHUB_RUN_DEAD_AFTER_S.

"Something of it" is any event of the run (metric batches, params, the SDK's heartbeats) and, for a job's run,
any event of its job (the worker's job heartbeats). Times are the stream's own store times (one clock, the
server's), never a producer's. Candidates come from the read model (`runs.status = 'running'`, which may lag);
the decision is made on the log: the run's last event, and the crash is appended guarded by the version the
reaper saw, so a run that logged anything in between is left alone. `mlhub projector` runs one active reaper
(a lock like the projectors'; a second instance waits as a standby).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mlhub.eventlog import EventLog
from mlhub.events import RunStatus, aggregate_subject_filter
from mlhub.readmodel import tables as t
from mlhub.tracking.service import TrackingService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Crashed:
    """A run the reaper ended."""

    run_id: str
    silent_s: float
    seq: int


def running_runs(engine: Engine) -> list[tuple[str, str | None]]:
    """(run id, job id) of every run the read model shows running."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.runs.c.run_id, t.runs.c.job_id)
                            .where(t.runs.c.status == RunStatus.RUNNING.value)).all()
    return [(str(r.run_id), r.job_id) for r in rows]


class Reaper:
    """Ends silent running runs as crashed."""

    def __init__(self, event_log: EventLog, engine: Engine, service: TrackingService, *, dead_after_s: float,
                 interval_s: float) -> None:
        self.event_log = event_log
        self.engine = engine
        self.service = service
        self.dead_after_s = dead_after_s
        #: Seconds between sweeps (the caller's loop; `mlhub projector` runs one every MLHUB_REAPER_INTERVAL_S).
        self.interval_s = interval_s

    async def sweep(self, now: datetime | None = None) -> list[Crashed]:
        """One pass over the running runs; the ones it ended."""
        now = now or datetime.now(UTC)
        ended: list[Crashed] = []
        for run_id, job_id in await asyncio.to_thread(running_runs, self.engine):
            last = await self.event_log.last_stored_at(aggregate_subject_filter("run", run_id))
            if last is None:
                continue
            seq, at = last
            if job_id:
                job_last = await self.event_log.last_stored_at(aggregate_subject_filter("job", job_id))
                if job_last is not None:
                    at = max(at, job_last[1])
            silent = (now - at).total_seconds()
            if silent < self.dead_after_s:
                continue
            reason = (f"nothing of the run{' or its job' if job_id else ''} was stored for {silent:.1f} s "
                      f"(MLHUB_RUN_DEAD_AFTER_S={self.dead_after_s:g}): its process was killed or lost")
            written = await self.service.crash(run_id, observed_version=seq, silent_s=silent, reason=reason)
            if written is not None:
                log.warning("reaper: run %s crashed: %s", run_id, reason)
                ended.append(Crashed(run_id, silent, written.seq))
        return ended
