"""Tracking commands that MLflow's model needs beside mlhub's own: experiments (create with tags, rename,
delete, restore, tags), run deletion and restoration, renaming, tag removal, dataset inputs and logged models,
and whole runs imported from another store with their original times (`mlhub import mlflow`).

They are part of `TrackingService` (a mixin): the same guarded appends, the same run-state cache, the same
producer. A run command is guarded by the run's version; an experiment command by the experiment's.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlhub.errors import ConcurrencyError
from mlhub.events import (
    DatasetVersionRecorded,
    DomainEvent,
    Envelope,
    ExperimentCreated,
    ExperimentDeleted,
    ExperimentRenamed,
    ExperimentRestored,
    ExperimentTagsSet,
    LoggedModelRecorded,
    RunDeleted,
    RunRenamed,
    RunRestored,
    TagsDeleted,
    aggregate_subject_filter,
    experiment_id_for,
    key_problem,
)
from mlhub.tracking.errors import BadTrackingRequest, RunNotFound, TrackingError
from mlhub.tracking.state import RunState

if TYPE_CHECKING:
    from mlhub.eventlog import EventLog
    from mlhub.tracking.limits import TrackingLimits
    from mlhub.tracking.service import Written
    from mlhub.tracking.state import RunStates

_RETRIES = 20
#: Events of one atomic batch of an imported run (well under the event log's 1,000) and its bytes.
IMPORT_BATCH_EVENTS = 200
IMPORT_BATCH_BYTES = 4 * 1024 * 1024


class ExperimentNotFound(TrackingError):
    """No experiment of that id (404)."""

    code = "RESOURCE_DOES_NOT_EXIST"


class ExperimentExists(TrackingError):
    """An experiment of that name exists already (MLflow's RESOURCE_ALREADY_EXISTS)."""

    code = "RESOURCE_ALREADY_EXISTS"


class ExperimentDeletedError(TrackingError):
    """The experiment is deleted: restore it first (MLflow refuses runs in a deleted experiment)."""

    code = "INVALID_STATE"


@dataclass(frozen=True)
class ExperimentState:
    """An experiment as its events tell it."""

    experiment_id: str
    exists: bool = False
    name: str | None = None
    deleted: bool = False
    tags: Mapping[str, str] | None = None
    version: int = 0


async def experiment_state(event_log: EventLog, experiment_id: str) -> ExperimentState:
    """Fold an experiment's few events (created, renamed, deleted, restored, tags)."""
    recorded = await event_log.read_aggregate("experiment", experiment_id)
    exists, name, deleted, tags = False, None, False, dict[str, str]()
    for r in recorded.events:
        e = r.envelope.event
        if isinstance(e, ExperimentCreated):
            exists, name, tags = True, e.name, dict(e.tags)
        elif isinstance(e, ExperimentRenamed):
            name = e.name
        elif isinstance(e, ExperimentDeleted | ExperimentRestored):
            deleted = isinstance(e, ExperimentDeleted)
        elif isinstance(e, ExperimentTagsSet):
            tags = {**{k: v for k, v in tags.items() if k not in e.removed}, **e.tags}
    return ExperimentState(experiment_id, exists, name, deleted, tags, recorded.version)


def _check_tags(tags: Mapping[str, str], what: str) -> None:
    for key, value in tags.items():
        why = key_problem(key)
        if why is not None:
            raise BadTrackingRequest(f"{what} tag key {key!r} {why}", details={"keys": [key]})
        if not isinstance(value, str) or len(value) > 8000:
            raise BadTrackingRequest(f"{what} tag {key!r}: the value must be a string of at most 8000 characters",
                                     details={"keys": [key]})


class RunEdits:
    """The commands of this module; mixed into TrackingService."""

    if TYPE_CHECKING:
        event_log: EventLog
        states: RunStates
        limits: TrackingLimits

        def _envelope(self, event: DomainEvent, event_id: uuid.UUID | None = None,
                      correlation_id: str | None = None) -> Envelope: ...

        async def _end(self, run_id: str, make: Callable[[RunState], DomainEvent], *,
                       allowed: Callable[[RunState], None] | None = None) -> Written: ...

        def _remember(self, run_id: str, state: RunState, events: Sequence[DomainEvent],
                      seqs: Sequence[int]) -> None: ...

    # -- experiments --------------------------------------------------------------------------------------

    async def _experiment_append(self, experiment_id: str, make: Callable[[ExperimentState], list[DomainEvent]],
                                 *, must_exist: bool = True) -> Written:
        from mlhub.tracking.service import Written

        for _ in range(_RETRIES):
            state = await experiment_state(self.event_log, experiment_id)
            if must_exist and not state.exists:
                raise ExperimentNotFound(f"no experiment {experiment_id!r}", details={"experiment_id": experiment_id})
            events = make(state)
            if not events:
                return Written("", [state.version], duplicate=True, experiment_id=experiment_id)
            envelopes = [self._envelope(e) for e in events]
            try:
                results = await self.event_log.append_atomic(
                    envelopes, guards={0: (aggregate_subject_filter("experiment", experiment_id), state.version)})
            except ConcurrencyError:
                continue
            return Written("", [r.seq for r in results], experiment_id=experiment_id)
        raise ConcurrencyError(f"experiment {experiment_id} kept changing; retry")

    async def create_experiment(self, name: str, *, tags: Mapping[str, str] | None = None) -> Written:
        """Create an experiment (with tags); ExperimentExists when one of that name (id) exists."""
        if not name.strip() or len(name) > 200:
            raise BadTrackingRequest("experiment name: must be a non-blank name of at most 200 characters",
                                     details={"field": "name"})
        tags = dict(tags or {})
        _check_tags(tags, "experiment")
        experiment_id = experiment_id_for(name)

        def make(state: ExperimentState) -> list[DomainEvent]:
            if state.exists:
                raise ExperimentExists(f"an experiment named {state.name!r} exists already (id {experiment_id})"
                                       if state.name == name else
                                       f"experiment id {experiment_id!r} belongs to the experiment named "
                                       f"{state.name!r}: choose another name", details={"experiment_id": experiment_id})
            return [ExperimentCreated(experiment_id=experiment_id, name=name, tags=tags)]
        return await self._experiment_append(experiment_id, make, must_exist=False)

    async def rename_experiment(self, experiment_id: str, name: str) -> Written:
        """Give an experiment a new name (its id stays)."""
        if not name.strip() or len(name) > 200:
            raise BadTrackingRequest("new_name: must be a non-blank name of at most 200 characters",
                                     details={"field": "new_name"})
        return await self._experiment_append(experiment_id, lambda s: [] if s.name == name else [
            ExperimentRenamed(experiment_id=experiment_id, name=name)])

    async def delete_experiment(self, experiment_id: str) -> Written:
        """Delete an experiment (soft: it can be restored)."""
        return await self._experiment_append(experiment_id, lambda s: [] if s.deleted else [
            ExperimentDeleted(experiment_id=experiment_id)])

    async def restore_experiment(self, experiment_id: str) -> Written:
        """Restore a deleted experiment."""
        return await self._experiment_append(experiment_id, lambda s: [] if not s.deleted else [
            ExperimentRestored(experiment_id=experiment_id)])

    async def set_experiment_tags(self, experiment_id: str, tags: Mapping[str, str],
                                  removed: Sequence[str] = ()) -> Written:
        """Set (or remove) tags of an experiment."""
        _check_tags(tags, "experiment")
        return await self._experiment_append(experiment_id, lambda s: [
            ExperimentTagsSet(experiment_id=experiment_id, tags=dict(tags), removed=tuple(removed))])

    async def open_experiment(self, experiment_id: str) -> ExperimentState:
        """The experiment a new run goes into: it must exist and not be deleted."""
        state = await experiment_state(self.event_log, experiment_id)
        if not state.exists:
            raise ExperimentNotFound(f"no experiment {experiment_id!r}", details={"experiment_id": experiment_id})
        if state.deleted:
            raise ExperimentDeletedError(f"experiment {experiment_id!r} is deleted: restore it to add runs",
                                         details={"experiment_id": experiment_id})
        return state

    # -- runs ---------------------------------------------------------------------------------------------

    async def delete_run(self, run_id: str) -> Written:
        """Delete a run (soft: hidden from searches by default; it can be restored). Any status."""
        return await self._end(run_id, lambda s: RunDeleted(run_id=run_id), allowed=lambda s: None)

    async def restore_run(self, run_id: str) -> Written:
        """Restore a deleted run."""
        return await self._end(run_id, lambda s: RunRestored(run_id=run_id), allowed=lambda s: None)

    async def rename_run(self, run_id: str, name: str) -> Written:
        """Give a run a new name (any status: a name is not something the run logged)."""
        if not name.strip() or len(name) > 250:
            raise BadTrackingRequest("run name: must be a non-blank name of at most 250 characters",
                                     details={"field": "run_name"})
        return await self._end(run_id, lambda s: RunRenamed(run_id=run_id, name=name), allowed=lambda s: None)

    async def delete_tags(self, run_id: str, keys: Sequence[str]) -> Written:
        """Remove tags of an open run (like setting them, refused once the run ended)."""
        if not keys:
            raise BadTrackingRequest("give the keys of the tags to delete", details={"field": "key"})
        return await self._end(run_id, lambda s: TagsDeleted(run_id=run_id, keys=tuple(keys)))

    async def log_inputs(self, run_id: str, datasets: Sequence[DatasetVersionRecorded]) -> Written:
        """Record the datasets an open run used (MLflow's log_inputs), all or none."""
        if not datasets or any(d.run_id != run_id for d in datasets):
            raise BadTrackingRequest("log_inputs: give datasets of this run", details={"field": "datasets"})
        return await self._guarded(run_id, list(datasets), open_only=True)

    async def record_logged_model(self, event: LoggedModelRecorded) -> Written:
        """Record (the new state of) a model the run logged; any status of the run (finalizing or tagging a
        model may come after its run ended)."""
        return await self._guarded(event.run_id, [event], open_only=False)

    async def _guarded(self, run_id: str, events: list[DomainEvent], *, open_only: bool) -> Written:
        from mlhub.tracking.service import Written

        async with self.states.lock(run_id):
            for attempt in range(_RETRIES):
                state = await self.states.get(run_id, reload=attempt > 0)
                if not state.lifecycle.created:
                    raise RunNotFound(f"no run {run_id!r} was created", details={"run_id": run_id})
                if open_only and state.lifecycle.ended:
                    from mlhub.tracking.errors import RunEnded

                    raise RunEnded(f"run {run_id} has ended ({state.lifecycle.status}): nothing more can be "
                                   "logged to it", state=str(state.lifecycle.status), seq=state.version)
                envelopes = [self._envelope(e) for e in events]
                try:
                    results = await self.event_log.append_atomic(
                        envelopes, guards={0: (aggregate_subject_filter("run", run_id), state.version)})
                except ConcurrencyError:
                    continue
                seqs = [r.seq for r in results]
                self._remember(run_id, state, events, seqs)
                return Written(run_id, seqs)
        raise ConcurrencyError(f"run {run_id} kept changing; retry")

    # -- history ------------------------------------------------------------------------------------------

    async def import_history(self, aggregate_type: str, aggregate_id: str,
                             envelopes: Sequence[Envelope]) -> tuple[int, int]:
        """Append an aggregate's whole history from another store (each envelope with its original time and
        an id derived from the source's ids), as atomic batches in order; resumable and idempotent: the events
        already stored (found by id) are skipped, and the rest follows them. Returns (appended, skipped).

        The aggregate must hold only these events: an aggregate with other events (not from this import) is
        refused, so an import never interleaves with live writes of the same run."""
        if not envelopes:
            return 0, 0
        subject = aggregate_subject_filter(aggregate_type, aggregate_id)
        ids = [str(e.event_id) for e in envelopes]
        for _ in range(_RETRIES):
            version = await self.event_log.last_sequence(subject)
            stored = await self.event_log.find_events(subject, ids) if version else {}
            done = 0
            while done < len(ids) and ids[done] in stored:
                done += 1
            if version and (not stored or done < len(stored)):
                raise ImportConflict(f"{aggregate_type} {aggregate_id} exists in this hub with events that this "
                                     "import did not make: it is not imported over them",
                                     details={"aggregate": aggregate_type, "id": aggregate_id})
            todo = list(envelopes[done:])
            try:
                while todo:
                    batch: list[Envelope] = []
                    size = 0
                    while todo and len(batch) < IMPORT_BATCH_EVENTS and (
                            not batch or size + _size(todo[0]) <= IMPORT_BATCH_BYTES):
                        size += _size(todo[0])
                        batch.append(todo.pop(0))
                    results = await self.event_log.append_atomic(batch, guards={0: (subject, version)})
                    version = max(r.seq for r in results)
            except ConcurrencyError:
                continue  # someone appended meanwhile (another import of the same source): look again
            if aggregate_type == "run":
                self.states.forget(aggregate_id)
            return len(ids) - done, done
        raise ConcurrencyError(f"{aggregate_type} {aggregate_id} kept changing while it was imported; retry")


class ImportConflict(TrackingError):
    """An imported aggregate exists with events that the import did not make (409)."""

    code = "IDEMPOTENCY_KEY_REUSED"


def _size(envelope: Envelope) -> int:
    return len(envelope.event.model_dump_json(round_trip=True)) + 400
