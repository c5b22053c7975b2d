"""Tracking you can trust, through the REST API: each request that used to store half of itself stores nothing
and answers 4xx; a key reused with another body is a 409; a param keeps its first value; nothing lands on a
run that ended; keys people use are accepted; afterwards `audit verify` passes and nothing is dead-lettered."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy as sa
from tests.api.conftest import WRITER, Api, auth, create_run

from mlhub.projections.audit import verify
from mlhub.readmodel import create_engine
from mlhub.readmodel import tables as t


async def _nothing_appended(api: Api, before: int) -> None:
    assert await api.event_log.last_sequence() == before, "a refused request appended events"


async def _audit_clean(api: Api) -> None:
    """Projections caught up, no dead letter, and a rebuild equals the live read model."""
    last = await api.event_log.last_sequence()
    assert (await api.get("/runs", params={"min_seq": last})).status_code == 200
    engine = create_engine(api.settings.resolved_database_url)
    try:
        with engine.connect() as conn:
            dead = conn.execute(sa.select(t.dead_letters.c.seq, t.dead_letters.c.error)).all()
        assert dead == [], dead
        report = await verify(api.event_log, engine, api.settings.metrics_dir, check_seals=False)
    finally:
        engine.dispose()
    assert report.differences == [], report.differences


async def test_half_stored_requests_now_store_nothing(api: Api) -> None:
    before = await api.event_log.last_sequence()
    # POST /runs with a param over the value limit: refused whole (no orphan run.created).
    too_long = {f"p{i}": "x" * 6001 if i == 199 else "x" * 10 for i in range(200)}
    response = await api.post("/runs", {"experiment": "big", "params": too_long})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"]["keys"] == ["p199"] and "6000 at most" in response.text
    await _nothing_appended(api, before)
    # 200 params of 6,000 characters (1.2 MB, more than one event holds) are stored whole, in one atomic batch.
    big = {f"p{i}": "y" * 6000 for i in range(200)}
    created = await api.post("/runs", {"experiment": "big", "params": big})
    assert created.status_code == 201, created.text
    run_id = created.json()["run_id"]
    seqs = created.json()["seqs"]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "one atomic batch is stored contiguously"
    detail = (await api.get(f"/runs/{run_id}", params={"min_seq": created.json()["seq"]})).json()
    assert detail["params"] == big

    # A log-batch with params and too many keys: refused before its params are stored.
    before = await api.event_log.last_sequence()
    many = {"params": {"new": "1"}, "metrics": [{"key": f"m{i}", "values": [1.0]} for i in range(1001)]}
    response = await api.post(f"/runs/{run_id}/log-batch", many)
    assert response.status_code == 422 and response.json()["error"]["code"] == "LIMIT_EXCEEDED", response.text
    assert response.json()["error"]["details"]["limit"] == "MLHUB_API_MAX_KEYS_PER_REQUEST"
    await _nothing_appended(api, before)

    # POST /jobs with huge tags: refused whole (no experiment or run without its job).
    config = {"experiment": "tagged", "plugin": "digits-mlp", "seed": 1,
              "tags": {f"t{i}": "z" * 4000 for i in range(100)}}
    response = await api.post("/jobs", {"config": config})
    assert response.status_code == 413 and response.json()["error"]["code"] == "REQUEST_TOO_LARGE", response.text
    assert response.json()["error"]["details"]["limit"] == "MLHUB_API_MAX_CONFIG_BYTES"
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(500):
        node["x"] = {}
        node = node["x"]
    response = await api.post("/jobs", {"config": {"experiment": "deep", "plugin": "digits-mlp", "model": deep}})
    assert response.status_code == 413 and "MLHUB_API_MAX_CONFIG_DEPTH" in response.text
    await _nothing_appended(api, before)

    # A point with timestamp 2**63-1: refused, and every user's `select * from metrics` keeps working.
    stamp = {"metrics": [{"key": "ok", "values": [1.0], "timestamps": [2**63 - 1]}]}
    response = await api.post(f"/runs/{run_id}/log-batch", stamp)
    assert response.status_code == 422 and response.json()["error"]["details"]["keys"] == ["ok"], response.text
    await _nothing_appended(api, before)
    good = await api.post(f"/runs/{run_id}/log-batch", {"metrics": [{"key": "ok", "values": [1.0]}]})
    rows = await api.client.post("/api/v1/query", json={"sql": "select * from metrics"}, headers=auth(WRITER),
                                 params={"min_seq": good.json()["seq"]})
    assert rows.status_code == 200 and rows.json()["row_count"] == 1, rows.text
    await _audit_clean(api)


async def test_reused_keys_with_another_body_are_refused(api: Api) -> None:
    request_id = str(uuid.uuid4())
    first = await api.post("/runs", {"experiment": "keys", "params": {"lr": "0.1"}, "request_id": request_id})
    assert first.status_code == 201
    before = await api.event_log.last_sequence()
    again = await api.post("/runs", {"experiment": "keys", "params": {"lr": "0.1"}, "request_id": request_id})
    assert again.status_code == 201 and again.json()["duplicate"] and again.json()["seqs"] == first.json()["seqs"]
    other = await api.post("/runs", {"experiment": "keys", "params": {"lr": "0.2"}, "request_id": request_id})
    assert other.status_code == 409 and other.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED", other.text
    await _nothing_appended(api, before)

    run_id = first.json()["run_id"]
    batch_id = str(uuid.uuid4())
    body = {"batch_id": batch_id, "metrics": [{"key": "loss", "values": [0.5, 0.4], "steps": [0, 1]}]}
    sent = await api.post(f"/runs/{run_id}/log-batch", body)
    assert sent.status_code == 200 and not sent.json()["duplicate"]
    before = await api.event_log.last_sequence()
    resent = await api.post(f"/runs/{run_id}/log-batch", body)
    assert resent.status_code == 200 and resent.json()["duplicate"] and resent.json()["seqs"] == sent.json()["seqs"]
    changed = {"batch_id": batch_id, "metrics": [{"key": "loss", "values": [0.5, 0.3], "steps": [0, 1]}]}
    reused = await api.post(f"/runs/{run_id}/log-batch", changed)
    assert reused.status_code == 409 and reused.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED", reused.text
    await _nothing_appended(api, before)

    # A param keeps its first value: another is a 409 (nothing appended), the same one is a no-op.
    conflict = await api.post(f"/runs/{run_id}/log-batch", {"params": {"lr": "0.5"}, "tags": {"t": "1"}})
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "PARAM_VALUE_CHANGED"
    assert conflict.json()["error"]["details"]["keys"] == ["lr"]
    same = await api.post(f"/runs/{run_id}/log-batch", {"params": {"lr": "0.1"}})
    assert same.status_code == 200 and same.json()["duplicate"]
    await _nothing_appended(api, before)

    # An upload id reused for another file.
    url = f"/api/v1/runs/{run_id}/artifacts"
    headers = {**auth(WRITER), "Content-Type": "application/octet-stream"}
    upload_id = str(uuid.uuid4())
    for data, status in ((b"one", 201), (b"one", 201), (b"two", 409)):
        params = {"path": "f.txt", "sha256": hashlib.sha256(data).hexdigest(), "upload_id": upload_id}
        response = await api.client.post(url, params=params, content=data, headers=headers)
        assert response.status_code == status, response.text
    await _audit_clean(api)


async def test_keys_people_use_are_accepted_and_bad_ones_are_named(api: Api) -> None:
    run = await create_run(api)
    keys = ["val/acc@top1", "é", "损失", "loss (ema)", "train/loss", "f1[macro]"]
    body = {"metrics": [{"key": k, "values": [float(i)], "steps": [1]} for i, k in enumerate(keys)],
            "params": {"optimizer/lr": "0.1", "层": "3"}, "tags": {"team (core)": "vision"}}
    response = await api.post(f"/runs/{run['run_id']}/log-batch", body)
    assert response.status_code == 200, response.text
    detail = (await api.get(f"/runs/{run['run_id']}", params={"min_seq": response.json()["seq"]})).json()
    assert {m["key"] for m in detail["metrics"]} == set(keys)
    series = await api.get(f"/runs/{run['run_id']}/metrics/val/acc@top1", params={"min_seq": response.json()["seq"]})
    assert series.status_code == 200 and series.json()["values"] == [0.0], series.text

    before = await api.event_log.last_sequence()
    for values, words in (([True], "valid number"), (["0.5"], "valid number"), (["nan"], "valid number")):
        bad = await api.post(f"/runs/{run['run_id']}/log-batch",
                             {"metrics": [{"key": "good", "values": [1.0]}, {"key": "bad", "values": values}]})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "INVALID_METRIC", bad.text
        assert bad.json()["error"]["details"]["keys"] == ["bad"] and words in bad.text
    for key in ("a\nb", "", "../up", "x" * 251):
        bad = await api.post(f"/runs/{run['run_id']}/log-batch", {"metrics": [{"key": key, "values": [1.0]}]})
        assert bad.status_code == 422 and bad.json()["error"]["details"]["keys"] == [key], bad.text
    await _nothing_appended(api, before)


async def _slow_body(data: bytes, halfway: asyncio.Event, go_on: asyncio.Event) -> AsyncIterator[bytes]:
    yield data[: len(data) // 2]
    halfway.set()
    await go_on.wait()
    yield data[len(data) // 2:]


async def test_an_upload_that_finishes_after_the_run_ended_is_refused(api: Api) -> None:
    run = await create_run(api)
    data = b"checkpoint bytes " * 10_000
    halfway, go_on = asyncio.Event(), asyncio.Event()
    upload = asyncio.create_task(api.client.post(
        f"/api/v1/runs/{run['run_id']}/artifacts", content=_slow_body(data, halfway, go_on),
        params={"path": "late.ckpt", "sha256": hashlib.sha256(data).hexdigest(), "kind": "checkpoint"},
        headers={**auth(WRITER), "Content-Type": "application/octet-stream"}))
    await asyncio.wait_for(halfway.wait(), 10)
    finished = await api.post(f"/runs/{run['run_id']}/finish", {"status": "finished"})
    assert finished.status_code == 200, finished.text
    go_on.set()
    response = await upload
    assert response.status_code == 409 and response.json()["error"]["details"]["state"] == "finished", response.text
    events = (await api.event_log.read_aggregate("run", run["run_id"])).events
    assert [r.envelope.type for r in events][-1] == "run.finished"
    assert "run.artifact_stored" not in [r.envelope.type for r in events]


async def test_heartbeat_end_by_hand_and_resume(api: Api) -> None:
    run = await create_run(api)
    beat = await api.post(f"/runs/{run['run_id']}/heartbeat", {})
    assert beat.status_code == 200, beat.text
    resume_running = await api.post(f"/runs/{run['run_id']}/resume", {})
    assert resume_running.status_code == 409 and "only a crashed run" in resume_running.text
    ended = await api.post(f"/runs/{run['run_id']}/end", {"status": "killed", "reason": "stuck since Friday"})
    assert ended.status_code == 200, ended.text
    detail = (await api.get(f"/runs/{run['run_id']}", params={"min_seq": ended.json()["seq"]})).json()
    assert detail["run"]["status"] == "killed"
    for path, body in (("heartbeat", {}), ("log-batch", {"tags": {"a": "b"}}), ("end", {"status": "failed"})):
        late = await api.post(f"/runs/{run['run_id']}/{path}", body)
        assert late.status_code == 409 and late.json()["error"]["details"]["state"] == "killed", late.text
    events = (await api.event_log.read_aggregate("run", run["run_id"])).events
    cancelled = events[-1].envelope.event
    assert cancelled.ended_by == "token:env-2" and cancelled.reason == "stuck since Friday"  # type: ignore[attr-defined]
