"""`mlhub import mlflow`: a store made with the mlflow library (SQLite backend: 3 experiments, 50 runs, 100,000
metric points, artifacts, datasets, 2 registered models with aliases) is imported into a running hub; every
count and value matches, a second import adds nothing, and an import SIGKILLed halfway and started again
ends with exactly the events of an uninterrupted one."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.hub.helpers import ROOT, hub_env
from tests.mlflow.conftest import MLHUB, READER, Server, tracking

from mlhub.eventlog import EmbeddedNats, EventLog

EXPERIMENTS = 3
RUNS = 50
STEPS = 1000  # x 2 keys x 50 runs = 100,000 points


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The MLflow store, made with the mlflow library, and what was put in it."""
    from mlflow import MlflowClient
    from mlflow.entities import Dataset, DatasetInput, InputTag, Metric

    folder = tmp_path_factory.mktemp("mlflow-store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    runs = []
    for e in range(EXPERIMENTS):
        experiment = client.create_experiment(f"imported-{e}", artifact_location=str(folder / f"artifacts-{e}"),
                                              tags={"project": f"p{e}"})
        for r in range(RUNS // EXPERIMENTS + (1 if e < RUNS % EXPERIMENTS else 0)):
            run = client.create_run(experiment, run_name=f"e{e}-r{r}", tags={"fold": str(r)},
                                    start_time=1_700_000_000_000 + 1000 * len(runs))
            run_id = run.info.run_id
            client.log_batch(run_id, params=[], tags=[])
            for start in range(0, STEPS, 500):
                client.log_batch(run_id, metrics=[
                    Metric(key, 1.0 / (step + 1) + (0.5 if key == "acc" else 0), 1_700_000_000_000 + step, step)
                    for step in range(start, start + 500) for key in ("loss", "acc")])
            client.log_param(run_id, "lr", str(0.001 * (r + 1)))
            client.log_text(run_id, f"notes of {run_id}", "notes/readme.txt")
            if r == 0:
                client.log_inputs(run_id, [DatasetInput(
                    Dataset(name="train-set", digest="abc123", source_type="local", source='{"uri": "/data"}',
                            profile='{"num_rows": 100}'), tags=[InputTag("mlflow.data.context", "train")])])
                client.log_text(run_id, "flavors: {}", "model/MLmodel")
                client.log_text(run_id, "weights", "model/weights.bin")
            status = ("FINISHED", "FAILED", "KILLED")[len(runs) % 3]
            client.set_terminated(run_id, status, end_time=1_700_000_500_000 + 1000 * len(runs))
            runs.append(run_id)
    client.delete_run(runs[-1])
    models = {}
    for name, sources in (("alpha", runs[:2]), ("beta", runs[17:18])):
        client.create_registered_model(name, tags={"owner": "ana"}, description=f"model {name}")
        for run_id in sources:
            run = client.get_run(run_id)
            client.log_text(run_id, "flavors: {}", "model/MLmodel")
            client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run_id)
        models[name] = sources
    client.set_registered_model_alias("alpha", "champion", "2")
    client.set_registered_model_alias("alpha", "stable", "1")
    client.set_registered_model_alias("beta", "candidate", "1")
    return {"uri": uri, "runs": runs, "models": models}


def _import(source: str, data_dir: Path, nats_url: str | None = None) -> subprocess.Popen[str]:
    env = hub_env(data_dir, **({"MLHUB_NATS_URL": nats_url} if nats_url else {}))
    return subprocess.Popen([*MLHUB, "import", "mlflow", source], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return out


def _last_seq(hub: Server) -> int:
    return int(httpx.get(f"{hub.url}/readyz", timeout=30).json()["last_seq"])


async def _imported_events(url: str, producer: str) -> dict[str, tuple[str, str, str]]:
    """event id -> (subject, time, payload) of every event the import appended (each id must be there once)."""
    from mlhub.events import decode

    found: dict[str, tuple[str, str, str]] = {}
    async with EventLog(url) as log:
        last = await log.last_sequence()
        stream: AsyncIterator[Any] = log.replay_raw(1, until_seq=last)
        async for stored in stream:
            envelope = decode(stored.data)
            if envelope.producer == producer:
                key = str(envelope.event_id)
                assert key not in found, f"event {key} is stored twice"
                # (an artifact's store URI names the hub's data dir: the content is its sha256)
                payload = envelope.event.model_dump(mode="json", round_trip=True, exclude={"uri"})
                found[key] = (stored.subject, envelope.occurred_at.isoformat(), json.dumps(payload, sort_keys=True))
    return found


def test_import_matches_the_store_and_a_second_import_adds_nothing(hub: Server, store: dict[str, Any]) -> None:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    assert hub.data_dir is not None
    out = _finish(_import(store["uri"], hub.data_dir))
    assert f"runs {RUNS}" in out and "metric_points 100000" in out, out
    source = MlflowClient(tracking_uri=store["uri"], registry_uri=store["uri"])
    with tracking(hub):
        mine = MlflowClient()
        points = 0
        for exp in source.search_experiments():
            if exp.name == "Default":
                continue
            there = mine.get_experiment_by_name(exp.name)
            assert there is not None and there.tags == exp.tags
            theirs = {r.info.run_id: r for r in source.search_runs([exp.experiment_id], run_view_type=ViewType.ALL)}
            ours = {r.info.run_id: r for r in mine.search_runs([there.experiment_id], run_view_type=ViewType.ALL,
                                                               max_results=1000)}
            assert ours.keys() == theirs.keys()
            for run_id, theirs_run in theirs.items():
                ours_run = ours[run_id]
                for field in ("status", "start_time", "end_time", "run_name", "lifecycle_stage"):
                    assert getattr(ours_run.info, field) == getattr(theirs_run.info, field), (run_id, field)
                assert ours_run.data.params == theirs_run.data.params
                assert ours_run.data.metrics == theirs_run.data.metrics
                assert {k: v for k, v in ours_run.data.tags.items() if not k.startswith("mlhub.import.")} == \
                    theirs_run.data.tags
                assert ours_run.data.tags["mlhub.import.run_id"] == run_id
                for key in theirs_run.data.metrics:
                    a = sorted((m.step, m.timestamp, m.value) for m in mine.get_metric_history(run_id, key))
                    b = sorted((m.step, m.timestamp, m.value) for m in source.get_metric_history(run_id, key))
                    assert a == b, (run_id, key)
                    points += len(a)
                theirs_files = sorted((f.path, f.file_size) for f in source.list_artifacts(run_id, "notes"))
                assert sorted((f.path, f.file_size) for f in mine.list_artifacts(run_id, "notes")) == theirs_files
                assert [d.dataset.digest for d in ours_run.inputs.dataset_inputs] == \
                    [d.dataset.digest for d in theirs_run.inputs.dataset_inputs]
        assert points == 100_000
        first = store["runs"][0]
        assert mlflow.artifacts.load_text(f"runs:/{first}/notes/readme.txt") == f"notes of {first}"
        for name, sources in store["models"].items():
            model, original = mine.get_registered_model(name), source.get_registered_model(name)
            # (the SQLite store answers int versions, any REST server strings)
            assert model.aliases == {a: str(v) for a, v in original.aliases.items()} and model.tags == original.tags
            assert model.description == original.description
            versions = sorted((v.version, v.run_id) for v in mine.search_model_versions(f"name = '{name}'"))
            assert versions == [(str(i + 1), run_id) for i, run_id in enumerate(sources)]
        loaded = mlflow.artifacts.load_text(f"{mine.get_model_version_download_uri('alpha', '2')}/MLmodel")
        assert loaded == "flavors: {}"
    # Again: nothing new.
    before = _last_seq(hub)
    again = _finish(_import(store["uri"], hub.data_dir))
    assert "events 0" in again and f"runs_skipped {RUNS}" in again, again
    assert _last_seq(hub) == before
    native = httpx.get(f"{hub.url}/api/v1/runs/{store['runs'][0]}/events", params={"limit": 1},
                       headers={"Authorization": f"Bearer {READER}"}, timeout=30).json()
    assert native["data"][0]["producer"].startswith("mlflow-import:sqlite:///")


def test_an_import_killed_halfway_resumes_to_the_same_events(hub: Server, store: dict[str, Any],
                                                            tmp_path: Path) -> None:
    from mlhub.commands.import_mlflow import normalize_source

    assert hub.hub is not None and hub.data_dir is not None
    server = EmbeddedNats(tmp_path / "nats", sync="always")
    url = server.start()
    try:
        proc = _import(store["uri"], tmp_path / "fresh", url)
        deadline = time.monotonic() + 300

        async def stored() -> int:
            async with EventLog(url) as log:
                return await log.last_sequence()

        while asyncio.run(stored()) < 150 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, "the import ended before it could be killed: make the store larger"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        halfway = asyncio.run(stored())
        out = _finish(_import(store["uri"], tmp_path / "fresh", url))
        assert "runs_skipped" in out
        producer = f"mlflow-import:{normalize_source(store['uri'])}"
        resumed = asyncio.run(_imported_events(url, producer))
        hub_url = re.search(r"event log: nats://(\S+)", hub.hub.output)
        assert hub_url is not None
        # The printed URL carries no credentials (it alone opens nothing): read as the hub's admin.
        admin = (hub.data_dir / "nats" / "credentials" / "admin").read_text().strip()
        reference = asyncio.run(_imported_events(f"nats://{admin}@{hub_url.group(1)}", producer))
        assert 150 <= halfway < len(reference)
        assert resumed == reference
    finally:
        server.stop()
