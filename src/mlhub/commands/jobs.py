"""`mlhub submit` and `mlhub cancel`: queue a training job from a YAML config, or cancel one.

A submitted job waits until an `mlhub worker` of its pool takes it. `--wait` follows the job's events in the
log until it ends and exits 0 only when it succeeded; `mlhub reproduce RUN_ID` resubmits a run's recorded snapshot
and, with `--wait`, compares the new run's final metrics with the original's, key by key.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mlhub.commands.common import cli_user, load_settings, run_with_event_log
from mlhub.commands.hubclient import DIRECT, use_client, with_hub

if TYPE_CHECKING:
    from mlhub.eventlog import EventLog, Recorded
    from mlhub.scheduler import Comparison, JobOutcome, SubmitResult

WAIT_TIMEOUT_HELP = "With --wait: give up waiting after this many seconds (exit 3; the job goes on). Default: no limit."


@click.command("submit")
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override one config value, read as YAML (e.g. --set trainer.max_epochs=3 --set model.lr=1e-3). "
                   "The key must exist in the schema or the file; +KEY.PATH=VALUE adds a key to model, data.params "
                   "or tags. Repeatable; recorded with the run's config snapshot.")
@click.option("--wait", is_flag=True, help="Follow the job until it ends; exit 0 only if it succeeded (1 if not).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=None,
              help=WAIT_TIMEOUT_HELP)
@click.option("--json", "as_json", is_flag=True, help='Print {"job_id": ..., "run_id": ...} as JSON.')
@DIRECT
def submit(config_path: Path, overrides: tuple[str, ...], wait: bool, timeout_s: float | None, as_json: bool,
           direct: bool) -> None:
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
    if use_client(settings, direct):
        from mlhub.commands import jobs_client
        from mlhub.scheduler.yamlio import load_yaml

        raw = load_yaml(config_path.read_text(encoding="utf-8"))
        with_hub(settings, lambda client: jobs_client.submit(client, loaded, raw, wait, timeout_s, as_json))
        return

    async def work(log: EventLog) -> tuple[SubmitResult, JobOutcome | None]:
        result = await submit_job(log, loaded.config, overrides=loaded.overrides, producer=settings.producer)
        if not wait:
            return result, None
        if not as_json:
            _echo_queued(result, loaded.config.plugin, loaded.config.pool)
        return result, await _follow(log, result.job_id, timeout_s, quiet=as_json)

    result, outcome = run_with_event_log(settings, "mlhub-submit", work)
    if as_json:
        out: dict[str, object] = {"job_id": result.job_id, "run_id": result.run_id,
                                  "experiment_id": result.experiment_id, "seed": result.seed,
                                  "config_sha256": result.config_sha256}
        if outcome is not None:
            out.update(status=outcome.status, attempts=outcome.attempts, error=outcome.error)
        click.echo(json.dumps(out))
    elif outcome is None:
        _echo_queued(result, loaded.config.plugin, loaded.config.pool)
    if outcome is not None and not outcome.succeeded:
        sys.exit(1)


def _echo_queued(result: SubmitResult, plugin: str, pool: str) -> None:
    click.echo(
        f"queued job {result.job_id}: run {result.run_id} of experiment {result.experiment_id}"
        f"{' (new)' if result.experiment_created else ''}, plugin {plugin} on the {pool} pool, "
        f"seed {result.seed} ({'from the config' if result.seed_source == 'config' else 'drawn and recorded'}), "
        f"config sha256 {result.config_sha256[:12]}"
    )


async def _follow(log: EventLog, job_id: str, timeout_s: float | None, *, quiet: bool) -> JobOutcome:
    """Wait for the job, printing its attempts as they happen (unless quiet); exit 3 on a wait timeout."""
    from mlhub.scheduler import WaitTimeout, wait_for_job

    def progress(recorded: Recorded) -> None:
        line = _describe(recorded)
        if line and not quiet:
            click.echo(f"  {line}", err=True)

    try:
        outcome = await wait_for_job(log, job_id, timeout_s=timeout_s, on_event=progress)
    except WaitTimeout as e:
        click.echo(f"error [{e.code}]: {e}", err=True)
        sys.exit(3)
    if not quiet:
        detail = f" ({outcome.error})" if outcome.error else ""
        click.echo(f"job {job_id} {outcome.status} after {outcome.attempts} attempt(s){detail}")
    return outcome


def _describe(recorded: Recorded) -> str | None:
    """One progress line for a job event; None for events not worth a line (heartbeats)."""
    from mlhub.events import JobCancelled, JobFailed, JobStarted, JobSucceeded

    event = recorded.envelope.event
    if isinstance(event, JobStarted):
        return f"attempt {event.attempt} started on worker {event.worker_id}"
    if isinstance(event, JobFailed):
        retry = " (will be retried)" if event.retryable else ""
        return f"attempt {event.attempt} failed: {event.error_type}: {event.error[:200]}{retry}"
    if isinstance(event, JobSucceeded):
        return f"attempt {event.attempt} succeeded"
    if isinstance(event, JobCancelled):
        return f"cancelled{': ' + event.reason if event.reason else ''}"
    return None


@click.command("reproduce")
@click.argument("run_id")
@click.option("--wait", is_flag=True,
              help="Wait for the new run, then compare its final metrics with the original's, key by key; exit 0 "
                   "only if every one is bit-identical (1 if not).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=None,
              help=WAIT_TIMEOUT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the ids (and with --wait the comparison) as JSON.")
@DIRECT
def reproduce(run_id: str, wait: bool, timeout_s: float | None, as_json: bool, direct: bool) -> None:
    """Resubmit run RUN_ID's recorded config snapshot unchanged (same seed, same sha256) as a new run.

    The new run records which run it reproduces. Everything is read from the event log, so no projector is
    needed. With --wait the final metrics (the last value of each key, the held-out evaluation included)
    must be bit-identical, the dataset fingerprint and the config hash equal, for exit status 0.
    """
    from mlhub.scheduler import compare, read_run
    from mlhub.scheduler import reproduce as reproduce_run

    settings = load_settings()
    if use_client(settings, direct):
        from mlhub.commands import jobs_client

        with_hub(settings, lambda client: jobs_client.reproduce(client, run_id, wait, timeout_s, as_json))
        return

    async def work(log: EventLog) -> tuple[SubmitResult, Comparison | None, JobOutcome | None]:
        original, result = await reproduce_run(log, run_id, producer=settings.producer)
        if not as_json:
            click.echo(f"queued job {result.job_id}: run {result.run_id} reproduces run {run_id} "
                       f"(seed {result.seed}, config sha256 {result.config_sha256[:12]})")
        if not wait:
            return result, None, None
        outcome = await _follow(log, result.job_id, timeout_s, quiet=as_json)
        return result, compare(original, await read_run(log, result.run_id)), outcome

    result, comparison, outcome = run_with_event_log(settings, "mlhub-reproduce", work)
    if as_json:
        out: dict[str, object] = {"job_id": result.job_id, "run_id": result.run_id, "reproduces_run_id": run_id}
        if comparison is not None and outcome is not None:
            out.update(status=outcome.status, match=comparison.all_match, problems=comparison.problems(),
                       metrics=[{"key": m.key, "original": m.original, "reproduced": m.reproduced,
                                 "match": m.matches} for m in comparison.metrics])
        click.echo(json.dumps(out))
    elif comparison is not None:
        _print_comparison(comparison)
    if comparison is not None and not comparison.all_match:
        sys.exit(1)


def _print_comparison(c: Comparison) -> None:
    width = max([len("metric"), *(len(m.key) for m in c.metrics)])
    click.echo(f"{'metric':<{width}}  {'original':>24}  {'reproduced':>24}  match")
    for m in c.metrics:
        click.echo(f"{m.key:<{width}}  {_num(m.original):>24}  {_num(m.reproduced):>24}  "
                   f"{'yes' if m.matches else 'NO'}")
    click.echo(f"config sha256: {'same' if c.same_config else 'DIFFERENT'}; dataset fingerprint: "
               f"{'same' if c.same_data else 'DIFFERENT'}")
    if c.all_match:
        click.echo(f"reproduced: all {len(c.metrics)} final metrics are bit-identical")
    else:
        click.echo("NOT reproduced: " + "; ".join(c.problems()))


def _num(value: float | None) -> str:
    """A final metric value in full (its JSON: the shortest text that reads back bit-identical; NaN, not nan)."""
    from mlhub.analytics.cells import text_cell

    return "-" if value is None else text_cell(value)


@click.command("cancel")
@click.argument("job_id")
@click.option("--reason", default="", show_default=False, help="Why the job is cancelled (recorded).")
@DIRECT
def cancel(job_id: str, reason: str, direct: bool) -> None:
    """Cancel the queued or running job JOB_ID (an ended job cannot be cancelled)."""
    from mlhub.scheduler import cancel as cancel_job

    settings = load_settings()
    if use_client(settings, direct):
        from mlhub.commands import jobs_client

        with_hub(settings, lambda client: jobs_client.cancel(client, job_id, reason))
        return
    requested_by = cli_user()
    result = run_with_event_log(
        settings, "mlhub-cancel",
        lambda log: cancel_job(log, job_id, reason, requested_by, producer=settings.producer),
    )
    click.echo(f"cancelled job {result.job_id} (it was {result.previous_status})")
