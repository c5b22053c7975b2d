"""The GPU worker path: a gpu-pool job with accelerator auto trains on CUDA and records the device.

Marked `gpu`: on a machine without a CUDA device it is skipped with that reason (shown by `-ra`), never counted
as passed. Run it where a GPU is present with `uv run pytest -m gpu`.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tests.worker.helpers import RunningWorker, submit_digits

from mlhub.eventlog import EventLog
from mlhub.events import EnvironmentRecorded
from mlhub.scheduler import read_run, wait_for_job


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _cuda_available(), reason="no CUDA device on this machine (torch.cuda.is_available() "
                                                     "is False): the GPU worker path needs one"),
]


def test_auto_accelerator_resolves_to_the_gpu_on_the_gpu_pool_only() -> None:
    from mlhub.worker.training import resolve_accelerator

    assert resolve_accelerator("auto", "gpu") == "gpu"
    assert resolve_accelerator("auto", "cpu") == "cpu"


async def test_a_gpu_pool_job_trains_on_cuda_and_records_the_device(event_log: EventLog, tmp_path: Path) -> None:
    import torch

    job = await submit_digits(event_log, "pool=gpu", "trainer.accelerator=auto")
    started = time.monotonic()
    async with RunningWorker(event_log, tmp_path, pool="gpu"):
        outcome = await wait_for_job(event_log, job.job_id, timeout_s=300)
    print(f"gpu smoke: digits-mlp, 2 epochs, submit -> finished in {time.monotonic() - started:.1f} s "
          f"on {torch.cuda.get_device_name(0)}")
    assert outcome.succeeded, outcome.error
    events = [r.envelope.event for r in (await event_log.read_aggregate("run", job.run_id)).events]
    (env,) = [e for e in events if isinstance(e, EnvironmentRecorded)]
    assert env.cuda is not None and env.device_name == torch.cuda.get_device_name(0)
    run = await read_run(event_log, job.run_id)
    assert run.status == "finished" and run.final_metrics["test_acc"] > 0.3
