"""What the read model says about metric definitions: the declared metrics and the undeclared keys logged."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from mlhub.readmodel import tables as t


@dataclass(frozen=True)
class DefinitionRow:
    """A declared metric as projected (revision 1 when defined, +1 per migration)."""

    name: str
    direction: str
    unit: str
    description: str
    min_value: float | None
    max_value: float | None
    revision: int
    last_migration_id: str | None


@dataclass(frozen=True)
class UndeclaredKey:
    """A logged metric key no definition declares: kept, and flagged in metric_summaries.declared."""

    key: str
    runs: int
    points: int


def definitions(conn: sa.Connection) -> list[DefinitionRow]:
    """Every declared metric, by name."""
    d = t.metric_definitions
    query = sa.select(d.c.name, d.c.direction, d.c.unit, d.c.description, d.c.min_value, d.c.max_value,
                      d.c.revision, d.c.last_migration_id).order_by(d.c.name)
    return [DefinitionRow(*row) for row in conn.execute(query)]


def undeclared_keys(conn: sa.Connection) -> list[UndeclaredKey]:
    """Every logged key that has no definition, with how many runs logged it and how many points."""
    s = t.metric_summaries
    query = (sa.select(s.c.key, sa.func.count(), sa.func.sum(s.c["count"]))
             .where(s.c.declared == sa.false()).group_by(s.c.key).order_by(s.c.key))
    return [UndeclaredKey(key, int(runs), int(points or 0)) for key, runs, points in conn.execute(query)]
