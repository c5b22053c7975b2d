"""`mlhub submit` and `mlhub cancel` run as a user would: in subprocesses, against the test's own nats-server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlhub.eventlog import EventLog

MLHUB = [sys.executable, "-m", "mlhub.cli"]
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def mlhub(args: list[str], data_dir: Path, nats_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLHUB_")}
    env.update({"MLHUB_DATA_DIR": str(data_dir), "MLHUB_NATS_URL": nats_url, "PYTHONUNBUFFERED": "1"})
    return subprocess.run(MLHUB + args, env=env, capture_output=True, text=True, timeout=60)


def last_sequence(nats_url: str) -> int:
    async def read() -> int:
        async with EventLog(nats_url) as log:
            return await log.last_sequence()

    return asyncio.run(read())


def test_submit_then_cancel(tmp_path: Path, nats_url: str) -> None:
    submitted = mlhub(["submit", str(CONFIGS / "diabetes-regression.yaml"), "--set", "trainer.max_epochs=2",
                       "--json"], tmp_path, nats_url)
    assert submitted.returncode == 0, submitted.stderr
    ids = json.loads(submitted.stdout)
    assert ids["experiment_id"] == "diabetes-regression" and ids["seed"] == 7

    async def read_back() -> tuple[list[str], dict[str, object]]:
        async with EventLog(nats_url) as log:
            run = await log.read_aggregate("run", ids["run_id"])
            job = await log.read_aggregate("job", ids["job_id"])
            snapshot = run.events[1].envelope.event.model_dump()
            return [r.envelope.type for r in [*run.events, *job.events]], snapshot

    types, snapshot = asyncio.run(read_back())
    assert types == ["run.created", "run.config_snapshotted", "run.seed_recorded", "run.tags_set", "job.queued"]
    assert snapshot["overrides"] == ("trainer.max_epochs=2",) and snapshot["sha256"] == ids["config_sha256"]

    human = mlhub(["submit", str(CONFIGS / "digits-mlp.yaml")], tmp_path, nats_url)
    assert human.returncode == 0, human.stderr
    assert human.stdout.startswith("queued job ") and "experiment digits-baseline (new)" in human.stdout
    assert "seed 42 (from the config)" in human.stdout

    cancelled = mlhub(["cancel", ids["job_id"], "--reason", "testing"], tmp_path, nats_url)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip() == f"cancelled job {ids['job_id']} (it was queued)"
    again = mlhub(["cancel", ids["job_id"]], tmp_path, nats_url)
    assert again.returncode == 1
    assert again.stderr.strip() == f"error [INVALID_STATE]: job {ids['job_id']} has already ended (cancelled): " \
                                   "nothing to cancel"
    unknown = mlhub(["cancel", "0123abc"], tmp_path, nats_url)
    assert unknown.returncode == 1 and "error [JOB_NOT_FOUND]: no job 0123abc was ever queued" in unknown.stderr


@pytest.mark.parametrize(
    ("content", "overrides", "expected"),
    [
        ("trainer: {max_epochs: 0}\n", [], "bad.yaml: trainer.max_epochs: Input should be greater than 0"),
        ("trainer: {max_epoch: 3}\n", [], "bad.yaml: trainer.max_epoch: unknown key; did you mean 'max_epochs'?"),
        ("trainer: {max_epochs: [3}\n", [], "bad.yaml: line 4, column 25: invalid YAML"),
        ("", ["--set", "trainer.max_epoch=3"], "bad.yaml: trainer.max_epoch: unknown key (--set trainer.max_epoch=3)"),
    ],
)
def test_a_bad_config_exits_2_naming_file_and_field_and_queues_nothing(
    tmp_path: Path, nats_url: str, content: str, overrides: list[str], expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("experiment: e\nplugin: p\ndata: {name: d}\n" + content)
    before = last_sequence(nats_url)
    result = mlhub(["submit", str(path), *overrides, "--json"], tmp_path, nats_url)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == "" and result.stderr.startswith("error [INVALID_PARAMETER_VALUE]: ")
    assert expected in result.stderr
    assert last_sequence(nats_url) == before
