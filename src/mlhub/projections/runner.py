"""The projector runtime: one ordered consumer per projector, from its checkpoint + 1, applying batches.

Each projector runs as its own asyncio task with its own consumer and checkpoint. Decoding and `apply` run in
a worker thread (blocking database I/O never stalls the event loop); a stop (task cancellation) waits for a
batch being applied to finish, so nothing is ever half-applied, and then releases the locks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from mlhub.errors import MlhubError
from mlhub.eventlog import EventLog, StoredMessage
from mlhub.events import decode
from mlhub.projections.locks import ProjectorLock, ProjectorLocked
from mlhub.projections.runtime import (
    Batch,
    BufferingProjector,
    DeadLetter,
    DeadLetterSink,
    Incoming,
    Projector,
    event_type_of_subject,
)

log = logging.getLogger(__name__)

#: Makes the lock of a projector, by name.
LockFactory = Callable[[str], ProjectorLock]


class ProjectorFailed(MlhubError):
    """A projector could not apply a batch after its allowed number of attempts."""

    code = "PROJECTOR_FAILED"


class ProjectorRunner:
    """Drives one projector: reads from its checkpoint + 1, decodes, applies batch by batch, retries failures.

    max_failures: consecutive failed attempts at one batch before ProjectorFailed (None: retry forever, with
    back-off up to max_retry_delay_s; what a long-running `mlhub projector` wants).
    """

    def __init__(
        self,
        event_log: EventLog,
        projector: Projector,
        *,
        dead_letters: DeadLetterSink | None = None,
        lock: ProjectorLock | None = None,
        max_batch: int = 1000,
        max_failures: int | None = None,
        retry_delay_s: float = 0.2,
        max_retry_delay_s: float = 30.0,
        idle_flush_s: float = 0.5,
    ) -> None:
        self.event_log = event_log
        self.projector = projector
        self.dead_letters = dead_letters
        self.lock = lock
        self.max_batch = max_batch
        self.max_failures = max_failures
        self.retry_delay_s = retry_delay_s
        self.max_retry_delay_s = max_retry_delay_s
        #: A BufferingProjector is flushed when no new batch arrived for this long.
        self.idle_flush_s = idle_flush_s
        #: The last stream sequence this runner has seen applied (the checkpoint, or ahead of a projector
        #: that does not store a checkpoint for a batch without events it wants).
        self.position = 0
        #: Events applied and dead letters recorded since start.
        self.applied = 0
        self.dead_lettered = 0

    @property
    def name(self) -> str:
        """The projector's name."""
        return self.projector.name

    async def run(self, *, until_seq: int | None = None) -> int:
        """Apply events until until_seq (forever when None, until cancelled); returns the position reached."""
        self.position = await asyncio.to_thread(self.projector.checkpoint)
        log.info("projector %s: starting after seq %d", self.name, self.position)
        if until_seq is not None and self.position >= until_seq:
            return self.position
        # An async generator (so aclose() runs its cleanup: the consumer is unsubscribed).
        batches = self.event_log.replay_batches(
            self.position + 1, until_seq=until_seq, follow=True, max_batch=self.max_batch
        )
        buffering = isinstance(self.projector, BufferingProjector)
        pending: asyncio.Future[list[StoredMessage]] | None = None
        try:
            while True:
                pending = asyncio.ensure_future(batches.__anext__())
                if buffering:
                    done, _ = await asyncio.wait({pending}, timeout=self.idle_flush_s)
                    if not done:  # the stream is idle: make what was applied durable
                        try:
                            await self._flush()
                        except MlhubError as e:  # still buffered: the next idle moment or the stop retries
                            log.warning("projector %s: flush failed, will retry: %s", self.name, e)
                try:
                    messages = await pending
                except StopAsyncIteration:
                    break
                if messages:
                    await self._apply_with_retries(messages)
            if buffering:
                await self._flush()
        except asyncio.CancelledError:
            if buffering:
                await self._flush()
            raise
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
                await asyncio.wait([pending])
            await batches.aclose()
        return self.position

    async def _flush(self) -> None:
        """flush() of a buffering projector in a thread; a stop waits for it (a commit is all-or-nothing)."""
        assert isinstance(self.projector, BufferingProjector)
        work = asyncio.ensure_future(asyncio.to_thread(self.projector.flush))
        await asyncio.wait([work])
        work.result()

    async def _apply_with_retries(self, messages: list[StoredMessage]) -> None:
        failures = 0
        delay = self.retry_delay_s
        while True:
            if self.lock is not None:
                self.lock.check()
            work = asyncio.ensure_future(asyncio.to_thread(self._decode_and_apply, messages))
            try:
                batch, letters = await asyncio.shield(work)
            except asyncio.CancelledError:
                # Stopping: let the transaction in flight finish (it is all-or-nothing either way).
                await asyncio.wait([work])
                raise
            except Exception as e:
                failures += 1
                if self.max_failures is not None and failures >= self.max_failures:
                    raise ProjectorFailed(
                        f"projector {self.name}: batch {messages[0].seq}..{messages[-1].seq} failed "
                        f"{failures} times; last error: {type(e).__name__}: {e}"
                    ) from e
                log.error("projector %s: batch %d..%d failed (attempt %d), retrying in %.1fs: %r",
                          self.name, messages[0].seq, messages[-1].seq, failures, delay, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_delay_s)
                continue
            break
        self.position = max(self.position, batch.last_seq)
        self.applied += len(batch.events) - len(letters)
        if letters:
            self.dead_lettered += len(letters)
            for letter in letters:
                log.error("projector %s: dead-lettered seq %d (%s): %s", self.name, letter.seq, letter.subject,
                          letter.error)
            if self.dead_letters is not None:
                await asyncio.to_thread(self.dead_letters, self.name, letters)

    def _decode_and_apply(self, messages: list[StoredMessage]) -> tuple[Batch, Sequence[DeadLetter]]:
        batch = decode_batch(messages, self.projector.event_types)
        return batch, self.projector.apply(batch)


