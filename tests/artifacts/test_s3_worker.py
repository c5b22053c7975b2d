"""A worker configured with an S3 artifact store (MLHUB_ARTIFACT_URI=s3://...) trains a job and its artifact
events carry the s3:// URI, sha256 and size of objects that read back intact."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from tests.worker.helpers import events_of, submit_digits, wait_for

from mlhub.artifacts import S3ArtifactStore, resolve_object_uri, store_from_settings
from mlhub.eventlog import EventLog
from mlhub.events import ArtifactStored
from mlhub.settings import Settings
from mlhub.worker import Worker, WorkerConfig


@pytest.mark.timeout(180)
async def test_a_worker_stores_its_artifacts_in_the_configured_s3_store(
    event_log: EventLog, tmp_path: Path, bucket: str, moto_url: str, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLHUB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MLHUB_ARTIFACT_URI", f"s3://{bucket}/runs")
    monkeypatch.setenv("MLHUB_S3_ENDPOINT_URL", moto_url)
    settings = Settings(_env_file=None)
    # What `mlhub worker` does with its settings.
    worker = Worker.local(event_log, settings.data_dir, WorkerConfig(ack_wait_s=5.0),
                          store=store_from_settings(settings))
    assert isinstance(worker.store, S3ArtifactStore)

    job = await submit_digits(event_log)
    stop = asyncio.Event()
    await worker.ensure_consumer()
    task = asyncio.create_task(worker.run(stop, fetch_timeout_s=0.3))
    try:
        await wait_for(event_log, [job.job_id], timeout_s=120)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)

    artifacts = [e for e in await events_of(event_log, "run", job.run_id) if isinstance(e, ArtifactStored)]
    assert {a.kind for a in artifacts} == {"checkpoint", "onnx"}
    for artifact in artifacts:
        assert artifact.uri == f"s3://{bucket}/runs/objects/{artifact.sha256[:2]}/{artifact.sha256[2:]}"
        store, sha256 = resolve_object_uri(artifact.uri, s3_endpoint_url=moto_url)
        assert sha256 == artifact.sha256
        assert store.verify(sha256).size_bytes == artifact.size_bytes > 0
        head = s3.head_object(Bucket=bucket, Key=artifact.uri.split("/", 3)[3])
        assert head["ContentLength"] == artifact.size_bytes
    assert not (tmp_path / "data" / "artifacts").exists()  # nothing went to the local default
