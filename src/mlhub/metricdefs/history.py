"""Pure functions over definitions and migrations: apply one forward or backward, and compare two definitions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from mlhub.events import MetricSpec
from mlhub.metricdefs.errors import MigrationConflict
from mlhub.metricdefs.files import SPEC_FIELDS, Migration


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return float(a) == float(b)  # 1 and 1.0 are one value (YAML writes either)
    return bool(a == b)


def differences(old: MetricSpec, new: MetricSpec) -> list[tuple[str, Any, Any]]:
    """(field, old value, new value) for every field in which two definitions differ."""
    return [(f, getattr(old, f), getattr(new, f)) for f in SPEC_FIELDS
            if not _same(getattr(old, f), getattr(new, f))]


def _step(spec: MetricSpec, migration: Migration, *, forward: bool, against: str) -> MetricSpec:
    values = spec.model_dump()
    mismatches = []
    for field, (old, new) in migration.changes.items():
        expected, result = (old, new) if forward else (new, old)
        if not _same(values[field], expected):
            mismatches.append(f"{field} is {values[field]!r} in {against}, but the migration changes it "
                              f"{'from' if forward else 'to'} {expected!r}")
        values[field] = result
    if mismatches:
        raise MigrationConflict(f"{migration.source} (metric {migration.metric}): " + "; ".join(mismatches))
    try:
        return MetricSpec.model_validate(values, strict=True)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'definition'}: {err['msg']}" for err in e.errors())
        raise MigrationConflict(f"{migration.source} (metric {migration.metric}) leads to an invalid definition: "
                                f"{problems}") from e


def migrate_forward(spec: MetricSpec, migrations: Sequence[Migration], against: str = "the event log"
                    ) -> MetricSpec:
    """The definition after applying migrations in order; MigrationConflict when a `from` value does not match."""
    for migration in migrations:
        spec = _step(spec, migration, forward=True, against=against)
    return spec


def migrate_backward(spec: MetricSpec, migrations: Sequence[Migration], against: str) -> MetricSpec:
    """The definition before migrations (undone last first): the baseline a fresh event log defines."""
    for migration in reversed(migrations):
        spec = _step(spec, migration, forward=False, against=against)
    return spec
