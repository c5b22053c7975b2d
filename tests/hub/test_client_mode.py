"""The CLI as a client of a real `mlhub up` (subprocess): submit --wait, runs, show, query, reproduce, cancel.

The client commands run with a data dir of their own that holds nothing and no MLHUB_NATS_URL, so everything
they print came over HTTP from the hub.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.hub.helpers import (
    RunningHub,
    free_port,
    hub_env,
    mlhub,
    ok,
    serving_hub,
)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    with serving_hub(tmp_path_factory.mktemp("client-mode") / "hub") as running:
        yield running


@pytest.fixture
def client_env(hub: RunningHub, tmp_path: Path) -> dict[str, str]:
    """A user somewhere else: only the hub's URL and a token."""
    token = (hub.data_dir / "api-token").read_text().strip()
    return hub_env(tmp_path / "client", MLHUB_URL=hub.url, MLHUB_TOKEN=token)


def utc(document: object) -> object:
    """Times as the API writes them (UTC, with its offset): SQLite hands the direct mode naive UTC times."""
    text = json.dumps(document)
    return json.loads(re.sub(r'"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)"', r'"\1+00:00"', text))


def test_submit_wait_then_runs_show_and_query_over_http(client_env: dict[str, str], tmp_path: Path) -> None:
    job = json.loads(ok(mlhub(["submit", "configs/digits-mlp.yaml", "--set", "trainer.max_epochs=2", "--wait",
                               "--json"], client_env)))
    assert (job["status"], job["attempts"], job["error"]) == ("succeeded", 1, None)
    assert job["seed"] == 42 and len(job["config_sha256"]) == 64
    run_id = job["run_id"]

    listed = json.loads(ok(mlhub(["runs", "--experiment", "digits-baseline", "--format", "json"], client_env)))
    mine = next(r for r in listed if r["run_id"] == run_id)
    assert mine["status"] == "finished" and 0 <= mine["metrics"]["val_acc"] <= 1
    filtered = json.loads(ok(mlhub(["runs", "--filter", f"run_id = '{run_id}' and metrics.val_acc >= 0",
                                    "--format", "json"], client_env)))
    assert [r["run_id"] for r in filtered] == [run_id]
    table = ok(mlhub(["runs"], client_env))
    assert table.splitlines()[0].split()[:4] == ["RUN_ID", "NAME", "EXPERIMENT", "STATUS"]
    assert run_id in table and "finished" in table

    shown = ok(mlhub(["show", run_id], client_env))
    assert shown.splitlines()[0].endswith(": finished") and run_id in shown.splitlines()[0]
    assert "seed 42" in shown and "val_acc" in shown and "model.onnx" in shown
    detail = json.loads(ok(mlhub(["show", run_id, "--json"], client_env)))
    assert detail["run"]["run_id"] == run_id and {a["kind"] for a in detail["artifacts"]} == {"checkpoint", "onnx"}

    rows = json.loads(ok(mlhub(["query", "--format", "json", "SELECT key, count(*) AS n FROM metrics WHERE "
                                f"run_id = '{run_id}' AND key = 'val_acc' GROUP BY key"], client_env)))
    assert rows == [{"key": "val_acc", "n": 2}]
    refused = mlhub(["query", "SELECT * FROM read_csv('/etc/passwd')"], client_env)
    assert refused.returncode == 1 and "error [QUERY_REFUSED]" in refused.stderr and "HTTP 400" in refused.stderr
    # Nothing of the hub's state is on the client's side: it all came over HTTP.
    assert not (tmp_path / "client").exists()


def test_reproduce_wait_is_bit_identical_over_http(client_env: dict[str, str]) -> None:
    job = json.loads(ok(mlhub(["submit", "configs/diabetes-regression.yaml", "--set", "trainer.max_epochs=2",
                               "--wait", "--json"], client_env)))
    assert job["status"] == "succeeded"
    reproduced = mlhub(["reproduce", job["run_id"], "--wait"], client_env)
    lines = ok(reproduced).splitlines()
    assert lines[0].startswith("queued job ") and f"reproduces run {job['run_id']} (seed 7" in lines[0]
    assert lines[1].endswith(" succeeded after 1 attempt(s)")
    table = {line.split()[0]: line.split() for line in lines[3:-2]}
    assert {"val_rmse", "test_r2", "train_loss"} <= set(table)
    assert all(row[1] == row[2] and row[3] == "yes" for row in table.values())
    assert lines[-1].startswith("reproduced: all ") and lines[-1].endswith("bit-identical")
    as_json = json.loads(ok(mlhub(["reproduce", job["run_id"], "--wait", "--json"], client_env)))
    assert as_json["match"] is True and as_json["problems"] == []
    assert all(m["original"] == m["reproduced"] for m in as_json["metrics"])
    missing = mlhub(["reproduce", "0" * 32], client_env)
    assert missing.returncode == 1 and "HTTP 404" in missing.stderr and "0" * 32 in missing.stderr


def test_bad_config_is_named_and_nothing_is_queued(client_env: dict[str, str], tmp_path: Path) -> None:
    bad = mlhub(["submit", "configs/digits-mlp.yaml", "--set", "trainer.max_epochs=zero"], client_env)
    assert bad.returncode == 2 and "configs/digits-mlp.yaml" in bad.stderr and "trainer.max_epochs" in bad.stderr
    assert bad.stdout == ""


