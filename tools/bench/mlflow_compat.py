"""MLflow compatibility benchmark: the same MLflow script logging to mlhub (`mlhub up`, MLflow's REST API on
the hub) and to `mlflow server` (SQLite backend), side by side in one invocation.

Measures, each on a fresh run of each server, rounds interleaved:
  (a) per-step `mlflow.log_metric` (one HTTP request a point): points/s
  (b) `MlflowClient.log_batch` of 1,000 points a call: points/s
  (c), (d) the same requests sent by a minimal HTTP client (httpx): the MLflow client spends ~15-20 ms of CPU a
  call itself, which bounds (a) and (b) on both servers alike; (c) and (d) show what each server takes
Afterwards every point is read back (get_metric_history) and counted on both sides. Goal: mlhub >= 10x
MLflow's throughput on both.

    uv run python tools/bench/mlflow_compat.py                  # 1,000 log_metric calls, 50 batches, 3 rounds
    uv run python tools/bench/mlflow_compat.py --steps 2000 --batches 100 --rounds 5
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "bench-admin-token-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200 or \
                    httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        if proc.poll() is not None:
            break
        time.sleep(0.3)
    raise SystemExit(f"{url} did not start:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def servers(folder: Path) -> Iterator[dict[str, str]]:
    """mlhub up (no workers) and mlflow server (SQLite, proxied artifacts), each on a free port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLHUB_", "MLFLOW_"))}
    hub_port, mlflow_port = free_port(), free_port()
    hub_log, mlflow_log = folder / "mlhub.log", folder / "mlflow-server.log"
    hub = subprocess.Popen([sys.executable, "-m", "mlhub.cli", "up", "--workers", "0", "--data-dir",
                            str(folder / "hub"), "--port", str(hub_port)], cwd=ROOT,
                           env={**env, "MLHUB_API_TOKENS": f"{TOKEN}:admin"}, stdout=hub_log.open("wb"),
                           stderr=subprocess.STDOUT)
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                               f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination",
                               str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(mlflow_port),
                               "--workers", "1"], cwd=folder, env=env, stdout=mlflow_log.open("wb"),
                              stderr=subprocess.STDOUT)
    try:
        urls = {"mlhub": f"http://127.0.0.1:{hub_port}", "mlflow server": f"http://127.0.0.1:{mlflow_port}"}
        wait_healthy(urls["mlhub"], hub, hub_log)
        wait_healthy(urls["mlflow server"], server, mlflow_log)
        yield urls
    finally:
        for proc in (hub, server):
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


def per_step(url: str, steps: int) -> tuple[float, str]:
    """The script: a run, one log_metric call per step. Points/s and the run id."""
    import mlflow

    mlflow.set_tracking_uri(url)
    mlflow.set_experiment("bench-log-metric")
    with mlflow.start_run() as run:
        started = time.perf_counter()
        for step in range(steps):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        elapsed = time.perf_counter() - started
    return steps / elapsed, run.info.run_id


