"""System metrics of an SDK run (mlhub.client.system): sampled on a thread of the script's own every
MLHUB_SYSTEM_METRICS_S, stored as the run's `system/` points at wall-clock steps, read back through the API of a
real hub; none with 0; no GPU (or no NVML) is no GPU keys and no error; a sampler of another process (what the
worker does for a job) stops when that process ends."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest
from tests.client.conftest import WRITER, HubStack

from mlhub.client import Hub
from mlhub.client.system import (
    CPU_PERCENT,
    GPU_MEMORY_MB,
    GPU_UTILIZATION,
    MEMORY_MB,
    SYSTEM_METRIC_KEYS,
    GpuProbe,
    SystemSampler,
)
from mlhub.events import SYSTEM_METRIC_PREFIX, RunCrashed
from mlhub.settings import Settings

#: The most CPU a process tree can use, in percent of one core, with 5% for its readings being a moment apart.
MAX_CPU_PERCENT = 100 * (os.cpu_count() or 1) * 1.05
TOTAL_MB = psutil.virtual_memory().total / 2**20


def busy(seconds: float) -> None:
    """Keep this process's CPU busy for a while (what a training loop does)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sum(i * i for i in range(1000))


def test_an_sdk_run_records_its_system_metrics_and_a_resume_ignores_their_steps(shared_hub: HubStack,
                                                                                 spool_dir: Path) -> None:
    with Hub(shared_hub.url, WRITER, spool_dir=spool_dir, interval_s=0.05, system_metrics_s=0.2) as hub:
        run = hub.start_run("system-metrics")
        started_ms = int(time.time() * 1000)
        for step in range(5):
            run.log_metrics({"loss": 1.0 / (step + 1)})
            busy(0.25)
        assert run.system_sampler.running and run.system_sampler.samples >= 3
        assert run.next_step == 5, "system points do not move the automatic step"
        assert run.flush(30)

        detail = shared_hub.run_detail(run.run_id)
        keys = {m["key"] for m in detail["metrics"]}
        assert {"loss", CPU_PERCENT, MEMORY_MB} <= keys
        assert not keys & {GPU_UTILIZATION, GPU_MEMORY_MB}, "no GPU here: the GPU keys are absent"
        seq = shared_hub.run_events(run.run_id)[-1]["seq"]
        memory = shared_hub.get(f"/runs/{run.run_id}/metrics/{MEMORY_MB}", min_seq=seq)
        cpu = shared_hub.get(f"/runs/{run.run_id}/metrics/{CPU_PERCENT}", min_seq=seq)
        read_ms = int(time.time() * 1000)
        assert memory["returned_points"] >= 3 and cpu["returned_points"] == memory["returned_points"]
        # This process's resident memory: a Python process with httpx and pydantic is tens of MiB at least.
        own_mb = psutil.Process().memory_info().rss / 2**20
        assert all(10 < value < TOTAL_MB and value > own_mb / 2 for value in memory["values"]), memory["values"]
        assert all(0 <= value <= MAX_CPU_PERCENT for value in cpu["values"]), cpu["values"]
        assert max(cpu["values"]) > 10, "the busy loop shows as CPU time"
        # The step of a system point is its time (ms since the Unix epoch): increasing, within the run's time.
        assert memory["steps"] == sorted(memory["steps"]) and len(set(memory["steps"])) == len(memory["steps"])
        assert all(started_ms - 1000 <= step <= read_ms for step in memory["steps"]), memory["steps"]

        # The process dies (SIGKILL) and its run is crashed: another process resumes it after its last
        # *training* step, not after the time step of a system point.
        run.system_sampler.stop()
        assert run.flush(30)
        seq = shared_hub.run_events(run.run_id)[-1]["seq"]
        shared_hub.append(RunCrashed(run_id=run.run_id, reason="no event for 300 s", silent_s=300.0, last_seq=seq))
        shared_hub.run_detail(run.run_id)  # the read model has the crash (and every point before it)
    with Hub(shared_hub.url, WRITER, spool_dir=spool_dir, interval_s=0.05, system_metrics_s=0.2) as hub:
        resumed = hub.resume_run(run.run_id)
        assert resumed.next_step == 5
        assert resumed.system_sampler.running
        assert resumed.finish(timeout_s=30)
        assert not resumed.system_sampler.running, "the sampler stops when the run ends"


