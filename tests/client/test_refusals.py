"""Refusals are never silent: what the hub refuses for good is kept in the run's rejected file, warned about,
listed in `run.rejected`, and flush/finish return False; everything else still arrives. A refused token keeps
the records spooled until a Hub with a good token resends them. Real hubs (uvicorn + projector, real NATS)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.client.conftest import TOKENS, WRITER, HubStack

from mlhub.client import Hub, HubAuthError, RecordRejected, Run
from mlhub.client.spool import RunSpool, hub_folder
from mlhub.client.transport import Transport

ROOT = Path(__file__).resolve().parents[2]


def rejected_lines(spool_dir: Path, url: str, run_id: str) -> list[dict[str, object]]:
    path = RunSpool(hub_folder(spool_dir, url), run_id).rejected_path
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_ten_thousand_points_arrive_and_the_one_refused_is_reported(shared_hub: HubStack, spool_dir: Path) -> None:
    """A script logs 10,000 points to its run and one point to a run id the hub never made (404)."""
    with Hub(shared_hub.url, WRITER, spool_dir=spool_dir, interval_s=0.05) as hub:
        run = hub.start_run("refusals")
        stale = Run(hub, uuid.uuid4().hex, run.experiment_id, interval_s=0.05)  # e.g. an id from elsewhere
        with pytest.warns(RecordRejected, match=f"run {stale.run_id}: the hub refused batch .* of key\\(s\\) "
                                                "'loss' for good .*404 RESOURCE_DOES_NOT_EXIST"):
            for step in range(10_000):
                run.log_metrics({"loss": 1.0 / (step + 1)})
                if step == 5_000:
                    stale.log_metrics({"loss": 0.0})
            assert not stale.flush(30), "a refused point makes flush say False"
        with pytest.warns(RecordRejected, match="the hub refused finish"):
            assert not stale.finish(timeout_s=30), "and finish"
        assert run.finish(timeout_s=60)
    assert [(r.op, r.keys, r.status, r.code, r.points) for r in stale.rejected] == [
        ("batch", ("loss",), 404, "RESOURCE_DOES_NOT_EXIST", 1), ("finish", (), 404, "RESOURCE_DOES_NOT_EXIST", 0)]
    assert f"no run {stale.run_id!r}" in stale.rejected[0].message

    assert sorted(shared_hub.logged_steps(run.run_id)["loss"].elements()) == list(range(10_000))
    assert run.points_delivered == 10_000 and run.rejected == []
    lines = rejected_lines(spool_dir, shared_hub.url, stale.run_id)
    assert [(x["op"], x["keys"], x["status"], x["code"], x["points"]) for x in lines] == [
        ("batch", ["loss"], 404, "RESOURCE_DOES_NOT_EXIST", 1), ("finish", [], 404, "RESOURCE_DOES_NOT_EXIST", 0)]
    refused = lines[0]["refused"]
    assert isinstance(refused, dict) and refused["metrics"][0]["values"] == [0.0]
    assert refused["metrics"][0]["steps"] == [0] and lines[1]["refused"] == {"status": "finished"}
    assert not RunSpool(hub_folder(spool_dir, shared_hub.url), stale.run_id).records_path.exists()


def test_a_spooled_record_the_hub_refuses_does_not_hold_up_the_rest(shared_hub: HubStack, spool_dir: Path,
                                                                    tmp_path: Path) -> None:
    """A crashed script's spool: a batch, an upload whose bytes no longer match its sha256 (the hub refuses it,
    422), a batch, the finish. The next Hub rejects the upload and delivers everything after it."""
    run_id = Transport(shared_hub.url, WRITER).request("POST", "/runs", json_body={"experiment": "refusals"})["run_id"]
    spool = RunSpool(hub_folder(spool_dir, shared_hub.url), run_id)
    blob = tmp_path / "weights.bin"
    blob.write_bytes(b"weights")
    sha = spool.store_blob(blob, hashlib.sha256(b"weights").hexdigest())
    (spool.blobs / sha).write_bytes(b"corrupt")

    def batch(step: int) -> dict[str, object]:
        batch_id = str(uuid.uuid4())
        return {"op": "batch", "id": batch_id, "run_id": run_id, "at": time.time(),
                "body": {"batch_id": batch_id, "metrics": [{"key": "loss", "values": [1.0], "steps": [step]}]}}

    upload = {"op": "artifact", "id": str(uuid.uuid4()), "run_id": run_id, "at": time.time(), "path": "w.bin",
              "sha256": sha, "kind": "model", "size_bytes": 7, "blob": sha}
    spool.append([batch(0), upload, batch(1), {"op": "finish", "id": str(uuid.uuid4()), "run_id": run_id,
                                                "at": time.time(), "body": {"status": "finished"}}])
    with pytest.warns(RecordRejected, match="refused artifact .* 'w.bin' .*ARTIFACT_CHECKSUM_MISMATCH"), \
            Hub(shared_hub.url, WRITER, spool_dir=spool_dir) as again:
        report = again.wait_for_resend(60)
    assert report is not None and report.delivered == 3
    assert [(r.op, r.keys, r.status, r.code) for r in report.rejected] == [
        ("artifact", ("w.bin",), 422, "ARTIFACT_CHECKSUM_MISMATCH")]
    assert shared_hub.series(run_id) == {"loss": [0, 1]}
    assert shared_hub.run_detail(run_id)["run"]["status"] == "finished"
    [line] = rejected_lines(spool_dir, shared_hub.url, run_id)
    assert line["refused"] == {"path": "w.bin", "sha256": sha, "kind": "model", "size_bytes": 7}
    assert not spool.records_path.exists() and not (spool.blobs / sha).exists(), "delivered: the spool is cleaned"


@pytest.fixture
def undeclared_rejecting_hub(tmp_path: Path, nats_url: str) -> Iterator[HubStack]:
    """A hub that refuses metric keys configs/metrics.yaml does not declare (MLHUB_UNDECLARED_METRICS=reject)."""
    stack = HubStack(tmp_path, nats_url, MLHUB_UNDECLARED_METRICS="reject")
    try:
        applied = subprocess.run([sys.executable, "-m", "mlhub.cli", "metrics", "apply"], cwd=ROOT, env=stack.env,
                                 capture_output=True, text=True, timeout=120)
        assert applied.returncode == 0, applied.stderr
        stack.start_api()
        stack.start_projector()
        yield stack
    finally:
        stack.stop()


def test_a_key_the_hub_refuses_costs_the_other_keys_nothing(undeclared_rejecting_hub: HubStack,
                                                            spool_dir: Path) -> None:
    """Needs the API to refuse per key: 422 UNDECLARED_METRIC with details.keys. 10,000 points of a declared
    key arrive; the one point of an undeclared key in the same batch is rejected, alone."""
    stack = undeclared_rejecting_hub
    with Hub(stack.url, WRITER, spool_dir=spool_dir, interval_s=0.05) as hub:
        run = hub.start_run("per-key")
        stack.run_detail(run.run_id)  # the projections have the metric definitions applied before the run
        with pytest.warns(RecordRejected, match="of key\\(s\\) 'mystery_metric' for good .*UNDECLARED_METRIC"):
            for step in range(10_000):
                run.log_metrics({"train_loss": 1.0 / (step + 1), **({"mystery_metric": 1.0} if step == 8_500 else {})})
            assert not run.finish(timeout_s=60)
    assert [(r.op, r.keys, r.status, r.code, r.points) for r in run.rejected] == [
        ("batch", ("mystery_metric",), 422, "UNDECLARED_METRIC", 1)]
    logged = stack.logged_steps(run.run_id)
    assert set(logged) == {"train_loss"} and sorted(logged["train_loss"].elements()) == list(range(10_000))
    assert run.points_delivered == 10_000 and stack.run_detail(run.run_id)["run"]["status"] == "finished"
    [line] = rejected_lines(spool_dir, stack.url, run.run_id)
    assert line["keys"] == ["mystery_metric"] and line["points"] == 1
    assert line["rest_id"] == str(uuid.uuid5(uuid.UUID(str(line["record_id"])), "without-refused"))
    refused = line["refused"]
    assert isinstance(refused, dict) and [m["key"] for m in refused["metrics"]] == ["mystery_metric"]
    assert refused["metrics"][0]["steps"] == [8_500]
    rest_event = str(uuid.uuid5(uuid.UUID(str(line["rest_id"])), "log-batch/0"))
    assert rest_event in {e["event_id"] for e in stack.run_events(run.run_id)}, "the rest went under the derived id"


def test_a_record_refused_mid_run_does_not_hold_up_what_follows(shared_hub: HubStack, spool_dir: Path) -> None:
    """Needs the API's 409 PARAM_VALUE_CHANGED. A second Run object on the same run (as a second process
    would hold) logs a param with another value: refused; its later metrics and tags arrive."""
    with Hub(shared_hub.url, WRITER, spool_dir=spool_dir, interval_s=0.05) as hub:
        run = hub.start_run("refusals", params={"lr": 0.1})
        other = Run(hub, run.run_id, run.experiment_id, interval_s=0.05)
        with pytest.warns(RecordRejected, match="of key\\(s\\) 'lr' for good .*409 PARAM_VALUE_CHANGED"):
            other.log_params({"lr": 0.2})
            other.log_metrics({"loss": 1.0}, step=0)
            other.set_tags({"after": "yes"})
            assert not other.flush(30)
        assert [(r.op, r.keys, r.status, r.code) for r in other.rejected] == [
            ("batch", ("lr",), 409, "PARAM_VALUE_CHANGED")]
        assert not other.finish(timeout_s=30)
        assert run.finish(timeout_s=30), "the run had ended 'finished' already: that finish counts as delivered"
    detail = shared_hub.run_detail(run.run_id)
    assert detail["params"] == {"lr": "0.1"} and detail["tags"] == {"after": "yes"}
    assert shared_hub.series(run.run_id) == {"loss": [0]}


def test_a_refused_token_keeps_the_records_until_a_good_token_sends_them(hub_stack: HubStack,
                                                                         spool_dir: Path) -> None:
    started = time.monotonic()
    with Hub(hub_stack.url, "not-a-token", spool_dir=spool_dir) as bad, \
            pytest.raises(HubAuthError, match="401 UNAUTHENTICATED.*set MLHUB_TOKEN") as refused:
        bad.start_run("auth")
    assert refused.value.status == 401 and time.monotonic() - started < 5, "a refused token is not retried"

    # No system metrics: a sample taken while the API is down (a restart slower than MLHUB_SYSTEM_METRICS_S, 15 s,
    # on a busy machine) is a batch refused by no hub, whose retries are no token refusal and count apart.
    hub = Hub(hub_stack.url, WRITER, spool_dir=spool_dir, interval_s=0.05, system_metrics_s=0)
    run = hub.start_run("auth")
    run.log_metrics({"loss": 0.0}, step=0)
    assert run.flush(30)
    hub_stack.kill_api()  # the hub comes back with a token list that no longer has the run's token
    hub_stack.env["MLHUB_API_TOKENS"] = "someone-else-0001:writer"
    hub_stack.start_api()
    with pytest.warns(RuntimeWarning, match=f"run {run.run_id}: the hub refused the token .*set MLHUB_TOKEN"):
        for step in range(1, 101):
            run.log_metrics({"loss": float(step)}, step=step)
        waited = time.monotonic()
        assert not run.flush(30)
    assert time.monotonic() - waited < 10, "flush says False at once while the token is refused"
    assert isinstance(run.auth_error, HubAuthError) and run.auth_error.status == 401
    time.sleep(2)
    assert run.send_failures == 1, "no hammering: the next try waits 30 s"
    assert not run.finish(timeout_s=5)
    hub.close()
    spool = RunSpool(hub_folder(spool_dir, hub_stack.url), run.run_id)
    pending = list(spool.pending())
    assert pending[-1]["op"] == "finish" and sum(len(r["body"].get("metrics", [{}])[0].get("values", []))
                                                 for r in pending if r["op"] == "batch") == 100

    hub_stack.kill_api()
    hub_stack.env["MLHUB_API_TOKENS"] = TOKENS
    hub_stack.start_api()
    with Hub(hub_stack.url, WRITER, spool_dir=spool_dir) as again:
        report = again.wait_for_resend(60)
    assert report is not None and report.delivered == len(pending) and report.rejected == []
    assert sorted(hub_stack.logged_steps(run.run_id)["loss"].elements()) == list(range(101))
    assert hub_stack.run_detail(run.run_id)["run"]["status"] == "finished"
    assert not spool.records_path.exists()
