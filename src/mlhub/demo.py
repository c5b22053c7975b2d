"""`mlhub demo`: `mlhub up`, then the example training jobs through the REST API, and a summary of their runs.

Steps: start the hub (embedded nats-server, migrations, projectors, workers, API; it declares the metric
definitions of configs/metrics.yaml, as `mlhub metrics apply` does), submit configs/digits-mlp.yaml and
configs/diabetes-regression.yaml with the overrides in DEMO_JOBS (recorded in each run's config snapshot) via
POST /api/v1/jobs, wait for both jobs, print a table of each run's status and best metrics (best by the
direction declared in configs/metrics.yaml), print the URL, then keep serving until Ctrl-C (or stop at once
with --exit).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlhub.commands.hub import Hub, HubError, HubInfo
from mlhub.commands.hubclient import ENDED, LIVE_RUN_STATUSES, HubClient, json_float
from mlhub.settings import Settings

#: The example jobs: a config file under configs/ and the overrides that keep it short on a small machine.
DEMO_JOBS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("digits-mlp.yaml", ("trainer.max_epochs=12",)),
    ("diabetes-regression.yaml", ("trainer.max_epochs=15",)),
)
#: Longest the demo waits for its jobs (they take well under a minute on 2 cores).
JOBS_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class DemoRun:
    """One submitted example job and how its run ended."""

    config: str
    job_id: str
    run_id: str
    seq: int
    job_status: str = "queued"
    error: str | None = None
    run: dict[str, Any] | None = None


def configs_dir() -> Path:
    """configs/ of the working directory, else the one of the source checkout this package runs from."""
    here = Path("configs")
    if (here / DEMO_JOBS[0][0]).is_file():
        return here
    return Path(__file__).resolve().parents[2] / "configs"


def _submit(client: HubClient, echo: Callable[[str], None]) -> list[DemoRun]:
    from mlhub.scheduler import load_config
    from mlhub.scheduler.yamlio import load_yaml

    runs = []
    for name, overrides in DEMO_JOBS:
        path = configs_dir() / name
        load_config(path, overrides)  # a bad file fails here, naming the file and field
        raw = load_yaml(path.read_text(encoding="utf-8"))
        answer = client.post("/jobs", {"config": raw, "overrides": list(overrides)})
        echo(f"submitted {name} ({' '.join('--set ' + o for o in overrides)}): job {answer['job_id']}, "
             f"run {answer['run_id']}, seed {answer['seed']}")
        runs.append(DemoRun(config=name, job_id=answer["job_id"], run_id=answer["run_id"], seq=answer["seq"]))
    return runs


def _wait(client: HubClient, hub: Hub, runs: list[DemoRun], stop: threading.Event,
          echo: Callable[[str], None]) -> list[DemoRun]:
    """Poll the jobs, then their runs, until all ended; HubError when a part of the hub dies meanwhile."""
    deadline = time.monotonic() + JOBS_TIMEOUT_S
    pending = {r.job_id: r for r in runs}
    done: dict[str, DemoRun] = {}
    while pending:
        if stop.is_set():
            raise KeyboardInterrupt
        dead = hub.supervise()
        if dead is not None:
            raise HubError(dead)
        if time.monotonic() > deadline:
            raise HubError(f"the example jobs did not end within {JOBS_TIMEOUT_S:g} s: "
                           f"{', '.join(pending)}; see the logs in {hub.data_dir / 'logs'}")
        for job_id, run in list(pending.items()):
            job = client.get(f"/jobs/{job_id}", min_seq=run.seq)
            if job["status"] not in ENDED:
                continue
            detail = client.get(f"/runs/{run.run_id}", min_seq=job["last_seq"])
            if detail["run"]["status"] in LIVE_RUN_STATUSES:
                continue  # the job ended; the run's end event is the next append
            error = f"{job.get('error_type')}: {job.get('error')}" if job.get("error_type") else None
            done[job_id] = DemoRun(run.config, job_id, run.run_id, run.seq, job["status"], error, detail)
            echo(f"job {job_id} ({run.config}) {job['status']} after {job['attempts']} attempt(s)"
                 + (f": {error}" if error else ""))
            del pending[job_id]
        stop.wait(0.5)
    return [done[r.job_id] for r in runs]


def summary_table(runs: list[DemoRun], directions: dict[str, str]) -> str:
    """One row per run and declared metric: run, status, metric, best value (by its direction), last value."""
    rows: list[tuple[str, ...]] = [("run", "status", "metric", "best", "last")]
    for r in runs:
        run = (r.run or {}).get("run", {})
        name, status = str(run.get("name") or r.run_id), str(run.get("status") or r.job_status)
        metrics = sorted((r.run or {}).get("metrics", []), key=lambda m: m["key"])
        shown = [m for m in metrics if m["key"] in directions] or metrics
        if not shown:
            rows.append((name, status, "-", "-", "-"))
        for i, m in enumerate(shown):
            direction = directions.get(m["key"], "max")
            best = json_float(m["max_value"] if direction == "max" else m["min_value"])
            rows.append((name if i == 0 else "", status if i == 0 else "", m["key"],
                         f"{_fmt(best)} ({direction})", _fmt(json_float(m["last_value"]))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _directions() -> dict[str, str]:
    from mlhub.metricdefs import load_definitions

    return {name: spec.direction for name, spec in load_definitions(configs_dir() / "metrics.yaml").items()}


def _writer_token(settings: Settings, info: HubInfo) -> str | None:
    """The hub's admin token, else MLHUB_TOKEN, else a writer/admin token of MLHUB_API_TOKENS."""
    if info.token is not None or settings.token:
        return info.token or settings.token
    if settings.api_tokens:
        from mlhub.api.auth import Role, parse_tokens

        for token, entry in parse_tokens(settings.api_tokens, "MLHUB_API_TOKENS").items():
            if entry.role >= Role.writer:
                return token
    return None


def run_demo(settings: Settings, *, port: int, workers: int, exit_after: bool, stop: threading.Event,
             echo: Callable[[str], None], on_ready: Callable[[HubInfo], None]) -> bool:
    """The whole demo; True when every example run finished. Stops the hub before it returns."""
    hub = Hub(settings, port=port, workers=workers, echo=echo, project_root=configs_dir().parent)
    try:
        info = hub.start()
        echo(f"hub up: API at {info.url}, {workers} worker(s), projectors, logs in {info.logs_dir}")
        with HubClient(info.url, _writer_token(settings, info)) as client:
            runs = _wait(client, hub, _submit(client, echo), stop, echo)
        echo("")
        echo(summary_table(runs, _directions()))
        echo("")
        succeeded = all(r.job_status == "succeeded" for r in runs)
        on_ready(info)
        if not exit_after:
            while not stop.is_set():
                dead = hub.supervise()
                if dead is not None:
                    raise HubError(dead)
                stop.wait(0.5)
        return succeeded
    finally:
        hub.stop()
