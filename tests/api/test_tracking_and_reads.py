"""Tracking endpoints and the reads that show what they wrote (read-your-own-writes through min_seq)."""

from __future__ import annotations

import json
import math
import os
import subprocess

from tests.api.conftest import ADMIN, READER, Api, create_run


async def test_health_and_readiness(api: Api) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    ready = await api.client.get("/api/v1/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    assert ready.json()["parts"] is None  # no `mlhub up` around this API


async def test_readiness_reports_the_parts_of_the_hub_and_is_degraded_while_one_restarts(api: Api) -> None:
    """The parts file `mlhub up` writes: every part running is ready; one restarting answers 503 "degraded";
    a file whose hub process is gone is ignored."""
    parts_file = api.settings.hub_parts_file
    parts_file.parent.mkdir(parents=True, exist_ok=True)

    def write(hub_pid: int, worker_state: str) -> None:
        parts_file.write_text(json.dumps({"hub_pid": hub_pid, "updated_at": "2026-01-01T00:00:00+00:00", "parts": [
            {"name": "projector-sql", "state": "running", "pid": 11, "restarts": 0, "last_exit_code": None},
            {"name": "worker-1", "state": worker_state, "pid": 12, "restarts": 2, "last_exit_code": -9}]}))

    write(os.getpid(), "running")
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert [(p["name"], p["state"], p["restarts"]) for p in ready.json()["parts"]] == [
        ("projector-sql", "running", 0), ("worker-1", "running", 2)]
    write(os.getpid(), "restarting")
    degraded = await api.client.get("/readyz")
    assert degraded.status_code == 503 and degraded.json()["status"] == "degraded"
    assert degraded.json()["parts"][1]["last_exit_code"] == -9
    gone = subprocess.Popen(["true"])
    gone.wait()
    write(gone.pid, "restarting")  # a stale file of a hub that was killed
    stale = await api.client.get("/readyz")
    assert stale.status_code == 200 and stale.json()["parts"] is None


async def test_a_script_run_round_trip(api: Api) -> None:
    run = await create_run(api, "vision", name="baseline", params={"lr": "0.01"}, tags={"team": "vision"})
    steps = list(range(100))
    batch = await api.post(f"/runs/{run['run_id']}/log-batch", {
        "params": {"batch_size": "32"}, "tags": {"stage": "dev"},
        "metrics": [{"key": "val/acc", "values": [s / 100 for s in steps], "steps": steps},
                    {"key": "loss", "values": [1.0, "NaN", "Infinity"], "steps": [0, 1, 2]}],
    })
    assert batch.status_code == 200, batch.text
    assert batch.json()["points"] == 103
    done = await api.post(f"/runs/{run['run_id']}/finish", {"status": "finished"})
    assert done.status_code == 200, done.text
    seq = done.json()["seq"]

    detail = await api.get(f"/runs/{run['run_id']}", params={"min_seq": seq})
    assert detail.status_code == 200, detail.text
    body = detail.json()
    assert body["run"]["status"] == "finished" and body["run"]["source"] == "sdk"
    assert body["run"]["name"] == "baseline" and body["lineage"]["experiment_id"] == "vision"
    assert body["params"] == {"lr": "0.01", "batch_size": "32"}
    assert body["tags"] == {"team": "vision", "stage": "dev"}
    metrics = {m["key"]: m for m in body["metrics"]}
    assert metrics["val/acc"]["count"] == 100 and metrics["val/acc"]["last_value"] == 0.99
    assert metrics["loss"]["max_value"] == "Infinity" and metrics["loss"]["nan_count"] == 1

    series = await api.get(f"/runs/{run['run_id']}/metrics/loss", params={"min_seq": batch.json()["seq"]})
    assert series.status_code == 200, series.text
    assert series.json()["values"] == [1.0, "NaN", "Infinity"] and series.json()["steps"] == [0, 1, 2]

    keys = await api.get(f"/runs/{run['run_id']}/metrics")
    assert [m["key"] for m in keys.json()["data"]] == ["loss", "val/acc"]

    events = await api.get(f"/runs/{run['run_id']}/events")
    types = [e["type"] for e in events.json()["data"]]
    assert types[0] == "run.created" and types[-1] == "run.finished" and "run.metrics_logged" in types
    seqs = [e["seq"] for e in events.json()["data"]]
    assert seqs == sorted(seqs)
    page = await api.get(f"/runs/{run['run_id']}/events", params={"limit": 2})
    assert page.json()["count"] == 2 and page.json()["next_from_seq"] == seqs[2]

    late = await api.post(f"/runs/{run['run_id']}/log-batch", {"tags": {"x": "y"}})
    assert late.status_code == 409 and late.json()["error"]["code"] == "INVALID_STATE"
    again = await api.post(f"/runs/{run['run_id']}/finish", {"status": "failed"})
    assert again.status_code == 409


async def test_tracking_refuses_bad_input_without_storing_anything(api: Api) -> None:
    run = await create_run(api)
    last = await api.event_log.last_sequence()
    cases = [
        ({"metrics": [{"key": "a", "values": [1.0, 2.0], "steps": [0]}]}, 422, "steps has 1 entries"),
        ({"metrics": [{"key": "bad key!", "values": [1.0], "steps": [0]}]}, 422, "key"),
        ({"metrics": [{"key": "a", "values": [1.0], "steps": [-1]}]}, 422, "steps"),
        ({"params": {"../x": "1"}}, 422, "param key"),
        ({}, 400, "empty"),
    ]
    for body, status, words in cases:
        response = await api.post(f"/runs/{run['run_id']}/log-batch", body)
        assert response.status_code == status, (body, response.text)
        error = response.json()["error"]
        assert set(error) == {"code", "message", "details"} and words in error["message"], error
    assert await api.event_log.last_sequence() == last
    missing = await api.post("/runs/nosuchrun/log-batch", {"tags": {"a": "b"}})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "RESOURCE_DOES_NOT_EXIST"
    bad_id = await api.post("/runs/no.such.run/log-batch", {"tags": {"a": "b"}})
    assert bad_id.status_code == 400


async def test_downsampling_keeps_the_extremes_and_the_ends(api: Api) -> None:
    run = await create_run(api)
    n = 20_000
    values = [math.sin(s / 500) for s in range(n)]
    values[12_345] = 50.0  # a spike
    values[7_777] = -40.0  # a dip
    batch = await api.post(f"/runs/{run['run_id']}/log-batch",
                           {"metrics": [{"key": "loss", "values": values, "steps": list(range(n))}]})
    assert batch.status_code == 200, batch.text
    response = await api.get(f"/runs/{run['run_id']}/metrics/loss",
                             params={"max_points": 200, "min_seq": batch.json()["seq"]})
    body = response.json()
    assert response.status_code == 200, response.text
    assert body["total_points"] == n and body["downsampled"] and 0 < body["returned_points"] <= 200
    assert body["steps"] == sorted(body["steps"])
    assert body["steps"][0] == 0 and body["steps"][-1] == n - 1
    assert 50.0 in body["values"] and -40.0 in body["values"]
    assert body["values"][body["steps"].index(12_345)] == 50.0
    full = await api.get(f"/runs/{run['run_id']}/metrics/loss", params={"max_points": 100_000})
    assert full.json()["returned_points"] == n and not full.json()["downsampled"]
    # a zoom: only the steps in [12_000, 12_999], at full resolution (1,000 points <= max_points)
    zoom = (await api.get(f"/runs/{run['run_id']}/metrics/loss",
                          params={"max_points": 1000, "min_step": 12_000, "max_step": 12_999})).json()
    assert zoom["total_points"] == 1000 and not zoom["downsampled"]
    assert zoom["steps"] == list(range(12_000, 13_000)) and zoom["values"][345] == 50.0
    wide = (await api.get(f"/runs/{run['run_id']}/metrics/loss",
                          params={"max_points": 100, "min_step": 5_000})).json()
    assert wide["total_points"] == n - 5_000 and wide["downsampled"] and wide["steps"][0] == 5_000
    assert 50.0 in wide["values"] and -40.0 in wide["values"]

    other = await create_run(api)
    await api.post(f"/runs/{other['run_id']}/log-batch",
                   {"metrics": [{"key": "loss", "values": [0.5, 0.25], "steps": [0, 1]}]})
    done = await api.post(f"/runs/{other['run_id']}/finish", {})
    compare = await api.get("/metrics/compare", params={
        "run_id": [run["run_id"], other["run_id"]], "key": "loss", "max_points": 100,
        "min_seq": done.json()["seq"]})
    assert compare.status_code == 200, compare.text
    series = compare.json()["series"]
    assert [s["run_id"] for s in series] == [run["run_id"], other["run_id"]]
    assert series[0]["returned_points"] <= 100 and series[1]["values"] == [0.5, 0.25]


async def test_auth_roles_and_open_reads(api: Api) -> None:
    anonymous = await api.get("/runs", token=None)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "UNAUTHENTICATED"
    assert anonymous.headers["www-authenticate"] == "Bearer"
    unknown = await api.get("/runs", token="not-a-configured-token")
    assert unknown.status_code == 401
    reader_write = await api.post("/runs", {"experiment": "x"}, token=READER)
    assert reader_write.status_code == 403 and reader_write.json()["error"]["details"]["required"] == "writer"
    assert (await api.get("/runs", token=ADMIN)).status_code == 200
    api.client._transport.app.state.mlhub.settings.api_open_reads = True  # type: ignore[attr-defined]
    assert (await api.get("/runs", token=None)).status_code == 200
    assert (await api.post("/runs", {"experiment": "x"}, token=None)).status_code == 401


async def test_min_seq_beyond_the_log_is_refused_at_once(api: Api) -> None:
    last = await api.event_log.last_sequence()
    response = await api.get("/runs", params={"min_seq": last + 1000})
    assert response.status_code == 400 and "min_seq" in response.json()["error"]["message"]


async def test_cached_answers_never_hide_a_write_read_with_min_seq(api: Api) -> None:
    run = await create_run(api, "cache", params={"lr": "0.1"})
    first = await api.post(f"/runs/{run['run_id']}/log-batch",
                           {"metrics": [{"key": "loss", "values": [1.0], "steps": [0]}]})
    path = f"/runs/{run['run_id']}/metrics/loss"
    before = await api.get(path, params={"min_seq": first.json()["seq"]})
    assert before.json()["values"] == [1.0]
    listed = await api.get("/runs", params={"experiment_id": "cache", "min_seq": first.json()["seq"]})
    assert listed.json()["data"][0]["metrics"] == {"loss": 1.0}
    second = await api.post(f"/runs/{run['run_id']}/log-batch",
                            {"metrics": [{"key": "loss", "values": [0.5], "steps": [1]}]})
    after = await api.get(path, params={"min_seq": second.json()["seq"]})
    assert after.json()["values"] == [1.0, 0.5]
    relisted = await api.get("/runs", params={"experiment_id": "cache", "min_seq": second.json()["seq"]})
    assert relisted.json()["data"][0]["metrics"] == {"loss": 0.5}
