"""The SQL projector: events -> the read model's tables, with its checkpoint in the same transaction.

One batch is one transaction: lock the checkpoint row, skip events at or below it, apply the rest, write the
new checkpoint, commit. The batch is first applied in one go inside a SAVEPOINT; if that fails, the savepoint
is rolled back and the events are applied one by one, each in a SAVEPOINT of its own, and the ones that fail
become dead letters (in the same transaction). A database that is unreachable or locked is not a poison
event: that error propagates, the transaction rolls back, and the runtime retries the batch later.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mlhub.projections.runtime import Batch, DeadLetter, Incoming
from mlhub.projections.sql_changes import ReadModelChanges, upsert
from mlhub.readmodel import tables as t

log = logging.getLogger(__name__)

#: Errors that say the database (not the event) is the problem: never dead-letter an event because of them.
_INFRASTRUCTURE_ERRORS = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.DisconnectionError)


class SqlProjector:
    """Projects every event type into the SQL read model (see mlhub.readmodel.tables).

    engine: a read-model engine made with `mlhub.readmodel.create_engine(url, writer=True)`, migrated to
    head. Constructing the projector does no I/O.
    """

    event_types: frozenset[str] | None = None

    def __init__(self, engine: Engine, *, name: str = "sql") -> None:
        self.engine = engine
        self.name = name

    def checkpoint(self) -> int:
        """The last stream sequence applied to the read model (0: none)."""
        with self.engine.connect() as conn:
            position = conn.execute(
                sa.select(t.projector_checkpoints.c.position).where(t.projector_checkpoints.c.projector == self.name)
            ).scalar_one_or_none()
        return int(position or 0)

    def apply(self, batch: Batch) -> list[DeadLetter]:
        """Apply a batch and its checkpoint in one transaction; return the dead letters it recorded."""
        with self.engine.begin() as conn:
            position = self._lock_checkpoint(conn)
            if batch.last_seq <= position:
                return []  # applied before (a replay after a crash between commit and acknowledgement)
            todo = [item for item in batch.events if item.seq > position]
            letters = [item.dead_letter(item.error or "undecodable") for item in todo if item.envelope is None]
            decoded = [item for item in todo if item.envelope is not None]
            if decoded:
                try:
                    with conn.begin_nested():
                        self._apply(conn, decoded)
                except _INFRASTRUCTURE_ERRORS:
                    raise
                except Exception as e:  # a poison event somewhere in the batch: find it
                    log.warning("projector %s: batch %d..%d failed (%s); applying its events one by one",
                                self.name, decoded[0].seq, decoded[-1].seq, e)
                    letters += self._apply_one_by_one(conn, decoded)
            letters.sort(key=lambda letter: letter.seq)
            record_dead_letters(conn, self.name, letters)
            upsert(conn, t.projector_checkpoints, [
                {"projector": self.name, "position": batch.last_seq, "updated_at": datetime.now(UTC)}
            ])
        return letters

    def _lock_checkpoint(self, conn: sa.Connection) -> int:
        """The stored checkpoint, with its row locked until commit (SQLite: the writer's BEGIN IMMEDIATE)."""
        cp = t.projector_checkpoints
        upsert(conn, cp, [{"projector": self.name, "position": 0, "updated_at": datetime.now(UTC)}], replace=False)
        position = conn.execute(sa.select(cp.c.position).where(cp.c.projector == self.name).with_for_update())
        return int(position.scalar_one())

    @staticmethod
    def _apply(conn: sa.Connection, items: Sequence[Incoming]) -> None:
        changes = ReadModelChanges(conn)
        changes.apply([(item.seq, item.envelope) for item in items if item.envelope is not None])
        changes.flush()

    def _apply_one_by_one(self, conn: sa.Connection, items: Sequence[Incoming]) -> list[DeadLetter]:
        letters: list[DeadLetter] = []
        for item in items:
            try:
                with conn.begin_nested():
                    self._apply(conn, [item])
            except _INFRASTRUCTURE_ERRORS:
                raise
            except Exception as e:
                error = f"{type(e).__name__}: {e}"
                log.error("projector %s: event %d (%s) is a poison event, dead-lettered: %s\n%s",
                          self.name, item.seq, item.subject, error, traceback.format_exc())
                letters.append(item.dead_letter(error))
        return letters


def record_dead_letters(conn: sa.Connection, projector: str, letters: Sequence[DeadLetter]) -> None:
    """Store dead letters of a projector; a letter stored before (same projector and sequence) is kept as is."""
    now = datetime.now(UTC)
    upsert(conn, t.dead_letters, [
        {"projector": projector, "seq": letter.seq, "subject": letter.subject, "error": letter.error,
         "data": letter.data, "recorded_at": now}
        for letter in letters
    ], replace=False)


class SqlDeadLetterSink:
    """A DeadLetterSink that stores letters in the read model's dead_letters table (for any projector)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __call__(self, projector: str, letters: Sequence[DeadLetter]) -> None:
        """Store the letters in their own transaction."""
        if letters:
            with self.engine.begin() as conn:
                record_dead_letters(conn, projector, letters)
