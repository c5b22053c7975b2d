"""`mlhub audit verify`, `mlhub audit seal` and `mlhub replay`, run as a user runs them, against real servers."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mlhub.eventlog import EmbeddedNats, EventLog
from mlhub.events import Envelope
from mlhub.projections.audit import compare_read_models, snapshot_read_model
from mlhub.readmodel import create_engine

from .conftest import metric_batch, run_lifecycle

MLHUB = [sys.executable, "-m", "mlhub.cli"]


def _env(data_dir: Path, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLHUB_")}
    env.update(MLHUB_NATS_URL=url, MLHUB_DATA_DIR=str(data_dir), MLHUB_SEAL_INTERVAL_S="0")
    return env


def mlhub(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(MLHUB + list(args), env=env, capture_output=True, text=True, timeout=180)


async def _populate(url: str, runs: int = 6) -> None:
    async with EventLog(url) as log:
        for i in range(runs):
            before, after = run_lifecycle(f"r{i}", "exp", finished=i != 3)
            for event in [*before, metric_batch(f"r{i}", 0), metric_batch(f"r{i}", 1), *after]:
                await log.append(Envelope(event=event, producer="test"))


@pytest.fixture
async def hub(tmp_path: Path, nats_url: str) -> dict[str, str]:
    """A log with six runs, projected by `mlhub projector --until-caught-up`, and sealed."""
    await _populate(nats_url)
    env = _env(tmp_path / "data", nats_url)
    projected = mlhub(env, "projector", "--until-caught-up")
    assert projected.returncode == 0, projected.stderr
    sealed = mlhub(env, "audit", "seal")
    assert sealed.returncode == 0 and "sealed events 1..54" in sealed.stdout, sealed.stdout + sealed.stderr
    return env


def test_audit_passes_on_an_untouched_system(hub: dict[str, str]) -> None:
    result = mlhub(hub, "audit", "verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "audit passed" in result.stdout and "DRIFT" not in result.stdout
    assert "metric table: 12000 points compared" in result.stdout
    assert "seals: 1 checked, sealed through seq 54" in result.stdout


def test_audit_fails_naming_the_table_after_a_row_is_changed_by_hand(hub: dict[str, str]) -> None:
    db = Path(hub["MLHUB_DATA_DIR"]) / "readmodel.db"
    with sqlite3.connect(db) as conn:
        assert conn.execute("UPDATE runs SET status = 'finished' WHERE run_id = 'r3'").rowcount == 1
    result = mlhub(hub, "audit", "verify")
    assert result.returncode == 1
    assert "DRIFT table runs: 6 rows live, 6 rebuilt from the log; 1 changed (r3)" in result.stdout
    assert "audit FAILED" in result.stderr


def test_audit_fails_when_a_metric_point_is_missing(hub: dict[str, str]) -> None:
    """A metric table rewritten behind the projector's back (here: one run's points dropped) is named."""
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    points = Path(hub["MLHUB_DATA_DIR"]) / "metrics" / "points"
    table = DeltaTable(str(points))
    data = table.to_pyarrow_table()
    kept = data.filter(pa.compute.not_equal(data["run_id"], "r1"))
    write_deltalake(str(points), kept, mode="overwrite", partition_by=table.metadata().partition_columns)
    result = mlhub(hub, "audit", "verify")
    assert result.returncode == 1
    assert "DRIFT metric table: points of 1 runs differ: r1 (0 live vs 2000 rebuilt)" in result.stdout


async def test_audit_fails_after_a_stored_event_is_altered_in_the_store_files(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats")
    url = server.start()
    try:
        await _populate(url)
        env = _env(tmp_path / "data", url)
        assert mlhub(env, "projector", "--until-caught-up").returncode == 0
        assert mlhub(env, "audit", "seal").returncode == 0
        assert mlhub(env, "audit", "verify").returncode == 0
        server.stop()
        changed = 0
        for block in (tmp_path / "nats" / "store").rglob("*.blk"):
            data = block.read_bytes()
            if b'"name-r2"' in data:
                block.write_bytes(data.replace(b'"name-r2"', b'"name-rX"'))
                changed += 1
        assert changed
        url = server.start()
        result = mlhub(_env(tmp_path / "data", url), "audit", "verify")
        assert result.returncode == 1, result.stdout
        assert "DRIFT seal: seal 1..54" in result.stdout
    finally:
        server.stop()


async def test_replay_rebuilds_into_a_fresh_target_and_refuses_a_used_one(hub: dict[str, str], tmp_path: Path) -> None:
    target = f"sqlite:///{tmp_path / 'rebuilt.db'}"
    result = mlhub(hub, "replay", "--into", target, "--metrics-dir", str(tmp_path / "rebuilt-metrics"))
    assert result.returncode == 0, result.stderr
    assert "sql at seq 55, metrics at seq 55" in result.stdout
    live = create_engine(f"sqlite:///{Path(hub['MLHUB_DATA_DIR']) / 'readmodel.db'}")
    rebuilt = create_engine(target)
    try:
        live_snapshot, rebuilt_snapshot = snapshot_read_model(live), snapshot_read_model(rebuilt)
        assert rebuilt_snapshot.tables["runs"].rows == 6
        # The live model stopped at 54 (before the seal event, which adds a row to audit_seals only).
        assert [d for d in compare_read_models(live_snapshot, rebuilt_snapshot)
                if not d.startswith("table audit_seals")] == []
    finally:
        live.dispose()
        rebuilt.dispose()
    again = mlhub(hub, "replay", "--into", target, "--metrics-dir", str(tmp_path / "other-metrics"))
    assert again.returncode == 1 and "already holds projections" in again.stderr
    bad = mlhub(hub, "replay", "--into", "nonsense://", "--metrics-dir", str(tmp_path / "m"))
    assert bad.returncode == 2 and "--into" in bad.stderr
