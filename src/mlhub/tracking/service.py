"""The tracking service: the one write side of run tracking for every producer (REST, the MLflow-compatible
API, SDK resends, the reaper, `mlhub runs end`).

Every command is checked whole before its first append and appends what it must store together as one
atomic batch (mlhub.eventlog.EventLog.append_atomic) or one guarded event: a request is stored entirely or
not at all. Every append is guarded by the run's version (RunStates), so nothing lands on a run that ended in
between, and a param keeps its first value. Client keys (`request_id`, `batch_id`, `upload_id`) make a resent
request store nothing new: event ids are derived from the key, the stream drops a duplicate within its
window, and a duplicate's stored payload is compared with the request's, so a key reused with another body
is refused (IDEMPOTENCY_KEY_REUSED) instead of being dropped in silence.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

from mlhub.errors import ConcurrencyError, MlhubError
from mlhub.eventlog import AppendResult, EventLog
from mlhub.events import (
    POINTS_PER_EVENT,
    SUBJECT_PREFIX,
    ArtifactStored,
    DomainEvent,
    Envelope,
    MetricSeries,
    MetricsLogged,
    ParamsLogged,
    RunCancelled,
    RunCrashed,
    RunCreated,
    RunFailed,
    RunFinished,
    RunHeartbeat,
    RunResumed,
    RunStarted,
    RunStatus,
    TagsSet,
    aggregate_subject_filter,
    experiment_id_for,
    experiment_to_create,
    job_status,
    run_lifecycle,
)
from mlhub.events.ids import batch_event_id, derived_id, run_id_for_request, upload_event_id
from mlhub.tracking.edits import RunEdits
from mlhub.tracking.errors import (
    BadTrackingRequest,
    IdempotencyKeyReused,
    InvalidRunState,
    LimitExceeded,
    ParamValueChanged,
    RunEnded,
    RunNotFound,
    TrackingError,
)
from mlhub.tracking.limits import TrackingLimits
from mlhub.tracking.state import MARK_EVENTS, RunState, RunStates
from mlhub.tracking.validation import SeriesInput, check_request

#: A run's params or tags are cut into events of at most this many bytes (the log takes 1 MiB a message).
_CHUNK_BYTES = 512 * 1024
#: How often a command re-reads a run that another writer moved meanwhile before it gives up.
_RETRIES = 20
EndStatus = RunStatus
DeclaredMetrics = Callable[[], Awaitable[Collection[str]]]


@dataclass(frozen=True)
class Written:
    """What a command appended: stream sequences (read with min_seq=seq) and whether it was all stored before
    (a resent request: nothing new)."""

    run_id: str
    seqs: list[int] = field(default_factory=list)
    duplicate: bool = False
    points: int = 0
    experiment_id: str | None = None
    event_id: str | None = None

    @property
    def seq(self) -> int:
        """The last sequence written (or, for a request that appended nothing new, the run's version)."""
        return max(self.seqs) if self.seqs else 0


def _comparable(event: DomainEvent, server_stamps: bool) -> str:
    """An event's payload as JSON for comparing a resend with what is stored (NaN equals NaN there)."""
    if server_stamps and isinstance(event, MetricsLogged):
        event = event.model_copy(update={"series": tuple(s.model_copy(update={"timestamps": ()})
                                                         for s in event.series)})
    return event.model_dump_json(round_trip=True)


@dataclass
class PendingBatch:
    """A log-batch request waiting for (or in) a group commit of its run."""

    run_id: str
    params: dict[str, str]
    tags: dict[str, str]
    series: Sequence[SeriesInput]
    batch_id: uuid.UUID | None
    points: int
    now_ms: int
    #: (the attempt they were built for, the metric envelopes, their wire forms)
    metrics: tuple[int, list[Envelope], list[bytes | None]]
    future: asyncio.Future[Written]
    envelopes: list[Envelope] = field(default_factory=list)
    encoded: list[bytes | None] = field(default_factory=list)


def _chunked(ready: list[PendingBatch], max_events: int, one_by_one: bool) -> list[list[PendingBatch]]:
    """Requests grouped, in order, into atomic batches of at most max_events events (one request a batch when
    one_by_one)."""
    chunks: list[list[PendingBatch]] = []
    size = 0
    for p in ready:
        if not chunks or one_by_one or size + len(p.envelopes) > max_events:
            chunks.append([])
            size = 0
        chunks[-1].append(p)
        size += len(p.envelopes)
    return chunks


def _chunks(values: Mapping[str, str]) -> list[dict[str, str]]:
    chunks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    size = 0
    for key, value in values.items():
        item = len(key.encode()) + len(value.encode()) + 8
        if current and size + item > _CHUNK_BYTES:
            chunks.append(current)
            current, size = {}, 0
        current[key] = value
        size += item
    if current:
        chunks.append(current)
    return chunks


def _batch_guards(run_id: str, envelopes: Sequence[Envelope], version: int,
                  marks: tuple[int, ...] | None) -> dict[int, tuple[str, int]]:
    """The guards of an atomic batch of a run's events: the run's version on the first, or, for a batch of
    metric events only with one event for each of MARK_EVENTS, the last sequence of each of those lifecycle
    subjects on one event each. The first refuses any other writer's event in between; the second only an end
    or a new attempt, so metric batches of two writers of one run (two API processes) do not refuse each other
    (nothing else of the run's state decides a metric batch)."""
    if marks is None or len(envelopes) < len(MARK_EVENTS) or not all(
            isinstance(e.event, MetricsLogged) for e in envelopes):
        return {0: (aggregate_subject_filter("run", run_id), version)}
    base = f"{SUBJECT_PREFIX}.run.{run_id}"
    return {i: (f"{base}.{name}", seq) for i, (name, seq) in enumerate(zip(MARK_EVENTS, marks, strict=True))}


def metric_events(run_id: str, series: Sequence[SeriesInput], attempt: int, now_ms: int) -> list[MetricsLogged]:
    """Cut checked series into run.metrics_logged events of at most POINTS_PER_EVENT points (a key once per
    event); the columns are not validated again (check_request did)."""
    chunks: list[MetricSeries] = []
    for s in series:
        n = len(s.values)
        steps = s.steps if s.steps is not None else [0] * n
        epochs = s.epochs if s.epochs is not None else [0] * n
        stamps = s.timestamps if s.timestamps is not None else [now_ms] * n
        for start in range(0, n, POINTS_PER_EVENT):
            end = start + POINTS_PER_EVENT
            chunks.append(MetricSeries.model_construct(
                key=s.key, values=tuple(s.values[start:end]), steps=tuple(steps[start:end]),
                epochs=tuple(epochs[start:end]), timestamps=tuple(stamps[start:end])))
    events: list[MetricsLogged] = []
    current: list[MetricSeries] = []
    size = 0
    for chunk in chunks:
        if current and (size + len(chunk.values) > POINTS_PER_EVENT or any(c.key == chunk.key for c in current)):
            events.append(MetricsLogged.model_construct(run_id=run_id, series=tuple(current), attempt=attempt))
            current, size = [], 0
        current.append(chunk)
        size += len(chunk.values)
    if current:
        events.append(MetricsLogged.model_construct(run_id=run_id, series=tuple(current), attempt=attempt))
    return events


class TrackingService(RunEdits):
    """Run tracking commands over the event log. One instance per process (it caches run states); the commands
    of MLflow's model (experiments, deletes, renames, inputs, logged models, imports) are in tracking/edits.py."""

    def __init__(self, event_log: EventLog, *, producer: str, limits: TrackingLimits | None = None,
                 declared_metrics: DeclaredMetrics | None = None) -> None:
        self.event_log = event_log
        self.producer = producer
        self.limits = limits or TrackingLimits()
        #: When given (MLHUB_UNDECLARED_METRICS=reject), metric keys it does not return are refused.
        self.declared_metrics = declared_metrics
        self.states = RunStates(event_log)
        #: log-batch requests per run waiting for the run's next group commit
        self._queued: dict[str, list[PendingBatch]] = {}
        #: Atomic batches of log-batch requests refused because another writer moved the run first.
        self.conflicts = 0

    # -- helpers ----------------------------------------------------------------------------------------------

    def _envelope(self, event: DomainEvent, event_id: uuid.UUID | None = None,
                  correlation_id: str | None = None) -> Envelope:
        if event_id is None:
            return Envelope(event=event, producer=self.producer, correlation_id=correlation_id)
        return Envelope(event=event, producer=self.producer, correlation_id=correlation_id, event_id=event_id)

    def _check_count(self, envelopes: Sequence[Envelope]) -> None:
        """LimitExceeded when a request would make more events than one atomic batch holds. (Each event's size
        is bounded by construction: metric events hold at most POINTS_PER_EVENT points, params and tags
        events at most _CHUNK_BYTES; the event log checks the encoded size again, EventTooLarge.)"""
        if len(envelopes) > self.limits.max_events_per_request:
            raise LimitExceeded(f"the request makes {len(envelopes)} events; one request may append "
                                f"{self.limits.max_events_per_request} (the event log's atomic batch): split it",
                                details={"limit": "events per request", "max": self.limits.max_events_per_request,
                                         "value": len(envelopes)})

    async def _verify_duplicates(self, run_id: str, envelopes: Sequence[Envelope],
                                 results: Sequence[AppendResult], key: uuid.UUID | None, what: str,
                                 server_stamps: bool = False) -> list[int]:
        """For events the log had already (a resend): their stored sequences, after checking that what is
        stored is what this request would store; IdempotencyKeyReused when it is not. `server_stamps`: the
        request left point timestamps to the hub (each send stamps its own time), so they are not compared."""
        dup = [e for e, r in zip(envelopes, results, strict=True) if r.duplicate]
        if not dup or key is None:
            return [r.seq for r in results]
        stored = await self.event_log.find_events(aggregate_subject_filter("run", run_id),
                                                  [str(e.event_id) for e in dup])
        for envelope in dup:
            found = stored.get(str(envelope.event_id))
            if found is None or _comparable(found.envelope.event, server_stamps) != \
                    _comparable(envelope.event, server_stamps):
                raise IdempotencyKeyReused(
                    f"{what} {key} was used before with another body; nothing was stored: use a new id for a new "
                    "request", details={"key": str(key)})
        seqs = {str(e.event_id): stored[str(e.event_id)].seq for e in dup}
        return [seqs.get(str(e.event_id), r.seq) for e, r in zip(envelopes, results, strict=True)]

    async def _checked(self, run_id: str, check: Callable[[RunState], None], *, reload: bool = False) -> RunState:
        """The run's state once `check` accepts it. A refusal is never decided on the cache alone: another
        process (the reaper, a second API replica) may have moved the run, so the run is read again first."""
        state = await self.states.get(run_id, reload=reload)
        try:
            check(state)
        except (RunNotFound, RunEnded, InvalidRunState):
            if reload:
                raise
            state = await self.states.get(run_id, reload=True)
            check(state)
        return state

    @staticmethod
    def _must_be_open(state: RunState, run_id: str) -> None:
        if not state.lifecycle.created:
            raise RunNotFound(f"no run {run_id!r} was created", details={"run_id": run_id})
        if state.lifecycle.ended:
            raise RunEnded(f"run {run_id} has ended ({state.lifecycle.status}, seq {state.version}): nothing more "
                           "can be logged to it", state=str(state.lifecycle.status), seq=state.version)

    async def _open(self, run_id: str, *, reload: bool = False) -> RunState:
        return await self._checked(run_id, lambda s: self._must_be_open(s, run_id), reload=reload)

    def _remember(self, run_id: str, state: RunState, events: Sequence[DomainEvent], seqs: Sequence[int]) -> None:
        self.states.put(run_id, RunState(run_lifecycle(events, state.lifecycle), max([state.version, *seqs]),
                                         state.marked(events, seqs)))

    # -- commands ---------------------------------------------------------------------------------------------

    async def create_run(self, experiment: str, *, name: str | None = None, params: Mapping[str, str] | None = None,
                         tags: Mapping[str, str] | None = None, request_id: uuid.UUID | None = None,
                         experiment_id: str | None = None) -> Written:
        """Create and start a run of a script no worker runs (its experiment too, when new). With a request_id
        the run id and every event id derive from it: a retried request names the same run and stores
        nothing new; the same id with another body is IDEMPOTENCY_KEY_REUSED. With `experiment_id` (MLflow's
        create_run names an experiment by id) the run goes into that experiment, which must exist and not be
        deleted; `experiment` is then its name."""
        if experiment_id is not None:
            experiment = (await self.open_experiment(experiment_id)).name or experiment
        if not experiment.strip() or len(experiment) > 200:
            raise BadTrackingRequest("experiment: must be a non-blank name of at most 200 characters",
                                     details={"field": "experiment"})
        params, tags = dict(params or {}), dict(tags or {})
        check_request(self.limits, params=params, tags=tags)
        run_id = run_id_for_request(request_id) if request_id else uuid.uuid4().hex
        named = experiment_id is not None
        experiment_id = experiment_id or experiment_id_for(experiment)
        run_events: list[DomainEvent] = [RunCreated(run_id=run_id, experiment_id=experiment_id,
                                                    name=name or f"run-{run_id[:8]}", source="sdk")]
        run_events += [ParamsLogged(run_id=run_id, params=c) for c in _chunks(params)]
        run_events += [TagsSet(run_id=run_id, tags=c) for c in _chunks(tags)]
        run_events.append(RunStarted(run_id=run_id, attempt=1))
        run_envelopes = [self._envelope(e, derived_id(request_id, f"create-run/{i}"))
                         for i, e in enumerate(run_events)]
        self._check_count(run_envelopes)
        run_filter = aggregate_subject_filter("run", run_id)
        async with self.states.lock(run_id):
            for _ in range(3):
                existing = await self.event_log.last_event(f"{SUBJECT_PREFIX}.experiment.{experiment_id}.created")
                created = None if named else experiment_to_create(experiment,
                                                                  existing.envelope.event if existing else None)
                head = [self._envelope(created, derived_id(request_id, "create-run/experiment"))] if created else []
                guards = {len(head): (run_filter, 0)}
                if created is not None:
                    guards[0] = (aggregate_subject_filter("experiment", experiment_id), 0)
                try:
                    results = await self.event_log.append_atomic(head + run_envelopes, guards=guards)
                except ConcurrencyError:
                    state = await self.states.get(run_id, reload=True)
                    if state.version and request_id is not None:  # the run exists: this request's, resent?
                        seqs = await self._verify_duplicates(
                            run_id, run_envelopes, [AppendResult(0, duplicate=True)] * len(run_envelopes),
                            request_id, "request_id")
                        head_seqs = await self._experiment_made_by(request_id, experiment_id)
                        return Written(run_id, head_seqs + seqs, duplicate=True, experiment_id=experiment_id)
                    if state.version:
                        raise
                    continue  # the experiment was created meanwhile: create the run without it
                seqs = await self._verify_duplicates(run_id, head + run_envelopes, results, request_id, "request_id")
                # (Marks from the run's own events: should others have come since, a guard on them refuses.)
                fresh = RunState(run_lifecycle(run_events), max(seqs), (0,) * len(MARK_EVENTS))
                self.states.put(run_id, replace(fresh, marks=fresh.marked(run_events, seqs[len(head):])))
                duplicate = all(r.duplicate for r in results)
                if duplicate and request_id is not None and not head:
                    seqs = await self._experiment_made_by(request_id, experiment_id) + seqs
                return Written(run_id, seqs, duplicate=duplicate, experiment_id=experiment_id)
        raise ConcurrencyError(f"experiment {experiment_id} kept changing while the run was created; retry")

    async def _experiment_made_by(self, request_id: uuid.UUID, experiment_id: str) -> list[int]:
        """[seq] of the experiment.created a create-run request appended, when it made the experiment."""
        made = str(derived_id(request_id, "create-run/experiment"))
        found = await self.event_log.find_events(aggregate_subject_filter("experiment", experiment_id), [made])
        return [found[made].seq] if made in found else []

    async def log_batch(self, run_id: str, *, params: Mapping[str, str] | None = None,
                        tags: Mapping[str, str] | None = None, series: Sequence[SeriesInput] = (),
                        batch_id: uuid.UUID | None = None) -> Written:
        """Log params, tags and metric points to an open run, all stored or none. A param keeps its first
        value (PARAM_VALUE_CHANGED for another; the same value again is a no-op).

        Requests of one run that arrive while one of them is being appended are committed together next, as one
        atomic batch (a group commit: each request is still stored whole or not at all, and each gets its own
        answer), so concurrent clients of a run do not wait for each other's round trips one by one."""
        params, tags = dict(params or {}), dict(tags or {})
        declared = await self.declared_metrics() if self.declared_metrics is not None and series else None
        points = check_request(self.limits, params=params, tags=tags, series=series, declared=declared)
        if not params and not tags and not series:
            raise BadTrackingRequest("the batch is empty: give params, tags or metrics", details={"field": "body"})
        now_ms = int(time.time() * 1000)
        # The metric events are built and encoded before the run's lock is taken (the CPU work of a big batch
        # overlaps the appends other requests of the run are waiting on), for the attempt the cache knows; a
        # run whose attempt turns out to be another is built again under the lock.
        pending = PendingBatch(run_id, params, tags, series, batch_id, points, now_ms,
                               self._metric_envelopes(run_id, series, self.states.peek_attempt(run_id), now_ms,
                                                      batch_id), asyncio.get_running_loop().create_future())
        self._queued.setdefault(run_id, []).append(pending)
        async with self.states.lock(run_id):
            if not pending.future.done():  # nobody committed it while it waited: commit what is queued
                group = self._queued.pop(run_id, [])
                try:
                    await self._commit_group(run_id, group)
                finally:  # (a cancelled commit leaves the rest queued for the next holder of the lock)
                    left = [p for p in group if not p.future.done()]
                    if left:
                        self._queued[run_id] = left + self._queued.get(run_id, [])
        return await pending.future

    def _prepare(self, pending: PendingBatch, state: RunState, logged: dict[str, str]) -> bool:
        """Decide one queued request against the run's state (and what requests before it in the group log):
        its envelopes, or its answer (a refusal, or nothing to append). True when it is to be appended."""
        run_id, batch_id = pending.run_id, pending.batch_id
        if pending.metrics[0] != state.lifecycle.attempt:
            pending.metrics = self._metric_envelopes(run_id, pending.series, state.lifecycle.attempt,
                                                     pending.now_ms, batch_id)
        changed = sorted(k for k, v in pending.params.items() if k in logged and logged[k] != v)
        if changed:
            pending.future.set_exception(ParamValueChanged(
                f"param(s) {', '.join(map(repr, changed))} of run {run_id} were logged with other values "
                f"(e.g. {changed[0]!r} = {logged[changed[0]]!r}); a param keeps its first value: log it under "
                "another key. Nothing of this request was stored", details={"keys": changed}))
            return False
        # Params logged before with these values are no-ops, but a keyed batch keeps them: its resend must make
        # the same events (same ids) as the first send, whatever was logged in between.
        params = pending.params if batch_id is not None else \
            {k: v for k, v in pending.params.items() if k not in logged}
        head = [self._envelope(ParamsLogged(run_id=run_id, params=c),
                               batch_event_id(batch_id, i, "params") if batch_id else None)
                for i, c in enumerate(_chunks(params))]
        head += [self._envelope(TagsSet(run_id=run_id, tags=c),
                                batch_event_id(batch_id, i, "tags") if batch_id else None)
                 for i, c in enumerate(_chunks(pending.tags))]
        pending.envelopes = head + pending.metrics[1]
        none: list[bytes | None] = [None] * len(head)
        pending.encoded = none + pending.metrics[2]
        if not pending.envelopes:  # only params that are logged already, with these values
            pending.future.set_result(Written(run_id, [state.version], duplicate=True))
            return False
        try:
            self._check_count(pending.envelopes)
        except LimitExceeded as e:
            pending.future.set_exception(e)
            return False
        logged.update(params)
        return True

    async def _commit_group(self, run_id: str, group: list[PendingBatch]) -> None:
        """Append the queued requests of a run, as few atomic batches as they fit in, each guarded by the
        version the one before left; every request's future gets its answer."""
        one_by_one = False
        moved_to: int | None = None  # the run's version a refusal named
        for attempt in range(_RETRIES):
            waiting = [p for p in group if not p.future.done()]
            if not waiting:
                return
            try:
                if attempt:  # another writer moved the run: read what changed (one round trip when only its
                    await self.states.refresh(run_id, moved_to)  # version did), then decide again
                    moved_to = None
                state = await self._open(run_id)
            except TrackingError as e:
                for p in waiting:
                    p.future.set_exception(e)
                return
            logged = dict(state.lifecycle.params)
            ready = [p for p in waiting if self._prepare(p, state, logged)]
            version, lifecycle = state.version, state.lifecycle
            conflict = False
            for chunk in _chunked(ready, self.limits.max_events_per_request, one_by_one):
                envelopes = [e for p in chunk for e in p.envelopes]
                try:
                    results = await self.event_log.append_atomic(
                        envelopes, guards=_batch_guards(run_id, envelopes, version, state.marks),
                        encoded=[b for p in chunk for b in p.encoded])
                except ConcurrencyError as e:
                    conflict = True  # another writer moved the run: read it again and decide again
                    moved_to = e.actual
                    self.conflicts += 1
                    break
                except MlhubError as e:  # nothing of this chunk is stored (one atomic batch)
                    for p in chunk:
                        p.future.set_exception(e)
                    continue
                if len(chunk) > 1 and any(r.duplicate for r in results):
                    one_by_one = conflict = True  # a resend among them: each alone, so each gets its own answer
                    break
                start = 0
                for p in chunk:
                    mine = results[start:start + len(p.envelopes)]
                    start += len(p.envelopes)
                    try:
                        seqs = await self._verify_duplicates(
                            run_id, p.envelopes, mine, p.batch_id, "batch_id",
                            server_stamps=any(x.timestamps is None for x in p.series))
                    except IdempotencyKeyReused as e:
                        p.future.set_exception(e)
                        continue
                    version = max([version, *seqs])
                    lifecycle = run_lifecycle((e.event for e in p.envelopes), lifecycle)
                    p.future.set_result(Written(run_id, seqs, duplicate=all(r.duplicate for r in mine),
                                                points=p.points))
            self.states.put(run_id, RunState(lifecycle, version, state.marks))  # params, tags, metrics: no marks
            if not conflict:
                return
        for p in group:
            if not p.future.done():
                p.future.set_exception(ConcurrencyError(f"run {run_id} kept changing while the batch was logged; "
                                                        "retry"))

    def _metric_envelopes(self, run_id: str, series: Sequence[SeriesInput], attempt: int, now_ms: int,
                          batch_id: uuid.UUID | None) -> tuple[int, list[Envelope], list[bytes | None]]:
        """(attempt, envelopes, their wire forms) of a request's metric events."""
        envelopes = [self._envelope(e, batch_event_id(batch_id, i) if batch_id else None)
                     for i, e in enumerate(metric_events(run_id, series, attempt, now_ms))]
        return attempt, envelopes, [self.event_log.encode_event(e) for e in envelopes]

    async def check_open(self, run_id: str) -> None:
        """RunNotFound / RunEnded unless the run is open (an upload checks before it reads its body)."""
        await self._open(run_id)

    async def record_artifact(self, run_id: str, *, path: str, sha256: str, size_bytes: int, uri: str,
                              kind: str, upload_id: uuid.UUID | None = None) -> Written:
        """Record a stored artifact on an open run (guarded: none lands after the run ended). A resent upload
        (same upload_id, same path and content) records nothing new; another one is IDEMPOTENCY_KEY_REUSED."""
        event = ArtifactStored(run_id=run_id, path=path, sha256=sha256, size_bytes=size_bytes, uri=uri,
                               kind=kind)  # type: ignore[arg-type]  # kind is checked by the model
        event_id = upload_event_id(upload_id) if upload_id else None
        async with self.states.lock(run_id):
            if event_id is not None:
                stored = await self.event_log.find_events(f"{SUBJECT_PREFIX}.run.{run_id}.artifact_stored",
                                                          [str(event_id)])
                if str(event_id) in stored:
                    earlier = stored[str(event_id)].envelope.event
                    if not isinstance(earlier, ArtifactStored) or (earlier.path, earlier.sha256) != (path, sha256):
                        raise IdempotencyKeyReused(f"upload_id {upload_id} was used before for another file; "
                                                   "nothing was stored", details={"key": str(upload_id)})
                    return Written(run_id, [stored[str(event_id)].seq], duplicate=True, event_id=str(event_id))
            for attempt in range(_RETRIES):
                state = await self._open(run_id, reload=attempt > 0)
                envelope = self._envelope(event, event_id)
                try:
                    result = await self.event_log.append(envelope, expected_version=state.version)
                except ConcurrencyError:
                    continue
                self._remember(run_id, state, [event], [result.seq])
                return Written(run_id, [result.seq], duplicate=result.duplicate, event_id=str(envelope.event_id))
        raise ConcurrencyError(f"run {run_id} kept changing while the artifact was recorded; retry")

    async def _end(self, run_id: str, make: Callable[[RunState], DomainEvent], *,
                   allowed: Callable[[RunState], None] | None = None) -> Written:
        def check(state: RunState) -> None:
            if not state.lifecycle.created:
                raise RunNotFound(f"no run {run_id!r} was created", details={"run_id": run_id})
            if allowed is not None:
                allowed(state)
            else:
                self._must_be_open(state, run_id)

        async with self.states.lock(run_id):
            for attempt in range(_RETRIES):
                state = await self._checked(run_id, check, reload=attempt > 0)
                event = make(state)
                try:
                    result = await self.event_log.append(self._envelope(event), expected_version=state.version)
                except ConcurrencyError:
                    continue
                self._remember(run_id, state, [event], [result.seq])
                return Written(run_id, [result.seq])
        raise ConcurrencyError(f"run {run_id} kept changing; retry")

    async def finish(self, run_id: str, status: RunStatus, *, error_type: str | None = None,
                     error: str | None = None, ended_by: str | None = None, crashed_too: bool = False) -> Written:
        """End an open run as finished, failed (error_type and error say why) or killed (`crashed_too`: a
        crashed run as well, which a user may end by hand with the status it really had)."""
        def make(state: RunState) -> DomainEvent:
            attempt = state.lifecycle.attempt
            if status == RunStatus.FINISHED:
                return RunFinished(run_id=run_id, attempt=attempt, ended_by=ended_by)
            if status == RunStatus.FAILED:
                return RunFailed(run_id=run_id, attempt=attempt, error_type=(error_type or "Error")[:200],
                                 error=(error or "")[:20_000], ended_by=ended_by)
            if status == RunStatus.KILLED:
                return RunCancelled(run_id=run_id, reason=(error or "")[:2000], ended_by=ended_by)
            raise InvalidRunState(f"a run cannot be ended as {status!r}: finished, failed or killed",
                                  details={"status": str(status)})

        def open_or_crashed(state: RunState) -> None:
            if state.lifecycle.ended and state.lifecycle.status != RunStatus.CRASHED:
                raise RunEnded(f"run {run_id} has ended ({state.lifecycle.status}, seq {state.version})",
                               state=str(state.lifecycle.status), seq=state.version)
        return await self._end(run_id, make, allowed=open_or_crashed if crashed_too else None)

    async def end_by_hand(self, run_id: str, status: RunStatus, *, reason: str = "", actor: str) -> Written:
        """End any run that has not ended, by hand (`mlhub runs end`, the dashboard): a stuck or crashed
        script's run. A job's run is refused while its job is queued or running (cancel the job instead: the
        worker then ends the run)."""
        async with self.states.lock(run_id):
            state = await self.states.get(run_id, reload=True)
        job_id = state.lifecycle.job_id
        if state.lifecycle.created and job_id and not state.lifecycle.ended:
            job = await self.event_log.read_aggregate("job", job_id)
            current = job_status(r.envelope.event for r in job.events)
            if current in ("queued", "running"):
                raise InvalidRunState(f"run {run_id} belongs to job {job_id}, which is {current}: cancel the job "
                                      f"(`mlhub cancel {job_id}`) and its run ends with it",
                                      details={"job_id": job_id, "job_status": current})
        return await self.finish(run_id, status, error_type="EndedByHand" if status == RunStatus.FAILED else None,
                                 error=reason or f"ended by {actor}", ended_by=actor, crashed_too=True)

    async def heartbeat(self, run_id: str) -> Written:
        """Record that an open run's producer is alive (the SDK sends one when it sent nothing for a while)."""
        return await self._end(run_id, lambda s: RunHeartbeat(run_id=run_id, attempt=s.lifecycle.attempt))

    async def resume(self, run_id: str, *, actor: str | None = None) -> Written:
        """Resume a crashed run: logging goes on in the same attempt."""
        def crashed_only(state: RunState) -> None:
            if state.lifecycle.status != RunStatus.CRASHED:
                raise InvalidRunState(f"run {run_id} is {state.lifecycle.status}: only a crashed run can be resumed",
                                      details={"state": str(state.lifecycle.status)})
        return await self._end(run_id, lambda s: RunResumed(run_id=run_id, attempt=s.lifecycle.attempt,
                                                            resumed_by=actor), allowed=crashed_only)

    async def crash(self, run_id: str, *, observed_version: int, silent_s: float, reason: str) -> Written | None:
        """End a running run as crashed, if it is still at `observed_version` (nothing appended since the reaper
        looked); None when it moved (its producer is alive) or ended."""
        state = await self.states.get(run_id, reload=True)
        if state.lifecycle.status != RunStatus.RUNNING or state.version != observed_version:
            return None
        event = RunCrashed(run_id=run_id, attempt=state.lifecycle.attempt, reason=reason[:2000],
                           silent_s=round(silent_s, 3), last_seq=observed_version)
        try:
            result = await self.event_log.append(self._envelope(event, correlation_id=state.lifecycle.job_id),
                                                 expected_version=observed_version)
        except ConcurrencyError:
            return None
        self.states.forget(run_id)
        return Written(run_id, [result.seq])
