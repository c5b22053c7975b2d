"""Schemathesis over the app's own OpenAPI schema: no 5xx and no response outside the schema.

The app runs in a real uvicorn server (its own thread and event loop) on a free port, over the test's own
nats-server and a SQLite read model, with the projectors following the log; a few runs, a job and a model
give the generated requests something to find. Hypothesis runs randomized (a new seed each run; a failure prints how to
reproduce it): every write endpoint gets WRITE_EXAMPLES examples, half of them aimed at a run that exists so
that they reach the tracking service and not only the 404, the reads READ_EXAMPLES.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import checks
from tests.api.conftest import ADMIN, TOKENS, auth

from mlhub.api import create_app
from mlhub.eventlog import EmbeddedNats, EventLog
from mlhub.projections import build_projectors, run_projectors
from mlhub.readmodel import create_engine, migrate
from mlhub.settings import Settings

WRITE_EXAMPLES = 120
READ_EXAMPLES = 25
#: No 5xx, every status and content type documented, every body valid against its schema, and schema-invalid
#: requests refused with a 4xx. (positive_data_acceptance is left out: a filter or SQL text can be a valid
#: string by the schema and still be refused, rightly, with a 400 naming the problem.)
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_headers_conformance, checks.response_schema_conformance, checks.negative_data_rejection]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _ProjectorThread(threading.Thread):
    """The projectors in a thread of their own (their own loop and connection), until stopped."""

    def __init__(self, settings: Settings, url: str) -> None:
        super().__init__(daemon=True)
        self.settings, self.url = settings, url
        self.loop = asyncio.new_event_loop()
        self.task: asyncio.Task[object] | None = None

    def run(self) -> None:
        async def main() -> None:
            engine = create_engine(self.settings.resolved_database_url, writer=True)
            migrate(engine)
            async with EventLog(self.url) as log:
                self.task = asyncio.current_task()  # type: ignore[assignment]
                try:
                    await run_projectors(log, build_projectors(self.settings, engine))
                except asyncio.CancelledError:
                    pass
            engine.dispose()

        self.loop.run_until_complete(main())

    def stop(self) -> None:
        if self.task is not None:
            self.loop.call_soon_threadsafe(self.task.cancel)
        self.join(timeout=30)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str]]]:
    """The base URL of the app served by uvicorn, with a little data in it."""
    tmp = Path(tmp_path_factory.mktemp("schemathesis"))
    nats = EmbeddedNats(tmp / "nats", sync="always")
    nats_url = nats.start()
    settings = Settings(data_dir=tmp / "data", nats_url=nats_url, api_tokens=TOKENS, api_min_seq_wait_s=1.0,
                        api_query_timeout_s=2.0, api_metrics_refresh_s=0.0)
    projector = _ProjectorThread(settings, nats_url)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        projector.start()
        yield base, _seed(base)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        projector.stop()
        nats.stop()


def _seed(base: str) -> list[str]:
    """A few open runs (the write examples aim at them); their ids."""
    ids = []
    with httpx.Client(base_url=f"{base}/api/v1", headers=auth(ADMIN), timeout=30) as client:
        for _ in range(5):
            run = client.post("/runs", json={"experiment": "fuzz", "params": {"lr": "0.1"}}).json()
            seq = client.post(f"/runs/{run['run_id']}/log-batch", json={
                "metrics": [{"key": "loss", "values": [1.0, 0.5, 0.25], "steps": [0, 1, 2]}]}).json()["seq"]
            ids.append(run["run_id"])
        assert client.get("/runs", params={"min_seq": seq}).status_code == 200
    return ids


def test_no_server_error_and_no_schema_violation(served: tuple[str, list[str]]) -> None:
    base, run_ids = served
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30, [o.label for o in operations]
    writes = [o for o in operations if o.method.upper() != "GET"]
    assert {o.path for o in writes} >= {"/api/v1/runs", "/api/v1/runs/{run_id}/log-batch", "/api/v1/jobs",
                                        "/api/v1/runs/{run_id}/heartbeat", "/api/v1/runs/{run_id}/end",
                                        "/api/v1/runs/{run_id}/resume", "/api/v1/runs/{run_id}/artifacts"}
    for operation in operations:
        write = operation.method.upper() != "GET"

        @given(case=operation.as_strategy(), existing=st.sampled_from([None, *run_ids]))
        @settings(max_examples=WRITE_EXAMPLES if write else READ_EXAMPLES, deadline=None,
                  suppress_health_check=list(HealthCheck), derandomize=False, database=None)
        def check(case: schemathesis.Case, existing: str | None) -> None:
            if existing is not None and "run_id" in (case.path_parameters or {}):
                case.path_parameters["run_id"] = existing  # reach the service, not only its 404
            case.call_and_validate(base_url=base, headers=auth(ADMIN), checks=CHECKS)

        check()
