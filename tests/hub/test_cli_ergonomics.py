"""CLI ergonomics a new user ran into (issue 17, item 7), against a real `mlhub up --workers 0` (subprocess) on a
port that is not 8000: the client commands find it from MLHUB_DATA_DIR/hub.json alone."""

from __future__ import annotations

import functools
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.hub import helpers
from tests.hub.helpers import ROOT, RunningHub, free_port, hub_env, ok, serving_hub

from mlhub.metricdefs import load_definitions


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    with serving_hub(tmp_path_factory.mktemp("ergonomics") / "hub", workers=0) as running:
        yield running


#: The CLI calls of these tests (a hub without workers: nothing trains) end well within 120 s.
mlhub = functools.partial(helpers.mlhub, timeout=120)


def test_client_commands_find_the_hub_of_the_data_dir_from_hub_json(hub: RunningHub) -> None:
    assert hub.port != 8000
    env = hub_env(hub.data_dir)  # MLHUB_DATA_DIR only: no MLHUB_URL, no MLHUB_TOKEN
    listed = json.loads(ok(mlhub(["runs", "--format", "json"], env)))
    assert isinstance(listed, list)
    # MLHUB_URL set wins over hub.json (here: where nothing listens).
    elsewhere = f"http://127.0.0.1:{free_port()}"
    refused = mlhub(["runs"], hub_env(hub.data_dir, MLHUB_URL=elsewhere))
    assert refused.returncode == 1 and "HUB_UNAVAILABLE" in refused.stderr and elsewhere in refused.stderr
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
    assert "HUB_UNAVAILABLE" in result.stderr
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


def _twin_request_ids(prefix_len: int = 3) -> tuple[str, str]:
    """Two run-creation request ids whose runs' ids (uuid5(request_id, "run").hex) share their first characters."""
    seen: dict[str, str] = {}
    while True:
        request_id = str(uuid.uuid4())
        head = uuid.uuid5(uuid.UUID(request_id), "run").hex[:prefix_len]
        if head in seen:
            return seen[head], request_id
        seen[head] = request_id


@pytest.fixture(scope="module")
def named_runs(hub: RunningHub) -> dict[str, str]:
    """Runs created over REST: 'alpha' (unique name), two named 'beta', and two whose ids share a prefix."""
    token = (hub.data_dir / "api-token").read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    twins = _twin_request_ids()
    made = {}
    for key, name, request_id in (("alpha", "alpha", str(uuid.uuid4())), ("beta1", "beta", str(uuid.uuid4())),
                                  ("beta2", "beta", str(uuid.uuid4())), ("twin1", "twin-1", twins[0]),
                                  ("twin2", "twin-2", twins[1])):
        answer = httpx.post(f"{hub.url}/api/v1/runs", headers=headers, timeout=30, json={
            "experiment": "refs", "name": name, "request_id": request_id,
            "params": {"lr": "0.1", "flag": "true", "nothing": "null", "label": "a b"}})
        assert answer.status_code in (200, 201), answer.text
        made[key] = answer.json()["run_id"]
    assert made["twin1"][:3] == made["twin2"][:3]
    env = hub_env(hub.data_dir)
    deadline = time.monotonic() + 60
    while True:  # until the read model has them all
        listed = json.loads(ok(mlhub(["runs", "--experiment", "refs", "--format", "json"], env)))
        if len(listed) == len(made) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert {r["run_id"] for r in listed} == set(made.values())
    return made


@pytest.mark.parametrize("direct", [False, True], ids=["http", "direct"])
def test_show_takes_an_id_a_unique_prefix_or_a_name(hub: RunningHub, named_runs: dict[str, str],
                                                     direct: bool) -> None:
    env = hub_env(hub.data_dir)
    flag = ["--direct"] if direct else []
    alpha = named_runs["alpha"]
    for ref in (alpha, alpha[:12], "alpha"):
        shown = json.loads(ok(mlhub(["show", ref, "--json", *flag], env)))
        assert shown["run"]["run_id"] == alpha, ref
    assert ok(mlhub(["show", "alpha", *flag], env)).startswith(f"run {alpha} (alpha): running")

    for ref, runs in (("beta", ("beta1", "beta2")), (named_runs["twin1"][:3], ("twin1", "twin2"))):
        result = mlhub(["show", ref, *flag], env)
        assert result.returncode == 1 and "AMBIGUOUS_RUN_REF" in result.stderr, result.stderr
        assert f"2 runs match {ref!r}" in result.stderr
        assert all(named_runs[r] in result.stderr for r in runs), result.stderr

    unknown = mlhub(["show", "no-such-run", *flag], env)
    assert unknown.returncode == 1 and "no run has the id, id prefix or name 'no-such-run'" in unknown.stderr


def test_the_lookup_endpoint_names_the_candidates(hub: RunningHub, named_runs: dict[str, str]) -> None:
    headers = {"Authorization": f"Bearer {(hub.data_dir / 'api-token').read_text().strip()}"}
    found = httpx.get(f"{hub.url}/api/v1/run-lookup", params={"ref": named_runs["alpha"][:8]}, headers=headers)
    assert found.status_code == 200 and found.json()["run_id"] == named_runs["alpha"]
    assert found.json()["matched_by"] == "id_prefix"
    assert httpx.get(f"{hub.url}/api/v1/run-lookup", params={"ref": "alpha"},
                     headers=headers).json()["matched_by"] == "name"
    ambiguous = httpx.get(f"{hub.url}/api/v1/run-lookup", params={"ref": "beta"}, headers=headers)
    assert ambiguous.status_code == 400
    error = ambiguous.json()["error"]
    assert error["code"] == "AMBIGUOUS_RUN_REF" and error["details"]["count"] == 2
    assert {c["run_id"] for c in error["details"]["candidates"]} == {named_runs["beta1"], named_runs["beta2"]}
    missing = httpx.get(f"{hub.url}/api/v1/run-lookup", params={"ref": "zzz"}, headers=headers)
    assert missing.status_code == 404


@pytest.mark.parametrize("direct", [False, True], ids=["http", "direct"])
def test_text_output_prints_values_as_json(hub: RunningHub, named_runs: dict[str, str], direct: bool) -> None:
    env = hub_env(hub.data_dir)
    flag = ["--direct"] if direct else []
    shown = ok(mlhub(["show", "alpha", *flag], env))
    assert "seed null" in shown and "None" not in shown, shown
    assert "  flag = true" in shown and "  nothing = null" in shown and "  label = a b" in shown
    table = ok(mlhub(["query", *flag, "SELECT true AS t, [1, 2] AS l, {'k': 'v'} AS s, NULL AS n, 0.5 AS f, "
                      "'isnan'::VARCHAR AS c, 'NaN'::DOUBLE AS x"], env))
    row = [cell.strip() for cell in table.splitlines()[2].split("|")]
    assert row == ["true", "[1, 2]", '{"k": "v"}', "NULL", "0.5", "isnan", "NaN"], table
