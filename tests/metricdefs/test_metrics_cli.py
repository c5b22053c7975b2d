"""`mlhub metrics ...` run as a user runs it: in subprocesses, against the test's own nats-server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.metricdefs.helpers import VAL_ACC_BLOCK, edit

from mlhub.metricdefs import SchemaFiles, load_definitions

MLHUB = [sys.executable, "-m", "mlhub.cli"]


def mlhub(args: list[str], data_dir: Path, nats_url: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLHUB_")}
    env.update({"MLHUB_DATA_DIR": str(data_dir), "MLHUB_NATS_URL": nats_url, "MLHUB_SEAL_INTERVAL_S": "0"})
    return subprocess.run(MLHUB + args, env=env, capture_output=True, text=True, timeout=120, cwd=cwd)


def test_apply_migrate_list_and_check(tmp_path: Path, nats_url: str, project: SchemaFiles) -> None:
    root = project.definitions.parents[1]
    data = tmp_path / "data"
    declared = len(load_definitions(project.definitions))
    first = mlhub(["metrics", "apply"], data, nats_url, cwd=root)
    assert first.returncode == 0, first.stderr
    assert "defined   val_acc" in first.stdout and f"{declared} defined, 0 migration(s) applied" in first.stdout
    again = mlhub(["metrics", "apply"], data, nats_url, cwd=root)
    assert again.returncode == 0 and f"0 defined, 0 migration(s) applied, {declared} unchanged" in again.stdout

    edit(project.definitions, VAL_ACC_BLOCK, VAL_ACC_BLOCK.replace("unit: fraction", "unit: percent"))
    refused = mlhub(["metrics", "apply"], data, nats_url, cwd=root)
    assert refused.returncode == 1
    assert "error [METRIC_DEFINITION_CHANGED]" in refused.stderr and "val_acc.unit" in refused.stderr
    check = mlhub(["metrics", "check"], data, nats_url, cwd=root)
    assert check.returncode == 1 and "val_acc.unit is 'percent'" in check.stderr

    (project.migrations / "0001_val_acc_percent.yaml").write_text(
        "metric: val_acc\nreason: percent now\nchanges:\n  unit: {from: fraction, to: percent}\n")
    project.changelog.write_text(project.changelog.read_text() + "\n- `val_acc` in percent (0001_val_acc_percent)\n")
    assert mlhub(["metrics", "check"], data, nats_url, cwd=root).returncode == 0
    migrated = mlhub(["metrics", "migrate"], data, nats_url, cwd=root)
    assert migrated.returncode == 0 and "migrated  val_acc (0001_val_acc_percent)" in migrated.stdout
    assert "0 migration(s) applied" in mlhub(["metrics", "migrate"], data, nats_url, cwd=root).stdout

    projected = mlhub(["projector", "--until-caught-up", "--no-wait"], data, nats_url, cwd=root)
    assert projected.returncode == 0, projected.stderr
    listed = mlhub(["metrics", "list", "--json"], data, nats_url, cwd=root)
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)["definitions"]}
    assert (rows["val_acc"]["unit"], rows["val_acc"]["revision"]) == ("percent", 2) and len(rows) == declared


def test_a_bad_file_exits_2_naming_the_field(tmp_path: Path, nats_url: str) -> None:
    bad = tmp_path / "metrics.yaml"
    bad.write_text("metrics:\n  val_acc:\n    direction: upwards\n")
    result = mlhub(["metrics", "apply", "--file", str(bad)], tmp_path, nats_url)
    assert result.returncode == 2
    assert f"error [INVALID_METRIC_DEFINITION]: {bad}: metrics.val_acc.direction: Input should be" in result.stderr