def batched(url: str, batches: int, size: int = 1000) -> tuple[float, str]:
    """The script: a run, log_batch calls of `size` points each (MLflow's limit is 1,000). Points/s, run id."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    mlflow.set_tracking_uri(url)
    client = MlflowClient(url)
    experiment = client.get_experiment_by_name("bench-log-batch")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("bench-log-batch")
    run = client.create_run(experiment_id)
    now = int(time.time() * 1000)
    payloads = [[Metric("loss", 1.0 / (b * size + i + 1), now, b * size + i) for i in range(size)]
                for b in range(batches)]
    started = time.perf_counter()
    for metrics in payloads:
        client.log_batch(run.info.run_id, metrics=metrics)
    elapsed = time.perf_counter() - started
    client.set_terminated(run.info.run_id)
    return batches * size / elapsed, run.info.run_id


def _raw_run(client: httpx.Client, url: str, name: str) -> str:
    api = f"{url}/api/2.0/mlflow"
    found = client.get(f"{api}/experiments/get-by-name", params={"experiment_name": name})
    experiment_id = found.json()["experiment"]["experiment_id"] if found.status_code == 200 else \
        client.post(f"{api}/experiments/create", json={"name": name}).json()["experiment_id"]
    created = client.post(f"{api}/runs/create", json={"experiment_id": experiment_id,
                                                     "start_time": int(time.time() * 1000)})
    return str(created.json()["run"]["info"]["run_id"])


def raw_per_step(url: str, steps: int) -> tuple[float, str]:
    """The same log-metric requests the client sends, from a minimal HTTP client (what the server takes)."""
    with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as client:
        run_id = _raw_run(client, url, "bench-raw-log-metric")
        now = int(time.time() * 1000)
        started = time.perf_counter()
        for step in range(steps):
            client.post(f"{url}/api/2.0/mlflow/runs/log-metric", json={
                "run_id": run_id, "key": "loss", "value": 1.0 / (step + 1), "timestamp": now, "step": step,
            }).raise_for_status()
        return steps / (time.perf_counter() - started), run_id


def raw_batched(url: str, batches: int, size: int = 1000) -> tuple[float, str]:
    """The same log-batch requests the client sends (bodies serialized beforehand), from a minimal client."""
    import json

    with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
                      timeout=60) as client:
        run_id = _raw_run(client, url, "bench-raw-log-batch")
        now = int(time.time() * 1000)
        bodies = [json.dumps({"run_id": run_id, "metrics": [
            {"key": "loss", "value": 1.0 / (b * size + i + 1), "timestamp": now, "step": b * size + i}
            for i in range(size)]}) for b in range(batches)]
        started = time.perf_counter()
        for body in bodies:
            client.post(f"{url}/api/2.0/mlflow/runs/log-batch", content=body).raise_for_status()
        return batches * size / (time.perf_counter() - started), run_id


MEASURES = ("log_metric per step", "log_batch of 1,000", "raw log-metric", "raw log-batch of 1,000")


def count(url: str, run_id: str) -> int:
    from mlflow import MlflowClient

    return len(MlflowClient(url).get_metric_history(run_id, "loss"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000, help="log_metric calls per run")
    parser.add_argument("--batches", type=int, default=50, help="log_batch calls of 1,000 points per run")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ["MLFLOW_TRACKING_TOKEN"] = TOKEN  # mlhub needs it; mlflow server ignores it
    results: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="mlflow-compat-") as tmp, servers(Path(tmp)) as urls:
        for round_ in range(args.rounds):
            order = list(urls.items()) if round_ % 2 == 0 else list(reversed(urls.items()))
            for name, url in order:
                for measure, work, expected in (
                        ("log_metric per step", lambda u: per_step(u, args.steps), args.steps),
                        ("log_batch of 1,000", lambda u: batched(u, args.batches), args.batches * 1000),
                        ("raw log-metric", lambda u: raw_per_step(u, args.steps), args.steps),
                        ("raw log-batch of 1,000", lambda u: raw_batched(u, args.batches), args.batches * 1000)):
                    rate, run_id = work(url)
                    stored = count(url, run_id)
                    if stored != expected:
                        raise SystemExit(f"{name}: {measure} stored {stored} of {expected} points")
                    results.setdefault((measure, name), []).append(rate)
    print(f"{'measure':<24} {'mlhub pts/s':>13} {'mlflow server pts/s':>20} {'ratio':>7}  goal >= 10x")
    for measure in MEASURES:
        mine = statistics.median(results[(measure, "mlhub")])
        theirs = statistics.median(results[(measure, "mlflow server")])
        ratio = mine / theirs
        print(f"{measure:<24} {mine:>13,.0f} {theirs:>20,.0f} {ratio:>6.1f}x  {'met' if ratio >= 10 else 'not met'}")
    print(f"(median of {args.rounds} rounds; every point read back and counted on both sides; 'raw': the same "
          "requests from a minimal HTTP client, i.e. what each server takes when the MLflow client is not the "
          "bottleneck)")


if __name__ == "__main__":
    main()
