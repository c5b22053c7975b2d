"""`mlhub submit` and `mlhub cancel`: queue a training job from a YAML config, or cancel one.

A submitted job waits until an `mlhub worker` of its pool takes it. There is no `--wait` yet (it will follow
the job's events until it ends).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from mlhub.commands.common import load_settings, run_with_event_log


@click.command("submit")
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override one config value, read as YAML (e.g. --set trainer.max_epochs=3 --set model.lr=1e-3). "
                   "The key must exist in the schema or the file; +KEY.PATH=VALUE adds a key to model, data.params "
                   "or tags. Repeatable; recorded with the run's config snapshot.")
@click.option("--json", "as_json", is_flag=True, help='Print {"job_id": ..., "run_id": ...} as JSON.')
def submit(config_path: Path, overrides: tuple[str, ...], as_json: bool) -> None:
    """Validate the experiment config CONFIG (a YAML file, e.g. configs/digits-mlp.yaml) and queue a job.

    A bad config exits with status 2 and names the file and each bad field; nothing is queued then.
    """
    from mlhub.scheduler import ConfigError, load_config
    from mlhub.scheduler import submit as submit_job

    settings = load_settings()
    try:
        loaded = load_config(config_path, overrides)
    except ConfigError as e:
        for line in str(e).splitlines():
            click.echo(f"error [{e.code}]: {line}", err=True)
        sys.exit(2)
    result = run_with_event_log(
        settings, "mlhub-submit",
        lambda log: submit_job(log, loaded.config, overrides=loaded.overrides, producer=settings.producer),
    )
    if as_json:
        click.echo(json.dumps({"job_id": result.job_id, "run_id": result.run_id,
                               "experiment_id": result.experiment_id, "seed": result.seed,
                               "config_sha256": result.config_sha256}))
        return
    config = loaded.config
    click.echo(
        f"queued job {result.job_id}: run {result.run_id} of experiment {result.experiment_id}"
        f"{' (new)' if result.experiment_created else ''}, plugin {config.plugin} on the {config.pool} pool, "
        f"seed {result.seed} ({'from the config' if result.seed_source == 'config' else 'drawn and recorded'}), "
        f"config sha256 {result.config_sha256[:12]}"
    )


@click.command("cancel")
@click.argument("job_id")
@click.option("--reason", default="", show_default=False, help="Why the job is cancelled (recorded).")
def cancel(job_id: str, reason: str) -> None:
    """Cancel the queued or running job JOB_ID (an ended job cannot be cancelled)."""
    from mlhub.scheduler import cancel as cancel_job

    settings = load_settings()
    requested_by = _current_user()
    result = run_with_event_log(
        settings, "mlhub-cancel",
        lambda log: cancel_job(log, job_id, reason, requested_by, producer=settings.producer),
    )
    click.echo(f"cancelled job {result.job_id} (it was {result.previous_status})")


def _current_user() -> str | None:
    """The login name of whoever runs the command, recorded as requested_by; None when unknown."""
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return None
