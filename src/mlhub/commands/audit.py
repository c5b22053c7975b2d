"""`mlhub audit verify` and `mlhub audit seal`: prove the projections and the stored log are untouched."""

from __future__ import annotations

import sys

import click

from mlhub.commands.common import load_settings, progress_bar, run_with_event_log


@click.group("audit")
def audit() -> None:
    """Tamper-evidence: seals over the stored events, and rebuild-and-compare of every projection."""


@audit.command("verify")
@click.option("--no-seals", is_flag=True, help="Skip recomputing the audit seals.")
def verify(no_seals: bool) -> None:
    """Rebuild every projection into a scratch target and compare it with the live one; recompute the seals.

    Prints each difference (table and rows, metric runs, broken seals) and exits 1 on any drift.
    """
    from mlhub.analytics import location_from_settings
    from mlhub.projections.audit import verify as run_verify
    from mlhub.readmodel import create_engine

    settings = load_settings()
    live = create_engine(settings.resolved_database_url)
    try:
        with progress_bar("rebuild") as progress:
            report = run_with_event_log(settings, "mlhub-audit", lambda log: run_verify(
                log, live, location_from_settings(settings), check_seals=not no_seals, progress=progress,
                scratch_dir=settings.data_dir if settings.data_dir.exists() else None))
    finally:
        live.dispose()
    click.echo(f"read model: {report.tables_compared} tables compared at seq {report.checkpoint_sql}; "
               f"metric table: {report.metric_points} points compared at seq {report.checkpoint_metrics}")
    if report.seals is not None:
        s = report.seals
        click.echo(f"seals: {s.seals} checked, sealed through seq {s.sealed_through}, {s.unsealed} events after "
                   f"the last seal; last seal digest {s.last_digest or '-'}")
        for problem in s.problems:
            click.echo(f"DRIFT seal: {problem}")
    for difference in report.differences:
        click.echo(f"DRIFT {difference}")
    if not report.ok:
        click.echo("audit FAILED", err=True)
        sys.exit(1)
    click.echo("audit passed: the projections equal a rebuild from the log" + (
        "" if no_seals else " and every seal holds"))


@audit.command("seal")
def seal_now() -> None:
    """Append a seal over every event stored since the last seal (`mlhub projector` also seals periodically)."""
    from mlhub.eventlog import seal

    settings = load_settings()

    sealed = run_with_event_log(settings, "mlhub-audit", lambda log: seal(log, producer=settings.producer))
    if sealed is None:
        click.echo("nothing to seal")
    else:
        click.echo(f"sealed events {sealed.first_seq}..{sealed.last_seq} ({sealed.message_count}): {sealed.digest}")
