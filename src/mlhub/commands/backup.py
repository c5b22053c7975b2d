"""`mlhub events backup PATH` and `mlhub events restore PATH`: the event log's stream through JetStream's own
snapshots (mlhub.eventlog.backup), so every event keeps its sequence number, bytes and store time."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mlhub.commands.common import fail, load_settings, run_with_event_log
from mlhub.errors import MlhubError

if TYPE_CHECKING:
    from mlhub.eventlog import BackupManifest, EventLog, RestoreReport, SealReport
    from mlhub.settings import Settings


@click.command("backup")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--no-check", is_flag=True,
              help="Skip the server's check of every stored message's checksum before the snapshot.")
def backup(path: Path, no_check: bool) -> None:
    """Back up the event log into the new directory PATH: the stream's JetStream snapshot (stream.tar.s2) and
    manifest.json (config, state, sha256). Needs the event log's admin credentials."""
    from mlhub import __version__
    from mlhub.eventlog import backup_stream

    settings = load_settings()
    manifest = run_with_event_log(settings, "mlhub-backup", lambda log: backup_stream(
        log, path, mlhub_version=__version__, check_messages=not no_check), stream_setup=False)
    state = manifest.state
    click.echo(f"backed up {manifest.stream}: {state.messages} events, seq {state.first_seq}..{state.last_seq}, "
               f"{_size(state.bytes)} stored, in {manifest.seconds:.2f} s")
    click.echo(f"  {path}: {manifest.snapshot.file} ({_size(manifest.snapshot.bytes)}, sha256 "
               f"{manifest.snapshot.sha256}) and manifest.json")
    if manifest.last_seal is not None:
        click.echo(f"  last audit seal: through seq {manifest.last_seal.last_seq}, digest {manifest.last_seal.digest}")
    if manifest.appended_during_backup:
        click.echo(f"  {manifest.appended_during_backup} events were appended while the backup ran: it holds every "
                   f"event through seq {state.last_seq} and may hold some of those (a restore says how many)")


@click.command("restore")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--no-seals", is_flag=True, help="Skip recomputing the audit seals of the restored stream.")
def restore(path: Path, no_seals: bool) -> None:
    """Restore the backup at PATH (from `mlhub events backup`) as the event log's stream, which must not exist:
    every event keeps its sequence, bytes and time. Checks the backup first, then that the restored stream
    equals it, and recomputes the audit seals. Needs the event log's admin credentials."""
    from mlhub.eventlog import read_backup, restore_stream, verify_seals

    settings = load_settings()
    try:
        manifest = read_backup(path)  # before connecting (or starting a server): a bad backup touches nothing
    except MlhubError as e:
        fail(e)
    _describe(path, manifest)

    async def work(log: EventLog) -> tuple[RestoreReport, SealReport | None]:
        report = await restore_stream(log, path, manifest=manifest)
        click.echo(f"restored {manifest.stream} on {log.where} ({report.replicas} "
                   f"{'replica' if report.replicas == 1 else 'replicas'}) in {report.seconds:.2f} s"
                   + (f"; adapted to this deployment: {', '.join(report.changes)}" if report.changes else ""))
        return report, None if no_seals else await verify_seals(log)

    report, seals = run_with_event_log(settings, "mlhub-restore", work, stream_setup=False)
    state = report.state
    extra = state.last_seq - manifest.state.last_seq
    click.echo(f"verified: the restored stream holds {state.messages} events, seq {state.first_seq}.."
               f"{state.last_seq}, {_size(state.bytes)}"
               + (", as the manifest says" if not manifest.appended_during_backup else
                  f": the manifest's {manifest.state.messages} and {extra} of the {manifest.appended_during_backup} "
                  "appended while the backup ran"))
    if seals is not None:
        click.echo(f"seals: {seals.seals} checked, sealed through seq {seals.sealed_through}, "
                   f"{seals.unsealed} events after the last seal; last seal digest {seals.last_digest or '-'}")
        for problem in seals.problems:
            click.echo(f"DRIFT seal: {problem}")
        if seals.problems:
            click.echo("restored, but the audit seals do not hold (the backup holds an altered log)", err=True)
            sys.exit(1)
    ahead = _checkpoints_after(settings, state.last_seq)
    if ahead:
        click.echo(f"WARNING: the read model {settings.resolved_database_url} has applied events after the restored "
                   f"log's last seq {state.last_seq} ({', '.join(f'{n} at {p}' for n, p in sorted(ahead.items()))}): "
                   "its projectors would skip the events appended next. Rebuild the projections before starting "
                   "the hub (`mlhub replay --into <a fresh database> --metrics-dir <a fresh dir>`, then use those, "
                   "or move the read model and the metric tables away)", err=True)
    else:
        click.echo("projector checkpoints stay valid (every event kept its sequence number)")


def _checkpoints_after(settings: Settings, last_seq: int) -> dict[str, int]:
    """The SQL read model's projector checkpoints past `last_seq` (none when there is no read model)."""
    from mlhub.commands.common import read_model
    from mlhub.readmodel import ReadModelError
    from mlhub.readmodel.queries import checkpoints

    try:
        with read_model(settings) as conn:
            return {name: seq for name, seq in checkpoints(conn).items() if seq > last_seq}
    except ReadModelError:
        return {}


def _describe(path: Path, manifest: BackupManifest) -> None:
    state = manifest.state
    click.echo(f"backup {path}: {manifest.stream}, {state.messages} events, seq {state.first_seq}..{state.last_seq}, "
               f"taken {manifest.created_at:%Y-%m-%d %H:%M:%S} UTC by mlhub {manifest.mlhub_version} from nats-server "
               f"{manifest.server_version}; {manifest.snapshot.file} matches its sha256")


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n} bytes"
