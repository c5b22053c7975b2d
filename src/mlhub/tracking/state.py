"""What the tracking service knows of each run it writes to: the run's lifecycle (mlhub.events.RunLifecycle)
and its version (the stream sequence of its last event), cached per process and kept exact by the guard on
every append: an append names the version it decided on, and a conflict (another writer appended since)
makes the service read the run again and decide again. No request reads the log for state it holds.
Metric-only batches are guarded by the run's lifecycle subjects instead (RunState.marks): batches of two writers
of one run (two API processes) do not refuse each other, an end or a new attempt still refuses them.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from mlhub.eventlog import EventLog, Recorded
from mlhub.events import (
    SUBJECT_PREFIX,
    DomainEvent,
    RunLifecycle,
    aggregate_subject_filter,
    run_lifecycle,
)

#: The run events that change its lifecycle (besides params), read by a (re)load.
LIFECYCLE_EVENTS = ("created", "started", "finished", "failed", "cancelled", "crashed", "resumed")
#: The lifecycle events that decide whether an open run takes metric points and under which attempt: an end,
#: a new attempt (a resume follows a crash, so it is covered by the crash). Metric-only batches are guarded by
#: the last sequence of each of these subjects instead of the run's version (see TrackingService).
MARK_EVENTS = ("started", "finished", "failed", "cancelled", "crashed")


@dataclass(frozen=True)
class RunState:
    """A run's lifecycle and the version it was read (or last written) at; `marks`, when known, the last
    sequence of each MARK_EVENTS subject of the run at that version (0: none yet)."""

    lifecycle: RunLifecycle
    version: int
    marks: tuple[int, ...] | None = None

    def marked(self, events: Sequence[DomainEvent], seqs: Sequence[int]) -> tuple[int, ...] | None:
        """The marks after this process appended events at seqs (unknown stays unknown)."""
        if self.marks is None:
            return None
        marks = dict(zip(MARK_EVENTS, self.marks, strict=True))
        for event, seq in zip(events, seqs, strict=False):
            name = event.event_name()
            if name in marks:
                marks[name] = max(marks[name], seq)
        return tuple(marks[name] for name in MARK_EVENTS)


async def load_run_state(event_log: EventLog, run_id: str) -> RunState:
    """Read a run's state from the log: its version, the last event of each lifecycle type (direct gets) and
    its params events. Metric batches, the bulk of a run, are never read."""
    base = f"{SUBJECT_PREFIX}.run.{run_id}"
    version, params_seq = await asyncio.gather(event_log.last_sequence(aggregate_subject_filter("run", run_id)),
                                               event_log.last_sequence(f"{base}.params_logged"))
    lasts = await asyncio.gather(*(event_log.last_event(f"{base}.{name}") for name in LIFECYCLE_EVENTS))
    if not version:
        return RunState(RunLifecycle(), 0)
    by_name = {name: r.seq if r is not None else 0 for name, r in zip(LIFECYCLE_EVENTS, lasts, strict=True)}
    found: list[Recorded] = sorted((r for r in lasts if r is not None), key=lambda r: r.seq)
    if params_seq:
        found += [r async for r in event_log.replay(subject_filter=f"{base}.params_logged", until_seq=params_seq)]
    # Created first; the last lifecycle event of each type in stream order decides the status; params in order.
    found.sort(key=lambda r: r.seq)
    return RunState(run_lifecycle(r.envelope.event for r in found), version,
                    tuple(by_name[name] for name in MARK_EVENTS))


async def moved_state(event_log: EventLog, run_id: str, known: RunState, version: int | None = None) -> RunState:
    """A run's state after another writer moved it past `known`, in one round trip when only metric batches
    and heartbeats came in between (the common case of two API processes writing one run: the version moves,
    nothing else): the last sequence of each lifecycle subject and of params is compared with the version
    known; any that moved means a full read (load_run_state). `version`: the run's version now, when the
    refusal said it (then the run's last message, often a large metric batch, is not fetched for it)."""
    base = f"{SUBJECT_PREFIX}.run.{run_id}"
    names = (*LIFECYCLE_EVENTS, "params_logged")
    subjects = [f"{base}.{name}" for name in names]
    if version is None:
        subjects.append(aggregate_subject_filter("run", run_id))
    lasts = await asyncio.gather(*(event_log.last_sequence(subject) for subject in subjects))
    if version is None:
        version = lasts.pop()
    if not known.version or any(seq > known.version for seq in lasts):
        return await load_run_state(event_log, run_id)
    by_name = dict(zip(names, lasts, strict=True))
    return RunState(known.lifecycle, version, tuple(by_name[name] for name in MARK_EVENTS))


class RunStates:
    """An LRU of run states with one lock per run (a run's writes in this process are decided one at a time)."""

    def __init__(self, event_log: EventLog, size: int = 10_000) -> None:
        self.event_log = event_log
        self.size = size
        self._states: OrderedDict[str, RunState] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, run_id: str) -> asyncio.Lock:
        """The lock of one run (made on first use; dropped with the run's cached state)."""
        lock = self._locks.get(run_id)
        if lock is None:
            if len(self._locks) > 2 * self.size:  # locks of runs no longer cached (or never found) that no one holds
                for old in [r for r, held in self._locks.items() if r not in self._states and not held.locked()]:
                    del self._locks[old]
            lock = self._locks[run_id] = asyncio.Lock()
        return lock

    async def get(self, run_id: str, *, reload: bool = False) -> RunState:
        """The run's state: cached, or read from the log (always when `reload`)."""
        state = None if reload else self._states.get(run_id)
        if state is None:
            state = await load_run_state(self.event_log, run_id)
            if state.version:
                self.put(run_id, state)
        else:
            self._states.move_to_end(run_id)
        return state

    async def refresh(self, run_id: str, version: int | None = None) -> RunState:
        """The run's state after a conflict: the cached one moved on cheaply when possible (moved_state);
        `version`, the run's version now when the refusal said it."""
        known = self._states.get(run_id)
        state = await (moved_state(self.event_log, run_id, known, version) if known is not None
                       else load_run_state(self.event_log, run_id))
        if state.version:
            self.put(run_id, state)
        return state

    def peek_attempt(self, run_id: str) -> int:
        """The attempt the cache holds for a run (1 when it holds none), without I/O: a guess that the caller
        checks under the run's lock."""
        state = self._states.get(run_id)
        return state.lifecycle.attempt if state is not None else 1

    def put(self, run_id: str, state: RunState) -> None:
        """Remember a run's state after a write."""
        self._states[run_id] = state
        self._states.move_to_end(run_id)
        while len(self._states) > self.size:
            old, _ = self._states.popitem(last=False)
            lock = self._locks.get(old)
            if lock is not None and not lock.locked():
                del self._locks[old]

    def forget(self, run_id: str) -> None:
        """Drop a run's cached state (the next write reads it again)."""
        self._states.pop(run_id, None)
