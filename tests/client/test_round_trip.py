"""The SDK against a real hub (uvicorn + projector subprocesses, real NATS): a run's params, tags, metrics,
artifact and end read back through the API; bad input named; a refused batch rejected and reported."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from tests.client.conftest import READER, WRITER, HubStack

from mlhub.client import Hub, HubAuthError, HubRequestError, InvalidMetric, RecordRejected, RunClosed
from mlhub.errors import InvalidInput


def test_a_run_round_trips_through_the_api(hub_stack: HubStack, spool_dir: Path, tmp_path: Path) -> None:
    artifact = tmp_path / "weights.bin"
    artifact.write_bytes(bytes(range(256)) * 4000)
    with Hub(hub_stack.url, WRITER, spool_dir=spool_dir) as hub:
        with hub.start_run("sdk-exp", params={"lr": 0.01, "layers": 3}, tags={"team": "vision"},
                           name="first") as run:
            for step in range(500):
                run.log_metrics({"loss": 1.0 / (step + 1), "acc": step / 500}, step=step, epoch=step // 100)
            run.log_metric("odd", math.nan, step=0)
            run.log_metric("odd", math.inf, step=1)
            run.log_params({"optimizer": "adam"})
            run.set_tags({"stage": "dev"})
            info = run.log_artifact(artifact, "models/weights.bin", kind="model")
        assert run.status == "finished" and run.errors == [] and run.records_spilled == 0
        assert info.uploaded and info.sha256 == hashlib.sha256(artifact.read_bytes()).hexdigest()
        assert run.points_logged == run.points_delivered == 1002

        events = hub_stack.run_events(run.run_id)
        last_seq = events[-1]["seq"]
        assert events[-1]["type"] == "run.finished"
        detail = hub.get_run(run.run_id, min_seq=last_seq)
        assert detail["run"]["status"] == "finished" and detail["run"]["name"] == "first"
        assert detail["params"] == {"lr": "0.01", "layers": "3", "optimizer": "adam"}
        assert detail["tags"] == {"team": "vision", "stage": "dev"}
        summaries = {m["key"]: m for m in detail["metrics"]}
        assert summaries["loss"]["count"] == 500 and summaries["loss"]["last_step"] == 499
        assert summaries["odd"]["nan_count"] == 1
        assert [a["path"] for a in detail["artifacts"]] == ["models/weights.bin"]

        assert hub_stack.projected_steps(run.run_id, "acc", last_seq) == list(range(500))
        series = hub.get_metric_series(run.run_id, "acc")
        assert series["epochs"] == [s // 100 for s in range(500)]
        download = httpx.get(f"{hub_stack.url}/api/v1/runs/{run.run_id}/artifacts/models/weights.bin",
                             headers={"Authorization": f"Bearer {READER}"})
        assert download.status_code == 200 and download.content == artifact.read_bytes()
    assert not list(spool_dir.rglob("*.jsonl")), "a delivered run leaves no spool file"


def test_a_failing_block_marks_the_run_failed(hub_stack: HubStack, spool_dir: Path) -> None:
    with Hub(hub_stack.url, WRITER, spool_dir=spool_dir) as hub:
        with pytest.raises(ZeroDivisionError), hub.start_run("sdk-exp") as run:
            run.log_metrics({"loss": 1.0}, step=0)
            _ = 1 / 0
        assert run.status == "failed"
        events = hub_stack.run_events(run.run_id)
        assert events[-1]["type"] == "run.failed"
        assert events[-1]["payload"]["error_type"] == "ZeroDivisionError"
        with pytest.raises(RunClosed, match="is finished"):
            run.log_metrics({"loss": 2.0}, step=1)


def test_bad_input_is_named_at_the_call(hub_stack: HubStack, spool_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="http:// or https://"):
        Hub("ftp://example", WRITER, spool_dir=spool_dir)
    with Hub(hub_stack.url, READER, spool_dir=spool_dir) as reader, \
            pytest.raises(HubAuthError, match="403 PERMISSION_DENIED.*set MLHUB_TOKEN") as denied:
        reader.start_run("sdk-exp")
    assert denied.value.status == 403
    with Hub(hub_stack.url, WRITER, spool_dir=spool_dir) as hub:
        with pytest.raises(HubRequestError, match="experiment") as refused:
            hub.start_run("")
        assert refused.value.status == 422
        with hub.start_run("sdk-exp") as run:
            with pytest.raises(InvalidMetric, match="'loss': value 'high' \\(str\\) is not a number"):
                run.log_metrics({"loss": "high"}, step=0)
            with pytest.raises(InvalidMetric, match="step must be an integer"):
                run.log_metrics({"acc": 0.5}, step=-1)
            with pytest.raises(InvalidMetric, match="metric key ''"):
                run.log_metrics({"": 0.5}, step=0)
            with pytest.raises(InvalidInput, match="not a file"):
                run.log_artifact(tmp_path / "missing.bin")
            with pytest.raises(InvalidInput, match="finish status must be one of finished, failed, killed"):
                run.finish("cancelled")  # type: ignore[arg-type]
            assert run.points_logged == 0 and run.status is None


def test_a_batch_the_hub_refuses_is_rejected_and_reported(hub_stack: HubStack, spool_dir: Path) -> None:
    """A run ended by someone else: its next batch gets 409; the SDK rejects it (a retry cannot help), warns,
    keeps it in the rejected file, and flush/finish say False."""
    with Hub(hub_stack.url, WRITER, spool_dir=spool_dir) as hub:
        run = hub.start_run("sdk-exp")
        run.log_metrics({"loss": 1.0}, step=0)
        assert run.flush(30)
        ended = httpx.post(f"{hub_stack.url}/api/v1/runs/{run.run_id}/finish", json={"status": "failed"},
                           headers={"Authorization": f"Bearer {WRITER}"})
        assert ended.status_code == 200, ended.text
        run.log_metrics({"loss": 2.0}, step=1)
        with pytest.warns(RecordRejected, match=f"run {run.run_id}: the hub refused batch .* key\\(s\\) 'loss'"):
            assert not run.flush(30), "a refused record makes flush say False"
        assert [(r.op, r.keys, r.status, r.code, r.points) for r in run.rejected] == [
            ("batch", ("loss",), 409, "INVALID_STATE", 1)]
        assert run.ended_remotely and run.points_delivered == 1 and run.records_spilled == 0
        with pytest.warns(RecordRejected, match="the hub refused finish"):
            assert not run.finish(timeout_s=30)  # the finish itself is refused too, and reported
        assert [r.op for r in run.rejected] == ["batch", "finish"] and "has ended (failed" in run.errors[1]
    assert [p.name for p in spool_dir.rglob("*.jsonl")] == [f"{run.run_id}.rejected.jsonl"]


def test_a_script_that_exits_without_finishing_loses_no_point(hub_stack: HubStack, spool_dir: Path) -> None:
    """The sender threads are daemons; an exit hook flushes them and ends the run as failed (NotFinished)."""
    script = (
        "import sys\nfrom mlhub.client import Hub\n"
        "run = Hub(sys.argv[1], sys.argv[2], spool_dir=sys.argv[3]).start_run('exit')\n"
        "print(run.run_id, flush=True)\n"
        "for step in range(3000):\n    run.log_metrics({'loss': step * 0.1}, step=step)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, hub_stack.url, WRITER, str(spool_dir)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    run_id = result.stdout.strip()
    events = hub_stack.run_events(run_id)
    assert events[-1]["type"] == "run.failed" and events[-1]["payload"]["error_type"] == "NotFinished"
    assert sorted(hub_stack.logged_steps(run_id)["loss"].elements()) == list(range(3000))
