"""The issue's outage test: the API is SIGKILLed in the middle of a run while the script keeps logging, comes
back, and every point arrives exactly once (counted in the event log itself and in the metric tables)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.client.conftest import WRITER, HubStack

from mlhub.client import Hub


def _wait(condition: object, timeout_s: float, what: str) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_every_point_arrives_exactly_once_across_an_api_outage(hub_stack: HubStack, spool_dir: Path) -> None:
    # No system metrics: exact counts of the script's own points, however long the outage takes (a run that outlived
    # one MLHUB_SYSTEM_METRICS_S, 15 s, on a busy machine had 2 more points than 2 a step).
    hub = Hub(hub_stack.url, WRITER, spool_dir=spool_dir, interval_s=0.05, system_metrics_s=0)
    run = hub.start_run("outage", params={"lr": 0.1})
    steps = 0
    slowest = 0.0
    stop = threading.Event()

    def train() -> None:  # the script: logs two keys a step and never waits on the hub
        nonlocal steps, slowest
        while not stop.is_set():
            started = time.perf_counter()
            run.log_metrics({"loss": 1.0 / (steps + 1), "acc": steps * 1e-4}, step=steps)
            slowest = max(slowest, time.perf_counter() - started)
            steps += 1
            time.sleep(0.001)

    trainer = threading.Thread(target=train)
    trainer.start()
    try:
        _wait(lambda: run.points_delivered >= 400, 60, "points delivered before the outage")
        hub_stack.kill_api()
        at_kill = steps
        _wait(lambda: run.records_spilled > 0, 30, "the run to spill")
        _wait(lambda: steps >= at_kill + 500, 60, "logging to go on during the outage")
        spool_file = run.spool.records_path
        assert spool_file.exists() and spool_file.stat().st_size > 0
        hub_stack.start_api()
        at_restart = steps
        _wait(lambda: steps >= at_restart + 500, 60, "logging to go on after the restart")
    finally:
        stop.set()
        trainer.join()
    assert run.finish(timeout_s=120), f"not everything arrived: {run.pending} record(s) pending"
    hub.close()

    total = steps
    assert run.points_logged == run.points_delivered == 2 * total
    assert run.send_failures > 0 and run.records_spilled > 0 and run.errors == []
    assert slowest < 0.25, f"log_metrics blocked the training loop for {slowest:.3f} s"
    logged = hub_stack.logged_steps(run.run_id)
    for key in ("loss", "acc"):
        doubles = {s: n for s, n in logged[key].items() if n != 1}
        assert not doubles, f"{key}: steps stored more than once: {sorted(doubles.items())[:10]}"
        assert sorted(logged[key]) == list(range(total)), f"{key}: steps missing from the event log"
    last_seq = hub_stack.run_events(run.run_id)[-1]["seq"]
    assert hub_stack.projected_steps(run.run_id, "loss", last_seq) == list(range(total))
    assert hub_stack.projected_steps(run.run_id, "acc", last_seq) == list(range(total))
    assert hub_stack.get(f"/runs/{run.run_id}", min_seq=last_seq)["run"]["status"] == "finished"
    assert not spool_file.exists(), "the spool is removed once everything in it was delivered"
