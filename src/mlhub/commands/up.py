"""`mlhub up`: the whole hub in one process tree (event log, migrations, projectors, workers, API) until
Ctrl-C or SIGTERM. See mlhub.commands.hub for what runs and how the tree is kept clean."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from mlhub import extras
from mlhub.commands.common import fail, load_settings
from mlhub.errors import MlhubError

DATA_DIR = click.option("--data-dir", "data_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help="Where all local state lives (default: MLHUB_DATA_DIR, else .mlhub).")
PORT = click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True,
                    help="Port of the API on 127.0.0.1.")
WORKERS = click.option("--workers", type=click.IntRange(min=0), default=1, show_default=True,
                       help="Worker processes (cpu pool), each training one job at a time.")


def stop_event() -> threading.Event:
    """An event set by SIGINT or SIGTERM, so the hub is stopped in the normal flow."""
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def settings_for(data_dir: Path | None) -> Any:
    """The settings, with --data-dir (when given) instead of MLHUB_DATA_DIR."""
    settings = load_settings()
    if data_dir is not None:
        settings = settings.model_copy(update={"data_dir": data_dir})
    return settings


def print_access(info: Any) -> None:
    """The URL and how a client authenticates."""
    click.echo(f"mlhub is serving at {info.url}  (API under {info.url}/api/v1, interactive docs at {info.url}/docs)")
    if info.token is not None:
        click.echo(f"  admin token of this hub: {info.token}")
        click.echo(f"  (kept in {info.token_file}, mode 0600, and reused on every restart; the mlhub CLI on this "
                   f"data dir talks to this hub with it when MLHUB_URL is unset (or {info.url}) and MLHUB_TOKEN "
                   "is unset; `mlhub tokens create` "
                   "issues tokens for others)")
    else:
        click.echo("  tokens: from MLHUB_API_TOKENS / MLHUB_API_TOKENS_FILE (clients set MLHUB_TOKEN)")
    click.echo(f"  logs of every part: {info.logs_dir}")


@click.command("up")
@DATA_DIR
@PORT
@WORKERS
def up(data_dir: Path | None, port: int, workers: int) -> None:
    """Start everything in one process tree until Ctrl-C or SIGTERM: the embedded nats-server (unless
    MLHUB_NATS_URL is set), read-model migrations, the projectors, N workers and the REST API on
    127.0.0.1:PORT. There is no separate scheduler process: jobs are queued by whoever submits them and their
    timeouts are enforced by the workers.

    Without MLHUB_API_TOKENS / MLHUB_API_TOKENS_FILE, the hub's admin token (named hub-admin) is printed: the
    one in DATA_DIR/api-token (mode 0600) when there is one, else a new one written there, so it stays valid
    across restarts. Stopping stops every part; no process is left behind, even when
    `mlhub up` itself is killed. A part that dies is restarted (with backoff; more than
    MLHUB_HUB_MAX_RESTARTS_PER_MIN restarts of one part within a minute stop the hub); /readyz shows each part.
    """
    from mlhub.commands.hub import Hub

    if workers:
        try:
            extras.require(extras.WORKER, f"mlhub up with {workers} worker(s)",
                           "or `mlhub up --workers 0` for a hub without workers")
        except MlhubError as e:
            fail(e)
    settings = settings_for(data_dir)
    stop = stop_event()
    hub = Hub(settings, port=port, workers=workers, echo=lambda line: click.echo(line, err=True))
    code = 0
    try:
        info = hub.start()
        print_access(info)
        click.echo(f"  {workers} worker(s), projectors running; press Ctrl-C to stop")
        while not stop.is_set():
            dead = hub.supervise()  # restarts a part that died; a line when one died too often
            if dead is not None:
                click.echo(f"error [HUB_ERROR]: {dead}\nstopping everything", err=True)
                code = 1
                break
            stop.wait(0.2)
    except MlhubError as e:
        fail(e)  # the finally clause below still stops whatever was started
    finally:
        hub.stop()
    click.echo("mlhub stopped", err=True)
    sys.exit(code)
