"""Fixtures of the MLflow tests: a real `mlhub up` (subprocess, no workers) and a real `mlflow server` (SQLite
backend, proxied artifacts) in temporary folders on free ports, shared by the module's tests; the real MLflow
client talks to both over HTTP."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.hub.helpers import ROOT, RunningHub, free_port, hub_env, start, stop

READER = "reader-token-0001"
WRITER = "writer-token-0001"
ADMIN = "admin-token-00001"
TOKENS = f"{READER}:reader,{WRITER}:writer,{ADMIN}:admin"
MLHUB = [sys.executable, "-m", "mlhub.cli"]


@dataclass
class Server:
    """A tracking server the MLflow client can use: its URL and the token to send (None: no auth)."""

    url: str
    token: str | None
    data_dir: Path | None = None
    hub: RunningHub | None = None


@pytest.fixture(scope="session")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`mlhub up --workers 0` with three tokens (reader, writer, admin)."""
    data_dir = tmp_path_factory.mktemp("mlhub") / "hub"
    # No audit seals (one every 60 s would be an event of its own between two counts of the log).
    running = start(["up", "--workers", "0"], data_dir, free_port(), MLHUB_API_TOKENS=TOKENS, MLHUB_SEAL_INTERVAL_S="0")
    try:
        running.wait_for(r"press Ctrl-C to stop")
        yield Server(running.url, ADMIN, data_dir, running)
    finally:
        stop(running)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`mlflow server` with a SQLite backend and proxied artifacts, as teams run it."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    log = (folder / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"mlflow server did not start:\n{(folder / 'server.log').read_text()}")
            time.sleep(0.3)
        yield Server(url, None)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@contextlib.contextmanager
def tracking(server: Server, token: str | None = None) -> Iterator[None]:
    """MLFLOW_TRACKING_URI (and MLFLOW_TRACKING_TOKEN) of a server for the fluent API and MlflowClient()."""
    import mlflow

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN")}
    os.environ["MLFLOW_TRACKING_URI"] = server.url
    chosen = token or server.token
    if chosen:
        os.environ["MLFLOW_TRACKING_TOKEN"] = chosen
    else:
        os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
    mlflow.set_tracking_uri(server.url)
    mlflow.set_registry_uri(server.url)
    try:
        yield
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def mlhub_cli(server: Server, args: list[str], timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    """The mlhub CLI as a client of the hub (MLHUB_URL, MLHUB_TOKEN), or on its data dir (env overrides)."""
    assert server.data_dir is not None
    base = hub_env(server.data_dir.parent / "client", MLHUB_URL=server.url, MLHUB_TOKEN=ADMIN)
    return subprocess.run([*MLHUB, *args], env={**base, **env}, capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)
