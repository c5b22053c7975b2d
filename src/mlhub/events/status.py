"""The status words of a run, one enum for every fold, projector, API and CLI.

`queued` (a job's run before a worker took it), `running`, and the four ends: `finished`, `failed`, `killed`
(cancelled: by a user, SIGTERM, Ctrl-C, a cancelled job) and `crashed` (its producer went silent: no heartbeat
or other event for MLHUB_RUN_DEAD_AFTER_S; the reaper ended it). A crashed run can be resumed (back to
`running`); the other ends are final.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """The status of a run."""

    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    KILLED = "killed"
    CRASHED = "crashed"

    @property
    def ended(self) -> bool:
        """Whether the run has ended (nothing more may be logged to it, until a crashed run is resumed)."""
        return self in ENDED_RUN_STATUSES


#: The statuses in which a run has ended.
ENDED_RUN_STATUSES = frozenset({RunStatus.FINISHED, RunStatus.FAILED, RunStatus.KILLED, RunStatus.CRASHED})
