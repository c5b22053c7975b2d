"""Projector runtime (checkpoint, batching, dead letters) and the projectors.

Imports events, eventlog, readmodel and analytics of mlhub.

    engine = create_engine(url, writer=True); migrate(engine)
    await run_until(event_log, [SqlProjector(engine)])          # catch up to the stream's last event, return
    await run_projectors(event_log, projectors, locks=..., ...)  # follow the stream until cancelled
"""

from mlhub.projections.locks import (
    AdvisoryLock,
    FileLock,
    ProjectorLock,
    ProjectorLocked,
    ProjectorLockLost,
    projector_lock,
)
from mlhub.projections.registry import EXTRA_PROJECTORS, ProjectorFactory, build_projectors
from mlhub.projections.runner import (
    LockFactory,
    ProjectorFailed,
    ProjectorRunner,
    decode_batch,
    projector_lag,
    run_projectors,
    run_until,
)
from mlhub.projections.runtime import (
    Batch,
    BufferingProjector,
    DeadLetter,
    DeadLetterSink,
    Incoming,
    Projector,
    event_type_of_subject,
)
from mlhub.projections.sql_changes import ProjectionConflict, ReadModelChanges
from mlhub.projections.sql_projector import SqlDeadLetterSink, SqlProjector, record_dead_letters

__all__ = [
    "EXTRA_PROJECTORS",
    "AdvisoryLock",
    "Batch",
    "BufferingProjector",
    "DeadLetter",
    "DeadLetterSink",
    "FileLock",
    "Incoming",
    "LockFactory",
    "ProjectionConflict",
    "Projector",
    "ProjectorFactory",
    "ProjectorFailed",
    "ProjectorLock",
    "ProjectorLockLost",
    "ProjectorLocked",
    "ProjectorRunner",
    "ReadModelChanges",
    "SqlDeadLetterSink",
    "SqlProjector",
    "build_projectors",
    "decode_batch",
    "event_type_of_subject",
    "projector_lag",
    "projector_lock",
    "record_dead_letters",
    "run_projectors",
    "run_until",
]
