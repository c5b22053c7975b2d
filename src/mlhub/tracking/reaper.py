"""The reaper: every run ends. A running run whose producer went silent (a SIGKILLed script, a lost host) is
ended as `crashed` once nothing of it was stored for MLHUB_RUN_DEAD_AFTER_S.

"Something of it" is any event of the run (metric batches, params, the SDK's heartbeats) and, for a job's run,
any event of its job (the worker's job heartbeats). Times are the stream's own store times (one clock, the
server's), never a producer's. Candidates come from the read model (`runs.status = 'running'`, which may lag);
the decision is made on the log: the run's last event, and the crash is appended guarded by the version the
reaper saw, so a run that logged anything in between is left alone. `mlhub projector` runs one active reaper
(a lock like the projectors'; a second instance waits as a standby).

The log is asked only about runs that may be silent: a lookup fetches the run's last message, which for a
logging run is a metric batch of up to a few hundred KB. The read model says how far each running run has got
(the largest `last_seq` of its row, its metric summaries and its job); a run that got further since the last
sweep stored something within about one sweep interval, so it is skipped, and one that did not is looked up
once its last lookup (or the sweep that saw it move) is MLHUB_RUN_DEAD_AFTER_S old. A run the reaper has not
seen before (a new reaper, after a restart) is looked up at once.
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


def running_runs(engine: Engine) -> list[tuple[str, str | None, int]]:
    """(run id, job id, progress) of every run the read model shows running; progress is the largest stream
    sequence the read model applied to the run (its row, its metric summaries, its job)."""
    ms, jobs = t.metric_summaries, t.jobs
    metrics = sa.select(sa.func.max(ms.c.last_seq)).where(ms.c.run_id == t.runs.c.run_id).scalar_subquery()
    job = sa.select(sa.func.max(jobs.c.last_seq)).where(jobs.c.job_id == t.runs.c.job_id).scalar_subquery()
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.runs.c.run_id, t.runs.c.job_id, t.runs.c.last_seq,
                                      metrics.label("metrics_seq"), job.label("job_seq"))
                            .where(t.runs.c.status == RunStatus.RUNNING.value)).all()
    return [(str(r.run_id), r.job_id, max(int(r.last_seq), int(r.metrics_seq or 0), int(r.job_seq or 0)))
            for r in rows]


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
        #: run id -> (read-model progress, when the run was last known alive: its last event's store time from
        #: a lookup, or the time of the sweep that saw the progress move)
        self._seen: dict[str, tuple[int, datetime]] = {}
        #: Lookups on the log so far (runs that may have been silent).
        self.lookups = 0

    async def sweep(self, now: datetime | None = None) -> list[Crashed]:
        """One pass over the running runs; the ones it ended."""
        now = now or datetime.now(UTC)
        ended: list[Crashed] = []
        running = await asyncio.to_thread(running_runs, self.engine)
        self._seen = {run_id: self._seen[run_id] for run_id, _, _ in running if run_id in self._seen}
        for run_id, job_id, progress in running:
            known = self._seen.get(run_id)
            if known is not None:
                if known[0] != progress:  # it got further since the last sweep: alive
                    self._seen[run_id] = (progress, now)
                    continue
                if (now - known[1]).total_seconds() < self.dead_after_s:
                    continue
            self.lookups += 1
            last = await self.event_log.last_stored_at(aggregate_subject_filter("run", run_id))
            if last is None:
                continue
            seq, at = last
            if job_id:
                job_last = await self.event_log.last_stored_at(aggregate_subject_filter("job", job_id))
                if job_last is not None:
                    at = max(at, job_last[1])
            self._seen[run_id] = (progress, at)
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
