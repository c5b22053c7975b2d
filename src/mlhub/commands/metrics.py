"""`mlhub metrics ...`: metric definitions as schema (configs/metrics.yaml; see docs/metrics.md).

apply and migrate append metric.defined / metric.migrated events; list reads the read model; check and lock
work on the files only (check is what the gate runs).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from mlhub.commands.common import fail, load_settings, run_with_event_log
from mlhub.errors import MlhubError

_FILE = click.option("--file", "file", type=click.Path(dir_okay=False, path_type=Path),
                     default=Path("configs/metrics.yaml"), show_default=True, help="The metric definitions file.")
_MIGRATIONS = click.option("--migrations", "migrations", type=click.Path(file_okay=False, path_type=Path),
                           default=Path("migrations/metrics"), show_default=True,
                           help="Folder of the metric migration files (NNNN_<what>.yaml).")


@click.group("metrics")
def metrics() -> None:
    """Metric definitions: declare (apply), migrate, list, check and lock them."""


def _print_result(result: object) -> None:
    from mlhub.metricdefs import ApplyResult

    assert isinstance(result, ApplyResult)
    for name in result.defined:
        click.echo(f"defined   {name}")
    for name, migration in result.migrated:
        click.echo(f"migrated  {name} ({migration})")
    click.echo(result.summary())


def _fail_lines(e: MlhubError) -> None:
    for line in str(e).splitlines():
        click.echo(f"error [{e.code}]: {line}", err=True)
    sys.exit(2)


@metrics.command("apply")
@_FILE
@_MIGRATIONS
def apply(file: Path, migrations: Path) -> None:
    """Bring the event log to the definitions file: metric.defined for each new metric, metric.migrated for
    each migration not applied yet. A changed definition that no migration covers is refused (exit 1), and
    then nothing is appended; a bad file exits 2 naming the file and field."""
    from mlhub.metricdefs import MetricDefinitionError, apply_definitions, load_definitions, load_migrations

    settings = load_settings()
    try:  # check the files before connecting to anything
        load_definitions(file)
        load_migrations(migrations)
    except MetricDefinitionError as e:
        _fail_lines(e)
    result = run_with_event_log(settings, "mlhub-metrics", lambda log: apply_definitions(
        log, file, migrations_dir=migrations, producer=settings.producer))
    _print_result(result)


@metrics.command("migrate")
@_MIGRATIONS
def migrate(migrations: Path) -> None:
    """Apply the migration files not yet in the event log, in number order (metric.migrated each); running it
    again appends nothing."""
    from mlhub.metricdefs import MetricDefinitionError, apply_migrations, load_migrations

    settings = load_settings()
    try:
        load_migrations(migrations)
    except MetricDefinitionError as e:
        _fail_lines(e)
    result = run_with_event_log(settings, "mlhub-metrics", lambda log: apply_migrations(
        log, migrations, producer=settings.producer))
    _print_result(result)


@metrics.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print {definitions: [...], undeclared: [...]} as JSON.")
def list_(as_json: bool) -> None:
    """The declared metrics as the read model holds them (run `mlhub projector` to bring it up to date), and
    the logged keys that no definition declares."""
    import dataclasses

    import sqlalchemy as sa

    from mlhub.metricdefs.listing import definitions, undeclared_keys
    from mlhub.readmodel import create_engine, sqlite_path

    settings = load_settings()
    engine = create_engine(settings.resolved_database_url)
    try:
        path = sqlite_path(engine)
        if path is not None and not path.exists():
            fail(MlhubError(f"no read model at {path} yet: run `mlhub projector --until-caught-up` first"))
        with engine.connect() as conn:
            rows, undeclared = definitions(conn), undeclared_keys(conn)
    except sa.exc.SQLAlchemyError as e:
        fail(MlhubError(f"cannot read the read model at {engine.url!r}: {e}"))
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps({"definitions": [dataclasses.asdict(r) for r in rows],
                               "undeclared": [dataclasses.asdict(u) for u in undeclared]}))
        return
    for r in rows:
        valid = f"[{'' if r.min_value is None else f'{r.min_value:g}'}, " \
                f"{'' if r.max_value is None else f'{r.max_value:g}'}]"
        migration = f"  (revision {r.revision}, {r.last_migration_id})" if r.last_migration_id else ""
        click.echo(f"{r.name:<24} {r.direction:<4} {r.unit or '-':<14} {valid:<12} {r.description}{migration}")
    click.echo(f"{len(rows)} declared metric(s)")
    for u in undeclared:
        click.echo(f"undeclared: {u.key} ({u.runs} run(s), {u.points} point(s))")


@metrics.command("check")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=Path("."), show_default=True,
              help="Project root (configs/metrics.yaml, configs/metrics.lock.json, migrations/metrics/, "
                   "CHANGELOG.md).")
def check(root: Path) -> None:
    """Check that configs/metrics.yaml equals the lock + migrations/metrics/*, and that every migration has a
    CHANGELOG.md entry (what the gate checks); exit 1 naming each problem."""
    from mlhub.metricdefs import SchemaFiles, check_schema

    problems = check_schema(SchemaFiles.of(root))
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
    if problems:
        sys.exit(1)
    click.echo("metric definitions: configs/metrics.yaml matches the lock and migrations/metrics/")


@metrics.command("lock")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=Path("."), show_default=True,
              help="Project root.")
def lock(root: Path) -> None:
    """Record the first definition of each metric new to configs/metrics.yaml in configs/metrics.lock.json
    (entries already there never change: a changed definition needs a migration)."""
    from mlhub.metricdefs import SchemaFiles, lock_new_metrics

    try:
        added = lock_new_metrics(SchemaFiles.of(root))
    except MlhubError as e:
        _fail_lines(e)
    click.echo(f"locked {', '.join(added)}" if added else "the lock already has every metric")
