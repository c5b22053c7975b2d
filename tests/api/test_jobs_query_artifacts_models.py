"""Jobs (submit, get, cancel), /query, artifacts (download verified), model registry reads and promotion."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml
from tests.api.conftest import ADMIN, READER, WRITER, Api, api_settings, create_run, database_url, running_api

from mlhub.artifacts import LocalArtifactStore
from mlhub.eventlog import EventLog
from mlhub.events import ArtifactStored, Envelope, ModelAliasSet, ModelVersionRegistered

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "digits-mlp.yaml"


def digits_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    return config


async def test_submit_get_and_cancel_a_job(api: Api) -> None:
    submitted = await api.post("/jobs", {"config": digits_config(), "overrides": ["trainer.max_epochs=2"]})
    assert submitted.status_code == 201, submitted.text
    job = submitted.json()
    read = await api.get(f"/jobs/{job['job_id']}", params={"min_seq": job["seq"]})
    assert read.status_code == 200, read.text
    assert read.json()["status"] == "queued" and read.json()["config"]["trainer"]["max_epochs"] == 2
    run = await api.get(f"/runs/{job['run_id']}", params={"min_seq": job["seq"]})
    assert run.json()["lineage"]["job"]["job_id"] == job["job_id"]
    assert run.json()["run"]["config_sha256"] == job["config_sha256"]

    cancelled = await api.post(f"/jobs/{job['job_id']}/cancel", {"reason": "not needed"})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["previous_status"] == "queued"
    again = await api.post(f"/jobs/{job['job_id']}/cancel", {})
    assert again.status_code == 409 and again.json()["error"]["details"]["state"] == "cancelled"
    assert (await api.post("/jobs/nosuchjob/cancel", {})).status_code == 404
    assert (await api.get("/jobs/nosuchjob")).status_code == 404


async def test_a_bad_config_gets_422_naming_each_field_and_queues_nothing(api: Api) -> None:
    last = await api.event_log.last_sequence()
    config = digits_config()
    config["trainer"]["max_epochs"] = 0
    config["bogus"] = 1
    response = await api.post("/jobs", {"config": config})
    assert response.status_code == 422, response.text
    fields = {p["field"] for p in response.json()["error"]["details"]["problems"]}
    assert {"trainer.max_epochs", "bogus"} <= fields
    unknown = await api.post("/jobs", {"config": digits_config(), "overrides": ["trainer.max_epoch=3"]})
    assert unknown.status_code == 422 and "max_epochs" in unknown.json()["error"]["message"]
    shape = await api.post("/jobs", {"configuration": {}})
    assert shape.status_code == 422 and shape.json()["error"]["code"] == "INVALID_PARAMETER_VALUE"
    assert await api.event_log.last_sequence() == last


async def test_query_is_read_only_and_limited(api: Api) -> None:
    run = await create_run(api, "q", params={"lr": "0.1"})
    logged = await api.post(f"/runs/{run['run_id']}/log-batch",
                            {"metrics": [{"key": "loss", "values": [3.0, 2.0, 1.0], "steps": [0, 1, 2]}]})
    seq = logged.json()["seq"]
    response = await api.post("/query", {"sql": "SELECT r.name, count(*) AS n, min(m.value) AS best FROM runs r "
                                                "JOIN metrics m USING (run_id) GROUP BY r.name"},
                              token=READER, params={"min_seq": seq})
    assert response.status_code == 200, response.text
    assert response.json()["columns"] == ["name", "n", "best"] and response.json()["rows"][0][1:] == [3, 1.0]
    capped = await api.post("/query", {"sql": "SELECT * FROM range(100)", "max_rows": 10}, token=READER)
    assert capped.json()["row_count"] == 10 and capped.json()["truncated"] is True
    for sql, code in [("DELETE FROM runs", "QUERY_REFUSED"), ("SELECT * FROM read_csv('/etc/passwd')",
                                                              "QUERY_REFUSED"),
                      ("SELECT nope FROM runs", "QUERY_FAILED")]:
        refused = await api.post("/query", {"sql": sql}, token=READER)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == code, refused.text
    api.client._transport.app.state.mlhub.settings.api_query_timeout_s = 0.2  # type: ignore[attr-defined]
    slow = await api.post("/query", {"sql": "SELECT count(*) FROM range(10000000000) a"}, token=READER)
    assert slow.status_code == 422 and slow.json()["error"]["code"] == "QUERY_TIMEOUT", slow.text


async def test_artifacts_list_and_verified_download(api: Api) -> None:
    run = await create_run(api)
    store = LocalArtifactStore(api.settings.data_dir / "artifacts")
    data = b"model weights " * 100_000
    stored = store.put_bytes(data)
    event = ArtifactStored(run_id=run["run_id"], path="model/weights.bin", sha256=stored.sha256,
                           size_bytes=stored.size_bytes, uri=stored.uri, kind="model")
    seq = (await api.event_log.append(Envelope(event=event, producer="test"))).seq
    listed = await api.get(f"/runs/{run['run_id']}/artifacts", params={"min_seq": seq})
    assert listed.json()["data"][0]["path"] == "model/weights.bin"
    download = await api.get(f"/runs/{run['run_id']}/artifacts/model/weights.bin")
    assert download.status_code == 200 and download.content == data
    assert download.headers["x-mlhub-sha256"] == hashlib.sha256(data).hexdigest()
    assert (await api.get(f"/runs/{run['run_id']}/artifacts/nope.bin")).status_code == 404

    object_path = Path(stored.uri.removeprefix("file://"))
    object_path.chmod(0o644)
    object_path.write_bytes(b"tampered" + data[8:])
    corrupt = await api.get(f"/runs/{run['run_id']}/artifacts/model/weights.bin")
    assert corrupt.status_code == 500 and corrupt.json()["error"]["code"] == "ARTIFACT_INTEGRITY_ERROR"


async def test_model_registry_reads_and_promotion_rules(api: Api) -> None:
    run = await create_run(api)
    events = [
        ModelVersionRegistered(model_name="digits", version=1, run_id=run["run_id"], artifact_path="model.onnx",
                               artifact_sha256="a" * 64),
        ModelAliasSet(model_name="digits", alias="staging", version=1, actor="alice", reason="looks good"),
    ]
    seq = 0
    for event in events:
        seq = (await api.event_log.append(Envelope(event=event, producer="test"))).seq
    model = await api.get("/models/digits", params={"min_seq": seq})
    assert model.status_code == 200, model.text
    assert model.json()["versions"][0]["run_id"] == run["run_id"]
    assert model.json()["aliases"][0]["alias"] == "staging"
    assert (await api.get("/models")).json()["count"] == 1
    assert (await api.get("/models/digits/versions/1")).json()["artifact_path"] == "model.onnx"
    assert (await api.get("/models/digits/versions/2")).status_code == 404
    history = await api.get("/models/digits/aliases/staging/history")
    assert history.json()["data"][0]["to_version"] == 1
    lineage = await api.get(f"/runs/{run['run_id']}")
    assert lineage.json()["lineage"]["model_versions"][0]["model_name"] == "digits"

    protected = await api.post("/models/digits/aliases/production", {"version": 1}, token=WRITER)
    assert protected.status_code == 403 and protected.json()["error"]["details"]["required"] == "admin"
    # champion is protected and (unlike production) has no gate in configs/registry.yaml
    assert (await api.post("/models/digits/aliases/champion", {"version": 1}, token=WRITER)).status_code == 403
    admin = await api.post("/models/digits/aliases/champion", {"version": 1, "reason": "ship it"}, token=ADMIN)
    assert admin.status_code == 200, admin.text
    assert admin.json()["changed"] is True and admin.json()["previous_version"] is None
    history = await api.get("/models/digits/aliases/champion/history", params={"min_seq": admin.json()["seq"]})
    assert [(h["to_version"], h["actor"], h["reason"]) for h in history.json()["data"]] == [
        (1, "token:env-3", "ship it")]
    same = await api.post("/models/digits/aliases/champion", {"version": 1}, token=ADMIN)
    assert same.status_code == 200 and same.json()["changed"] is False and same.json()["seq"] is None

    # The caller's belief about the alias is checked: a stale expectation is a 409 and appends nothing.
    last = await api.event_log.last_sequence()
    stale = await api.post("/models/digits/aliases/staging", {"version": 1, "expected_current": None})
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "PROMOTION_CONFLICT", stale.text
    assert stale.json()["error"]["details"]["actual"] == 1
    missing = await api.post("/models/digits/aliases/staging", {"version": 7})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "MODEL_VERSION_NOT_FOUND"
    assert (await api.post("/models/nomodel/aliases/staging", {"version": 1})).status_code == 404
    assert await api.event_log.last_sequence() == last


async def test_a_promotion_whose_gate_fails_is_a_422_naming_the_condition(tmp_path: Path, nats_url: str,
                                                                          event_log: EventLog) -> None:
    gates = tmp_path / "registry.yaml"
    gates.write_text("aliases:\n  production:\n    - {metric: val_acc, op: '>=', value: 0.9}\n")
    with database_url("sqlite", tmp_path) as url:
        async with running_api(api_settings(tmp_path, nats_url, url, registry_gates=gates), event_log) as api:
            run = await create_run(api)
            logged = await api.post(f"/runs/{run['run_id']}/log-batch",
                                    {"metrics": [{"key": "val_acc", "values": [0.5, 0.85], "steps": [0, 1]}]})
            assert logged.status_code == 200, logged.text
            await event_log.append(Envelope(event=ModelVersionRegistered(
                model_name="digits", version=1, run_id=run["run_id"], artifact_path="model.onnx",
                artifact_sha256="a" * 64), producer="test"))
            last = await event_log.last_sequence()
            failed = await api.post("/models/digits/aliases/production", {"version": 1}, token=ADMIN)
            assert failed.status_code == 422 and failed.json()["error"]["code"] == "PROMOTION_GATE_FAILED"
            assert "val_acc >= 0.9 failed" in failed.json()["error"]["message"] and "0.85" in failed.text
            assert await event_log.last_sequence() == last
            staging = await api.post("/models/digits/aliases/staging", {"version": 1}, token=WRITER)
            assert staging.status_code == 200 and staging.json()["changed"] is True, staging.text


async def test_jobs_list_filters_by_status_and_pages(api: Api) -> None:
    jobs = []
    for _ in range(3):
        submitted = await api.post("/jobs", {"config": digits_config()})
        assert submitted.status_code == 201, submitted.text
        jobs.append(submitted.json())
    cancelled = await api.post(f"/jobs/{jobs[0]['job_id']}/cancel", {"reason": "not needed"})
    seq = cancelled.json()["seq"]
    listed = await api.get("/jobs", params={"min_seq": seq})
    assert listed.status_code == 200, listed.text
    # most recently changed first: the cancelled job moved last
    assert [j["job_id"] for j in listed.json()["data"]] == [jobs[0]["job_id"], jobs[2]["job_id"], jobs[1]["job_id"]]
    assert listed.json()["data"][0]["status"] == "cancelled" and listed.json()["data"][0]["attempts"] == 0
    queued = (await api.get("/jobs", params={"status": "queued"})).json()
    assert {j["job_id"] for j in queued["data"]} == {jobs[1]["job_id"], jobs[2]["job_id"]}
    both = (await api.get("/jobs", params=[("status", "queued"), ("status", "cancelled")])).json()
    assert both["count"] == 3
    first = (await api.get("/jobs", params={"max_results": 2})).json()
    assert first["count"] == 2 and first["next_page_token"]
    second = (await api.get("/jobs", params={"max_results": 2, "page_token": first["next_page_token"]})).json()
    assert [j["job_id"] for j in second["data"]] == [jobs[1]["job_id"]] and second["next_page_token"] is None
    other = await api.get("/jobs", params={"status": "queued", "page_token": first["next_page_token"]})
    assert other.status_code == 400 and other.json()["error"]["code"] == "INVALID_PAGE_TOKEN"
    bad = await api.get("/jobs", params={"status": "sleeping"})
    assert bad.status_code == 400 and "sleeping" in bad.json()["error"]["message"]


async def test_a_read_waits_for_min_seq_then_gives_up_with_504(tmp_path: Path, nats_url: str,
                                                               event_log: EventLog) -> None:
    with database_url("sqlite", tmp_path) as url:
        settings = api_settings(tmp_path, nats_url, url)
        settings.api_min_seq_wait_s = 0.5
        async with running_api(settings, event_log, projectors=False) as api:
            run = await create_run(api)
            response = await api.get(f"/runs/{run['run_id']}", params={"min_seq": run["seq"]})
            assert response.status_code == 504, response.text
            assert response.json()["error"]["code"] == "PROJECTION_TIMEOUT"
            assert (await api.client.get("/readyz")).status_code == 200  # lag 5 is under the bound
            settings.api_ready_max_lag = 1
            lagging = await api.client.get("/readyz")
            assert lagging.status_code == 503 and lagging.json()["lag"]["sql"] == run["seq"]
