"""Crash test: the projector process is SIGKILLed at random moments while events stream in, and restarted.

Afterwards the read model and the metric table equal a clean replay of the log: no point lost, none twice.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb

from mlhub.analytics import MetricTables
from mlhub.eventlog import EventLog
from mlhub.events import Envelope
from mlhub.projections.audit import compare_metrics, compare_read_models, metric_digest, snapshot_read_model
from mlhub.projections.rebuild import rebuild
from mlhub.readmodel import create_engine
from mlhub.readmodel.queries import checkpoints

from .conftest import metric_batch, run_lifecycle

RUNS = 50
BATCHES_PER_RUN = 4  # x 1,000 points x 50 runs = 200,000 points
KILLS = 5


def _projector(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "mlhub.cli", "projector", "--batch-size", "200",
                             "--status-every", "0"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_sigkilled_projector_equals_a_clean_replay(tmp_path: Path, event_log: EventLog, nats_url: str) -> None:
    rng = random.Random(20261125)
    live_dir = tmp_path / "live"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLHUB_")}
    env.update(MLHUB_NATS_URL=nats_url, MLHUB_DATA_DIR=str(live_dir), MLHUB_SEAL_INTERVAL_S="0")
    lifecycles = {f"run{i:02d}": run_lifecycle(f"run{i:02d}", f"exp{i % 3}", finished=i % 7 != 0)
                  for i in range(RUNS)}
    plan: list[list[Envelope]] = []  # chunks appended one after another, with pauses between them
    for before, _ in lifecycles.values():
        plan.append([Envelope(event=e, producer="test") for e in before])
    for b in range(BATCHES_PER_RUN):
        plan.append([Envelope(event=metric_batch(r, b), producer="test") for r in lifecycles])
    for _, after in lifecycles.values():
        plan.append([Envelope(event=e, producer="test") for e in after])

    kills: list[int] = []
    killed = asyncio.Event()  # set after each kill

    async def produce() -> None:
        # The plan goes out in KILLS + 1 parts, part i only once i projectors have been killed: however slowly a
        # projector starts on a loaded machine, every kill lands before the last events are appended.
        for i, chunk in enumerate(plan):
            while len(kills) < i * (KILLS + 1) // len(plan):
                killed.clear()
                await killed.wait()
            await event_log.append_many(chunk, max_in_flight=16)
            await asyncio.sleep(rng.uniform(0.05, 0.25))

    def sql_checkpoint() -> int:
        engine = create_engine(f"sqlite:///{live_dir / 'readmodel.db'}")
        try:
            with engine.connect() as conn:
                return checkpoints(conn).get("sql", 0)
        except Exception:
            return 0  # no database or no tables yet: the process is still starting
        finally:
            engine.dispose()

    producer = asyncio.create_task(produce())
    proc = _projector(env)
    try:
        for _ in range(KILLS):
            # Kill at a random moment once this instance is projecting (start-up time varies a lot: a fresh
            # checkout compiles bytecode on first import), so the kill lands while events stream in.
            before = kills[-1] if kills else 0
            deadline = time.monotonic() + 60
            while sql_checkpoint() <= before and not producer.done() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(rng.uniform(0.05, 0.6))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills.append(sql_checkpoint())
            killed.set()
            proc = _projector(env)
        await asyncio.wait_for(producer, 180)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    total = await event_log.last_sequence()
    assert total == sum(len(c) for c in plan)
    assert all(k < total for k in kills) and sum(k > 0 for k in kills) >= 2, \
        f"kills must land mid-stream: {kills} of {total}"

    # Restart once more and let it catch up to the end.
    final = subprocess.run([sys.executable, "-m", "mlhub.cli", "projector", "--until-caught-up"], env=env,
                           capture_output=True, text=True, timeout=180)
    assert final.returncode == 0, final.stderr[-2000:]

    live_engine = create_engine(f"sqlite:///{live_dir / 'readmodel.db'}")
    scratch_engine = create_engine(f"sqlite:///{tmp_path / 'clean.db'}", writer=True)
    try:
        await rebuild(event_log, engine=scratch_engine, metrics_dir=tmp_path / "clean-metrics")
        live, clean = snapshot_read_model(live_engine), snapshot_read_model(scratch_engine)
        assert live.checkpoint == clean.checkpoint == total
        assert compare_read_models(live, clean) == []
        assert live.tables["runs"].rows == RUNS
        assert live.tables["metric_summaries"].rows == RUNS * 2
    finally:
        live_engine.dispose()
        scratch_engine.dispose()
    live_ckpt, live_points = metric_digest(live_dir / "metrics")
    clean_ckpt, clean_points = metric_digest(tmp_path / "clean-metrics")
    assert live_ckpt == clean_ckpt == total
    assert compare_metrics(live_points, clean_points) == []
    files = MetricTables(live_dir / "metrics").snapshot().points_files
    con = duckdb.connect()
    try:
        count, distinct = con.execute(
            "SELECT count(*), count(DISTINCT (run_id, key, step)) FROM read_parquet(?)", [files]
        ).fetchone() or (0, 0)
    finally:
        con.close()
    assert count == distinct == RUNS * BATCHES_PER_RUN * 1000
