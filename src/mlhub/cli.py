"""The `mlhub` command. Every subcommand imports what it needs when it runs, so `mlhub --help` stays fast and
never imports torch or lightning."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from mlhub import __version__
from mlhub.commands.backup import backup as _backup_command
from mlhub.commands.backup import restore as _restore_command
from mlhub.commands.common import fail as _fail
from mlhub.commands.common import load_settings as _settings
from mlhub.errors import MlhubError

T = TypeVar("T")


def _run(coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine; mlhub's own errors become one clear line on stderr and exit status 1."""
    try:
        return asyncio.run(coro_fn())
    except MlhubError as e:
        _fail(e)


#: Subcommands that live in mlhub.commands.<module>, loaded only when used: name -> (module:attribute, the
#: command's short help). `mlhub --help` prints the short help from here without importing any of them (the
#: modules pull in pydantic models, pyarrow, the HTTP client); tests/test_cli.py checks it equals the
#: command's own docstring, so the two cannot drift.
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "projector": ("mlhub.commands.projector:projector",
        "Build the read models from the event log: the SQL read model and every registered projector."),
    "query": ("mlhub.commands.query:query",
        "Run one read-only SELECT over the views metrics, runs, params, tags, experiments, "
        "metric_definitions, metric_summary, epoch_metrics, leaderboard, undeclared_metrics and "
        "metric_range_violations (and the table macro run_metrics(run_id, key))."),
    "replay": ("mlhub.commands.replay:replay",
        "Rebuild the SQL read model and the metric tables from the whole event log into a fresh target."),
    "audit": ("mlhub.commands.audit:audit",
        "Tamper-evidence: seals over the stored events, and rebuild-and-compare of every projection."),
    "submit": ("mlhub.commands.jobs:submit",
        "Validate the experiment config CONFIG (a YAML file, e.g. configs/digits-mlp.yaml) and queue a job."),
    "cancel": ("mlhub.commands.jobs:cancel",
        "Cancel the queued or running job JOB_ID (an ended job cannot be cancelled)."),
    "reproduce": ("mlhub.commands.jobs:reproduce",
        "Resubmit run RUN_ID's recorded config snapshot unchanged (same seed, same sha256) as a new run."),
    "worker": ("mlhub.commands.worker:worker",
        "Run a worker of the --pool: train queued jobs until Ctrl-C or SIGTERM."),
    "models": ("mlhub.commands.models:models",
        "The model registry: register versions from run artifacts, promote aliases, read lineage."),
    "metrics": ("mlhub.commands.metrics:metrics",
        "Metric definitions: declare (apply), migrate, list, check and lock them."),
    "up": ("mlhub.commands.up:up",
        "Start everything in one process tree until Ctrl-C or SIGTERM: the embedded nats-server (unless "
        "MLHUB_NATS_URL is set), read-model migrations, the projectors, N workers and the REST API on "
        "127.0.0.1:PORT."),
    "runs": ("mlhub.commands.runs:runs",
        "Search runs: newest first, with status and last metric values (the filter language of docs/api.md)."),
    "show": ("mlhub.commands.runs:show",
        "Everything known about RUN: status, times, provenance, params, tags, metrics, artifacts, "
        "lineage."),
    "import": ("mlhub.commands.import_mlflow:import_group",
        "Import history from other tools (mlhub import mlflow SOURCE)."),
    "tokens": ("mlhub.commands.tokens:tokens",
        "API tokens: create (printed once, stored as its sha256 on the event log), list, revoke."),
}


