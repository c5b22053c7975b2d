"""submit, cancel and reproduce through the hub's REST API (the CLI's client mode; see mlhub.commands.hubclient).

Output and exit statuses are those of the direct mode: the same lines, the same --json keys. Waiting polls
GET /jobs/{id} (the read model) until the job ended, then GET /runs/{id} until its run has ended too. The
reproduction verdict compares the two runs' final metrics (the last value of each key, GET /runs/{id}) bit
for bit: JSON numbers round-trip floats exactly, and "NaN"/"Infinity" come back as those floats.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from mlhub.commands.hubclient import ENDED, LIVE_RUN_STATUSES, HubClient, json_float
from mlhub.events import RunStatus

if TYPE_CHECKING:
    from mlhub.scheduler import LoadedConfig, RunRecord, SubmitResult

#: How long to wait, after a job ended, for its run to read as ended (the worker's next append).
RUN_END_WAIT_S = 30.0


def _result(answer: dict[str, Any]) -> SubmitResult:
    from mlhub.scheduler import SubmitResult

    return SubmitResult(job_id=answer["job_id"], run_id=answer["run_id"], experiment_id=answer["experiment_id"],
                        seed=answer["seed"], seed_source=answer["seed_source"],
                        config_sha256=answer["config_sha256"], experiment_created=False,
                        seqs=tuple(answer["seqs"]))


def follow(client: HubClient, job_id: str, min_seq: int, timeout_s: float | None, *, quiet: bool) -> dict[str, Any]:
    """Poll the job until it ended, printing attempts as they start (unless quiet); exit 3 on a wait timeout."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    seen_attempts = 0
    while True:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}", min_seq=min_seq)
        if job["attempts"] > seen_attempts and not quiet:
            for attempt in range(seen_attempts + 1, job["attempts"] + 1):
                click.echo(f"  attempt {attempt} started on worker {job.get('worker_id') or '?'}", err=True)
        seen_attempts = max(seen_attempts, job["attempts"])
        if job["status"] in ENDED:
            break
        if deadline is not None and time.monotonic() > deadline:
            click.echo(f"error [TIMEOUT]: job {job_id} did not end within {timeout_s:g} s (it is {job['status']}; "
                       "it goes on)", err=True)
            sys.exit(3)
        time.sleep(0.5)
    if not quiet:
        error = _error(job)
        click.echo(f"job {job_id} {job['status']} after {job['attempts']} attempt(s)"
                   f"{f' ({error})' if error else ''}")
    return job


def _error(job: dict[str, Any]) -> str | None:
    if job["status"] == "cancelled":
        return f"cancelled: {job['error']}" if job.get("error") else "cancelled"
    if job.get("error_type") or job.get("error"):
        return f"{job.get('error_type') or 'Error'}: {job.get('error') or ''}"
    return None


def ended_run(client: HubClient, run_id: str, min_seq: int) -> dict[str, Any]:
    """GET /runs/{id} once the run reads as ended (at most RUN_END_WAIT_S after its job ended)."""
    deadline = time.monotonic() + RUN_END_WAIT_S
    while True:
        detail: dict[str, Any] = client.get(f"/runs/{run_id}", min_seq=min_seq)
        if detail["run"]["status"] not in LIVE_RUN_STATUSES or time.monotonic() > deadline:
            return detail
        time.sleep(0.2)


def submit(client: HubClient, loaded: LoadedConfig, raw: Any, wait: bool, timeout_s: float | None,
           as_json: bool) -> None:
    """POST /jobs with the file's document and the --set overrides; the server validates it again."""
    from mlhub.commands.jobs import _echo_queued

    answer = client.post("/jobs", {"config": raw, "overrides": list(loaded.overrides)})
    result = _result(answer)
    job = None
    if wait:
        if not as_json:
            _echo_queued(result, loaded.config.plugin, loaded.config.pool)
        job = follow(client, result.job_id, answer["seq"], timeout_s, quiet=as_json)
        ended_run(client, result.run_id, job["last_seq"])
    if as_json:
        out: dict[str, object] = {"job_id": result.job_id, "run_id": result.run_id,
                                  "experiment_id": result.experiment_id, "seed": result.seed,
                                  "config_sha256": result.config_sha256}
        if job is not None:
            out.update(status=job["status"], attempts=job["attempts"], error=_error(job))
        click.echo(json.dumps(out))
    elif job is None:
        _echo_queued(result, loaded.config.plugin, loaded.config.pool)
    if job is not None and job["status"] != "succeeded":
        sys.exit(1)


def cancel(client: HubClient, job_id: str, reason: str) -> None:
    """POST /jobs/{id}/cancel."""
    answer = client.post(f"/jobs/{job_id}/cancel", {"reason": reason})
    click.echo(f"cancelled job {answer['job_id']} (it was {answer['previous_status']})")


def record(detail: dict[str, Any]) -> RunRecord:
    """A RunRecord (for mlhub.scheduler.compare) from GET /runs/{id}."""
    from mlhub.scheduler import RunRecord

    run = detail["run"]
    final = {m["key"]: json_float(m["last_value"]) for m in detail["metrics"]}
    return RunRecord(run_id=run["run_id"], experiment_id=run.get("experiment_id") or "",
                     status=RunStatus(run["status"]),
                     snapshot=None, config_sha256=run.get("config_sha256"), overrides=(), seed=run.get("seed"),
                     dataset_fingerprint=run.get("dataset_fingerprint"), git_commit=run.get("git_commit"),
                     dirty=run.get("git_dirty"), torch_version=run.get("env_torch"),
                     reproduces_run_id=run.get("reproduces_run_id"),
                     final_metrics={k: v for k, v in final.items() if v is not None})


def reproduce(client: HubClient, run_id: str, wait: bool, timeout_s: float | None, as_json: bool) -> None:
    """POST /runs/{id}/reproduce; with --wait, compare the runs' final metrics as the direct mode does."""
    from mlhub.commands.jobs import _print_comparison
    from mlhub.scheduler import compare

    answer = client.post(f"/runs/{run_id}/reproduce", {})
    if not as_json:
        click.echo(f"queued job {answer['job_id']}: run {answer['run_id']} reproduces run {run_id} "
                   f"(seed {answer['seed']}, config sha256 {answer['config_sha256'][:12]})")
    out: dict[str, object] = {"job_id": answer["job_id"], "run_id": answer["run_id"], "reproduces_run_id": run_id}
    if not wait:
        if as_json:
            click.echo(json.dumps(out))
        return
    job = follow(client, answer["job_id"], answer["seq"], timeout_s, quiet=as_json)
    reproduced = ended_run(client, answer["run_id"], job["last_seq"])
    original = client.get(f"/runs/{run_id}", min_seq=job["last_seq"])
    comparison = compare(record(original), record(reproduced))
    if as_json:
        out.update(status=job["status"], match=comparison.all_match, problems=comparison.problems(),
                   metrics=[{"key": m.key, "original": m.original, "reproduced": m.reproduced, "match": m.matches}
                            for m in comparison.metrics])
        click.echo(json.dumps(out))
    else:
        _print_comparison(comparison)
    if not comparison.all_match:
        sys.exit(1)
