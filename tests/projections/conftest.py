"""Fixtures of the projector tests: a migrated read model on SQLite and on PostgreSQL, and event helpers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from mlhub.projections import SqlProjector
from mlhub.readmodel import migrate
from mlhub.readmodel.testing import DATABASE_KINDS, temporary_database


@pytest.fixture(params=DATABASE_KINDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A read model migrated to head (writer engine): a SQLite file, or a fresh PostgreSQL schema."""
    with temporary_database(request.param, tmp_path) as engine:
        migrate(engine)
        yield engine


@pytest.fixture
def sql_projector(database: Engine) -> SqlProjector:
    """The SQL projector on the test's read model."""
    return SqlProjector(database)


def run_lifecycle(run_id: str, experiment_id: str, *, finished: bool = True) -> tuple[list[Any], list[Any]]:
    """Events of one run as a worker would append them: (before its metrics, after them)."""
    from mlhub.events import (
        ConfigSnapshotted,
        ParamsLogged,
        RunCreated,
        RunFailed,
        RunFinished,
        RunStarted,
        SeedRecorded,
        TagsSet,
        sha256_of,
    )

    config = {"model": {"lr": 0.01, "width": len(run_id)}, "seed": 7}
    before = [
        RunCreated(run_id=run_id, experiment_id=experiment_id, name=f"name-{run_id}"),
        ConfigSnapshotted(run_id=run_id, config=config, sha256=sha256_of(config)),
        SeedRecorded(run_id=run_id, seed=7),
        ParamsLogged(run_id=run_id, params={"lr": "0.01", "width": str(len(run_id))}),
        TagsSet(run_id=run_id, tags={"team": "vision"}),
        RunStarted(run_id=run_id, attempt=1, worker_id="w1"),
    ]
    after = [RunFinished(run_id=run_id, attempt=1) if finished
             else RunFailed(run_id=run_id, attempt=1, error_type="ValueError", error="diverged")]
    return before, after


def metric_batch(run_id: str, index: int, points: int = 1000) -> Any:
    """One 1,000-point metric event (two keys) for batch `index` of a run."""
    from mlhub.events import MetricsLogged

    half = points // 2
    steps = range(index * half, (index + 1) * half)
    return MetricsLogged.from_points(
        run_id,
        [("loss", 1.0 / (1 + s), s, s // 100, 1_700_000_000_000 + s) for s in steps]
        + [("acc", s / (s + 10.0), s, s // 100, 1_700_000_000_000 + s) for s in steps],
    )
