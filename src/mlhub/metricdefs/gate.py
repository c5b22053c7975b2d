"""The gate: configs/metrics.yaml must equal the lock's first definitions with migrations/metrics/* applied.

So a definition cannot change silently: editing metrics.yaml without a migration file fails, and so does a
migration without a CHANGELOG.md line naming both its id and its metric. `check_schema` lists every problem
(the test tests/metricdefs/test_definitions_are_schema.py and `mlhub metrics check` run it); `lock_new_metrics`
records the first definition of metrics new to metrics.yaml and never changes an entry already there.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from mlhub.events import MetricSpec
from mlhub.metricdefs.errors import MetricDefinitionError, MigrationConflict
from mlhub.metricdefs.files import Migration, load_definitions, load_migrations, read_lock, write_lock
from mlhub.metricdefs.history import differences, migrate_backward, migrate_forward


@dataclass(frozen=True)
class SchemaFiles:
    """Where the definitions, the lock, the migrations and the changelog of a project are."""

    definitions: Path
    lock: Path
    migrations: Path
    changelog: Path

    @classmethod
    def of(cls, root: str | Path) -> SchemaFiles:
        """The standard layout under a project root."""
        root = Path(root)
        return cls(root / "configs" / "metrics.yaml", root / "configs" / "metrics.lock.json",
                   root / "migrations" / "metrics", root / "CHANGELOG.md")


def _by_metric(migrations: list[Migration]) -> dict[str, list[Migration]]:
    grouped: dict[str, list[Migration]] = defaultdict(list)
    for m in migrations:
        grouped[m.metric].append(m)
    return grouped


def check_schema(files: SchemaFiles) -> list[str]:
    """Every way the definitions file departs from lock + migrations + changelog; empty when it is sound."""
    try:
        declared = load_definitions(files.definitions)
        baseline = read_lock(files.lock)
        migrations = load_migrations(files.migrations)
    except MetricDefinitionError as e:
        return str(e).splitlines()
    problems: list[str] = []
    source = str(files.definitions)
    by_metric = _by_metric(migrations)
    for name in sorted(set(baseline) - set(declared)):
        problems.append(f"{source}: metric {name} was removed; a definition stays once declared (its runs "
                        f"keep referring to it)")
    for name in [n for n in declared if n not in baseline]:
        problems.append(f"{source}: metric {name} is new and not in {files.lock}: run `mlhub metrics lock` to "
                        f"record its first definition")
    for name in sorted(set(by_metric) - set(declared) - set(baseline)):
        problems.append(f"{by_metric[name][0].source}: migrates metric {name}, which {source} does not declare")
    for name in [n for n in declared if n in baseline]:
        try:
            expected = migrate_forward(baseline[name], by_metric.get(name, []), against=f"{files.lock} + earlier "
                                                                                          f"migrations")
        except MigrationConflict as e:
            problems.append(str(e))
            continue
        for field, old, new in differences(expected, declared[name]):
            problems.append(
                f"{source}: {name}.{field} is {new!r}, but the lock and migrations/metrics/ make it {old!r}: "
                f"changing a definition needs a migration file under {files.migrations}/ and a CHANGELOG.md entry "
                f"naming the migration and the metric"
            )
    problems += _changelog_problems(files.changelog, migrations)
    return problems


def _changelog_problems(changelog: Path, migrations: list[Migration]) -> list[str]:
    if not migrations:
        return []
    try:
        lines = changelog.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        return [f"{changelog}: cannot read it ({e.strerror or e}): every metric migration needs an entry there"]
    return [
        f"{m.source}: {changelog} has no entry for this migration: add a line naming both {m.id!r} and {m.metric!r}"
        for m in migrations
        if not any(m.id in line and _names_metric(line, m.metric) for line in lines)
    ]


#: Characters that go on a metric key (beside letters and digits) rather than end it in a line of prose; a '.'
#: goes on it only when a letter or digit follows (`val/acc.ema`), else it ends a sentence.
_KEY_GOES_ON = "_-/@#%"


def _names_metric(line: str, metric: str) -> bool:
    """Whether the line names the metric as a whole key (`val_acc` is not named by `val_acc_top5`, nor
    `train/loss` by `train/loss/ema`)."""
    start = 0
    while (at := line.find(metric, start)) >= 0:
        before = line[at - 1] if at else " "
        end = at + len(metric)
        after = line[end] if end < len(line) else " "
        after_next = line[end + 1] if end + 1 < len(line) else " "
        goes_on = after.isalnum() or after in _KEY_GOES_ON or (after == "." and after_next.isalnum())
        if not (before.isalnum() or before in _KEY_GOES_ON + ".") and not goes_on:
            return True
        start = at + 1
    return False


def lock_new_metrics(files: SchemaFiles) -> list[str]:
    """Record in the lock the first definition of each metric it lacks (the file's, its migrations undone).

    Entries already in the lock are never changed (that is what makes a silent edit fail the gate).
    Returns the names added.
    """
    declared = load_definitions(files.definitions)
    baseline: dict[str, MetricSpec] = read_lock(files.lock)
    by_metric = _by_metric(load_migrations(files.migrations))
    added = [name for name in declared if name not in baseline]
    for name in added:
        baseline[name] = migrate_backward(declared[name], by_metric.get(name, []), against=str(files.definitions))
    if added:
        write_lock(files.lock, baseline)
    return added
