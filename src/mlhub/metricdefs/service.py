"""Definitions are events: `apply_definitions` and `apply_migrations` bring the event log to the files.

The state of every metric is read from the log (`metric.defined`, then `metric.migrated` events in order).
Everything is planned in memory first; on any problem nothing is appended. Appends are guarded by the metric
aggregate's version, and each event's id is derived from its content, so two racing runs store it once and a
run repeated later appends nothing (already-applied migrations are recognised by their id in the log).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlhub.errors import ConcurrencyError
from mlhub.eventlog import EventLog
from mlhub.events import SUBJECT_PREFIX, Envelope, MetricDefined, MetricMigrated, MetricSpec, sha256_of
from mlhub.metricdefs.errors import DefinitionChanged, MigrationConflict
from mlhub.metricdefs.files import Migration, load_definitions, load_migrations
from mlhub.metricdefs.history import differences, migrate_backward, migrate_forward

#: Every event of every metric definition.
METRIC_SUBJECTS = f"{SUBJECT_PREFIX}.metric.>"
_EVENT_IDS = uuid.UUID("6d1f3c0e-8a43-4f55-9a57-5b0f3e0a4d21")
_ATTEMPTS = 3


@dataclass
class LoggedMetric:
    """A metric as the event log defines it: its definition now, its version and the migrations applied."""

    spec: MetricSpec
    version: int
    migrations: list[str] = field(default_factory=list)


@dataclass
class ApplyResult:
    """What an apply or migrate run did: metrics defined, migrations applied, metrics already up to date."""

    defined: list[str] = field(default_factory=list)
    migrated: list[tuple[str, str]] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: how many metrics were defined, migrations applied, metrics unchanged."""
        return (f"{len(self.defined)} defined, {len(self.migrated)} migration(s) applied, "
                f"{len(self.unchanged)} unchanged")


async def logged_definitions(event_log: EventLog) -> dict[str, LoggedMetric]:
    """Every metric the event log defines, folded from its metric.defined and metric.migrated events."""
    state: dict[str, LoggedMetric] = {}
    async for recorded in event_log.replay(subject_filter=METRIC_SUBJECTS):
        event = recorded.envelope.event
        if isinstance(event, MetricDefined):
            state.setdefault(event.name, LoggedMetric(event.spec, recorded.seq)).version = recorded.seq
        elif isinstance(event, MetricMigrated):
            metric = state.setdefault(event.name, LoggedMetric(event.spec, recorded.seq))
            metric.spec, metric.version = event.spec, recorded.seq
            metric.migrations.append(event.migration_id)
    return state


def _event_id(kind: str, name: str, detail: str, spec: MetricSpec) -> uuid.UUID:
    """The same event (same kind, metric, migration and definition) always gets the same id: stored once."""
    return uuid.uuid5(_EVENT_IDS, f"{kind}/{name}/{detail}/{sha256_of(spec.model_dump(mode='json'))}")


