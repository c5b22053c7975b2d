"""The projector contract: what the runtime hands a projector and what a projector promises in return.

A projector turns events into a read model. The runtime (see `runner.py`) reads the stream from the
projector's checkpoint + 1 with an ordered consumer, decodes each message (a decode error does not stop it),
and calls `apply` with one batch at a time. A projector promises:

* `checkpoint()` is the stream sequence of the last message it has applied (0: none), read from the same
  store as its rows, and it moves only together with them (one transaction, one Delta commit, ...).
* `apply(batch)` is all-or-nothing: the rows of every event in the batch and the new checkpoint
  `batch.last_seq` become visible together or not at all. Events at or below the stored checkpoint are
  skipped, so applying a batch twice is a no-op.
* A poison event (`Incoming.error` set, or an exception while applying that one event) does not stop the
  projector: it is skipped, the checkpoint moves past it, and it is returned as a `DeadLetter`. The runtime
  stores returned dead letters through its dead-letter sink (the read model's `dead_letters` table; an
  insert that ignores a letter already stored, so a projector may also store them itself, atomically).
* Any exception `apply` raises means "nothing was applied, try again later" (database down, disk full):
  the runtime retries the same batch with back-off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from mlhub.events import Envelope


@dataclass(frozen=True, slots=True)
class Incoming:
    """One stored message for a projector: the decoded envelope, or why it could not be decoded."""

    seq: int
    subject: str
    data: bytes
    envelope: Envelope | None
    #: The decode error (the envelope is None); None when decoding worked.
    error: str | None = None

    def dead_letter(self, error: str) -> DeadLetter:
        """This message as a dead letter with the given error."""
        return DeadLetter(seq=self.seq, subject=self.subject, error=error, data=self.data)


@dataclass(frozen=True, slots=True)
class Batch:
    """Messages to apply, in stream order, and the checkpoint to store with them.

    last_seq is >= every event's seq; it is larger when the batch ended with messages this projector does
    not want (see Projector.event_types), which must still move its checkpoint.
    """

    events: Sequence[Incoming]
    last_seq: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message a projector skipped: where it is in the stream, why it failed, and its exact bytes."""

    seq: int
    subject: str
    error: str
    data: bytes


#: Stores dead letters of one projector (name, letters); must ignore letters already stored.
DeadLetterSink = Callable[[str, Sequence[DeadLetter]], None]


@runtime_checkable
class Projector(Protocol):
    """A read-model builder the runtime can drive. Its methods are synchronous and may block on I/O:
    the runtime calls them in a worker thread, never two at once for one projector."""

    #: Unique, stable name: the key of its checkpoint, lock and dead letters (e.g. "sql", "metrics").
    name: str
    #: Event types ("run.metrics_logged", ...) this projector wants, or None for every type. Messages of
    #: other types are neither decoded nor passed; they only move the checkpoint (Batch.last_seq).
    event_types: frozenset[str] | None

    def checkpoint(self) -> int:
        """The stream sequence of the last applied message; 0 when none was applied."""
        ...

    def apply(self, batch: Batch) -> Sequence[DeadLetter]:
        """Apply a batch atomically with the checkpoint batch.last_seq; return the poison events skipped."""
        ...


@runtime_checkable
class BufferingProjector(Projector, Protocol):
    """A projector whose `apply` may only buffer (e.g. many events per Parquet commit): its checkpoint() stays
    the durable position, and `flush()` makes everything applied so far durable together with the checkpoint.

    The runtime calls flush() when the stream goes idle (nothing new for a moment), when a run_until target is
    reached, and before it stops; a crash loses only the buffer, which the next start replays.
    """

    def flush(self) -> int:
        """Commit everything buffered; return the new checkpoint."""
        ...


def event_type_of_subject(subject: str) -> str:
    """The event type of a stored message from its subject: mlhub.ev.<aggregate>.<id>.<name> -> "<aggregate>.<name>"."""
    parts = subject.split(".")
    if len(parts) < 5:
        return ""
    return f"{parts[2]}.{parts[-1]}"
