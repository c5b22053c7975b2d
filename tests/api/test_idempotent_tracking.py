"""What the SDK's exactly-once rests on: a log batch resent with its batch_id, and an artifact upload resent
with its upload_id, are stored once; an upload whose bytes do not match its sha256 is refused, nothing kept."""

from __future__ import annotations

import hashlib
import uuid

from tests.api.conftest import WRITER, Api, auth, create_run

from mlhub.events import POINTS_PER_EVENT, MetricsLogged


async def _metric_events(api: Api, run_id: str) -> list[MetricsLogged]:
    events = (await api.event_log.read_aggregate("run", run_id)).events
    return [r.envelope.event for r in events if isinstance(r.envelope.event, MetricsLogged)]


async def test_a_batch_resent_with_its_batch_id_is_stored_once(api: Api) -> None:
    run = await create_run(api)
    batch_id = uuid.uuid4()
    n = POINTS_PER_EVENT * 2 + 10  # three metric events, plus params and tags: five events for the batch
    body = {"batch_id": str(batch_id), "params": {"a": "1"}, "tags": {"t": "x"},
            "metrics": [{"key": "loss", "values": [float(i) for i in range(n)], "steps": list(range(n))}]}
    first = await api.post(f"/runs/{run['run_id']}/log-batch", body)
    assert first.status_code == 200, first.text
    again = await api.post(f"/runs/{run['run_id']}/log-batch", body)
    assert again.status_code == 200, again.text
    assert again.json()["seqs"] == first.json()["seqs"], "the resend names the sequences stored the first time"
    events = (await api.event_log.read_aggregate("run", run["run_id"])).events
    ids = {r.envelope.event_id for r in events}
    expected = [uuid.uuid5(batch_id, name) for name in ("log-batch/params/0", "log-batch/tags/0", "log-batch/0",
                                                         "log-batch/1", "log-batch/2")]
    assert set(expected) <= ids
    metric_events = await _metric_events(api, run["run_id"])
    assert sum(e.num_points for e in metric_events) == n

    # Without a batch_id (the old behaviour) a resend is a new batch.
    plain = {"metrics": [{"key": "acc", "values": [0.5], "steps": [0]}]}
    for _ in range(2):
        assert (await api.post(f"/runs/{run['run_id']}/log-batch", plain)).status_code == 200
    metric_events = await _metric_events(api, run["run_id"])
    assert sum(e.num_points for e in metric_events if e.series[0].key == "acc") == 2

    bad = await api.post(f"/runs/{run['run_id']}/log-batch", {**plain, "batch_id": "not-a-uuid"})
    assert bad.status_code == 422 and "batch_id" in bad.text


async def test_an_artifact_upload_is_checked_and_recorded_once(api: Api) -> None:
    run = await create_run(api)
    data = b"weights " * 50_000
    sha = hashlib.sha256(data).hexdigest()
    url = f"/api/v1/runs/{run['run_id']}/artifacts"
    headers = {**auth(WRITER), "Content-Type": "application/octet-stream"}
    upload_id = str(uuid.uuid4())
    params = {"path": "models/w.bin", "sha256": sha, "kind": "model", "upload_id": upload_id}
    first = await api.client.post(url, params=params, content=data, headers=headers)
    assert first.status_code == 201, first.text
    again = await api.client.post(url, params=params, content=data, headers=headers)
    assert again.status_code == 201 and again.json()["duplicate"] and not first.json()["duplicate"]
    assert again.json()["seq"] == first.json()["seq"]

    wrong = await api.client.post(url, params={**params, "path": "other.bin", "upload_id": str(uuid.uuid4())},
                                  content=data + b"!", headers=headers)
    assert wrong.status_code == 422, wrong.text
    error = wrong.json()["error"]
    assert error["code"] == "ARTIFACT_CHECKSUM_MISMATCH" and error["details"]["expected"] == sha
    escape = await api.client.post(url, params={**params, "path": "../etc/passwd"}, content=data, headers=headers)
    assert escape.status_code == 422 and "path" in escape.text
    missing = await api.client.post(f"/api/v1/runs/{'f' * 32}/artifacts", params=params, content=data,
                                    headers=headers)
    assert missing.status_code == 404

    listed = await api.get(f"/runs/{run['run_id']}/artifacts", params={"min_seq": first.json()["seq"]})
    assert [(a["path"], a["sha256"], a["kind"]) for a in listed.json()["data"]] == [("models/w.bin", sha, "model")]
    events = (await api.event_log.read_aggregate("run", run["run_id"])).events
    assert [r.envelope.type for r in events].count("run.artifact_stored") == 1
    download = await api.get(f"/runs/{run['run_id']}/artifacts/models/w.bin")
    assert download.content == data
    assert not list((api.settings.data_dir / "uploads").iterdir()), "no temporary upload is left behind"


async def test_a_create_run_retried_with_its_request_id_names_the_same_run_and_appends_nothing(api: Api) -> None:
    request_id = str(uuid.uuid4())
    body = {"experiment": "retried", "params": {"lr": "0.1"}, "tags": {"t": "x"}, "request_id": request_id}
    first = await api.post("/runs", body)
    assert first.status_code == 201, first.text
    last = await api.event_log.last_sequence()
    again = await api.post("/runs", body)
    assert again.status_code == 201, again.text
    assert again.json()["run_id"] == first.json()["run_id"] == uuid.uuid5(uuid.UUID(request_id), "run").hex
    assert await api.event_log.last_sequence() == last, "the retry appended nothing"
    events = (await api.event_log.read_aggregate("run", first.json()["run_id"])).events
    assert [r.envelope.type for r in events] == ["run.created", "run.params_logged", "run.tags_set", "run.started"]
    # Without a request_id every call is a new run (the old behaviour).
    plain = [(await api.post("/runs", {"experiment": "retried"})).json()["run_id"] for _ in range(2)]
    assert plain[0] != plain[1]