class LazyGroup(click.Group):
    """A click group whose listed subcommands are imported from their module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in LAZY_COMMANDS:
            return super().get_command(ctx, cmd_name)
        import importlib

        module_name, attr = LAZY_COMMANDS[cmd_name][0].split(":")
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The commands table of --help, as click draws it, with the lazy commands' short help from LAZY_COMMANDS."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names), default=0)
        rows: list[tuple[str, str]] = []
        for name in names:
            if name in LAZY_COMMANDS:
                rows.append((name, click.Command(name, help=LAZY_COMMANDS[name][1]).get_short_help_str(limit)))
                continue
            command = super().get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlhub")
def main() -> None:
    """mlhub: an event-sourced ML experiment hub on NATS JetStream.

    Start everything with `mlhub up` (or `mlhub demo`). Settings come from MLHUB_* environment variables (see
    README): MLHUB_DATA_DIR (default .mlhub), MLHUB_NATS_URL (use that server instead of the embedded one),
    MLHUB_NATS_PORT, MLHUB_NATS_SYNC. The client commands (submit, cancel, reproduce, runs, show, models,
    query) talk to the hub at MLHUB_URL (default http://127.0.0.1:8000) with MLHUB_TOKEN, unless
    MLHUB_NATS_URL is set or --direct is given.
    """


@main.command()
def nats() -> None:
    """Run the embedded nats-server (JetStream under MLHUB_DATA_DIR) in the foreground until Ctrl-C."""
    from mlhub.commands.common import open_event_log
    from mlhub.eventlog import STREAM_NAME, EmbeddedNats, private_dir, redact_url

    settings = _settings()
    if settings.nats_url:
        raise click.UsageError(
            f"MLHUB_NATS_URL is set ({redact_url(settings.nats_url)}): mlhub uses that server and starts none; "
            "unset it to run the embedded server"
        )
    private_dir(settings.data_dir)
    server = EmbeddedNats(settings.nats_dir, port=settings.nats_port, sync=settings.nats_sync)
    stop = _stop_on_signals()
    try:
        url = server.start()

        async def setup() -> None:
            # As the admin (the URL carries its credentials): creates or checks the stream.
            async with open_event_log(settings.model_copy(update={"nats_creds": None}), url, "mlhub-nats"):
                pass

        _run(setup)
        click.echo(f"nats-server listening at {server.public_url} (no anonymous clients)")
        click.echo(f"  credentials (user:password, one file per role): {server.credentials_file('admin').parent}")
        click.echo(f"  JetStream store: {server.store_dir.resolve()}  (fsync: {settings.nats_sync})")
        click.echo(f"  stream {STREAM_NAME} ready; other mlhub commands on this data dir will use it")
        click.echo("  press Ctrl-C to stop")
        while not stop.is_set() and server.process is not None and server.process.poll() is None:
            stop.wait(0.5)
        if server.process is not None and server.process.poll() is not None:
            click.echo(f"nats-server exited with code {server.process.returncode}", err=True)
            sys.exit(1)
    except MlhubError as e:
        _fail(e)
    finally:
        server.stop()
        click.echo("nats-server stopped", err=True)


def _stop_on_signals() -> Any:
    """A threading.Event set by SIGINT or SIGTERM (so cleanup runs in the normal flow)."""
    import threading

    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


@main.group()
def events() -> None:
    """Read the event log; back it up and restore it (JetStream snapshots that keep every sequence number)."""


events.add_command(_backup_command)
events.add_command(_restore_command)


@events.command("tail")
@click.option("--subject", "subject", default="mlhub.ev.>", show_default=True,
              help="NATS subject pattern, e.g. 'mlhub.ev.run.<run_id>.>' or 'mlhub.ev.*.*.metrics_logged'.")
@click.option("--from-seq", "from_seq", type=click.IntRange(min=1), default=1, show_default=True,
              help="First stream sequence to print.")
@click.option("-f", "--follow", is_flag=True, help="Keep waiting for new events (Ctrl-C to stop).")
def events_tail(subject: str, from_seq: int, follow: bool) -> None:
    """Print events as JSON lines: {"seq", "subject", "event_id", "type", ..., "payload"}."""
    from mlhub.commands.common import event_log_url, open_event_log
    from mlhub.events import decode, to_json_dict

    settings = _settings()

    async def tail(url: str) -> None:
        async with open_event_log(settings, url, "mlhub-tail") as log:
            async for stored in log.replay_raw(from_seq, subject_filter=subject, follow=follow):
                try:
                    line = {"seq": stored.seq, "subject": stored.subject, **to_json_dict(decode(stored.data))}
                except MlhubError as e:
                    click.echo(f"seq {stored.seq} ({stored.subject}): {e}", err=True)
                    continue
                click.echo(json.dumps(line, separators=(",", ":")))

    try:
        with event_log_url(settings) as url:
            _run(lambda: tail(url))
    except KeyboardInterrupt:
        pass
    except MlhubError as e:
        _fail(e)


@main.command()
@click.option("--data-dir", "data_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where all local state lives (default: MLHUB_DATA_DIR, else .mlhub).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True,
              help="Port of the API on 127.0.0.1.")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Worker processes (each trains one job at a time).")
@click.option("--exit", "exit_after", is_flag=True, help="Stop everything after the summary instead of serving on.")
def demo(data_dir: Path | None, port: int, workers: int, exit_after: bool) -> None:
    """`mlhub up`, then train the example configs (digits-mlp, diabetes-regression) through the API, wait for
    them and print each run's status and best metrics and the URL; keep serving until Ctrl-C (--exit: stop
    after the summary). Exit status 0 only when every example run finished."""
    from mlhub import extras
    from mlhub.commands.up import print_access, settings_for, stop_event
    from mlhub.demo import run_demo

    try:
        extras.require(extras.WORKER, "mlhub demo (its workers train the example configs)")
    except MlhubError as e:
        _fail(e)
    settings = settings_for(data_dir)
    stop = stop_event()

    def ready(info: Any) -> None:
        print_access(info)
        click.echo("stopping (--exit)" if exit_after else "serving until Ctrl-C")

    try:
        ok = run_demo(settings, port=port, workers=workers, exit_after=exit_after, stop=stop, echo=click.echo,
                      on_ready=ready)
    except MlhubError as e:
        _fail(e)
    except KeyboardInterrupt:
        click.echo("interrupted: everything stopped", err=True)
        sys.exit(130)
    click.echo("mlhub stopped")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":  # pragma: no cover
    main()
