"""What the worker records, checked by the one validation: metric keys and values, params, attempts, the code
version, and a plugin error of a worker that lost its job (real NATS, real Lightning on the wine test plugin)."""

from __future__ import annotations

import hashlib
import math
import re
import subprocess
from pathlib import Path

import pytest
from tests.worker.helpers import RunningWorker, events_of, wait_for
from tests.worker.test_worker_faults import wait_until

from mlhub.errors import InvalidMetric
from mlhub.eventlog import EventLog
from mlhub.events import (
    CodeVersionRecorded,
    Envelope,
    JobFailed,
    JobSucceeded,
    MetricsLogged,
    ParamsLogged,
    RunFailed,
    RunFinished,
)
from mlhub.scheduler import SubmitResult, load_config, submit
from mlhub.worker.metrics import JobMetrics
from mlhub.worker.provenance import code_version, flatten_params

ROOT = Path(__file__).resolve().parents[2]
WINE = ROOT / "tests" / "plugin_package" / "wine-logreg.yaml"


async def submit_wine(event_log: EventLog, *overrides: str) -> SubmitResult:
    """Queue the wine test plugin's example config (plus overrides)."""
    loaded = load_config(WINE, list(overrides))
    return await submit(event_log, loaded.config, overrides=loaded.overrides, producer="test")


# -- keys and values -------------------------------------------------------------------------------------------

def test_metric_points_take_any_valid_key_and_refuse_bad_ones_naming_them() -> None:
    sent: list[Envelope] = []
    metrics = JobMetrics("r", sent.extend, producer="test", interval_s=0.01)
    try:
        points = metrics.log_metrics({"train/loss": 0.5, "val/acc@top1": 1, "δ loss": float("nan")}, 3, epoch=1,
                                     timestamp_ms=1_700_000_000_000)
        assert [(key, step, epoch) for key, _, step, epoch, _ in points] == [
            ("train/loss", 3, 1), ("val/acc@top1", 3, 1), ("δ loss", 3, 1)]
        assert points[1][1] == 1.0 and isinstance(points[1][1], float) and math.isnan(points[2][1])
        for bad, named in (({"val/../acc": 1.0}, "'val/../acc'"), ({"/abs": 1.0}, "'/abs'"),
                           ({"tab\tkey": 1.0}, "'tab\\tkey'"), ({"ok": True}, "bool"), ({"ok": "0.5"}, "'0.5'")):
            with pytest.raises(InvalidMetric, match=re.escape(named)) as caught:
                metrics.log_metrics(bad, 0)
            assert caught.value.code == "INVALID_METRIC"
        with pytest.raises(InvalidMetric, match="step"):
            metrics.log_metrics({"loss": 1.0}, -1)
    finally:
        assert metrics.close(5)
    assert sum(e.event.num_points for e in sent) == 3  # type: ignore[attr-defined]


def test_flattened_params_are_strings_as_given_or_json_never_python_repr() -> None:
    config = {"model": {"hidden": [64, 32], "names": ["a", "b"], "act": "relu", "lr": 0.001, "bn": True,
                        "drop": None, "opt": {"betas": [0.9, 0.999]}, "bad\tkey": 1},
              "data": {"name": "digits"}, "trainer": {"max_epochs": 2}, "seed": 7}
    assert flatten_params(config) == {
        "model.hidden": "[64, 32]", "model.names": '["a", "b"]', "model.act": "relu", "model.lr": "0.001",
        "model.bn": "true", "model.drop": "null", "model.opt.betas": "[0.9, 0.999]", "data.name": "digits",
        "trainer.max_epochs": "2", "seed": "7",
    }  # "model.bad\tkey" is left out: no valid key


# -- code version ----------------------------------------------------------------------------------------------

def _git(repo: Path, *args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True).stdout


def test_code_version_is_dirty_for_tracked_changes_only_and_lists_untracked_files_apart(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "t@example.com")
    _git(repo, "config", "user.name", "t")
    (repo / "src" / "train.py").write_text("print('v1')\n")
    (repo / "weights.bin").write_bytes(bytes(range(256)))
    (repo / ".gitignore").write_text("*.log\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "first")
    head = _git(repo, "rev-parse", "HEAD").decode().strip()

    clean = code_version(repo / "src")
    assert (clean.git_commit, clean.dirty, clean.diff_sha256, clean.untracked, clean.untracked_count) == (
        head, False, None, (), 0)
    assert clean.repository == str(repo.resolve())

    # Untracked (not ignored) files are listed, relative to the root, and do not make the tree dirty.
    (repo / "notes.txt").write_text("scratch\n")
    (repo / "src" / "new_module.py").write_text("x = 1\n")
    (repo / "run.log").write_text("ignored\n")
    untracked = code_version(repo / "src")
    assert (untracked.dirty, untracked.diff_sha256) == (False, None)
    assert (untracked.untracked, untracked.untracked_count) == (("notes.txt", "src/new_module.py"), 2)

    # A tracked change (a binary one too) makes it dirty; the hash is of `git diff HEAD --binary` exactly.
    (repo / "src" / "train.py").write_text("print('v2')\n")
    (repo / "weights.bin").write_bytes(bytes(reversed(range(256))))
    dirty = code_version(repo)
    assert dirty.dirty and dirty.untracked_count == 2
    assert dirty.diff_sha256 == hashlib.sha256(_git(repo, "diff", "HEAD", "--binary")).hexdigest()
    assert b"GIT binary patch" in _git(repo, "diff", "HEAD", "--binary")
    event = CodeVersionRecorded(run_id="r", git_commit=dirty.git_commit, dirty=dirty.dirty,
                                diff_sha256=dirty.diff_sha256, repository=dirty.repository,
                                untracked=dirty.untracked, untracked_count=dirty.untracked_count)
    assert event.untracked == ("notes.txt", "src/new_module.py")

    # A staged change is a tracked change as well.
    _git(repo, "checkout", "--", ".")
    (repo / "notes.txt").rename(repo / "src" / "notes.txt")
    _git(repo, "add", "src/notes.txt")
    staged = code_version(repo)
    assert staged.dirty and staged.untracked == ("src/new_module.py",) and staged.untracked_count == 1


def test_code_version_lists_the_first_thousand_untracked_files_and_counts_all(tmp_path: Path) -> None:
    repo = tmp_path / "big"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "0")
    for i in range(1005):
        (repo / f"f{i:04d}.csv").write_text("")
    version = code_version(repo)
    assert version.untracked_count == 1005 and len(version.untracked) == 1000
    assert version.untracked[0] == "f0000.csv" and version.untracked[-1] == "f0999.csv" and not version.dirty