def decode_batch(messages: Sequence[StoredMessage], event_types: frozenset[str] | None = None) -> Batch:
    """Decode stored messages (of the wanted event types) into a Batch; a decode error travels with its message."""
    items: list[Incoming] = []
    for m in messages:
        if event_types is not None and event_type_of_subject(m.subject) not in event_types:
            continue
        try:
            items.append(Incoming(m.seq, m.subject, m.data, decode(m.data)))
        except Exception as e:  # EventDecodeError, or anything else a corrupt message provokes
            items.append(Incoming(m.seq, m.subject, m.data, None, f"{type(e).__name__}: {e}"))
    return Batch(events=items, last_seq=messages[-1].seq)


async def run_projectors(
    event_log: EventLog,
    projectors: Sequence[Projector],
    *,
    until_seq: int | None = None,
    locks: LockFactory | None = None,
    wait_for_lock: bool = True,
    lock_poll_s: float = 2.0,
    dead_letters: DeadLetterSink | None = None,
    max_batch: int = 1000,
    max_failures: int | None = None,
    on_start: Callable[[list[ProjectorRunner]], None] | None = None,
) -> dict[str, int]:
    """Run several projectors concurrently, each with its own consumer and checkpoint.

    Runs until every projector reached until_seq (forever when None: cancel the task to stop). With locks,
    each projector's lock is taken first: when another instance holds one, wait (polling every lock_poll_s)
    or, wait_for_lock=False, raise ProjectorLocked at once. Returns the positions reached, by name.
    """
    names = [p.name for p in projectors]
    if len(set(names)) != len(names):
        raise ValueError(f"projector names must be unique, got {names}")
    held: list[ProjectorLock] = []
    try:
        runners: list[ProjectorRunner] = []
        for projector in projectors:
            lock = None
            if locks is not None:
                lock = locks(projector.name)
                await _acquire(lock, projector.name, wait=wait_for_lock, poll_s=lock_poll_s)
                held.append(lock)
            runners.append(ProjectorRunner(event_log, projector, dead_letters=dead_letters, lock=lock,
                                           max_batch=max_batch, max_failures=max_failures))
        if on_start is not None:
            on_start(runners)
        try:
            async with asyncio.TaskGroup() as group:
                tasks = {r.name: group.create_task(r.run(until_seq=until_seq), name=f"projector-{r.name}")
                         for r in runners}
        except ExceptionGroup as group_error:  # the first failure is the story; the rest were cancelled
            raise group_error.exceptions[0] from None
        return {name: task.result() for name, task in tasks.items()}
    finally:
        for lock in held:
            lock.release()


async def _acquire(lock: ProjectorLock, name: str, *, wait: bool, poll_s: float) -> None:
    announced = False
    while not await asyncio.to_thread(lock.try_acquire):
        if not wait:
            raise ProjectorLocked(
                f"projector {name!r} is already running elsewhere ({lock.description} is held); "
                f"stop that instance, or let this one wait for it"
            )
        if not announced:
            log.warning("projector %s: another instance holds %s; waiting to take over", name, lock.description)
            announced = True
        await asyncio.sleep(poll_s)
    if announced:
        log.warning("projector %s: took over %s", name, lock.description)


async def run_until(
    event_log: EventLog,
    projectors: Sequence[Projector],
    seq: int | None = None,
    *,
    locks: LockFactory | None = None,
    dead_letters: DeadLetterSink | None = None,
    max_batch: int = 1000,
    max_failures: int | None = 3,
) -> dict[str, int]:
    """Run projectors until each has applied everything up to seq (default: the stream's last sequence now).

    Events appended after that are left for the next run. A held lock raises ProjectorLocked at once; a batch
    that fails max_failures times in a row raises ProjectorFailed. Returns the positions reached, by name.
    """
    target = await event_log.last_sequence() if seq is None else seq
    return await run_projectors(
        event_log, projectors, until_seq=target, locks=locks, wait_for_lock=False, dead_letters=dead_letters,
        max_batch=max_batch, max_failures=max_failures,
    )


async def projector_lag(event_log: EventLog, projectors: Sequence[Projector]) -> dict[str, int]:
    """How many stream messages each projector has yet to apply: stream last sequence minus its checkpoint."""
    last = await event_log.last_sequence()

    def read() -> dict[str, int]:
        return {p.name: p.checkpoint() for p in projectors}

    return {name: max(0, last - position) for name, position in (await asyncio.to_thread(read)).items()}