def test_zero_records_no_system_metrics(shared_hub: HubStack, spool_dir: Path) -> None:
    with Hub(shared_hub.url, WRITER, spool_dir=spool_dir, interval_s=0.05, system_metrics_s=0) as hub:
        run = hub.start_run("system-metrics-off")
        for step in range(3):
            run.log_metrics({"loss": float(step)})
            busy(0.2)
        assert not run.system_sampler.running
        assert run.finish(timeout_s=30)
    keys = {m["key"] for m in shared_hub.run_detail(run.run_id)["metrics"]}
    assert keys == {"loss"}


def test_the_interval_comes_from_the_setting(monkeypatch: pytest.MonkeyPatch, spool_dir: Path) -> None:
    monkeypatch.delenv("MLHUB_SYSTEM_METRICS_S", raising=False)
    assert Settings().system_metrics_s == 15.0
    monkeypatch.setenv("MLHUB_SYSTEM_METRICS_S", "0.5")
    hub = Hub("http://127.0.0.1:1", "token-0001", spool_dir=spool_dir, resend_on_start=False)
    try:
        assert hub.system_metrics_s == 0.5
    finally:
        hub.close()
    monkeypatch.setenv("MLHUB_SYSTEM_METRICS_S", "-1")
    with pytest.raises(ValueError, match="system_metrics_s"):
        Settings()


def test_a_sample_has_cpu_and_memory_and_no_gpu_keys_without_a_gpu_in_use() -> None:
    """This process uses no GPU (there may be none at all): the GPU keys are absent and nothing fails."""
    sampler = SystemSampler(lambda sample: None, 1.0)
    first = sampler.sample()
    busy(0.2)
    second = sampler.sample()
    assert second is not None and first is not None
    assert set(second.values) == {CPU_PERCENT, MEMORY_MB}, second.values
    assert 10 < second.values[MEMORY_MB] < TOTAL_MB and 10 < second.values[CPU_PERCENT] <= MAX_CPU_PERCENT
    assert second.step == second.timestamp_ms >= first.timestamp_ms
    assert set(SYSTEM_METRIC_KEYS) == {CPU_PERCENT, MEMORY_MB, GPU_UTILIZATION, GPU_MEMORY_MB}
    assert all(key.startswith(SYSTEM_METRIC_PREFIX) for key in SYSTEM_METRIC_KEYS)


def test_no_nvml_package_or_driver_is_no_gpu_points_never_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    probe = GpuProbe()
    assert probe.measure({1, 2, 3}) == {} and probe.off

    def no_driver() -> None:
        raise OSError("NVML Shared Library Not Found")

    monkeypatch.setitem(sys.modules, "pynvml", SimpleNamespace(nvmlInit=no_driver))
    probe = GpuProbe()
    assert probe.measure({1}) == {} and probe.off

    got: list[Any] = []
    sampler = SystemSampler(got.append, 0.05).start()
    time.sleep(0.5)
    sampler.stop()
    assert got and all(set(s.values) == {CPU_PERCENT, MEMORY_MB} for s in got)


def test_a_failing_sink_stops_the_sampler_not_the_caller(caplog: pytest.LogCaptureFixture) -> None:
    def refuse(sample: Any) -> None:
        raise RuntimeError("the run refused it")

    sampler = SystemSampler(refuse, 0.05).start()
    deadline = time.monotonic() + 10
    while sampler.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not sampler.running
    assert any("system metrics of run stopped" in r.getMessage() for r in caplog.records)
    sampler.stop()


def test_a_sampler_of_another_process_stops_when_it_ends_and_takes_no_sample_of_it_after() -> None:
    """What the worker does for a job's process (mlhub.worker.jobsystem): `pid=` samples that process's tree."""
    got: list[Any] = []
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    sampler = SystemSampler(got.append, 0.1, pid=other.pid).start()
    other.wait(30)  # reaped: gone; before the wait it is a zombie, which is not sampled either
    ended_ms = int(time.time() * 1000)
    deadline = time.monotonic() + 10
    while sampler.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not sampler.running, "it stops by itself when the process has ended"
    assert got and all(s.timestamp_ms <= ended_ms for s in got), "no sample of a process that ended"
    assert all(0 < s.values[MEMORY_MB] < TOTAL_MB for s in got), [s.values for s in got]
    assert sampler.sample() is None
    sampler.stop()

    gone = SystemSampler(got.append, 0.05, pid=other.pid).start()  # a pid that no longer exists: nothing, quietly
    deadline = time.monotonic() + 10
    while gone.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not gone.running and gone.samples == 0
