"""CLI ergonomics a new user ran into (issue 17, item 7), against a real `mlhub up --workers 0` (subprocess) on a
port that is not 8000: the client commands find it from MLHUB_DATA_DIR/hub.json alone."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.hub.helpers import MLHUB, ROOT, RunningHub, free_port, hub_env, serving_hub

from mlhub.metricdefs import load_definitions


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    with serving_hub(tmp_path_factory.mktemp("ergonomics") / "hub", workers=0) as running:
        yield running


def mlhub(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MLHUB, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_client_commands_find_the_hub_of_the_data_dir_from_hub_json(hub: RunningHub) -> None:
    assert hub.port != 8000
    env = hub_env(hub.data_dir)  # MLHUB_DATA_DIR only: no MLHUB_URL, no MLHUB_TOKEN
    listed = json.loads(ok(mlhub(["runs", "--format", "json"], env)))
    assert isinstance(listed, list)
    # MLHUB_URL set wins over hub.json (here: where nothing listens).
    elsewhere = f"http://127.0.0.1:{free_port()}"
    refused = mlhub(["runs"], hub_env(hub.data_dir, MLHUB_URL=elsewhere))
    assert refused.returncode == 1 and "HUB_UNREACHABLE" in refused.stderr and elsewhere in refused.stderr
    assert "hub.json" not in refused.stderr


def test_a_hub_json_whose_hub_is_not_running_is_named_in_the_error(tmp_path: Path) -> None:
    data_dir = tmp_path / "stale"
    data_dir.mkdir()
    url = f"http://127.0.0.1:{free_port()}"
    # What a SIGKILLed `mlhub up` leaves behind: its hub.json, naming a pid that is gone.
    dead = subprocess.Popen(["true"])
    dead.wait()
    (data_dir / "hub.json").write_text(json.dumps({"url": url, "pid": dead.pid, "nats_url": "nats://127.0.0.1:1",
                                                   "token_file": None}))
    result = mlhub(["runs"], hub_env(data_dir))
    assert result.returncode == 1, result.stdout
    assert "HUB_UNREACHABLE" in result.stderr
    assert str((data_dir / "hub.json").resolve()) in result.stderr and url in result.stderr
    assert "not running" in result.stderr and f"pid {dead.pid}" in result.stderr


def test_up_declares_the_metric_definitions_of_the_working_directory(hub: RunningHub) -> None:
    declared = load_definitions(ROOT / "configs" / "metrics.yaml")
    assert f"metric definitions ({ROOT / 'configs' / 'metrics.yaml'}): {len(declared)} defined" in hub.output
    env = hub_env(hub.data_dir)
    deadline = time.monotonic() + 60
    while True:  # the projector takes them in a moment after `up` appended them
        rows = json.loads(ok(mlhub(["query", "--format", "json", "SELECT name FROM metric_definitions"], env)))
        if {r["name"] for r in rows} == set(declared) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert {r["name"] for r in rows} == set(declared)


def test_up_without_a_metrics_file_says_none_applied_and_serves(tmp_path: Path) -> None:
    elsewhere = tmp_path / "project"
    elsewhere.mkdir()
    with serving_hub(tmp_path / "hub", workers=0, cwd=elsewhere) as running:
        assert f"metric definitions: none applied (no {elsewhere / 'configs' / 'metrics.yaml'}" in running.output
        assert json.loads(ok(mlhub(["runs", "--format", "json"], hub_env(running.data_dir)))) == []