# -- through a worker ------------------------------------------------------------------------------------------

async def test_every_metric_batch_carries_the_attempt_and_params_are_json(event_log: EventLog, tmp_path: Path) -> None:
    job = await submit_wine(event_log, "+model.metric_names={train_loss: train/loss, val_acc: val/acc@top1}")
    async with RunningWorker(event_log, tmp_path) as worker:
        await wait_for(event_log, [job.job_id], timeout_s=120)
    assert worker.jobs_handled == [(job.job_id, "succeeded")]
    run = await events_of(event_log, "run", job.run_id)
    batches = [e for e in run if isinstance(e, MetricsLogged)]
    assert batches and {b.attempt for b in batches} == {1}
    keys = {s.key for b in batches for s in b.series}
    assert {"train/loss", "val/acc@top1", "val_loss", "test_acc"} <= keys and "train_loss" not in keys
    (params,) = [e for e in run if isinstance(e, ParamsLogged)]
    assert params.params["model.metric_names.val_acc"] == "val/acc@top1"
    assert params.params["model.weight_decay"] == "0.0" and params.params["trainer.max_epochs"] == "3"
    (code,) = [e for e in run if isinstance(e, CodeVersionRecorded)]
    assert code.untracked_count >= len(code.untracked)


async def test_a_bad_metric_key_from_a_plugin_fails_the_run_with_invalid_metric(
    event_log: EventLog, tmp_path: Path
) -> None:
    job = await submit_wine(event_log, "+model.metric_names={val_acc: val/../acc}")
    async with RunningWorker(event_log, tmp_path) as worker:
        await wait_for(event_log, [job.job_id], timeout_s=120)
    assert worker.jobs_handled == [(job.job_id, "failed")]
    (failed,) = [e for e in await events_of(event_log, "run", job.run_id) if isinstance(e, RunFailed)]
    assert failed.error_type == "InvalidMetric", failed
    assert "metric key 'val/../acc'" in failed.error and "'..' path segment" in failed.error
    assert "validation error" not in failed.error  # the one validation's sentence, not a pydantic dump
    (job_failed,) = [e for e in await events_of(event_log, "job", job.job_id) if isinstance(e, JobFailed)]
    assert (job_failed.error_type, job_failed.retryable) == ("InvalidMetric", False)


async def test_a_worker_presumed_dead_that_then_hits_a_plugin_error_records_nothing(
    event_log: EventLog, tmp_path: Path
) -> None:
    """Its attempt was closed as WorkerLost by the worker that took over; its plugin error afterwards must not
    fail the job (now the next attempt's) or its run: job.failed is guarded like job.succeeded."""
    fail_file = tmp_path / "fail-now"
    job = await submit_wine(event_log, "trainer.max_epochs=100000", "timeout_s=600", f"+model.fail_when={fail_file}")
    async with RunningWorker(event_log, tmp_path, ack_wait_s=30.0) as worker:
        async def training() -> bool:
            return any(isinstance(e, MetricsLogged) for e in await events_of(event_log, "run", job.run_id))

        await wait_until(training, 120, "training to start")
        takeover = JobFailed(job_id=job.job_id, attempt=1, error_type="WorkerLost", error="presumed dead",
                             retryable=True)
        await event_log.append(Envelope(event=takeover, producer="test", correlation_id=job.job_id))
        fail_file.touch()  # the plugin raises at the end of its next epoch

        async def handled() -> bool:
            return bool(worker.jobs_handled)

        await wait_until(handled, 120, "the plugin error")
    assert worker.jobs_handled == [(job.job_id, "conflict")]
    assert job.job_id not in worker.results  # it ended by the error, not by finishing its epochs
    job_events = await events_of(event_log, "job", job.job_id)
    assert [e for e in job_events if isinstance(e, JobFailed)] == [takeover]
    assert not any(isinstance(e, JobSucceeded) for e in job_events)
    run = await events_of(event_log, "run", job.run_id)
    assert not any(isinstance(e, RunFailed | RunFinished) for e in run)


async def test_a_plugin_error_of_the_open_attempt_is_recorded_job_first(event_log: EventLog, tmp_path: Path) -> None:
    fail_file = tmp_path / "fail-now"
    fail_file.touch()
    job = await submit_wine(event_log, "trainer.max_epochs=50", f"+model.fail_when={fail_file}")
    async with RunningWorker(event_log, tmp_path) as worker:
        await wait_for(event_log, [job.job_id], timeout_s=120)
    assert worker.jobs_handled == [(job.job_id, "failed")]
    (job_failed,) = [e for e in await events_of(event_log, "job", job.job_id) if isinstance(e, JobFailed)]
    (run_failed,) = [e for e in await events_of(event_log, "run", job.run_id) if isinstance(e, RunFailed)]
    assert job_failed.error_type == run_failed.error_type == "RuntimeError" and not job_failed.retryable
    assert "failing as asked" in run_failed.error
