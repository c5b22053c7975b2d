"""`mlhub replay`: rebuild every projection from sequence 1 into a fresh target, with a progress bar."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from mlhub.commands.common import load_settings, progress_bar, run_with_event_log


@click.command("replay")
@click.option("--into", "into", required=True, metavar="DATABASE_URL",
              help="SQLAlchemy URL of a fresh database, e.g. sqlite:///rebuilt.db or "
                   "postgresql+psycopg://user@host/db (migrated here; refused if it already holds projections).")
@click.option("--metrics-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Fresh folder for the metric tables [default: <data dir>/replays/<UTC time>/metrics].")
def replay(into: str, metrics_dir: Path | None) -> None:
    """Rebuild the SQL read model and the metric tables from the whole event log into a fresh target."""
    from mlhub.projections.rebuild import open_target, rebuild

    settings = load_settings()
    if metrics_dir is None:
        metrics_dir = settings.data_dir / "replays" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") / "metrics"
    try:
        engine = open_target(into)
    except Exception as e:  # SQLAlchemy raises several types for a malformed URL
        raise click.BadParameter(f"{into!r} is not a usable database URL: {e}", param_hint="--into") from e
    try:
        with progress_bar("replay") as progress:
            positions = run_with_event_log(
                settings, "mlhub-replay",
                lambda log: rebuild(log, engine=engine, metrics_dir=metrics_dir, progress=progress))
    finally:
        engine.dispose()
    click.echo(f"rebuilt into {into} and {metrics_dir}: " + ", ".join(f"{k} at seq {v}" for k, v in positions.items()))
