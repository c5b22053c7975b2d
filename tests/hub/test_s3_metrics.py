"""`mlhub up` with its metric tables on S3-compatible storage (MLHUB_METRICS_URI=s3://bucket/prefix; moto's
server as the store): an SDK script's points are stored there exactly once and nowhere on the hub's disk, the
API reads them back, and `mlhub query --direct` from another data dir (as on another host, with only the
read model's URL and the bucket) sees the same rows."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from tests.artifacts.conftest import AWS_LEAKS, FAKE_AWS, start_moto
from tests.hub.helpers import MLHUB, ROOT, RunningHub, hub_env, serving_hub

from mlhub.client import Hub

POINTS = 30_000


@pytest.fixture(scope="module")
def s3_env() -> Iterator[dict[str, str]]:
    proc, url = start_moto()
    try:
        bucket = f"mlhub-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=url, aws_access_key_id="x", aws_secret_access_key="y",
                     region_name="us-east-1").create_bucket(Bucket=bucket)
        yield {**FAKE_AWS, "MLHUB_METRICS_URI": f"s3://{bucket}/team/metrics", "MLHUB_S3_ENDPOINT_URL": url}
    finally:
        proc.terminate()
        proc.wait()


@pytest.fixture(scope="module")
def hub(s3_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory,
        monkeypatch_module: pytest.MonkeyPatch) -> Iterator[RunningHub]:
    for name in AWS_LEAKS:
        monkeypatch_module.delenv(name, raising=False)
    with serving_hub(tmp_path_factory.mktemp("s3-metrics") / "hub", workers=0, **s3_env) as running:
        yield running


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_points_of_a_script_land_on_s3_once_and_every_reader_sees_them(
        hub: RunningHub, s3_env: dict[str, str], tmp_path: Path) -> None:
    token = (hub.data_dir / "api-token").read_text().strip()
    # system/ samples off: the counts below are the script's points exactly (a loaded run outlives 15 s)
    client = Hub(hub.url, token, spool_dir=tmp_path / "spool", system_metrics_s=0)
    run = client.start_run("s3-metrics")
    for step in range(POINTS):
        run.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    assert run.finish(timeout_s=120)
    client.close()
    assert run.points_delivered == POINTS

    headers = {"Authorization": f"Bearer {token}"}
    ready = httpx.get(f"{hub.url}/readyz", timeout=10).json()
    series = httpx.get(f"{hub.url}/api/v1/runs/{run.run_id}/metrics/loss", headers=headers, timeout=60,
                       params={"min_seq": ready["last_seq"], "max_points": 1000})
    assert series.status_code == 200, series.text
    body = series.json()
    assert (body["total_points"], body["downsampled"]) == (POINTS, True)
    assert body["steps"][0] == 0 and body["steps"][-1] == POINTS - 1 and body["values"][0] == 1.0

    sql = f"SELECT count(*) AS n, count(DISTINCT step) AS steps, max(step) AS last FROM metrics WHERE run_id = " \
          f"'{run.run_id}'"
    answer = httpx.post(f"{hub.url}/api/v1/query", headers=headers, json={"sql": sql},
                        params={"min_seq": ready["last_seq"]}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["rows"] == [[POINTS, POINTS, POINTS - 1]]

    # Nothing of the metric tables is on the hub's disk: they are all in the bucket.
    assert not (hub.data_dir / "metrics").exists()
    s3 = boto3.client("s3", endpoint_url=s3_env["MLHUB_S3_ENDPOINT_URL"], aws_access_key_id="x",
                      aws_secret_access_key="y", region_name="us-east-1")
    bucket, prefix = s3_env["MLHUB_METRICS_URI"].removeprefix("s3://").split("/", 1)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    assert any(k.startswith(f"{prefix}/points/_delta_log/") for k in keys)
    assert any(k.startswith(f"{prefix}/points/bucket=") and k.endswith(".parquet") for k in keys)

    # Another host: its own empty data dir, the hub's read model by URL, the tables from the bucket.
    other = hub_env(tmp_path / "elsewhere", **s3_env,
                    MLHUB_DATABASE_URL=f"sqlite:///{(hub.data_dir / 'readmodel.db').resolve()}")
    result = subprocess.run([*MLHUB, "query", "--direct", "--format", "json",
                             "SELECT e.name AS experiment, count(*) AS n FROM metrics m JOIN runs r USING (run_id) "
                             "JOIN experiments e ON e.experiment_id = r.experiment_id "
                             f"WHERE m.run_id = '{run.run_id}' GROUP BY 1"],
                            env=other, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == [{"experiment": "s3-metrics", "n": POINTS}]
    assert not (tmp_path / "elsewhere" / "metrics").exists()