def plan(
    logged: dict[str, LoggedMetric],
    declared: dict[str, MetricSpec] | None,
    migrations: Sequence[Migration],
    *,
    source: str = "configs/metrics.yaml",
) -> tuple[dict[str, list[MetricDefined | MetricMigrated]], ApplyResult]:
    """The events that bring the log to the files, by metric; raises (and plans nothing) on any problem.

    declared None: only pending migrations of metrics the log defines (`mlhub metrics migrate`). Otherwise a
    metric new to the log is defined at its first definition (the file's, with its migrations undone) and then
    migrated, so a fresh log holds the same history as an old one; a metric whose definition in the file
    differs from the log's after its pending migrations is refused (DefinitionChanged).
    """
    by_metric: dict[str, list[Migration]] = defaultdict(list)
    for m in migrations:
        by_metric[m.metric].append(m)
    conflicts: list[str] = []
    changed: list[tuple[str, str, object, object]] = []
    events: dict[str, list[MetricDefined | MetricMigrated]] = {}
    result = ApplyResult()
    names = list(declared) if declared is not None else list(logged)
    for name in sorted(set(by_metric) - set(names) - set(logged)):
        where = f"{source} does not declare it" if declared is not None else "the event log does not define it"
        conflicts.append(f"{by_metric[name][0].source} migrates metric {name}, but {where}"
                         + ("" if declared is not None else ": run `mlhub metrics apply` first"))
    for name in names:
        own = by_metric.get(name, [])
        planned: list[MetricDefined | MetricMigrated] = []
        try:
            if name in logged:
                spec = logged[name].spec
                pending = [m for m in own if m.id not in logged[name].migrations]
            else:
                assert declared is not None
                spec = migrate_backward(declared[name], own, against=source)
                planned.append(MetricDefined(name=name, spec=spec))
                pending = own
            for m in pending:
                new = migrate_forward(spec, [m])
                planned.append(MetricMigrated(name=name, migration_id=m.id, previous=spec, spec=new))
                spec = new
        except MigrationConflict as e:
            conflicts.append(str(e))
            continue
        if declared is not None:
            changed += [(name, f, old, new) for f, old, new in differences(spec, declared[name])]
        events[name] = planned
        if not planned:
            result.unchanged.append(name)
        for event in planned:
            if isinstance(event, MetricDefined):
                result.defined.append(name)
            else:
                result.migrated.append((name, event.migration_id))
    if conflicts:
        raise MigrationConflict("; ".join(conflicts) + "; nothing was appended")
    if changed:
        lines = [f"{metric}.{f}: {old!r} in the event log, {new!r} in {source}" for metric, f, old, new in changed]
        metrics = sorted({c[0] for c in changed})
        raise DefinitionChanged(
            f"{source} changes the definition of {', '.join(metrics)} without a migration ({'; '.join(lines)}): "
            f"write a migration file under migrations/metrics/ (NNNN_<what>.yaml: metric, reason, "
            f"changes {{field: {{from, to}}}}) and a CHANGELOG.md entry naming it; nothing was appended",
            changed,
        )
    return events, result


async def _append_planned(event_log: EventLog, logged: dict[str, LoggedMetric],
                          events: dict[str, list[MetricDefined | MetricMigrated]], producer: str) -> None:
    for name, planned in events.items():
        version = logged[name].version if name in logged else 0
        for event in planned:
            detail = event.migration_id if isinstance(event, MetricMigrated) else "defined"
            envelope = Envelope(event=event, producer=producer,
                                event_id=_event_id(event.event_type, name, detail, event.spec))
            version = (await event_log.append(envelope, expected_version=version)).seq


async def _apply(event_log: EventLog, declared: dict[str, MetricSpec] | None, migrations: Sequence[Migration],
                 source: str, producer: str) -> ApplyResult:
    for attempt in range(_ATTEMPTS):
        logged = await logged_definitions(event_log)
        events, result = plan(logged, declared, migrations, source=source)
        try:
            await _append_planned(event_log, logged, events, producer)
            return result
        except ConcurrencyError:
            if attempt == _ATTEMPTS - 1:
                raise
            # another writer changed a metric meanwhile: read the log again and plan again
    raise AssertionError("unreachable")


async def apply_definitions(
    event_log: EventLog,
    file: str | Path,
    *,
    migrations_dir: str | Path | None = None,
    producer: str = "mlhub-metrics",
) -> ApplyResult:
    """Bring the event log to a definitions file: metric.defined for new metrics, metric.migrated for pending
    migrations (from migrations_dir); DefinitionChanged for a changed definition no migration covers."""
    declared = load_definitions(file)
    return await _apply(event_log, declared, load_migrations(migrations_dir), str(file), producer)


async def apply_migrations(
    event_log: EventLog, migrations_dir: str | Path, *, producer: str = "mlhub-metrics"
) -> ApplyResult:
    """Append metric.migrated for every migration file the log has not applied yet (in number order)."""
    return await _apply(event_log, None, load_migrations(migrations_dir), str(migrations_dir), producer)
