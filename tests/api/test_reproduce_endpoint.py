"""POST /runs/{id}/reproduce: a run's recorded snapshot resubmitted unchanged, as `mlhub reproduce` does."""

from __future__ import annotations

from tests.api.conftest import READER, Api, create_run
from tests.api.test_jobs_query_artifacts_models import digits_config


async def test_reproduce_resubmits_the_snapshot_unchanged(api: Api) -> None:
    submitted = await api.post("/jobs", {"config": digits_config(), "overrides": ["trainer.max_epochs=2"]})
    assert submitted.status_code == 201, submitted.text
    original = submitted.json()

    answer = await api.post(f"/runs/{original['run_id']}/reproduce", {})
    assert answer.status_code == 201, answer.text
    again = answer.json()
    assert again["reproduces_run_id"] == original["run_id"]
    assert again["run_id"] != original["run_id"] and again["job_id"] != original["job_id"]
    assert (again["seed"], again["config_sha256"]) == (original["seed"], original["config_sha256"])
    assert again["seq"] == again["seqs"][-1] > original["seq"]

    job = (await api.get(f"/jobs/{again['job_id']}", params={"min_seq": again["seq"]})).json()
    assert job["status"] == "queued" and job["config"]["trainer"]["max_epochs"] == 2
    run = (await api.get(f"/runs/{again['run_id']}", params={"min_seq": again["seq"]})).json()
    assert run["lineage"]["reproduces_run_id"] == original["run_id"]
    first = (await api.get(f"/runs/{original['run_id']}", params={"min_seq": again["seq"]})).json()
    assert first["lineage"]["reproduced_by"] == [again["run_id"]]


async def test_reproduce_refuses_what_it_cannot_do(api: Api) -> None:
    last = await api.event_log.last_sequence()
    unknown = await api.post("/runs/nosuchrun/reproduce", {})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "RESOURCE_DOES_NOT_EXIST"
    assert "nosuchrun" in unknown.json()["error"]["message"]
    tracked = await create_run(api)  # a script's run: it has no config snapshot to resubmit
    after_create = await api.event_log.last_sequence()
    refused = await api.post(f"/runs/{tracked['run_id']}/reproduce", {})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "INVALID_STATE"
    assert "no config snapshot" in refused.json()["error"]["message"]
    reader = await api.post(f"/runs/{tracked['run_id']}/reproduce", {}, token=READER)
    assert reader.status_code == 403
    assert (await api.post(f"/runs/{tracked['run_id']}/reproduce", {}, token=None)).status_code == 401
    assert await api.event_log.last_sequence() == after_create > last  # nothing appended by the refusals
