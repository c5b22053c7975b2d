"""System metrics of a worker-trained job: the job's process samples itself (mlhub.client.system) every
system_metrics_s and its points go through the run's MetricSender; read back through a real hub's API. A worker
in reject mode does not fail a run for them (they are declared in configs/metrics.yaml); 0 records none."""

from __future__ import annotations

from pathlib import Path

from tests.client.conftest import running_stack
from tests.worker.helpers import ROOT, RunningWorker, events_of, submit_digits, wait_for

from mlhub.client.system import CPU_PERCENT, GPU_MEMORY_MB, GPU_UTILIZATION, MEMORY_MB, SYSTEM_METRIC_KEYS
from mlhub.eventlog import EventLog
from mlhub.events import SYSTEM_METRIC_PREFIX, MetricsLogged, RunFinished
from mlhub.metricdefs import apply_definitions, load_definitions


def logged_keys(events: list[object]) -> set[str]:
    return {p.key for e in events if isinstance(e, MetricsLogged) for p in e.points()}


def test_every_system_key_is_declared() -> None:
    assert set(SYSTEM_METRIC_KEYS) <= set(load_definitions(ROOT / "configs" / "metrics.yaml"))


async def test_a_worker_trained_job_records_system_metrics_even_in_reject_mode_and_none_with_zero(
    event_log: EventLog, nats_url: str, tmp_path: Path
) -> None:
    await apply_definitions(event_log, ROOT / "configs" / "metrics.yaml")
    sampled = await submit_digits(event_log, "trainer.max_epochs=6")
    async with RunningWorker(event_log, tmp_path / "on", undeclared_metrics="reject", system_metrics_s=0.1) as worker:
        await wait_for(event_log, [sampled.job_id], timeout_s=120)
    run = await events_of(event_log, "run", sampled.run_id)
    assert isinstance(run[-1], RunFinished), run[-1]
    result = worker.results[sampled.job_id]
    assert result.metrics_delivered
    stored = sum(e.num_points for e in run if isinstance(e, MetricsLogged))
    assert stored == result.points_logged, "system points are counted and stored exactly once"

    unsampled = await submit_digits(event_log)
    async with RunningWorker(event_log, tmp_path / "off", system_metrics_s=0):
        await wait_for(event_log, [unsampled.job_id], timeout_s=120)
    off = await events_of(event_log, "run", unsampled.run_id)
    assert isinstance(off[-1], RunFinished), off[-1]
    assert not any(k.startswith(SYSTEM_METRIC_PREFIX) for k in logged_keys(off)), logged_keys(off)

    (tmp_path / "hub").mkdir()
    with running_stack(tmp_path / "hub", nats_url) as hub:
        keys = {m["key"] for m in hub.run_detail(sampled.run_id)["metrics"]}
        assert {CPU_PERCENT, MEMORY_MB, "train_loss", "test_acc"} <= keys
        assert not keys & {GPU_UTILIZATION, GPU_MEMORY_MB}, "a CPU job: no GPU keys"
        seq = hub.run_events(sampled.run_id)[-1]["seq"]
        memory = hub.get(f"/runs/{sampled.run_id}/metrics/{MEMORY_MB}", min_seq=seq)
        cpu = hub.get(f"/runs/{sampled.run_id}/metrics/{CPU_PERCENT}", min_seq=seq)
        assert memory["returned_points"] >= 1 and cpu["returned_points"] == memory["returned_points"]
        assert all(value > 10 for value in memory["values"]), memory["values"]  # torch alone is hundreds of MiB
        assert all(value >= 0 for value in cpu["values"]), cpu["values"]
        assert all(step > 1_600_000_000_000 for step in memory["steps"]), "steps are wall-clock ms"
        assert not {m["key"] for m in hub.run_detail(unsampled.run_id)["metrics"]} & set(SYSTEM_METRIC_KEYS)
