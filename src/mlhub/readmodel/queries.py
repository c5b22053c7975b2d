"""Read queries on the read model that more than one part of mlhub needs (projector state; the API adds more)."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from mlhub.readmodel import tables as t


def checkpoints(conn: sa.Connection) -> dict[str, int]:
    """Every projector's stored checkpoint (the last stream sequence it applied), by projector name."""
    rows = conn.execute(sa.select(t.projector_checkpoints.c.projector, t.projector_checkpoints.c.position))
    return {name: int(position) for name, position in rows}


@dataclass(frozen=True)
class DeadLetterRow:
    """A stored dead letter: the projector that skipped it, where it is in the stream, why, and its bytes."""

    projector: str
    seq: int
    subject: str
    error: str
    data: bytes


def dead_letters(conn: sa.Connection, projector: str | None = None) -> list[DeadLetterRow]:
    """Dead letters in stream order, of one projector or of all."""
    query = sa.select(t.dead_letters).order_by(t.dead_letters.c.seq, t.dead_letters.c.projector)
    if projector is not None:
        query = query.where(t.dead_letters.c.projector == projector)
    return [
        DeadLetterRow(r.projector, int(r.seq), r.subject, r.error, bytes(r.data)) for r in conn.execute(query)
    ]
