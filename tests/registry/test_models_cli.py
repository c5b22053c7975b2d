"""`mlhub models` run as a user would: subprocesses against the test's own nats-server and a SQLite read model."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.registry.helpers import COMMIT, add_run

from mlhub.eventlog import EventLog

MLHUB = [sys.executable, "-m", "mlhub.cli"]


def mlhub(args: list[str], data_dir: Path, nats_url: str, **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLHUB_")}
    env.update({"MLHUB_DATA_DIR": str(data_dir), "MLHUB_NATS_URL": nats_url, "PYTHONUNBUFFERED": "1", **env_extra})
    # cwd: a folder without configs/registry.yaml, so only the gates the test names apply
    return subprocess.run(MLHUB + args, env=env, capture_output=True, text=True, timeout=120, cwd=data_dir)


def runs(nats_url: str, metrics: list[dict[str, float]]) -> list[str]:
    async def add() -> list[str]:
        async with EventLog(nats_url) as log:
            return [await add_run(log, metrics=m) for m in metrics]

    return asyncio.run(add())


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_register_promote_then_read_back(tmp_path: Path, nats_url: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    gates = tmp_path / "gates.yaml"
    gates.write_text("aliases:\n  production:\n    - {metric: val_acc, op: '>=', value: 0.9}\n")
    weak, strong = runs(nats_url, [{"val_acc": 0.8}, {"val_acc": 0.96}])

    not_yet = mlhub(["models", "list"], data, nats_url)
    assert not_yet.returncode == 1 and "error [READ_MODEL_ERROR]: no read model at" in not_yet.stderr

    one = json.loads(ok(mlhub(["models", "register", "digits", "--run", weak, "--artifact", "model.onnx",
                               "--description", "first", "--json"], data, nats_url)))
    assert (one["version"], one["run_id"]) == (1, weak)
    two = ok(mlhub(["models", "register", "digits", "--run", strong, "--artifact", "model.onnx"], data, nats_url))
    assert two.startswith(f"registered model digits version 2 from run {strong} (model.onnx, sha256 ")
    missing = mlhub(["models", "register", "digits", "--run", weak, "--artifact", "nope.onnx"], data, nats_url)
    assert missing.returncode == 1
    assert missing.stderr.strip() == (f"error [RUN_NOT_REGISTRABLE]: run {weak} has no artifact 'nope.onnx' "
                                      f"(it stored: model.onnx)")

    refused = mlhub(["models", "promote", "digits", "1", "--alias", "production", "--gates", str(gates)],
                    data, nats_url)
    assert refused.returncode == 1
    assert (f"error [PROMOTION_GATE_FAILED]: model digits version 1 cannot become 'production': val_acc >= 0.9 "
            f"failed: val_acc of run {weak} is 0.8") in refused.stderr
    staged = mlhub(["models", "promote", "digits", "1", "--alias", "staging", "--actor", "ana"], data, nats_url)
    assert ok(staged).strip().startswith("model digits: alias staging -> v1 (was (none)) at seq ")
    assert "note: no promotion gates" in staged.stderr
    promoted = ok(mlhub(["models", "promote", "digits", "2", "--alias", "production", "--expect-current", "none",
                         "--reason", "best val_acc", "--actor", "bo", "--gates", str(gates)], data, nats_url))
    assert "alias production -> v2 (was (none))" in promoted
    assert f"gate val_acc >= 0.9: ok (val_acc of run {strong} is 0.96)" in promoted
    conflict = mlhub(["models", "promote", "digits", "1", "--alias", "production", "--expect-current", "none"],
                     data, nats_url, MLHUB_REGISTRY_GATES=str(gates))
    assert conflict.returncode == 1
    assert conflict.stderr.strip().startswith("error [PROMOTION_CONFLICT]: model digits: alias 'production' "
                                              "points to version 2, not the expected no version (unset)")
    bad_gates = tmp_path / "bad.yaml"
    bad_gates.write_text("aliases:\n  production:\n    - {metric: val_acc, op: '=>', value: 1}\n")
    invalid = mlhub(["models", "promote", "digits", "1", "--alias", "production", "--gates", str(bad_gates)],
                    data, nats_url)
    assert invalid.returncode == 2 and f"{bad_gates}: aliases.production[0].op: Input should be" in invalid.stderr

    ok(mlhub(["projector", "--until-caught-up", "--status-every", "0"], data, nats_url))

    listed = json.loads(ok(mlhub(["models", "list", "--json"], data, nats_url)))
    assert [(m["model_name"], m["latest_version"], m["version_count"], m["aliases"]) for m in listed] == [
        ("digits", 2, 2, {"production": 2, "staging": 1})]
    assert ok(mlhub(["models", "list"], data, nats_url)).strip() == \
        "digits: 2 version(s), latest v2, production=v2, staging=v1"
    shown = json.loads(ok(mlhub(["models", "show", "digits", "--json"], data, nats_url)))
    assert [(v["version"], v["aliases"], v["description"]) for v in shown["versions"]] == [
        (1, ["staging"], "first"), (2, ["production"], "")]
    one_version = ok(mlhub(["models", "show", "digits", "--version", "2"], data, nats_url))
    assert f"v2 [production]: run {strong} (finished), artifact model.onnx" in one_version

    history = json.loads(ok(mlhub(["models", "history", "digits", "--alias", "production", "--json"],
                                  data, nats_url)))
    assert [(h["from_version"], h["to_version"], h["actor"], h["reason"]) for h in history] == [
        (None, 2, "bo", "best val_acc")]
    human_history = ok(mlhub(["models", "history", "digits"], data, nats_url)).splitlines()
    assert len(human_history) == 2 and human_history[0].endswith("staging: (none) -> v1 (set by ana)")

    chain = json.loads(ok(mlhub(["models", "lineage", "digits", "--alias", "production", "--json"], data, nats_url)))
    assert chain["run"]["run_id"] == strong and chain["missing"] == []
    assert chain["code"] == {"git_commit": COMMIT, "dirty": True, "diff_sha256": chain["code"]["diff_sha256"],
                             "repository": "https://example.invalid/mlhub.git"}
    assert chain["config"]["snapshot"]["seed"] == 42 and chain["seed"]["seed"] == 42
    text = ok(mlhub(["models", "lineage", "digits", "--alias", "production"], data, nats_url))
    for part in ("model digits v2 (production)", f"run         {strong} (finished)", "config      sha256 ",
                 "seed        42 (config)", "dataset     sklearn-digits fingerprint ", f"code        {COMMIT} dirty",
                 "environment python 3.11.9, torch 2.5.1"):
        assert part in text, text
    neither = mlhub(["models", "lineage", "digits"], data, nats_url)
    assert neither.returncode == 2 and "name exactly one of --alias and --version" in neither.stderr
    unknown = mlhub(["models", "lineage", "digits", "--alias", "canary"], data, nats_url)
    assert unknown.returncode == 1 and "error [ALIAS_NOT_FOUND]: model digits has no alias 'canary'" in unknown.stderr
