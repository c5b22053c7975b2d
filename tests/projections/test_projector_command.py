"""`mlhub projector` as a user runs it: a real process against a real nats-server and a SQLite read model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa

from mlhub.eventlog import EventLog
from mlhub.events import Envelope, ExperimentCreated
from mlhub.projections import projector_lock
from mlhub.readmodel import create_engine
from mlhub.readmodel import tables as t


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "mlhub.cli", "projector", *args]


def _env(nats_url: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLHUB_")}
    return {**env, "MLHUB_NATS_URL": nats_url, "MLHUB_DATA_DIR": str(data_dir)}


def _experiments(db: Path) -> int:
    engine = create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(t.experiments)).scalar_one())
    finally:
        engine.dispose()


async def test_projector_command_migrates_catches_up_and_refuses_a_second_instance(
    event_log: EventLog, nats_url: str, tmp_path: Path
) -> None:
    for i in range(3):
        await event_log.append(Envelope(event=ExperimentCreated(experiment_id=f"e{i}", name="x"), producer="t"))
    env = _env(nats_url, tmp_path)
    done = subprocess.run(_command("--until-caught-up"), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "sql: seq 3" in done.stdout
    db = tmp_path / "readmodel.db"
    assert _experiments(db) == 3

    engine = create_engine(f"sqlite:///{db}")
    lock = projector_lock(engine, "sql")
    assert lock.try_acquire()
    try:
        refused = subprocess.run(_command("--no-wait", "--until-caught-up"), env=env, capture_output=True,
                                 text=True, timeout=60)
    finally:
        lock.release()
        engine.dispose()
    assert refused.returncode == 1
    assert "PROJECTOR_LOCKED" in refused.stderr and "already running elsewhere" in refused.stderr


async def test_projector_command_follows_the_log_and_stops_cleanly_on_sigterm(
    event_log: EventLog, nats_url: str, tmp_path: Path
) -> None:
    process = subprocess.Popen(_command("--status-every", "0"), env=_env(nats_url, tmp_path),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        db = tmp_path / "readmodel.db"
        await event_log.append(Envelope(event=ExperimentCreated(experiment_id="e", name="x"), producer="t"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if db.exists() and _has_table(db) and _experiments(db) == 1:
                break
            time.sleep(0.1)
        assert _experiments(db) == 1
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    assert "projectors stopped" in stderr


def _has_table(db: Path) -> bool:
    engine = create_engine(f"sqlite:///{db}")
    try:
        return "experiments" in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


async def test_projector_command_seals_and_compacts_periodically(
    event_log: EventLog, nats_url: str, tmp_path: Path
) -> None:
    """With short intervals, a following projector appends audit seals and compacts the metric tables' files."""
    import asyncio

    from mlhub.analytics import MetricTables, run_bucket
    from mlhub.eventlog import verify_seals
    from mlhub.events import MetricsLogged

    env = {**_env(nats_url, tmp_path), "MLHUB_SEAL_INTERVAL_S": "1", "MLHUB_COMPACT_INTERVAL_S": "3"}
    process = subprocess.Popen(_command("--status-every", "0"), env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    tables = MetricTables(tmp_path / "metrics")
    bucket = run_bucket("wave")
    try:
        for wave in range(3):  # three waves, each flushed on its own when the stream goes idle: three files
            points = [("loss", float(i), wave * 100 + i, wave, i) for i in range(100)]
            await event_log.append(Envelope(event=MetricsLogged.from_points("wave", points), producer="t"))
            deadline = time.monotonic() + 20
            while tables.snapshot().checkpoint < await event_log.last_sequence() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        files_before = len(tables.partition_files(bucket))
        deadline = time.monotonic() + 30
        while len(tables.partition_files(bucket)) > 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert files_before >= 2 and len(tables.partition_files(bucket)) == 1
        assert tables.count_points() == 300
        report = await verify_seals(event_log)
        assert report.ok and report.seals >= 1, report.problems
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
