"""Fixtures of the SDK tests: the hub as a user runs it, in subprocesses: uvicorn serving mlhub.api and
`mlhub projector`, over the test's own nats-server and a SQLite read model under the test's data dir.
The API can be SIGKILLed and restarted on the same port (the outage tests). `shared_hub` is one such stack
for a whole module (its tests use runs of their own), for tests that do not restart anything."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.hub.helpers import wait_healthy

from mlhub.eventlog import EmbeddedNats, EventLog
from mlhub.events import DomainEvent, Envelope

WRITER = "writer-token-0001"
READER = "reader-token-0001"
TOKENS = f"{WRITER}:writer,{READER}:reader"


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HubStack:
    """uvicorn (mlhub.api) and `mlhub projector` as subprocesses; the API can be killed and restarted."""

    def __init__(self, tmp_path: Path, nats_url: str, python: str = sys.executable, **extra_env: str) -> None:
        self.tmp_path = tmp_path
        self.python = python  # the interpreter (of a venv) the API and the projector run in
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = tmp_path / "data"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MLHUB_")}
        self.env.update({
            "MLHUB_DATA_DIR": str(self.data_dir), "MLHUB_NATS_URL": nats_url, "MLHUB_API_TOKENS": TOKENS,
            "MLHUB_API_MIN_SEQ_WAIT_S": "30", "MLHUB_API_METRICS_REFRESH_S": "0", "MLHUB_SEAL_INTERVAL_S": "0",
            "MLHUB_COMPACT_INTERVAL_S": "0", "PYTHONUNBUFFERED": "1", **extra_env,
        })
        self.api: subprocess.Popen[bytes] | None = None
        self.projector: subprocess.Popen[bytes] | None = None
        self.api_starts = 0

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp_path / log_name, "ab")  # noqa: SIM115 - the child keeps writing to it
        return subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def start_api(self, timeout_s: float = 90.0) -> None:
        """Start uvicorn and wait until /healthz answers."""
        self.api_starts += 1
        self.api = self._spawn([self.python, "-m", "uvicorn", "--factory", "mlhub.api:create_app", "--host",
                                "127.0.0.1", "--port", str(self.port), "--log-level", "warning"], "api.log")
        wait_healthy(self.url, self.api, lambda: self.log("api.log"), timeout_s)

    def kill_api(self) -> None:
        """SIGKILL the API server (no graceful shutdown: requests in flight are cut)."""
        assert self.api is not None
        self.api.send_signal(signal.SIGKILL)
        self.api.wait(timeout=30)
        self.api = None

    def start_projector(self) -> None:
        """`mlhub projector` in the background."""
        self.projector = self._spawn([self.python, "-m", "mlhub.cli", "projector"], "projector.log")

    def stop(self) -> None:
        """Stop everything this stack started."""
        for proc in (self.api, self.projector):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=15)

    def log(self, name: str) -> str:
        """The tail of a subprocess's log."""
        path = self.tmp_path / name
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    # -- reading back --------------------------------------------------------------------------------------

    def get(self, path: str, **params: Any) -> Any:
        """GET /api/v1<path> as a reader; the JSON answer (asserting 200)."""
        response = httpx.get(f"{self.url}/api/v1{path}", params=params or None,
                             headers={"Authorization": f"Bearer {READER}"}, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()

    def run_events(self, run_id: str) -> list[dict[str, Any]]:
        """Every event of a run, read from the event log itself (GET /runs/{id}/events, all pages)."""
        events: list[dict[str, Any]] = []
        from_seq: int | None = 1
        while from_seq is not None:
            page = self.get(f"/runs/{run_id}/events", from_seq=from_seq, limit=1000)
            events += page["data"]
            from_seq = page.get("next_from_seq")
        return events

    def logged_steps(self, run_id: str) -> dict[str, Counter[int]]:
        """For each metric key, how many times each step is stored in the event log."""
        steps: dict[str, Counter[int]] = {}
        for event in self.run_events(run_id):
            if event["type"] == "run.metrics_logged":
                for series in event["payload"]["series"]:
                    steps.setdefault(series["key"], Counter()).update(series["steps"])
        return steps

    def run_detail(self, run_id: str) -> dict[str, Any]:
        """GET /runs/{id} once the projections have every event of the run."""
        detail: dict[str, Any] = self.get(f"/runs/{run_id}", min_seq=self.run_events(run_id)[-1]["seq"])
        return detail

    def series(self, run_id: str) -> dict[str, list[int]]:
        """For each metric key, its steps in the order the event log holds them."""
        steps: dict[str, list[int]] = {}
        for event in self.run_events(run_id):
            if event["type"] == "run.metrics_logged":
                for series in event["payload"]["series"]:
                    steps.setdefault(series["key"], []).extend(series["steps"])
        return steps

    def append(self, event: DomainEvent) -> int:
        """Append an event to the hub's event log directly (what the hub's own services, e.g. its reaper,
        do); its sequence."""
        async def go() -> int:
            log = EventLog(self.env["MLHUB_NATS_URL"], ack_timeout_s=2.0, append_deadline_s=30.0)
            await log.connect()
            try:
                return (await log.append(Envelope(event=event, producer="test"))).seq
            finally:
                await log.close()

        return asyncio.run(go())

    def projected_steps(self, run_id: str, key: str, min_seq: int) -> list[int]:
        """The steps of one key as the metric tables hold them (waits for min_seq)."""
        series = self.get(f"/runs/{run_id}/metrics/{key}", min_seq=min_seq, max_points=100_000)
        assert series["total_points"] == series["returned_points"], series["total_points"]
        steps: list[int] = series["steps"]
        return steps


@contextlib.contextmanager
def running_stack(root: Path, nats_url: str | None = None, python: str = sys.executable,
                  **env: str) -> Iterator[HubStack]:
    """The API and the projectors (with `env` settings, run by `python`) over nats_url, or over a nats-server of
    their own."""
    server = None
    if nats_url is None:
        server = EmbeddedNats(root / "nats", sync="always")
        nats_url = server.start()
    stack = HubStack(root, nats_url, python, **env)
    try:
        stack.start_api()
        stack.start_projector()
        yield stack
    finally:
        stack.stop()
        if server is not None:
            server.stop()


@pytest.fixture
def hub_stack(tmp_path: Path, nats_url: str) -> Iterator[HubStack]:
    """The API and the projectors running over the test's nats-server."""
    with running_stack(tmp_path, nats_url) as stack:
        yield stack


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    """The test's own spool folder (never ~/.mlhub)."""
    return tmp_path / "spool"


@pytest.fixture(scope="module")
def shared_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubStack]:
    """One hub (its own nats-server, API and projector) for every test of a module."""
    with running_stack(tmp_path_factory.mktemp("hub")) as stack:
        yield stack
