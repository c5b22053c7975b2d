"""`mlhub up` and `mlhub demo` as processes: everything starts, serves, and stops without leaving a process."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import stat
from pathlib import Path
from typing import Any

import httpx
import psutil
from tests.hub.helpers import free_port, processes_of, start, stop, wait_until_none_left

from mlhub.eventlog import EmbeddedNats
from mlhub.metricdefs import load_definitions


def test_up_serves_everything_and_sigterm_leaves_no_process(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    hub = start(["up", "--workers", "2"], data_dir, free_port())
    try:
        token = hub.wait_for(r"admin token of this hub: (\S+)").group(1)
        hub.wait_for(r"press Ctrl-C to stop")
        tree = [hub.proc.pid, *(c.pid for c in psutil.Process(hub.proc.pid).children(recursive=True))]
        names = [" ".join(psutil.Process(pid).cmdline()) for pid in tree[1:]]
        assert sum("nats-server" in n for n in names) == 1
        assert sorted(n.split("mlhub.cli ")[-1] for n in names if "mlhub.cli projector" in n) == [
            "projector --only metrics", "projector --only sql"]
        assert sum(n.endswith("mlhub.cli worker") for n in names) == 2
        assert sum("uvicorn" in n and f"--port {hub.port}" in n for n in names) == 1
        # The hub's admin token: printed, stored 0600, admitted by the API; a wrong one is refused.
        token_file = data_dir / "api-token"
        assert token_file.read_text().strip() == token
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert json.loads((data_dir / "hub.json").read_text())["url"] == hub.url
        ok = httpx.get(f"{hub.url}/api/v1/runs", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert ok.status_code == 200 and ok.json()["count"] == 0
        assert httpx.get(f"{hub.url}/api/v1/runs", headers={"Authorization": "Bearer wrong-token"},
                         timeout=30).status_code == 401
        ready = httpx.get(f"{hub.url}/readyz", timeout=30)
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert {p["name"]: (p["state"], p["pid"] in tree, p["restarts"]) for p in ready.json()["parts"]} == {
            name: ("running", True, 0) for name in ("nats-server", "projector-sql", "projector-metrics", "worker-1",
                                                    "worker-2", "api")}

        hub.proc.send_signal(signal.SIGTERM)
        assert hub.proc.wait(60) == 0, hub.output
        assert "mlhub stopped" in hub.output
        assert not [pid for pid in tree if psutil.pid_exists(pid)
                    and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
        assert wait_until_none_left(data_dir, timeout=5) == []
        assert token_file.exists() and not (data_dir / "hub.json").exists(), "the admin token outlives the hub"
        assert not (data_dir / "nats" / "server.json").exists()
    finally:
        stop(hub)


def test_ctrl_c_stops_up_cleanly(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    hub = start(["up", "--workers", "1"], data_dir, free_port())
    try:
        hub.wait_for(r"press Ctrl-C to stop")
        assert len(processes_of(data_dir)) >= 4  # up, nats-server, 2 projectors, worker, api
        hub.proc.send_signal(signal.SIGINT)
        assert hub.proc.wait(60) == 0, hub.output
        assert wait_until_none_left(data_dir, timeout=5) == []
    finally:
        stop(hub)


def test_sigkill_of_up_leaves_no_orphan(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    hub = start(["up", "--workers", "2"], data_dir, free_port())
    try:
        hub.wait_for(r"press Ctrl-C to stop")
        children = psutil.Process(hub.proc.pid).children()
        assert len(children) == 6  # nats-server, 2 projectors, 2 workers (each with its job fork server), api
        hub.proc.kill()  # no chance to clean up
        hub.proc.wait()
        left = wait_until_none_left(data_dir, timeout=15)
        assert left == [], [p.cmdline() for p in left]
    finally:
        stop(hub)


def test_a_busy_port_is_named_and_nothing_is_left(tmp_path: Path) -> None:
    import socket

    data_dir = tmp_path / "hub"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        hub = start(["up"], data_dir, port)
        assert hub.proc.wait(60) == 1
    hub.wait_for(r"cannot serve the API on 127\.0\.0\.1:\d+")
    assert "error [HUB_ERROR]" in hub.output and "--port" in hub.output
    assert wait_until_none_left(data_dir, timeout=5) == []


def test_a_part_that_keeps_dying_stops_the_whole_hub_after_the_restart_bound(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    hub = start(["up", "--workers", "1"], data_dir, free_port(), MLHUB_HUB_MAX_RESTARTS_PER_MIN="1")
    try:
        hub.wait_for(r"press Ctrl-C to stop")

        def sql_projector() -> psutil.Process:
            return next(p for p in psutil.Process(hub.proc.pid).children()
                        if p.cmdline()[-3:] == ["projector", "--only", "sql"])

        first = sql_projector()
        first.kill()
        hub.wait_for(r"restarted the projector-sql process \(pid \d+, restart 1 of this session\)", timeout=30)
        assert hub.proc.poll() is None
        second = sql_projector()
        assert second.pid != first.pid
        second.kill()  # the second death within a minute: over the bound of 1 restart
        assert hub.proc.wait(60) == 1
        assert re.search(r"the projector-sql process exited with code -9 after 1 restart\(s\) within 60 s "
                         r"\(MLHUB_HUB_MAX_RESTARTS_PER_MIN=1\): not restarting it again; its log: "
                         r"\S+projector-sql\.log",
                         hub.output), hub.output
        assert wait_until_none_left(data_dir, timeout=5) == []
        assert not (data_dir / "hub-parts.json").exists()
    finally:
        stop(hub)


def test_demo_exit_trains_the_examples_prints_their_metrics_and_leaves_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    hub = start(["demo", "--exit"], data_dir, free_port())
    try:
        assert hub.proc.wait(300) == 0, hub.output
        hub.wait_for("mlhub stopped")
    finally:
        stop(hub)
    out = hub.output
    declared = len(load_definitions(Path(__file__).resolve().parents[2] / "configs" / "metrics.yaml"))
    assert "metric definitions" in out and f"{declared} defined" in out
    assert re.search(r"job \w+ \(digits-mlp\.yaml\) succeeded after 1 attempt\(s\)", out)
    assert re.search(r"job \w+ \(diabetes-regression\.yaml\) succeeded after 1 attempt\(s\)", out)
    table = out[out.index("run  "):out.index("mlhub is serving at")]
    rows = [line.split() for line in table.splitlines()[2:] if line.strip()]
    runs = {row[0]: row for row in rows if row[0].startswith(("digits-mlp-", "diabetes-regression-"))}
    assert len(runs) == 2 and all(row[1] == "finished" for row in runs.values())
    metrics = {row[-4] if len(row) == 6 else row[0]: row for row in rows}
    val_acc = float(metrics["val_acc"][-3])
    assert 0.9 < val_acc <= 1.0  # digits is learned in 12 epochs (0.94 with its seed)
    assert {"val_rmse", "test_r2", "test_acc", "val_loss"} <= set(metrics)
    assert re.search(r"mlhub is serving at http://127\.0\.0\.1:\d+", out)
    assert wait_until_none_left(data_dir, timeout=5) == []


def test_up_against_an_external_event_log_and_postgresql_starts_no_server(tmp_path: Path,
                                                                         nats_server: EmbeddedNats) -> None:
    """The scale-out settings: MLHUB_NATS_URL and MLHUB_DATABASE_URL name external services; `up` runs the
    projector, workers and API against them, starts no nats-server, and leaves the external one running."""
    from tests.api.conftest import database_url

    nats_url = nats_server.url
    assert nats_url is not None
    data_dir = tmp_path / "hub"
    with database_url("postgresql", tmp_path) as pg_url:
        hub = start(["up", "--workers", "1"], data_dir, free_port(), MLHUB_NATS_URL=nats_url,
                    MLHUB_DATABASE_URL=pg_url, MLHUB_API_TOKENS="an-admin-token:admin")
        try:
            hub.wait_for(r"press Ctrl-C to stop")
            # The URL carries the admin's password: printed without it (and kept out of hub.json).
            assert f"event log: {nats_server.public_url}\n" in hub.output
            assert "tokens: from MLHUB_API_TOKENS" in hub.output
            password = nats_url.split("@")[0].rsplit(":", 1)[1]
            assert password not in hub.output and password not in (data_dir / "hub.json").read_text()
            names = [" ".join(c.cmdline()) for c in psutil.Process(hub.proc.pid).children()]
            assert len(names) == 4 and not any("nats-server" in n for n in names)
            assert not (data_dir / "api-token").exists()
            runs = httpx.get(f"{hub.url}/api/v1/runs", headers={"Authorization": "Bearer an-admin-token"},
                             timeout=30)
            assert runs.status_code == 200, runs.text
            ready = httpx.get(f"{hub.url}/readyz", timeout=30).json()
            assert ready["status"] == "ready" and ready["last_seq"] >= 0
            assert [p["name"] for p in ready["parts"]] == ["projector-sql", "projector-metrics", "worker-1", "api"]
            hub.proc.send_signal(signal.SIGTERM)
            assert hub.proc.wait(60) == 0, hub.output
            assert wait_until_none_left(data_dir, timeout=5) == []
        finally:
            stop(hub)
    # The external server was not touched: it still runs.
    assert nats_server.process is not None and nats_server.process.poll() is None


def test_demo_serves_until_ctrl_c_and_the_cli_finds_its_token(tmp_path: Path) -> None:
    import subprocess

    from tests.hub.helpers import MLHUB, ROOT, hub_env

    data_dir = tmp_path / "demo"
    hub = start(["demo", "--workers", "1"], data_dir, free_port())
    try:
        hub.wait_for("serving until Ctrl-C", timeout=300)
        assert hub.proc.poll() is None
        # A user in the same directory: MLHUB_URL and the data dir, no token; the demo's runs are there.
        listed = subprocess.run([*MLHUB, "runs", "--format", "json"], env=hub_env(data_dir, MLHUB_URL=hub.url),
                                cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert listed.returncode == 0, listed.stderr
        assert sorted(r["experiment_id"] for r in json.loads(listed.stdout)) == ["diabetes-regression",
                                                                                  "digits-baseline"]
        hub.proc.send_signal(signal.SIGINT)
        assert hub.proc.wait(60) == 0, hub.output
        assert wait_until_none_left(data_dir, timeout=5) == []
    finally:
        stop(hub)


def test_sigterm_while_a_job_trains_gives_it_back_and_leaves_nothing(tmp_path: Path) -> None:
    import time

    import yaml
    from tests.hub.helpers import ROOT

    data_dir = tmp_path / "hub"
    hub = start(["up", "--workers", "1"], data_dir, free_port())
    try:
        token = hub.wait_for(r"admin token of this hub: (\S+)").group(1)
        hub.wait_for(r"press Ctrl-C to stop")
        headers = {"Authorization": f"Bearer {token}"}
        config = yaml.safe_load((ROOT / "configs" / "digits-mlp.yaml").read_text())
        job = httpx.post(f"{hub.url}/api/v1/jobs", headers=headers, timeout=30,
                         json={"config": config, "overrides": ["trainer.max_epochs=1000"]}).json()
        deadline = time.monotonic() + 120
        status = "queued"
        while status != "running" and time.monotonic() < deadline:
            status = httpx.get(f"{hub.url}/api/v1/jobs/{job['job_id']}", headers=headers, timeout=30,
                               params={"min_seq": job["seq"]}).json()["status"]
            time.sleep(0.2)
        assert status == "running"
        time.sleep(2)  # into the training loop
        hub.proc.send_signal(signal.SIGTERM)
        assert hub.proc.wait(60) == 0, hub.output
        assert wait_until_none_left(data_dir, timeout=5) == []
        worker_log = (data_dir / "logs" / "worker-1.log").read_text()
        assert "stopped after 1 job message(s)" in worker_log, (
            worker_log[-3000:] + "\n--- mlhub up:\n" + hub.output[-3000:])
    finally:
        stop(hub)
    # The worker gave the job back before the event log stopped: its last event is a retryable failure.
    events = asyncio.run(_job_events(data_dir, job["job_id"]))
    assert events[-1].type == "job.failed" and events[-1].event.retryable
    assert events[-1].event.error_type == "WorkerStopped"


async def _job_events(data_dir: Path, job_id: str) -> list[Any]:
    from mlhub.eventlog import EventLog

    with EmbeddedNats(data_dir / "nats") as server:
        assert server.url is not None
        async with EventLog(server.url) as log:
            return [r.envelope for r in (await log.read_aggregate("job", job_id)).events]


def test_a_second_up_on_the_same_data_dir_is_refused_and_touches_nothing_of_the_first(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    first = start(["up", "--workers", "0"], data_dir, free_port())
    try:
        token = first.wait_for(r"admin token of this hub: (\S+)").group(1)
        first.wait_for(r"press Ctrl-C to stop")
        hub_file = (data_dir / "hub.json").read_text()
        second = start(["up", "--workers", "0"], data_dir, free_port())
        assert second.proc.wait(60) == 1
        second.wait_for(r"another `mlhub up` already runs on the data dir")
        assert f"pid {first.proc.pid}, serving at {first.url}" in second.output
        # The first hub's files and server are untouched, and it still serves with its token.
        assert (data_dir / "api-token").read_text().strip() == token
        assert (data_dir / "hub.json").read_text() == hub_file
        assert (data_dir / "nats" / "server.json").exists()
        runs = httpx.get(f"{first.url}/api/v1/runs", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert runs.status_code == 200 and first.proc.poll() is None
        first.proc.send_signal(signal.SIGTERM)
        assert first.proc.wait(60) == 0
        assert wait_until_none_left(data_dir, timeout=5) == []
    finally:
        stop(first)