def test_the_local_hub_token_is_found_and_bad_tokens_and_urls_are_named(hub: RunningHub, tmp_path: Path) -> None:
    # Same data dir as the hub, no MLHUB_TOKEN: the session token is read from <data_dir>/api-token.
    local = hub_env(hub.data_dir, MLHUB_URL=hub.url)
    assert "RUN_ID" in ok(mlhub(["runs"], local))
    # Another URL than the hub's: the file's token is not sent.
    other_port = free_port()
    unreachable = mlhub(["runs"], hub_env(hub.data_dir, MLHUB_URL=f"http://127.0.0.1:{other_port}"))
    assert unreachable.returncode == 1 and "error [HUB_UNAVAILABLE]" in unreachable.stderr
    assert f"127.0.0.1:{other_port}" in unreachable.stderr and "mlhub up" in unreachable.stderr
    wrong = mlhub(["runs"], hub_env(tmp_path / "x", MLHUB_URL=hub.url, MLHUB_TOKEN="not-the-token"))
    assert wrong.returncode == 1 and "error [UNAUTHENTICATED]" in wrong.stderr
    none = mlhub(["runs"], hub_env(tmp_path / "y", MLHUB_URL=hub.url))
    assert none.returncode == 1 and "error [UNAUTHENTICATED]" in none.stderr and "MLHUB_TOKEN" in none.stderr


def test_cancel_over_http(client_env: dict[str, str]) -> None:
    queued = json.loads(ok(mlhub(["submit", "configs/digits-mlp.yaml", "--set", "trainer.max_epochs=500",
                                  "--json"], client_env)))
    cancelled = ok(mlhub(["cancel", queued["job_id"], "--reason", "changed my mind"], client_env))
    assert cancelled.startswith(f"cancelled job {queued['job_id']} (it was ")
    again = mlhub(["cancel", queued["job_id"]], client_env)
    assert again.returncode == 1 and "HTTP 409" in again.stderr
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        shown = json.loads(ok(mlhub(["show", queued["run_id"], "--json"], client_env)))
        if shown["run"]["status"] == "killed":  # the job is cancelled, its run killed
            break
        time.sleep(0.5)
    assert shown["run"]["status"] == "killed"


def test_models_reads_over_http_match_the_direct_mode(hub: RunningHub, client_env: dict[str, str]) -> None:
    job = json.loads(ok(mlhub(["submit", "configs/digits-mlp.yaml", "--set", "trainer.max_epochs=1", "--wait",
                               "--json"], client_env)))
    assert job["status"] == "succeeded"
    # Registration is not in the API: refused in client mode, done directly on the hub's machine.
    refused = mlhub(["models", "register", "digits", "--run", job["run_id"], "--artifact", "model.onnx"], client_env)
    assert refused.returncode == 2 and "--direct" in refused.stderr
    on_hub = hub_env(hub.data_dir)
    ok(mlhub(["models", "register", "digits", "--run", job["run_id"], "--artifact", "model.onnx", "--direct"],
             on_hub))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        listed = json.loads(ok(mlhub(["models", "list", "--json"], client_env)))
        if listed:
            break
        time.sleep(0.5)
    direct = json.loads(ok(mlhub(["models", "list", "--json", "--direct"], on_hub)))
    assert utc(listed) == utc(direct) and listed[0]["model_name"] == "digits" and listed[0]["version_count"] == 1
    for args in (["show", "digits", "--json"], ["show", "digits", "--version", "1", "--json"],
                 ["history", "digits", "--json"]):
        assert utc(json.loads(ok(mlhub(["models", *args], client_env)))) == \
            utc(json.loads(ok(mlhub(["models", *args, "--direct"], on_hub)))), args
    chain = ok(mlhub(["models", "lineage", "digits", "--version", "1"], client_env))
    assert chain.splitlines()[0].startswith("model digits v1: artifact model.onnx sha256 ")
    assert f"run         {job['run_id']} (finished)" in chain and "seed        42 (config)" in chain
    assert "dataset     sklearn-digits fingerprint " in chain and "missing" not in chain
    missing = mlhub(["models", "show", "no-such-model"], client_env)
    assert missing.returncode == 1 and "HTTP 404" in missing.stderr

    # Promotion through the hub: an alias without gates moves; production's gates (configs/registry.yaml:
    # val_acc >= 0.9 and a reproduced run) refuse a 1-epoch model, naming the gate, and append nothing.
    ok(mlhub(["models", "promote", "digits", "1", "--alias", "candidate", "--reason", "try it"], client_env))
    refused = mlhub(["models", "promote", "digits", "1", "--alias", "production"], client_env)
    assert refused.returncode == 1 and "PROMOTION_GATE_FAILED" in refused.stderr, refused.stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        history = json.loads(ok(mlhub(["models", "history", "digits", "--json"], client_env)))
        if history:
            break
        time.sleep(0.5)
    assert [(h["alias"], h["to_version"], h["reason"]) for h in history] == [("candidate", 1, "try it")]
