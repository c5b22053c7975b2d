"""System metrics of a worker-trained job: the worker samples the job's process and its descendants from its own
process (mlhub.worker.jobsystem) every system_metrics_s, and appends the points to the job's run through the
worker's event log, before it records the outcome; read back through a real hub's API. The job's process runs no
sampler (its memory budget is its own: tests/worker/test_job_limits.py). A worker in reject mode does not fail a
run for them (they are declared in configs/metrics.yaml); 0 records none."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
from tests.client.conftest import running_stack
from tests.worker.helpers import ROOT, RunningWorker, events_of, submit_digits, wait_for

from mlhub.client.system import CPU_PERCENT, GPU_MEMORY_MB, GPU_UTILIZATION, MEMORY_MB, SYSTEM_METRIC_KEYS
from mlhub.eventlog import EventLog
from mlhub.events import SYSTEM_METRIC_PREFIX, MetricsLogged, RunFinished
from mlhub.metricdefs import apply_definitions, load_definitions
from mlhub.worker.jobsystem import JobSystemMetrics

#: The most CPU a process tree can use, in percent of one core (psutil's unit), with 5% for the readings of
#: its processes being taken a moment apart.
MAX_CPU_PERCENT = 100 * (os.cpu_count() or 1) * 1.05
TOTAL_MB = psutil.virtual_memory().total / 2**20
#: A process that starts a child holding 200 MiB (written, so resident) and both burn CPU for `seconds`.
TREE = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", '''
import time
held = b"x" * (200 * 2**20)
end = time.monotonic() + {seconds}
while time.monotonic() < end:
    pass
'''])
end = time.monotonic() + {seconds}
while time.monotonic() < end:
    pass
child.wait()
"""


def logged_keys(events: list[object]) -> set[str]:
    return {p.key for e in events if isinstance(e, MetricsLogged) for p in e.points()}


def test_every_system_key_is_declared() -> None:
    assert set(SYSTEM_METRIC_KEYS) <= set(load_definitions(ROOT / "configs" / "metrics.yaml"))


def test_the_worker_samples_a_job_process_and_its_children_from_outside_until_it_ends() -> None:
    sent: list[Any] = []
    ctx = SimpleNamespace(job=SimpleNamespace(run_id="run-a", job_id="job-a"), attempt=2, producer="test",
                          send_metrics=sent.extend, metric_interval_s=0.05, declared_metrics=None,
                          system_metrics_s=0.2)
    job = subprocess.Popen([sys.executable, "-c", TREE.format(seconds=2.5)])
    system = JobSystemMetrics(ctx, job.pid)  # type: ignore[arg-type]
    assert system.sampler is not None
    job.wait(30)
    deadline = time.monotonic() + 10
    while system.sampler.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not system.sampler.running, "the sampler ends with the process it samples"
    points, delivered = system.close()

    assert delivered and points == system.sampler.points > 0
    events = [e.event for e in sent]
    assert all(isinstance(e, MetricsLogged) and (e.run_id, e.attempt) == ("run-a", 2) for e in events)
    assert {e.correlation_id for e in sent} == {"job-a"}
    stored = [p for e in events for p in e.points()]
    assert len(stored) == points and {p.key for p in stored} == {CPU_PERCENT, MEMORY_MB}, "no GPU in use: no GPU keys"
    memory = [p.value for p in stored if p.key == MEMORY_MB]
    cpu = [p.value for p in stored if p.key == CPU_PERCENT]
    assert len(memory) >= 5, memory  # 2.5 s at one sample every 0.2 s, on a loaded machine
    # The child's 200 MiB are counted: the tree, not the process alone (a Python process is ~10 MiB).
    assert max(memory) > 200 and all(0 < mb < TOTAL_MB for mb in memory), memory
    assert all(0 <= c <= MAX_CPU_PERCENT for c in cpu) and max(cpu) > 20, cpu  # two busy loops
    assert all(p.step == p.timestamp > 1_600_000_000_000 and p.epoch == 0 for p in stored)


def test_zero_starts_no_sampler_and_sends_nothing() -> None:
    ctx = SimpleNamespace(job=SimpleNamespace(run_id="run-b", job_id="job-b"), attempt=1, producer="test",
                          send_metrics=lambda envelopes: None, metric_interval_s=0.05, declared_metrics=None,
                          system_metrics_s=0)
    system = JobSystemMetrics(ctx, os.getpid())  # type: ignore[arg-type]
    assert system.sampler is None and system.sender is None
    assert system.close() == (0, True)


async def test_a_worker_trained_job_records_system_metrics_even_in_reject_mode_and_none_with_zero(
    event_log: EventLog, nats_url: str, tmp_path: Path
) -> None:
    await apply_definitions(event_log, ROOT / "configs" / "metrics.yaml")
    sampled = await submit_digits(event_log, "trainer.max_epochs=6")
    async with RunningWorker(event_log, tmp_path / "on", undeclared_metrics="reject", system_metrics_s=0.1) as worker:
        await wait_for(event_log, [sampled.job_id], timeout_s=120)
    run = await events_of(event_log, "run", sampled.run_id)
    assert isinstance(run[-1], RunFinished), run[-1]  # every system point came before the run's end
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
        # The job's process holds torch and lightning: hundreds of MiB resident, less than the machine has.
        assert all(100 < value < TOTAL_MB for value in memory["values"]), memory["values"]
        assert all(0 <= value <= MAX_CPU_PERCENT for value in cpu["values"]), cpu["values"]
        assert max(cpu["values"]) > 0, "a training job uses CPU"
        assert all(step > 1_600_000_000_000 for step in memory["steps"]), "steps are wall-clock ms"
        assert not {m["key"] for m in hub.run_detail(unsampled.run_id)["metrics"]} & set(SYSTEM_METRIC_KEYS)
